#!/usr/bin/env bash
# Bad input gets a clear message naming the key (or file) and the rule, and the documented exit code.
# usage: errors_cli_test.sh PERENNIAL_BINARY SOURCE_DIR
set -uo pipefail
bin=$1 src=$2
source "$src/tests/cli/lib.sh"
scratch work

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
if grep -q "CUDA: no" <<<"$("$bin" version)"; then
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

# ckpt and data parse their command lines as every command does (Boost.Program_options): options
# before or after the arguments, --help (exit 0) on every subcommand, an unknown option or an
# argument too many refused with exit 2 and the argument named.
"$bin" train --config "$src/configs/fashion-mlp.cfg" --data.train "$work/fm/train" --data.test "$work/fm/test" \
  --run-dir "$work/ok" --model.hidden 8 --train.max_steps 3 --log.progress none >"$work/ok.log" 2>&1 ||
  { cat "$work/ok.log"; fail "a short run for the ckpt tools"; }
weights=$work/ok/model.h5
expect 0 '"format": "perennial-weights"' -- ckpt inspect --json "$weights"
expect 0 '"format": "perennial-weights"' -- ckpt inspect "$weights" --json
expect 0 "perennial-weights v" -- ckpt inspect "$weights"
expect 2 "command line: unexpected argument '$weights'" -- ckpt inspect "$weights" "$weights"
expect 2 "command line: unrecognised option '--jsn'" -- ckpt inspect "$weights" --jsn
expect 2 "command line: FILE required" -- ckpt inspect
expect 0 '"identical": true' -- ckpt diff --json "$weights" "$weights"
expect 2 "command line: unexpected argument 'extra'" -- ckpt diff "$weights" "$weights" extra
expect 2 "command line: two files A B required" -- ckpt diff "$weights"
expect 0 "OK    $weights" -- ckpt verify "$weights" "$weights"
expect 2 "command line: unrecognised option '--json'" -- ckpt verify --json "$weights"
expect 0 '"rows": 10000' -- data info --json "$work/fm/test"
expect 0 "10000 rows in 1 shard(s)" -- data info "$work/fm/test"
expect 2 "command line: unexpected argument 'extra'" -- data info "$work/fm/test" extra
expect 2 "command line: unexpected argument 'extra'" -- data import-fashion-mnist --out "$work/imp3" extra
expect 2 "command line: unexpected argument 'stray'" -- train --run-dir "$work/run" stray
# Every command and subcommand answers --help with its usage and exit 0.
for sub in train eval validate report version \
           "ckpt inspect" "ckpt verify" "ckpt diff" "data info" "data import-fashion-mnist" "data import-csv" "data add" \
           ckpt data "registry list" "registry show" "registry promote" "registry rollback" "registry verify" \
           "registry export" registry docs "docs config" sched "sched run" "sched tick" "sched status" "sched runs" \
           "sched shards" "sched events" "sched trigger" "sched cancel" "sched exec"; do
  # shellcheck disable=SC2086
  expect 0 "usage: " -- $sub --help
  # shellcheck disable=SC2086
  expect 0 "perennial ${sub%% *}" -- $sub --help
done
echo "cli error tests passed"
