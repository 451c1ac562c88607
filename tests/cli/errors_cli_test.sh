#!/usr/bin/env bash
# Bad input gets a clear message naming the key (or file) and the rule, and the documented exit code.
# usage: errors_cli_test.sh PERENNIAL_BINARY SOURCE_DIR
set -uo pipefail
bin=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$src/tests/cli/lib.sh"

expect() {  # expect CODE PATTERN -- ARGS...
  local code=$1 pattern=$2; shift 3
  local out rc
  out=$("$bin" "$@" 2>&1); rc=$?
  [ "$rc" = "$code" ] || fail "perennial $* exited $rc, expected $code; output: $out"
  grep -qF -- "$pattern" <<<"$out" || fail "perennial $* did not say '$pattern'; output: $out"
}

base=(train --run-dir "$work/run" --data.train "$work/none" --data.test "$work/none")
expect 2 "train.epochs: must be at least 1" -- "${base[@]}" --train.epochs 0
expect 2 "train.epochs" -- "${base[@]}" --train.epochs=ten
expect 2 "unrecognised option '--train.epoch=3'" -- "${base[@]}" --train.epoch=3
expect 2 "model.arch: unknown architecture 'rnn' (registered: cnn, mlp, torchscript;" -- "${base[@]}" --model.arch=rnn
printf '[train]\nepochs = 2\nbogus = 1\n' >"$work/bad.cfg"
expect 2 "$work/bad.cfg" -- "${base[@]}" --config "$work/bad.cfg"
expect 2 "train.bogus" -- "${base[@]}" --config "$work/bad.cfg"
expect 2 "$work/missing.cfg: cannot open" -- "${base[@]}" --config "$work/missing.cfg"
# NCCL reduces GPU tensors: refused before any data are read, whether the build lacks NCCL or
# the run trains on the CPU (Debian's LibTorch has no CUDA, so train.device auto is the CPU).
if "$bin" version | grep -q "CUDA: no"; then
  expect 2 "comm.backend: 'nccl'" -- "${base[@]}" --comm.backend nccl
  expect 2 "train.device: 'cuda' is not available: this build's LibTorch has no CUDA" -- "${base[@]}" --train.device cuda
else
  echo "a CUDA LibTorch: the refusals of a CPU-only build are not checked"
fi
expect 2 "train.device: must be one of" -- "${base[@]}" --train.device gpu
expect 1 "$work/none: not a directory" -- "${base[@]}"
expect 0 "(=25)" -- train --help
expect 0 "model.hidden" -- train --help
expect 2 "unknown command 'trian'" -- trian

# Malformed IDX input is refused naming the file; nothing is left behind.
mkdir -p "$work/src"
printf 'garbage' >"$work/src/train-images-idx3-ubyte"
printf 'garbage' >"$work/src/train-labels-idx1-ubyte"
expect 1 "train-images-idx3-ubyte: not an IDX file" -- data import-fashion-mnist --source "$work/src" --out "$work/imp"
[ ! -e "$work/imp/train" ] || fail "a failed import left $work/imp/train behind"
expect 2 "--shard-size: must be positive" -- data import-fashion-mnist --out "$work/imp2" --shard-size 0
# A metrics.jsonl that cannot be written (a full disk: /dev/full) stops the run naming the file.
"$bin" data import-fashion-mnist --out "$work/fm" --shard-size 20000 >/dev/null || fail "import"
mkdir -p "$work/full"
ln -s /dev/full "$work/full/metrics.jsonl"
expect 1 "metrics.jsonl: cannot append a record: No space left on device" -- train --config "$src/configs/fashion-mlp.cfg" \
  --data.train "$work/fm/train" --data.test "$work/fm/test" --run-dir "$work/full" --train.max_steps 30 \
  --train.log_every 10 --log.progress none
[ ! -e "$work/full/result.json" ] || fail "a run whose metrics could not be written left a result.json"
echo "cli error tests passed"
