#!/usr/bin/env bash
# End-to-end: import Fashion-MNIST, train under mpirun at 1, 2 and 3 ranks, check result.json,
# determinism (same config, seed and world size -> same param_sha256) and the run directory.
# usage: train_cli_test.sh PERENNIAL_BINARY SOURCE_DIR MPIEXEC
set -euo pipefail
bin=$1 src=$2 mpiexec=${3:-mpiexec}
source "$src/tests/cli/lib.sh"
scratch work

"$bin" data import-fashion-mnist --out "$work/fm" --shard-size 15000 >/dev/null
[ "$(ls "$work/fm/train" | wc -l)" = 4 ] || fail "expected 4 training shards of 15000 rows"

common=(--config "$src/configs/fashion-mlp.cfg" --data.train "$work/fm/train" --data.test "$work/fm/test"
        --train.max_steps 60 --train.log_every 20 --lr.warmup_steps 10 --log.progress lines)
run() {  # run NP NAME [extra args]
  local np=$1 name=$2; shift 2
  "$mpiexec" -np "$np" --oversubscribe "$bin" train "${common[@]}" --run-dir "$work/$name" "$@" \
    >"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; fail "training $name exited non-zero"; }
}

run 2 a
run 2 b
sha_a=$(json "$work/a/result.json" param_sha256)
sha_b=$(json "$work/b/result.json" param_sha256)
[ "$sha_a" = "$sha_b" ] || fail "same config and world size gave different weights: $sha_a vs $sha_b"
[ ${#sha_a} = 64 ] || fail "param_sha256 is not a SHA-256 hex digest: $sha_a"
for key in test_accuracy test_loss epochs steps world_size samples_per_second param_sha256; do
  json "$work/a/result.json" "$key" >/dev/null || fail "result.json lacks $key"
done
[ "$(json "$work/a/result.json" steps)" = 60 ] || fail "train.max_steps=60 not honoured"
[ "$(json "$work/a/result.json" world_size)" = 2 ] || fail "world_size should be 2"
acc=$(json "$work/a/result.json" test_accuracy)
/usr/bin/python3 -c "import sys; a=float(sys.argv[1]); sys.exit(0 if 0.5 < a <= 1 else 1)" "$acc" \
  || fail "60 steps of the MLP should beat 50% test accuracy, got $acc"
[ -s "$work/a/model.h5" ] || fail "model.h5 missing"
[ -s "$work/a/config.cfg" ] || fail "config.cfg missing"
grep -q '"kind": *"train"' "$work/a/metrics.jsonl" || fail "metrics.jsonl has no train records"
grep -q '"kind": *"eval"' "$work/a/metrics.jsonl" || fail "metrics.jsonl has no eval records"
grep -q "BLAS: openblas" "$work/a.log" || fail "the BLAS in use is not reported (or is not OpenBLAS)"
cmp -s "$work/a/model.h5" "$work/b/model.h5" || fail "model.h5 differs between two identical runs"

# perennial eval reloads model.h5 (with its recorded config) and reproduces the trainer's numbers,
# at the training world size and at another one.
for np in 2 1; do
  "$mpiexec" -np $np "$bin" eval --model "$work/a/model.h5" --data "$work/fm/test" --json "$work/eval$np.json" \
    >"$work/eval$np.log" 2>&1 || { cat "$work/eval$np.log" >&2; fail "eval at $np ranks failed"; }
  [ "$(json "$work/eval$np.json" accuracy)" = "$acc" ] || fail "eval at $np ranks: accuracy $(json "$work/eval$np.json" accuracy) != trainer's $acc"
  [ "$(json "$work/eval$np.json" param_sha256)" = "$sha_a" ] || fail "eval loaded different weights"
  /usr/bin/python3 -c "import sys; sys.exit(0 if abs(float(sys.argv[1]) - float(sys.argv[2])) < 1e-5 else 1)" \
    "$(json "$work/eval$np.json" loss)" "$(json "$work/a/result.json" test_loss)" || fail "eval loss differs from the trainer's"
done
# --device: a value it does not know, and cuda without a CUDA LibTorch, exit 2 with the reason.
cases=("gpu:--device: must be auto, cpu or cuda (got 'gpu')")
if grep -q "CUDA: no" <<<"$("$bin" version)"; then
  [ "$(json "$work/eval1.json" device)" = cpu ] || fail "eval --device auto did not report the CPU"
  cases+=("cuda:--device: 'cuda' is not available: this build's LibTorch has no CUDA")
fi
for case in "${cases[@]}"; do
  set +e
  "$bin" eval --model "$work/a/model.h5" --data "$work/fm/test" --device "${case%%:*}" >"$work/evaldev.log" 2>&1
  rc=$?
  set -e
  [ "$rc" = 2 ] || { cat "$work/evaldev.log" >&2; fail "eval --device ${case%%:*}: exit $rc, expected 2"; }
  grep -qF -- "${case#*:}" "$work/evaldev.log" || { cat "$work/evaldev.log" >&2; fail "eval --device ${case%%:*}: message"; }
done
# A modified weights file is refused.
cp "$work/a/model.h5" "$work/tampered.h5"
/usr/bin/python3 - "$work/tampered.h5" <<'PY' || fail "could not tamper with the weights file"
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f.attrs["param_sha256"] = "0" * 64
PY
if "$bin" eval --model "$work/tampered.h5" --data "$work/fm/test" >"$work/tampered.log" 2>&1; then
  fail "eval accepted weights that do not match their recorded param_sha256"
fi
grep -q "do not match the recorded param_sha256" "$work/tampered.log" || fail "tampering not named: $(cat "$work/tampered.log")"

# A different seed gives different weights (the hash is not constant).
run 2 c --train.seed 7
[ "$(json "$work/c/result.json" param_sha256)" != "$sha_a" ] || fail "seed does not change the weights"

# Any world size works; gradient accumulation and Adam run.
run 1 one --train.grad_accum 2 --optim.name adam --optim.lr 0.001
run 3 three --lr.schedule step --lr.step_size 20
[ "$(json "$work/three/result.json" world_size)" = 3 ] || fail "world_size should be 3"

# The resolved config reproduces the run on its own.
"$mpiexec" -np 2 --oversubscribe "$bin" train --config "$work/a/config.cfg" --run-dir "$work/replay" \
  >"$work/replay.log" 2>&1 || { cat "$work/replay.log" >&2; fail "replay from config.cfg failed"; }
[ "$(json "$work/replay/result.json" param_sha256)" = "$sha_a" ] || fail "config.cfg does not reproduce the run"

# The CNN trains too.
run 2 cnn --model.arch cnn --model.conv_channels 4,8 --model.fc_hidden 16 --model.dropout 0.1

# Both built-in models are handed over as TorchScript (RUN/model.pt): PyTorch loads it alone and
# reproduces the trainer's logits; LibTorch loads it as a model to train on (model.arch torchscript).
for name in a cnn; do
  [ -s "$work/$name/model.pt" ] || fail "$name: no model.pt"
  "$bin" eval --model "$work/$name/model.h5" --data "$work/fm/test" --logits 64 --json "$work/$name-logits.json" \
    >"$work/$name-logits.log" 2>&1 || { cat "$work/$name-logits.log" >&2; fail "eval --logits of $name"; }
  /usr/bin/python3 "$src/tests/python/check_torchscript_export.py" "$work/$name/model.pt" "$work/$name/model.h5" \
    "$work/fm/test" "$work/$name-logits.json" || fail "$name/model.pt does not reproduce the trainer's logits"
done
# One step at a learning rate far below the weights' precision leaves them as loaded.
"$mpiexec" -np 1 "$bin" train --config "$src/configs/fashion-mlp.cfg" --data.train "$work/fm/train" \
  --data.test "$work/fm/test" --run-dir "$work/from-pt" --model.arch torchscript --model.path "$work/cnn/model.pt" \
  --train.max_steps 1 --optim.lr 1e-30 --log.progress none >"$work/from-pt.log" 2>&1 ||
  { cat "$work/from-pt.log" >&2; fail "training from the exported CNN's model.pt"; }
[ "$(json "$work/from-pt/result.json" param_sha256)" = "$(json "$work/cnn/result.json" param_sha256)" ] ||
  fail "the exported CNN, loaded by LibTorch, does not hold the trained weights"
echo "cli train tests passed"
