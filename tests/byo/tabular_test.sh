#!/usr/bin/env bash
# Tables (issue acceptance): CSV files imported under a declared schema (bad rows refused with
# file, line and column); a linear model trained with 2 ranks on a known linear relation plus
# noise reaches an R^2 within 0.01 of the closed-form least-squares fit; the normalisation
# statistics are the training data's, stored in model.h5 and applied by `perennial eval`; resume
# is exact with them; a classification table with named classes trains.
# usage: tabular_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
scratch
mpirun=(mpirun -np 2 --oversubscribe)

# A linear relation with features on very different scales and offsets, plus unit noise; an id
# column to ignore, and quoted fields.
$py - "$t" <<'PY'
import json, sys
import numpy as np
t = sys.argv[1]
rng = np.random.default_rng(0)
d = 8
scale = np.array([1, 10, 100, 0.1, 5, 1, 2, 50])
offset = np.array([0, 100, -5000, 1, 0, 3, 0, 20])
w = rng.normal(size=d) * 3 / scale
def write(n, path):
    x = rng.normal(size=(n, d)) * scale + offset
    y = x @ w + 7 + rng.normal(size=n)
    with open(path, "w") as f:
        f.write("id," + ",".join("x%d" % i for i in range(d)) + ",y\n")
        for i in range(n):
            f.write('"row %d",' % i + ",".join("%.9g" % v for v in x[i]) + ",%.9g\n" % y[i])
write(6000, t + "/train.csv")
write(2000, t + "/test.csv")
json.dump({"name": "linear", "task": "regression", "features": ["x%d" % i for i in range(d)], "target": "y",
           "ignore": ["id"]}, open(t + "/schema.json", "w"))
# Classification by class name: the class is the sign pattern of two features.
with open(t + "/cls.csv", "w") as f:
    f.write("a,b,kind\n")
    names = ["low", "mixed", "high"]
    for _ in range(3000):
        a, b = rng.normal(size=2)
        f.write("%.6f,%.6f,%s\n" % (a, b, names[int(a > 0) + int(b > 0)]))
json.dump({"name": "signs", "task": "classification", "features": ["a", "b"], "target": "kind",
           "classes": names}, open(t + "/cls.json", "w"))
PY

# Bad input: each refused with exit 1 (data) or 2 (schema, options), naming where and why.
expect_error() {  # WANT_EXIT TEXT ARGS...
  local want=$1 text=$2
  shift 2
  set +e
  "$bin" data import-csv "$@" >"$t/err.out" 2>&1
  local rc=$?
  set -e
  [ $rc = "$want" ] || { cat "$t/err.out"; fail "import-csv $*: exit $rc, expected $want"; }
  grep -F -- "$text" "$t/err.out" >/dev/null || { cat "$t/err.out"; fail "import-csv $*: message lacks '$text'"; }
  [ ! -e "$t/bad-out" ] || fail "import-csv $*: wrote output despite the error"
}
head -5 "$t/train.csv" >"$t/bad.csv"
sed -i '4s/,[^,]*,/,"twelve",/' "$t/bad.csv"
expect_error 1 "bad.csv:4: column 2 'x0': 'twelve' is not a number" --schema "$t/schema.json" --out "$t/bad-out" "$t/bad.csv"
head -3 "$t/train.csv" >"$t/short.csv"
echo '"row x",1,2' >>"$t/short.csv"
expect_error 1 "short.csv:4: 3 fields, the header has 10" --schema "$t/schema.json" --out "$t/bad-out" "$t/short.csv"
{ head -1 "$t/train.csv" | sed 's/,y$/,y,colour/'; } >"$t/extra.csv"
expect_error 1 "extra.csv:1: column 11 'colour' is not in the schema" --schema "$t/schema.json" --out "$t/bad-out" "$t/extra.csv"
echo '{"name": "x", "task": "regression", "features": ["a"]}' >"$t/noschema.json"
expect_error 2 'noschema.json: "target": required' --schema "$t/noschema.json" --out "$t/bad-out" "$t/train.csv"
expect_error 2 "--delimiter: must be one character" --schema "$t/schema.json" --delimiter ';;' --out "$t/bad-out" "$t/train.csv"

"$bin" data import-csv --schema "$t/schema.json" --out "$t/lin/train" --shard-size 2500 "$t/train.csv" >/dev/null
"$bin" data import-csv --schema "$t/schema.json" --out "$t/lin/test" "$t/test.csv" >/dev/null
"$bin" data info "$t/lin/train" | grep -F "6000 rows in 3 shard(s), features [8] float32, regression" >/dev/null || fail "data info"

cat >"$t/lin.cfg" <<CFG
[data]
train = $t/lin/train
test = $t/lin/test
[model]
arch = mlp
hidden =
[train]
epochs = 12
batch_size = 32
[optim]
name = sgd
lr = 0.02
momentum = 0.9
[lr]
schedule = cosine
[checkpoint]
every_steps = 100
keep_last = 50
[log]
progress = none
CFG
"${mpirun[@]}" "$bin" train --config "$t/lin.cfg" --run-dir "$t/lin-run" >"$t/lin.log" 2>&1 || { cat "$t/lin.log"; fail "training"; }
"$bin" eval --model "$t/lin-run/model.h5" --data "$t/lin/test" --json "$t/eval.json" >/dev/null
# Interrupted at step 250 (mid-epoch) and resumed: the same weights as the uninterrupted run.
"${mpirun[@]}" "$bin" train --config "$t/lin.cfg" --run-dir "$t/lin-resumed" --train.max_steps 250 >"$t/r1.log" 2>&1 || { cat "$t/r1.log"; fail "training to step 250"; }
"${mpirun[@]}" "$bin" train --config "$t/lin.cfg" --run-dir "$t/lin-resumed" --resume auto >"$t/r2.log" 2>&1 || { cat "$t/r2.log"; fail "resuming"; }
a=$(json "$t/lin-run/result.json" param_sha256)
b=$(json "$t/lin-resumed/result.json" param_sha256)
[ "$a" = "$b" ] || fail "resumed run ended with param_sha256 $b, the uninterrupted one $a"

$py - "$t" <<'PY'
import json, sys
import h5py, numpy as np
t = sys.argv[1]
def load(path):
    a = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=range(1, 10))
    return a[:, :-1], a[:, -1]
x, y = load(t + "/train.csv")
xt, yt = load(t + "/test.csv")
a = np.c_[x, np.ones(len(x))]
coef, *_ = np.linalg.lstsq(a, y, rcond=None)
pred = np.c_[xt, np.ones(len(xt))] @ coef
r2_ls = 1 - ((pred - yt) ** 2).sum() / ((yt - yt.mean()) ** 2).sum()
res = json.load(open(t + "/lin-run/result.json"))
ev = json.load(open(t + "/eval.json"))
print("R^2: least squares %.5f, Perennial %.5f (eval %.5f); MSE %.4f, MAE %.4f" % (r2_ls, res["test_r2"], ev["r2"], res["test_mse"], res["test_mae"]))
assert res["task"] == "regression" and res["world_size"] == 2, res
assert abs(res["test_r2"] - r2_ls) <= 0.01, "R^2 %.5f not within 0.01 of least squares %.5f" % (res["test_r2"], r2_ls)
assert abs(ev["r2"] - res["test_r2"]) < 1e-9 and ev["task"] == "regression", (ev, res)
# The normalisation is the training data's mean and (population) standard deviation.
with h5py.File(t + "/lin-run/model.h5", "r") as f:
    mean, std = f["normalization/mean"][()], f["normalization/std"][()]
x32 = x.astype(np.float32).astype(np.float64)
assert np.allclose(mean, x32.mean(0), rtol=1e-5, atol=1e-5), (mean, x32.mean(0))
assert np.allclose(std, x32.std(0), rtol=1e-4), (std, x32.std(0))
# Applying it by hand reproduces the trainer's test MSE.
with h5py.File(t + "/lin-run/model.h5", "r") as f:
    w, b = f["state_dict/1.weight"][()], f["state_dict/1.bias"][()]
p = ((xt.astype(np.float32) - mean) / std) @ w.T.astype(np.float64) + b
mse = float(((p[:, 0] - yt.astype(np.float32)) ** 2).mean())
assert abs(mse - res["test_mse"]) <= 1e-4 * max(1, mse), (mse, res["test_mse"])
PY

"$bin" data import-csv --schema "$t/cls.json" --out "$t/cls/train" "$t/cls.csv" >/dev/null
"$bin" train --data.train "$t/cls/train" --data.test "$t/cls/train" --model.hidden 16 --train.epochs 3 \
  --train.batch_size 32 --log.progress none --run-dir "$t/cls-run" >"$t/cls.log" 2>&1 || { cat "$t/cls.log"; fail "classification"; }
acc=$(json "$t/cls-run/result.json" test_accuracy)
$py -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.9 else 1)" "$acc" || fail "classification accuracy $acc"
echo "PASS: CSV import errors, regression at least squares' R^2, normalisation, exact resume, named classes (accuracy $acc)"
