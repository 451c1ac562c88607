#!/usr/bin/env bash
# Bring your own model in C++ (issue acceptance): `cmake --install` of this build into a temporary
# prefix; examples/custom_model configured and built against it with find_package(Perennial);
# the example's own model (resmlp, registered from its main()) trained with 1 and 2 ranks and
# evaluated by the example's executable, then retrained through its scheduler (whose runs,
# evaluations and gate are children of the same executable); the stock `perennial` refuses the
# model it does not know, listing the ones it has; bad model.options are refused with a message.
# usage: cxx_api_test.sh CMAKE BUILD_DIR SOURCE_DIR PERENNIAL
set -euo pipefail
cmake=$1
build=$2
src=$3
perennial=$4
. "$src/tests/cli/lib.sh"
t=$(mktemp -d)
# Scheduler runs outlive a failed test otherwise: end their supervisors' and launchers' process
# groups (recorded in each attempt's pid file) before removing the directory.
cleanup() {
  for f in "$t"/root/runs/*/attempt-*/pid; do
    [ -f "$f" ] || continue
    for g in $($py -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['pid'], j['child_pgid'])" "$f" 2>/dev/null); do
      kill -9 -- "-$g" 2>/dev/null || true
    done
  done
  rm -rf "$t"
}
trap cleanup EXIT
mpirun=(mpirun -np 2 --oversubscribe)
start=$SECONDS

# 1. Install, and nothing in the package names this build or source tree (it is relocatable).
"$cmake" --install "$build" --prefix "$t/prefix" >"$t/install.log" || { cat "$t/install.log"; fail "cmake --install"; }
for f in bin/perennial lib/cmake/Perennial/PerennialConfig.cmake lib/cmake/Perennial/PerennialConfigVersion.cmake \
         lib/cmake/Perennial/PerennialTargets.cmake lib/libperennial_cli.a include/perennial/cli/run_cli.h \
         include/perennial/trainer/models/model_factory.h include/perennial/perennial/build_config.h; do
  [ -f "$t/prefix/$f" ] || fail "the install lacks $f"
done
if grep -rlF -e "$build" -e "$src" "$t/prefix/lib/cmake"; then
  fail "the installed CMake package names the build or source directory (above)"
fi

# 2. The example, configured and built against the installed package only (which finds the
# LibTorch this build used by itself), with this build's compilers; ccache, when present, with the
# temporary directory as its base, so that a rebuild hits.
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
args=(-DCMAKE_PREFIX_PATH="$t/prefix" -DCMAKE_BUILD_TYPE=Release
      -DCMAKE_C_COMPILER="$(cache CMAKE_C_COMPILER)" -DCMAKE_CXX_COMPILER="$(cache CMAKE_CXX_COMPILER)")
if command -v ccache >/dev/null; then
  args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR=$t
fi
"$cmake" -S "$src/examples/custom_model" -B "$t/example" "${args[@]}" >"$t/configure.log" 2>&1 \
  || { cat "$t/configure.log"; fail "configuring examples/custom_model against the installed package"; }
"$cmake" --build "$t/example" -j"$(nproc)" >"$t/build.log" 2>&1 || { cat "$t/build.log"; fail "building examples/custom_model"; }
ex=$t/example/custom_model
[ -x "$ex" ] || fail "no executable $ex"
echo "installed and built the example in $((SECONDS - start)) s"

# 3. The example's command line is the whole CLI.
grep -qF "perennial " <<<"$("$ex" version)" || fail "custom_model version"
"$ex" data import-fashion-mnist --out "$t/fm" --shard-size 2000 >/dev/null
train=(train --config "$src/configs/fashion-mlp.cfg" --data.train "$t/fm/train" --data.test "$t/fm/test"
       --train.max_steps 50 --lr.schedule constant --lr.warmup_steps 0 --log.progress none)
resmlp=(--model.arch resmlp --model.options width=32)

# 4. Its registered model trains, with 1 rank and with 2.
"$ex" "${train[@]}" "${resmlp[@]}" --run-dir "$t/run1" >"$t/run1.log" 2>&1 || { cat "$t/run1.log"; fail "train resmlp, 1 rank"; }
"${mpirun[@]}" "$ex" "${train[@]}" "${resmlp[@]}" --run-dir "$t/run2" >"$t/run2.log" 2>&1 || { cat "$t/run2.log"; fail "train resmlp, 2 ranks"; }
$py - "$t" <<'PY'
import json, sys
t = sys.argv[1]
for run, ranks in (("run1", 1), ("run2", 2)):
    r = json.load(open("%s/%s/result.json" % (t, run)))
    assert r["arch"] == "resmlp", r
    assert r["world_size"] == ranks and r["steps"] == 50, r
    assert r["test_accuracy"] > 0.4, ("%s learned too little" % run, r)
    print("%s: %d rank(s), %d steps, %d parameters, test accuracy %.4f" % (run, ranks, r["steps"], r["parameters"], r["test_accuracy"]))
PY
# The weights file holds the module's own parameters, under state_dict names (width 32, depth 2).
"$ex" ckpt inspect "$t/run2/model.h5" --json >"$t/inspect.json"
$py - "$t/inspect.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
shapes = {t["name"]: t["shape"] for g in j["groups"] for t in g["tensors"]}
want = {"stem.weight": [32, 784], "blocks.0.norm.weight": [32], "blocks.1.fc2.weight": [32, 32], "head.bias": [10]}
for name, shape in want.items():
    assert shapes.get(name) == shape, (name, shapes.get(name), sorted(shapes))
assert not any(n.startswith("blocks.2.") for n in shapes), sorted(shapes)
PY

# 5. The example evaluates it (2 ranks) to the accuracy training reported.
"${mpirun[@]}" "$ex" eval --model "$t/run2/model.h5" --data "$t/fm/test" --json "$t/eval.json" >"$t/eval.log" 2>&1 \
  || { cat "$t/eval.log"; fail "custom_model eval"; }
$py - "$t" <<'PY'
import json, sys
t = sys.argv[1]
e, r = json.load(open(t + "/eval.json")), json.load(open(t + "/run2/result.json"))
assert abs(e["accuracy"] - r["test_accuracy"]) < 1e-9, (e, r)
PY

# 6. Errors, each with exit status 2 and a message naming the cause.
expect_error() {  # TEXT BINARY ARGS...
  local text=$1
  shift
  set +e
  "$@" >"$t/err.out" 2>&1
  local rc=$?
  set -e
  [ $rc = 2 ] || { cat "$t/err.out"; fail "$*: exit $rc, expected 2"; }
  grep -qF -- "$text" "$t/err.out" || { cat "$t/err.out"; fail "$*: the message lacks '$text'"; }
}
# The stock executable knows only its built-in models: for training and for a resmlp model.h5.
expect_error "model.arch: unknown architecture 'resmlp' (registered: cnn, mlp, torchscript; a program of your own can add more with perennial::registerModel)" \
  "$perennial" "${train[@]}" "${resmlp[@]}" --run-dir "$t/stock"
[ ! -e "$t/stock/result.json" ] || fail "the stock perennial trained a model it does not know"
expect_error "unknown architecture 'resmlp'" "$perennial" eval --model "$t/run1/model.h5" --data "$t/fm/test"
# The example lists its own model with the built-in ones.
expect_error "unknown architecture 'resnet' (registered: cnn, mlp, resmlp, torchscript;" \
  "$ex" "${train[@]}" --run-dir "$t/bad" --model.arch resnet
expect_error "model.options: unknown key 'widht': model 'resmlp' does not read it (it reads: depth, width)" \
  "$ex" "${train[@]}" --run-dir "$t/bad" --model.arch resmlp --model.options widht=32
expect_error "model.options: width must be an integer (got 'wide')" \
  "$ex" "${train[@]}" --run-dir "$t/bad" --model.arch resmlp --model.options width=wide
expect_error "model.options: depth must be in [0, 64] (got 100)" \
  "$ex" "${train[@]}" --run-dir "$t/bad" --model.arch resmlp --model.options width=32,depth=100
expect_error "model.options: must be 'key=value' pairs" "$ex" "${train[@]}" --run-dir "$t/bad" --model.arch resmlp --model.options width
[ ! -e "$t/bad/result.json" ] || fail "a refused configuration trained"

# 7. The example's scheduler trains, evaluates and gates resmlp: its children are the example
# executable (the stock perennial would refuse the model, as above).
mkdir -p "$t/holdout" "$t/root/incoming"
cp "$t/fm/test/shard-00000.h5" "$t/holdout/"
cat >"$t/train.cfg" <<CFG
[model]
arch = resmlp
options = width=32, depth=1
[train]
epochs = 1
max_steps = 40
batch_size = 64
[log]
progress = none
CFG
cat >"$t/sched.cfg" <<CFG
[train]
config = train.cfg
holdout = holdout
ranks = 2
[triggers]
new_data_rows = 4000
[executor]
mpirun_args = --oversubscribe
[gate]
min_accuracy = 0.3
CFG
cp "$t/fm/train/shard-00000.h5" "$t/fm/train/shard-00001.h5" "$t/root/incoming/"
sched_until_promoted "$ex" "$t/root" "$t/sched.cfg" "$t/sched.log" "the scheduler's resmlp run"
[ "$(json "$(echo "$t"/root/runs/*/train/result.json)" arch)" = resmlp ] || fail "the scheduler's run did not train resmlp"
"$ex" registry verify --root "$t/root" fashion-mnist:v1 >/dev/null || fail "registry verify"

echo "PASS: examples/custom_model built against the installed package; its model trained (1 and 2 ranks, and by its scheduler), evaluated and refused where unknown, in $((SECONDS - start)) s"
