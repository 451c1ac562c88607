#!/usr/bin/env bash
# The main job on the embedded defaults: set up, import Fashion-MNIST into HDF5 shards, train the
# MLP data-parallel on 2 ranks, and evaluate the trained weights. Everything goes under DIR
# (default out/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-out/demo}
scripts/install-deps.sh
scripts/build.sh --target perennial
bin=build/bin/perennial
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

if [ ! -d "$dir/data/train" ]; then
  echo "== importing Fashion-MNIST into $dir/data"
  "$bin" data import-fashion-mnist --out "$dir/data"
fi
run="$dir/runs/mlp-$(date +%Y%m%d-%H%M%S)"
echo "== training the MLP with 2 ranks into $run"
mpirun -np 2 "$bin" train --config configs/fashion-mlp.cfg --run-dir "$run" \
  --data.train "$dir/data/train" --data.test "$dir/data/test"
echo "== evaluating $run/model.h5 on the test set"
mpirun -np 2 "$bin" eval --model "$run/model.h5" --data "$dir/data/test" --json "$run/eval.json"
echo "== done: results in $run/result.json, metrics in $run/metrics.jsonl, weights in $run/model.h5"
