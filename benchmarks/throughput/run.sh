#!/usr/bin/env bash
# Training-throughput benchmark: `perennial train` against PyTorch DistributedDataParallel and a
# bare LibTorch loop (perennial_bench_bare_loop).
#
#   benchmarks/throughput/run.sh [BUILD_DIR] [DATA_DIR]
#
# BUILD_DIR (default build, or $BUILD_DIR) holds bin/perennial and bin/perennial_bench_bare_loop; DATA_DIR (default /tmp/fm, or
# $DATA_DIR) holds train/ and test/ shard directories (perennial data import-fashion-mnist).
# Other settings, from the environment:
#   REPEATS=3        runs of each configuration (interleaved, so drifting load hits all alike)
#   STEPS=3000       optimizer steps per run
#   LOG_EVERY=100    steps per timing window
#   OUT_DIR          where runs and summary.json go (default: a new /tmp/perennial-throughput.*)
#   PYTHON           interpreter with torch and h5py (default /usr/bin/python3, Debian's)
#   DDP_LOADER       tensor (default) | dataloader: how the DDP peer makes batches
#   MPIRUN_ARGS      extra mpirun arguments (default: --bind-to core)
#   PERENNIAL_ARGS   extra `perennial train` arguments (e.g. --comm.overlap true)
#   CONFIGS          which runs, in this order each repeat (default: perennial-1 perennial-2 ddp-2 ddp-1 bare-1)
#   BEFORE_EACH      a command run before each configuration (e.g. one that waits for a quiet machine);
#                    each run's start and end times are printed, to match against a load monitor
#
# Every configuration trains the MLP 784-256-10 with SGD (lr 0.05, momentum 0.9), 64 samples per
# rank per step, one intra-op thread per rank, OpenBLAS as the BLAS; each rank (and the bare loop)
# pinned to one core. See BENCHMARKS.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${1:-${BUILD_DIR:-build}}"
data="${2:-${DATA_DIR:-/tmp/fm}}"
repeats="${REPEATS:-3}"
steps="${STEPS:-3000}"
log_every="${LOG_EVERY:-100}"
python="${PYTHON:-/usr/bin/python3}"
loader="${DDP_LOADER:-tensor}"
read -r -a mpirun_args <<<"${MPIRUN_ARGS:---bind-to core}"
read -r -a perennial_args <<<"${PERENNIAL_ARGS:-}"
read -r -a configs <<<"${CONFIGS:-perennial-1 perennial-2 ddp-2 ddp-1 bare-1}"
out="${OUT_DIR:-$(mktemp -d /tmp/perennial-throughput.XXXXXX)}"

die() { echo "run.sh: $*" >&2; exit 1; }
perennial="$build/bin/perennial"
bare="$build/bin/perennial_bench_bare_loop"
[[ -x "$perennial" ]] || die "$perennial not found: build first (cmake -S . -B $build && cmake --build $build -j2)"
[[ -x "$bare" ]] || die "$bare not found: build it (cmake --build $build --target perennial_bench_bare_loop)"
[[ -d "$data/train" && -d "$data/test" ]] || die "$data/train or $data/test missing: run $perennial data import-fashion-mnist --out $data"
command -v mpirun >/dev/null || die "mpirun not found"
"$python" -c 'import torch, h5py' 2>/dev/null || die "$python cannot import torch and h5py (apt-get install python3-torch python3-h5py)"
mkdir -p "$out"

# Before OMP_NUM_THREADS is set below: nproc honours it.
cpus="$(nproc)"

# One thread per rank everywhere: LibTorch's OpenMP pool, OpenBLAS's own pool, and the peer's.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
if [[ "$(id -u)" == 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

# --train.epochs STEPS: every epoch has at least one step, so train.max_steps is what stops the run.
runPerennial() {  # ranks run_dir
  mpirun -np "$1" "${mpirun_args[@]}" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x MKL_NUM_THREADS \
    "$perennial" train --run-dir "$2" --data.train "$data/train" --data.test "$data/test" \
    --model.arch mlp --model.hidden 256 --train.batch_size 64 --train.threads 1 \
    --optim.name sgd --train.max_steps "$steps" --train.epochs "$steps" --train.log_every "$log_every" \
    --log.progress none "${perennial_args[@]}" >"$2.log" 2>&1 || { cat "$2.log" >&2; die "perennial train failed (log: $2.log)"; }
  # A reference BLAS would make the comparison meaningless (about 15x slower).
  grep -q "BLAS: openblas" "$2.log" || die "perennial did not load OpenBLAS: $(grep 'BLAS:' "$2.log")"
}

runDdp() {  # ranks run_dir
  mkdir -p "$2"
  "$python" "$here/ddp_peer.py" --data "$data" --ranks "$1" --steps "$steps" --batch-size 64 \
    --hidden 256 --log-every "$log_every" --loader "$loader" --out "$2/ddp.json" >"$2.log" 2>&1 ||
    { cat "$2.log" >&2; die "ddp_peer.py failed (log: $2.log)"; }
  grep -q '"blas": "[^"]*openblas' "$2/ddp.json" || die "the DDP peer did not load OpenBLAS (see $2/ddp.json)"
}

runBare() {  # ranks(1) run_dir: pinned to CPU 0, as mpirun --bind-to core pins rank 0
  mkdir -p "$2"
  taskset -c 0 "$bare" --data "$data" --steps "$steps" --batch-size 64 --hidden 256 --log-every "$log_every" \
    --out "$2/bare.json" >"$2.log" 2>&1 || { cat "$2.log" >&2; die "perennial_bench_bare_loop failed (log: $2.log)"; }
  grep -q '"blas": "openblas' "$2/bare.json" || die "the bare loop did not load OpenBLAS (see $2/bare.json)"
}

echo "# throughput benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $cpus CPUs ($(lscpu | sed -n 's/^Model name: *//p'))"
echo "# $repeats repeat(s) x $steps steps, windows of $log_every steps, DDP loader '$loader'; runs in $out"
for ((r = 1; r <= repeats; ++r)); do
  for config in "${configs[@]}"; do
    system="${config%-*}" ranks="${config#*-}"
    dir="$out/$system-${ranks}r-$r"
    rm -rf "$dir"
    if [[ -n "${BEFORE_EACH:-}" ]]; then bash -c "$BEFORE_EACH" || echo "# (BEFORE_EACH exited non-zero)"; fi
    echo "# repeat $r/$repeats: $system, $ranks rank(s), start $(date +%H:%M:%S)"
    case "$system" in
      perennial) runPerennial "$ranks" "$dir" ;;
      ddp) runDdp "$ranks" "$dir" ;;
      bare) runBare "$ranks" "$dir" ;;
      *) die "unknown configuration $config (perennial-N, ddp-N, bare-1)" ;;
    esac
    echo "#   end $(date +%H:%M:%S)"
  done
done
echo
"$python" "$here/summarize.py" "$out" --json "$out/summary.json"
