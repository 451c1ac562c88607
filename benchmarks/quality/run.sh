#!/usr/bin/env bash
# Model quality with the shipped configs (issue acceptance): MLP and CNN at 2 ranks, and the MLP
# at 1 rank with the same global batch (128), which must reach the same accuracy within 0.5
# points. Prints a table with wall times. usage: benchmarks/quality/run.sh [BUILD_DIR] [DATA_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build} data=${2:-/tmp/fm} out=${3:-$(mktemp -d)}
mkdir -p "$out"
bin=$build/bin/perennial
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
[ -d "$data/train" ] || "$bin" data import-fashion-mnist --out "$data"
common=(--data.train "$data/train" --data.test "$data/test" --log.progress none --checkpoint.every_epochs 0)

run() {  # run NAME NP CONFIG [extra]
  local name=$1 np=$2 cfg=$3; shift 3
  local t0=$(date +%s.%N)
  mpirun -np "$np" "$bin" train --config "$cfg" --run-dir "$out/$name" "${common[@]}" "$@" >"$out/$name.log" 2>&1
  local t1=$(date +%s.%N)
  /usr/bin/python3 - "$out/$name/result.json" "$name" "$np" "$t0" "$t1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<14} ranks={sys.argv[3]} global_batch={r['global_batch']:<4} epochs={r['epochs']:<3} "
      f"test_accuracy={r['test_accuracy']:.4f} test_loss={r['test_loss']:.4f} "
      f"wall={float(sys.argv[5]) - float(sys.argv[4]):.1f}s samples/s={r['samples_per_second']:.0f}")
PY
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
run mlp-2ranks 2 configs/fashion-mlp.cfg
run mlp-1rank 1 configs/fashion-mlp.cfg --train.batch_size 128
run cnn-2ranks 2 configs/fashion-cnn.cfg
/usr/bin/python3 - "$out" <<'PY'
import json, sys
a = json.load(open(f"{sys.argv[1]}/mlp-2ranks/result.json"))["test_accuracy"]
b = json.load(open(f"{sys.argv[1]}/mlp-1rank/result.json"))["test_accuracy"]
c = json.load(open(f"{sys.argv[1]}/cnn-2ranks/result.json"))["test_accuracy"]
print(f"MLP >= 0.8833: {a >= 0.8833}; CNN >= 0.916: {c >= 0.916}; "
      f"|MLP 1 rank - 2 ranks| = {abs(a - b) * 100:.2f} points (<= 0.5: {abs(a - b) <= 0.005})")
PY
