#!/usr/bin/env bash
# The validation gate and the registry with real models (issue acceptance): against a champion,
# a better model passes; models trained on shuffled labels, diverged to NaN weights, altered
# after training, or regressing one class are each rejected with the right check named; the
# registry refuses unsafe names.
# usage: gate_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
scratch

"$bin" data import-fashion-mnist --out "$t/fm" --shard-size 3000 >/dev/null
mkdir -p "$t/train" "$t/holdout"
cp "$t"/fm/train/shard-0000[0-3].h5 "$t/train/"
cp "$t"/fm/test/shard-00000.h5 "$t/holdout/"
# Variants of the training data: shuffled labels; class 3 relabelled as class 6 (shirts).
$py - "$t" <<'PY'
import glob, os, shutil, sys
import h5py, numpy as np
t = sys.argv[1]
for name, fn in (("shuffled", lambda y, rng: rng.permutation(y)), ("no-class-3", lambda y, rng: np.where(y == 3, 6, y))):
    os.makedirs(os.path.join(t, name))
    rng = np.random.default_rng(7)
    for f in sorted(glob.glob(os.path.join(t, "train", "*.h5"))):
        out = os.path.join(t, name, os.path.basename(f))
        shutil.copyfile(f, out)
        with h5py.File(out, "r+") as h:
            h["labels"][...] = fn(h["labels"][()], rng)
PY
cat >"$t/train.cfg" <<CFG
[model]
arch = mlp
hidden = 64
[train]
epochs = 1
batch_size = 32
[optim]
lr = 0.05
[log]
progress = none
CFG
cat >"$t/gate.cfg" <<CFG
[gate]
min_accuracy = 0.3
max_accuracy_drop = 0.08
max_class_drop = 0.3
CFG

train() {  # NAME DATA [--section.key=value ...]
  local name=$1 data=$2
  shift 2
  "$bin" train --config "$t/train.cfg" --run-dir "$t/runs/$name" --data.train "$data" --data.test "$t/holdout" \
    "$@" >"$t/$name.log" 2>&1 || { cat "$t/$name.log"; fail "training $name"; }
}
train champion "$t/train"
train better "$t/train" --train.epochs 3
train shuffled "$t/shuffled"
train diverged "$t/train" --optim.lr 1e12
train no-class-3 "$t/no-class-3" --train.epochs 3
mkdir -p "$t/runs/altered"
cp "$t/runs/better/model.h5" "$t/runs/better/result.json" "$t/runs/altered/"
# Alter one weight of the copy after training (h5py rewrites the value in place).
$py - "$t/runs/altered/model.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    name = sorted(f["state_dict"].keys())[0]
    d = f["state_dict"][name]
    flat = d[()].reshape(-1)
    flat[0] += 0.5
    d[...] = flat.reshape(d.shape)
PY

# judge NAME WANT_EXIT [FAILED_CHECK]: validates runs/NAME/model.h5 against the champion.
judge() {
  local name=$1 want=$2 check=${3:-}
  set +e
  "$bin" validate --candidate "$t/runs/$name/model.h5" --champion "$t/runs/champion/model.h5" \
    --holdout "$t/holdout" --config "$t/gate.cfg" >"$t/$name.verdict.log" 2>&1
  local rc=$?
  set -e
  [ "$rc" = "$want" ] || { cat "$t/$name.verdict.log"; fail "$name: validate exited $rc, expected $want"; }
  $py - "$t/runs/$name/verdict.json" "$want" "$check" <<'PY' || { cat "$t/$name.verdict.log"; fail "$name: verdict"; }
import json, sys
v = json.load(open(sys.argv[1]))
want, check = int(sys.argv[2]), sys.argv[3]
assert v["decision"] == ("pass" if want == 0 else "reject"), v["decision"]
if check:
    assert check in v["failed"], (check, v["failed"])
    c = next(c for c in v["checks"] if c["name"] == check)
    assert not c["passed"] and c["detail"], c
    print("%-10s rejected by %s: %s" % (sys.argv[1].split("/")[-2], check, c["detail"]))
else:
    assert v["failed"] == [], v["failed"]
    assert v["device"] == "cpu", v["device"]  # gate.device's default
    for c in v["checks"]:
        assert c["passed"] and "value" in c and "threshold" in c, c
PY
}
judge better 0
judge shuffled 1 change.accuracy
judge diverged 1 sanity
judge altered 1 integrity
judge no-class-3 1 slices
grep -q "NaN or infinite" "$t/diverged.verdict.log" || fail "the diverged model's sanity detail names NaN weights"

# Bad input: exit 2 with a message.
set +e
"$bin" validate --candidate "$t/runs/better/model.h5" --holdout "$t/nope" >"$t/bad.log" 2>&1
rc=$?
"$bin" validate --candidate "$t/runs/better/model.h5" --holdout "$t/holdout" --champion "$t/nope.h5" >>"$t/bad.log" 2>&1
rc2=$?
set -e
[ "$rc" = 2 ] && [ "$rc2" = 2 ] || { cat "$t/bad.log"; fail "bad input must exit 2 (got $rc, $rc2)"; }
# --device (default: the configuration's gate.device, cpu): an unknown value, and cuda in a build
# without CUDA, are bad input: exit 2 before anything is written.
printf '[gate]\ndevice = gpu\n' >"$t/gate-gpu.cfg"
devcases=("--device gpu:--device: must be auto, cpu or cuda (got 'gpu')"
          "--config $t/gate-gpu.cfg:$t/gate-gpu.cfg: gate.device: must be auto, cpu or cuda (got 'gpu')")
if grep -q "CUDA: no" <<<"$("$bin" version)"; then
  devcases+=("--device cuda:--device: 'cuda' is not available: this build's LibTorch has no CUDA")
fi
for case in "${devcases[@]}"; do
  read -r -a extra <<<"${case%%:*}"
  set +e
  "$bin" validate --candidate "$t/runs/better/model.h5" --holdout "$t/holdout" "${extra[@]}" \
    --out "$t/device.verdict.json" >"$t/device.log" 2>&1
  rc=$?
  set -e
  [ "$rc" = 2 ] || { cat "$t/device.log"; fail "validate ${case%%:*}: exit $rc, expected 2 (no verdict)"; }
  [ ! -e "$t/device.verdict.json" ] || fail "validate ${case%%:*} wrote a verdict"
  grep -qF -- "${case#*:}" "$t/device.log" || { cat "$t/device.log"; fail "validate ${case%%:*}: message"; }
done
# An error is no verdict: exit 2, never 1 (the scheduler would reject the candidate). A champion
# that does not verify, and a verdict that cannot be written (a full disk; here a missing folder).
cp "$t/runs/champion/model.h5" "$t/corrupt-champion.h5"
$py - "$t/corrupt-champion.h5" <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(os.path.getsize(sys.argv[1]) // 2)
    f.write(b"\xff" * 64)
PY
set +e
"$bin" validate --candidate "$t/runs/better/model.h5" --holdout "$t/holdout" --champion "$t/corrupt-champion.h5" \
  >"$t/error.log" 2>&1
rc=$?
"$bin" validate --candidate "$t/runs/better/model.h5" --holdout "$t/holdout" --out "$t/no-such-dir/verdict.json" \
  >>"$t/error.log" 2>&1
rc2=$?
set -e
[ "$rc" = 2 ] && [ "$rc2" = 2 ] || { cat "$t/error.log"; fail "an error must exit 2, not reject (got $rc, $rc2)"; }
grep -q "champion" "$t/error.log" && grep -q "no-such-dir/verdict.json" "$t/error.log" || { cat "$t/error.log"; fail "the errors name the file"; }

# One validation per verdict folder at a time (found by the chaos test: a scheduler restarted
# while its gate ran starts the same validation again beside the orphaned first one, and the two
# shared the verdict and the holdout scratch folder). While another process holds the folder's
# lock, a validation waits; then it judges as usual.
mkdir -p "$t/locked"
$py - "$t/locked" "$t/locked.release" <<'PY' &
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[1] + "/held", "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
PY
holder=$!
while [ ! -e "$t/locked/held" ]; do sleep 0.05; done
"$bin" validate --candidate "$t/runs/better/model.h5" --champion "$t/runs/champion/model.h5" --holdout "$t/holdout" \
  --holdout "$t/fm/test/shard-00001.h5" --config "$t/gate.cfg" --out "$t/locked/verdict.json" >"$t/locked.log" 2>&1 &
validator=$!
sleep 3
kill -0 "$validator" 2>/dev/null && [ ! -e "$t/locked/verdict.json" ] || { cat "$t/locked.log"; fail "a validation did not wait for the one holding its folder"; }
touch "$t/locked.release"
wait "$holder"
wait "$validator" || { cat "$t/locked.log"; fail "the validation that waited exited $?"; }
[ "$(json "$t/locked/verdict.json" decision)" = pass ] || fail "the validation that waited did not pass"

# Unsafe registry names are refused before any path is built.
mkdir -p "$t/reg"
for name in "../x" "a/b" $'a\nb' ".." ".hidden"; do
  set +e
  "$bin" registry show --registry "$t/reg" "$name" >"$t/name.log" 2>&1
  rc=$?
  set -e
  [ "$rc" = 2 ] || fail "registry name '$name' was not refused (exit $rc)"
  grep -q "model name" "$t/name.log" || fail "the refusal of '$name' does not say what was wrong: $(cat "$t/name.log")"
done
echo "PASS: validation gate (better passes; shuffled, diverged, altered, class regression rejected)"
