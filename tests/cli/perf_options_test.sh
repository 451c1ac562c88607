#!/usr/bin/env bash
# The speed options keep training deterministic (issue: same config, data, seed and world size give
# the same param_sha256 with each option on and off): the fused optimizer step (optim.fused) and
# the all-reduce overlapped with backward (comm.overlap) and the all-reduce in shared memory
# (comm.shared_memory) give bitwise the weights of the plain path at 1 and 2 ranks; gradient compression (comm.compression) gives the same weights run after
# run (and others than none); asynchronous saves from staging buffers, the training set cached in
# memory and batches made on the training thread or ahead (data.prefetch auto chooses by where the
# rows come from and the rank's CPUs) change nothing. Bad values are refused.
# usage: perf_options_test.sh PERENNIAL_BINARY SOURCE_DIR MPIEXEC
set -euo pipefail
bin=$1 src=$2 mpiexec=${3:-mpiexec}
source "$src/tests/cli/lib.sh"
scratch work

"$bin" data import-fashion-mnist --out "$work/fm" --shard-size 20000 >/dev/null
common=(--config "$src/configs/fashion-mlp.cfg" --data.train "$work/fm/train" --data.test "$work/fm/test"
        --train.max_steps 40 --train.log_every 10 --lr.warmup_steps 5 --log.progress none
        --checkpoint.every_steps 20 --eval.batch_size 5000)
# SGD with momentum and weight decay, as the runs' names say, unless a run names its optimizer.
sgd=(--optim.name sgd --optim.lr 0.05 --optim.momentum 0.9 --optim.weight_decay 0.0001)
run() {  # run NP NAME [extra args]
  local np=$1 name=$2 optim=("${sgd[@]}"); shift 2
  [[ " $* " == *" --optim.name "* ]] && optim=()
  "$mpiexec" -np "$np" --oversubscribe "$bin" train "${common[@]}" "${optim[@]}" --run-dir "$work/$name" "$@" \
    >"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; fail "training $name exited non-zero"; }
}
sha() { json "$work/$1/result.json" param_sha256; }
same() {  # same A B WHAT: equal weights and equal logged losses
  [ "$(sha "$1")" = "$(sha "$2")" ] || fail "$3: $1 and $2 ended with different weights ($(sha "$1") vs $(sha "$2"))"
  /usr/bin/python3 - "$work/$1/metrics.jsonl" "$work/$2/metrics.jsonl" <<'PY' || fail "$3: $1 and $2 logged different losses"
import json, sys
loss = lambda p: [(r["step"], r["loss"]) for r in map(json.loads, open(p)) if r["kind"] == "train"]
a, b = loss(sys.argv[1]), loss(sys.argv[2])
assert a == b and len(a) == 4, (a, b)
PY
}

# The fused step is LibTorch's step, bit for bit, for each optimizer, at 1 and 2 ranks.
for np in 1 2; do
  run "$np" "fused-sgd-$np"
  run "$np" "plain-sgd-$np" --optim.fused false
  same "fused-sgd-$np" "plain-sgd-$np" "optim.fused at $np rank(s)"
done
grep -q "fused step over flat buckets" "$work/fused-sgd-2.log" || fail "the log does not say the step is fused"
grep -q "LibTorch's step" "$work/plain-sgd-2.log" || fail "the log does not say optim.fused = false"
for opt in "--optim.name adam --optim.lr 0.001" "--optim.name adamw --optim.lr 0.001 --optim.weight_decay 0.01" \
           "--optim.nesterov true"; do
  name=$(echo "$opt" | tr -dc 'a-z0-9')
  # shellcheck disable=SC2086
  run 2 "f-$name" $opt
  # shellcheck disable=SC2086
  run 2 "p-$name" $opt --optim.fused false
  same "f-$name" "p-$name" "optim.fused with $opt"
done

# Overlap: the same collectives on the same bytes, during backward instead of after it (also with
# gradient accumulation, where only the last micro-batch's backward may start them).
run 2 overlap --comm.overlap true
same overlap fused-sgd-2 "comm.overlap"
grep -q "reduced during backward" "$work/overlap.log" || fail "comm.overlap did not take effect: $(grep optimizer "$work/overlap.log")"
run 2 accum --train.grad_accum 2 --train.batch_size 32
run 2 accum-overlap --train.grad_accum 2 --train.batch_size 32 --comm.overlap true
same accum-overlap accum "comm.overlap with train.grad_accum 2"

# NOTE [Shared-memory all-reduce]: on one node the buckets are summed in memory the ranks share:
# by default (auto) at 2 ranks, bitwise MPI_Allreduce's sum; with true at 3, the same run to run.
grep -qF "two-shot all-reduce" "$work/fused-sgd-2.log" || fail "the buckets were not reduced in shared memory: $(grep optimizer "$work/fused-sgd-2.log")"
run 2 noshm --comm.shared_memory false
same noshm fused-sgd-2 "comm.shared_memory false"
! grep -qF "two-shot" "$work/noshm.log" || fail "comm.shared_memory false still reduced in shared memory"
run 3 mpi-3
grep -qF "comm.shared_memory = auto keeps MPI's order of sums beyond 2 ranks" "$work/mpi-3.log" ||
  fail "auto at 3 ranks: $(grep optimizer "$work/mpi-3.log")"
run 3 shm-3a --comm.shared_memory true
run 3 shm-3b --comm.shared_memory true --comm.overlap true
same shm-3a shm-3b "comm.shared_memory true at 3 ranks (twice, once overlapped)"
grep -qF "two-shot all-reduce" "$work/shm-3a.log" || fail "3 ranks on one node did not share memory"

# Compression: deterministic, and it does change what crosses the wire.
for codec in bf16 fp16; do
  run 2 "$codec-a" --comm.compression "$codec"
  run 2 "$codec-b" --comm.compression "$codec" --comm.overlap true
  same "$codec-a" "$codec-b" "comm.compression $codec (twice, once overlapped)"
  [ "$(sha "$codec-a")" != "$(sha fused-sgd-2)" ] || fail "comm.compression $codec gave the uncompressed weights"
  acc=$(json "$work/$codec-a/result.json" test_accuracy)
  ref=$(json "$work/fused-sgd-2/result.json" test_accuracy)
  /usr/bin/python3 -c "import sys; sys.exit(0 if abs(float(sys.argv[1]) - float(sys.argv[2])) < 0.03 else 1)" "$acc" "$ref" ||
    fail "comm.compression $codec: accuracy $acc after 40 steps, uncompressed $ref"
done
run 1 bf16-1rank --comm.compression bf16
same bf16-1rank fused-sgd-1 "comm.compression at world size 1 (nothing is sent)"

# Asynchronous saves (staging buffers), the row cache and loading on the training thread.
run 2 async --checkpoint.async true
same async fused-sgd-2 "checkpoint.async"
"$bin" ckpt verify "$work/async/checkpoints"/ckpt-*20.h5 >/dev/null || fail "an asynchronous checkpoint does not verify"
run 2 nocache --data.cache_mb 0
same nocache fused-sgd-2 "data.cache_mb 0"
grep -q "training set read into memory" "$work/fused-sgd-2.log" || fail "the training set was not cached by default"
run 2 inline --data.prefetch 0
same inline fused-sgd-2 "data.prefetch 0"
run 2 ahead --data.prefetch 4
same ahead fused-sgd-2 "data.prefetch 4"
# NOTE [Loader placement]: auto makes batches on the training thread when the rows are cached and
# the rank has one CPU per compute thread (here: pinned to one CPU), and reads ahead when the rows
# come from the shards; the weights are the same.
taskset -c 0 "$bin" train "${common[@]}" "${sgd[@]}" --run-dir "$work/pinned" >"$work/pinned.log" 2>&1 ||
  { cat "$work/pinned.log" >&2; fail "training pinned to one CPU exited non-zero"; }
same pinned fused-sgd-1 "data.prefetch auto on one CPU"
grep -qF "data.prefetch auto: each batch made on the training thread (rows in memory, 1 CPU(s) for 1 compute thread(s))" \
  "$work/pinned.log" || fail "data.prefetch auto did not choose the training thread for cached rows on one CPU"
grep -qF "data.prefetch auto: 4 batches made ahead on a loader thread (rows read from the shards)" "$work/nocache.log" ||
  fail "data.prefetch auto did not read ahead for uncached rows"

# result.json reports the step-time breakdown.
/usr/bin/python3 - "$work/fused-sgd-2/result.json" <<'PY' || fail "result.json lacks step_time_ms"
import json, sys
t = json.load(open(sys.argv[1]))["step_time_ms"]
for k in ("forward", "backward", "reduce", "optimizer", "loader_wait", "other", "loader_thread_cpu"):
    assert k in t and t[k] >= 0, (k, t)
assert t["forward"] > 0 and t["backward"] > 0, t
PY

# Bad values name the key and the rule (exit 2).
for bad in "--comm.compression zstd:comm.compression: must be one of none|bf16|fp16 (got 'zstd')" \
           "--optim.name lamb:optim.name: must be one of sgd|adam|adamw (got 'lamb')" \
           "--data.prefetch -1:data.prefetch: must be auto or an integer >= 0 (got '-1')" \
           "--data.prefetch 4x:data.prefetch: must be auto or an integer >= 0 (got '4x')" \
           "--data.cache_mb -5:data.cache_mb: must be at least 0 (got -5)" \
           "--comm.shared_memory yes:comm.shared_memory: must be one of auto|true|false (got 'yes')"; do
  args=${bad%%:*} want=${bad#*:}
  set +e
  # shellcheck disable=SC2086
  out=$("$bin" train "${common[@]}" --run-dir "$work/bad" $args 2>&1)
  rc=$?
  set -e
  [ "$rc" = 2 ] || fail "$args: exit $rc, expected 2: $out"
  grep -qF "$want" <<<"$out" || fail "$args: message lacks '$want': $out"
done
echo "PASS: perf options"
