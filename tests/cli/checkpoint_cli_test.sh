#!/usr/bin/env bash
# Checkpoints end to end: same bytes across runs, exact resume after train.max_steps and after a
# signal mid-epoch (at 1 and 2 ranks), corrupt checkpoints skipped by --resume auto, resume at
# another world size, async saves, the ckpt tools, and loading a checkpoint in PyTorch.
# usage: checkpoint_cli_test.sh PERENNIAL_BINARY SOURCE_DIR MPIEXEC
set -euo pipefail
bin=$1 src=$2 mpiexec=${3:-mpiexec}
source "$src/tests/cli/lib.sh"
scratch work
sha() { json "$1/result.json" param_sha256; }
# same_metrics RUN REF [STOPPED_AT]: every line of RUN's metrics.jsonl is whole, and it lists the
# same records (kind and step, in order) as REF's with the same evaluations: a resumed run drops
# what it trains again. A run stopped by train.max_steps at STOPPED_AT also logged and evaluated there.
same_metrics() {
  /usr/bin/python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "${3:--1}" <<'PY' || fail "$1/metrics.jsonl differs from $2's"
import json, sys
def load(p):
    return [json.loads(line) for line in open(p).read().splitlines()]
got, want, stopped = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
got = [r for r in got if r["step"] != stopped]
key = lambda rs: [(r["kind"], r["step"]) for r in rs]
assert key(got) == key(want), (key(got), key(want))
ev = lambda rs: [(r["test_accuracy"], r["test_loss"]) for r in rs if r["kind"] == "eval"]
assert ev(got) == ev(want), (ev(got), ev(want))
PY
}

"$bin" data import-fashion-mnist --out "$work/fm" >/dev/null
common=(--config "$src/configs/fashion-mlp.cfg" --data.train "$work/fm/train" --data.test "$work/fm/test"
        --train.epochs 2 --train.log_every 20 --model.dropout 0.1 --checkpoint.every_steps 100
        --checkpoint.keep_last 20 --log.progress lines
        # SGD with momentum: the checks below look for its momentum buffers.
        --optim.name sgd --optim.lr 0.05 --optim.momentum 0.9 --optim.weight_decay 0.0001)
run() {  # run NP NAME [extra args]: expects success
  local np=$1 name=$2; shift 2
  "$mpiexec" -np "$np" --oversubscribe "$bin" train "${common[@]}" --run-dir "$work/$name" "$@" \
    >>"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; fail "training $name exited non-zero"; }
}

# Uninterrupted references at 2 and 1 ranks; a second 2-rank run writes identical checkpoints.
run 2 ref2
run 2 ref2b
for f in "$work"/ref2/checkpoints/*.h5; do
  cmp -s "$f" "$work/ref2b/checkpoints/$(basename "$f")" || fail "$(basename "$f") differs between identical runs"
done
[ "$(ls "$work"/ref2/checkpoints/*.h5 | wc -l)" -ge 9 ] || fail "expected a checkpoint every 100 steps"
run 1 ref1 --train.batch_size 128

# Interrupted by train.max_steps mid-epoch, resumed with --resume auto: same final weights.
for np in 1 2; do
  extra=(); [ "$np" = 1 ] && extra=(--train.batch_size 128)
  run "$np" steps$np --train.max_steps 250 "${extra[@]}"
  if [ "$np" = 2 ]; then
    # step 250's checkpoint uncommitted: resumed at 200, steps 201-250 run again; and a record cut
    # short by a kill
    rm "$(ls "$work/steps2/checkpoints/"*.json | tail -1)"
    printf '{"kind":"train","epoch":0,"st' >>"$work/steps2/metrics.jsonl"
    stopped=-1
  else
    # the last record (the evaluation at 250) whole but for its newline: kept
    /usr/bin/python3 -c 'import sys; p = sys.argv[1]; b = open(p, "rb").read(); open(p, "wb").write(b.rstrip(b"\n"))' \
      "$work/steps1/metrics.jsonl"
    stopped=250
  fi
  run "$np" steps$np --resume auto "${extra[@]}"
  same_metrics "$work/steps$np" "$work/ref$np" $stopped
  if [ "$np" = 2 ]; then
    grep -q "dropped 5 record(s) after step 200" "$work/steps2.log" || fail "max_steps + resume at 2 ranks: records not dropped"
  else
    [ "$(grep -c '"kind":"eval","step":250\|"step":250.*"kind":"eval"' "$work/steps1/metrics.jsonl")" = 1 ] ||
      fail "max_steps + resume at 1 rank: the evaluation at step 250 is not there once"
  fi
  [ "$(sha "$work/steps$np")" = "$(sha "$work/ref$np")" ] || fail "max_steps + resume at $np ranks changed the weights"
  grep -q "resuming from" "$work/steps$np.log" || fail "resume not reported"
done

# A signal mid-epoch: the ranks agree, checkpoint, exit 75; the resumed run ends bit for bit
# like the uninterrupted one and writes the same final checkpoint bytes.
for case in USR1:2 TERM:2 USR1:1; do
  sig=${case%:*} np=${case#*:}
  name=sig$sig$np
  extra=(); [ "$np" = 1 ] && extra=(--train.batch_size 128)
  "$mpiexec" -np "$np" "$bin" train "${common[@]}" "${extra[@]}" --run-dir "$work/$name" >"$work/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    grep -q '"step":1[0-9][0-9]' "$work/$name/metrics.jsonl" 2>/dev/null && break
    sleep 0.05
  done
  if [ "$sig" = USR1 ]; then
    kill -USR1 "$pid"                               # mpirun forwards SIGUSR1 to the ranks
  else
    pkill -TERM -P "$pid" -f -- "--run-dir $work/$name"  # the ranks, as srun or a batch system would
  fi
  set +e; wait "$pid"; rc=$?; set -e
  [ "$rc" = 75 ] || { cat "$work/$name.log" >&2; fail "SIG$sig: exit status $rc, expected 75 (checkpointed, requeue)"; }
  [ ! -e "$work/$name/result.json" ] || fail "SIG$sig: a preempted run must not write result.json"
  grep -q "exiting for requeue" "$work/$name.log" || fail "SIG$sig: preemption not logged"
  run "$np" "$name" --resume auto "${extra[@]}"
  [ "$(sha "$work/$name")" = "$(sha "$work/ref$np")" ] || fail "SIG$sig at $np ranks + resume changed the weights"
  same_metrics "$work/$name" "$work/ref$np"
  last=$(ls "$work/ref$np/checkpoints/"*.h5 | tail -1)
  cmp -s "$last" "$work/$name/checkpoints/$(basename "$last")" || fail "SIG$sig + resume wrote different checkpoint bytes"
done

# A finished run resumed: nothing left to train; it evaluates again but does not log that twice.
cp -a "$work/ref2" "$work/done2"
run 2 done2 --resume auto
same_metrics "$work/done2" "$work/ref2"
[ "$(sha "$work/done2")" = "$(sha "$work/ref2")" ] || fail "resuming a finished run changed the weights"

# SIGKILL between checkpoints (all ranks at once): the resumed run trains the steps after the newest
# checkpoint again and drops their earlier records, so metrics.jsonl lists each step once.
"$mpiexec" -np 2 --oversubscribe "$bin" train "${common[@]}" --run-dir "$work/kill" >"$work/kill.log" 2>&1 &
pid=$!
for _ in $(seq 2400); do
  grep -q '"step":1[4-9]0' "$work/kill/metrics.jsonl" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/kill.log" >&2; fail "SIGKILL: the run ended before step 140"; }
  sleep 0.05
done
pkill -KILL -f -- "--run-dir $work/kill" || true
set +e; wait "$pid"; set -e
grep -q '"step":1[4-9]0' "$work/kill/metrics.jsonl" || fail "SIGKILL: no records after the checkpoint at step 100"
run 2 kill --resume auto
[ "$(sha "$work/kill")" = "$(sha "$work/ref2")" ] || fail "SIGKILL + resume changed the weights"
same_metrics "$work/kill" "$work/ref2"

# The newest checkpoint is corrupt: --resume auto warns, falls back to the previous one, and
# still ends with the reference weights.
run 2 corrupt --train.max_steps 350
newest=$(ls "$work/corrupt/checkpoints/"*.h5 | tail -1)
/usr/bin/python3 - "$newest" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0xFF
open(p, "wb").write(b)
PY
if "$bin" ckpt verify "$newest" >"$work/verify.log"; then fail "ckpt verify accepted a corrupt file"; fi
grep -q "FAIL" "$work/verify.log" || fail "ckpt verify did not say FAIL"
run 2 corrupt --resume auto
grep -q "skipping checkpoint that does not verify" "$work/corrupt.log" || fail "the corrupt checkpoint was not reported"
[ "$(sha "$work/corrupt")" = "$(sha "$work/ref2")" ] || fail "resume from the previous checkpoint changed the weights"

# Resume at another world size: allowed, with a warning.
run 2 reshard --train.max_steps 250
run 1 reshard --resume auto --train.batch_size 128
grep -q "re-sharded" "$work/reshard.log" || fail "no warning when resuming at another world size"
[ "$(json "$work/reshard/result.json" world_size)" = 1 ] || fail "reshard run did not finish at 1 rank"

# Asynchronous saves write the same state as synchronous ones (only the recorded config, which
# says checkpoint.async = true, differs).
run 2 async --checkpoint.async true
for f in "$work"/ref2/checkpoints/*.h5; do
  "$bin" ckpt diff "$f" "$work/async/checkpoints/$(basename "$f")" --json >"$work/adiff.json" || true
  /usr/bin/python3 - "$work/adiff.json" <<'PY' || fail "async save of $(basename "$f") differs from sync: $(cat "$work/adiff.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert not d["tensors"], d["tensors"]
assert {a["attribute"] for a in d["attributes"]} <= {"config", "config_sha256"}, d["attributes"]
PY
done

# Tools.
final=$(ls "$work/ref2/checkpoints/"*.h5 | tail -1)
"$bin" ckpt verify "$work"/ref2/checkpoints/*.h5 "$work/ref2/model.h5" >/dev/null || fail "ckpt verify refused good files"
"$bin" ckpt inspect "$final" --json >"$work/inspect.json" || fail "ckpt inspect failed"
/usr/bin/python3 - "$work/inspect.json" <<'PY' || fail "ckpt inspect --json lacks what the format promises"
import json, sys
j = json.load(open(sys.argv[1]))
a = j["attributes"]
for k in ["progress.step", "progress.epoch", "progress.sample_cursor", "config", "config_sha256",
          "param_sha256", "data.snapshot", "world.size", "optimizer.name", "versions.libtorch"]:
    assert k in a, k
paths = [g["path"] for g in j["groups"]]
for p in ["state_dict", "optimizer/momentum_buffer", "rng", "world"]:
    assert p in paths, p
assert j["manifest"]["sha256"] == j["sha256"]
PY
"$bin" ckpt diff "$final" "$work/sigUSR12/checkpoints/$(basename "$final")" >/dev/null || fail "ckpt diff: identical files reported different"
first=$(ls "$work/ref2/checkpoints/"*.h5 | head -1)
set +e; "$bin" ckpt diff "$first" "$final" >"$work/diff.log"; rc=$?; set -e
[ "$rc" = 1 ] || fail "ckpt diff of different checkpoints exited $rc, expected 1"
grep -q "state_dict/1.weight" "$work/diff.log" || fail "ckpt diff did not name a differing tensor"

# PyTorch loads the checkpoint and reproduces the trainer's logits, accuracy and loss.
"$bin" eval --model "$final" --data "$work/fm/test" --logits 32 --json "$work/eval.json" >/dev/null 2>&1 \
  || fail "eval of a checkpoint failed"
/usr/bin/python3 "$src/tests/python/check_pytorch_load.py" "$final" "$work/fm/test" "$work/eval.json" \
  || fail "PyTorch could not reproduce the trainer's outputs"
echo "checkpoint cli tests passed"
