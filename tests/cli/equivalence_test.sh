#!/usr/bin/env bash
# What the docs promise about the training loop, end to end on 6,000 Fashion-MNIST rows (an MLP of
# 64 hidden units, two epochs, a cosine schedule with momentum and weight decay):
#  1. gradient accumulation: 2 micro-batches of 50 on 1 rank give bit for bit the weights of 1
#     batch of 50 on each of 2 ranks (NOTE [Micro-batches]), and k micro-batches of b update like
#     one batch of k*b within a stated tolerance, at 1 and at 2 ranks;
#  2. exact resume for every optimizer `perennial train --help` lists (optim.name), at 1 and at 2
#     ranks: stopped, resumed from an earlier checkpoint, the same param_sha256 as never stopped;
#  3. resume at another world size (1 -> 2, 2 -> 3, 2 -> 1 ranks): the sample log
#     (--log-samples) shows every epoch trained each sample at most once, the interrupted epoch
#     exactly a prefix of the epoch's permutation (only less than one global batch left out, as
#     any epoch leaves), and samples_seen agrees.
# usage: equivalence_test.sh PERENNIAL SOURCE_DIR MPIEXEC
set -euo pipefail
bin=$1 src=$2 mpiexec=${3:-mpiexec}
source "$src/tests/cli/lib.sh"
scratch work

"$bin" data import-fashion-mnist --out "$work/fm" --shard-size 2000 >/dev/null
mkdir -p "$work/train" "$work/test"
for i in 0 1 2; do ln -s "$work/fm/train/shard-0000$i.h5" "$work/train/"; done
ln -s "$work/fm/test/shard-00000.h5" "$work/test/"
rows=6000

common=(--config "$src/configs/fashion-mlp.cfg" --data.train "$work/train" --data.test "$work/test"
        --model.hidden 64 --train.epochs 2 --lr.warmup_steps 10 --train.log_every 10 --log.progress none
        --optim.momentum 0.9 --optim.weight_decay 0.0001)
run() {  # run NP NAME [extra args]: expects success; SGD (lr 0.05) unless the args name an optimizer
  local np=$1 name=$2 optim=(--optim.name sgd --optim.lr 0.05); shift 2
  [[ " $* " == *" --optim.name "* ]] && optim=()
  "$mpiexec" -np "$np" --oversubscribe "$bin" train "${common[@]}" "${optim[@]}" --run-dir "$work/$name" "$@" \
    >>"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; fail "training $name exited non-zero"; }
}
sha() { json "$work/$1/result.json" param_sha256; }

# 1. Gradient accumulation.
run 1 accum1x2 --train.batch_size 50 --train.grad_accum 2
run 2 accum2x1 --train.batch_size 50 --train.grad_accum 1
[ "$(sha accum1x2)" = "$(sha accum2x1)" ] ||
  fail "1 rank x 2 micro-batches of 50 and 2 ranks x 1 batch of 50 ended with different weights"
[ "$(json "$work/accum1x2/result.json" steps)" = 120 ] || fail "2 epochs of 6000 rows in global batches of 100: 120 steps"
run 1 accum1big --train.batch_size 100
run 2 accum2x2 --train.batch_size 25 --train.grad_accum 2
run 2 accum2big --train.batch_size 50
# The same samples per step with the gradient averaged the same way: only the order of the sums
# in a batch of 100 differs from two of 50. After 120 steps the weights (|w| up to about 0.3)
# differ by a few 1e-7; the tolerance is 1e-5 absolute, per element, and 1e-5 in the test loss.
close() {  # close A B: A's and B's weights and test loss agree within the tolerance
  "$bin" ckpt diff "$work/$1/model.h5" "$work/$2/model.h5" --json >"$work/diff-$1-$2.json" || true
  $py - "$work/diff-$1-$2.json" "$work/$1/result.json" "$work/$2/result.json" <<'PY' || fail "$1 and $2 differ beyond the tolerance"
import json, sys
d = json.load(open(sys.argv[1]))
assert {a["attribute"] for a in d["attributes"]} <= {"config", "param_sha256"}, d["attributes"]
worst = max((t.get("max_abs_diff", float("inf")) for t in d["tensors"]), default=0.0)
la, lb = (json.load(open(p))["test_loss"] for p in sys.argv[2:4])
print(f"{sys.argv[1]}: max |dw| {worst:.3g}, test loss {la:.6f} vs {lb:.6f}")
assert worst <= 1e-5, f"weights differ by {worst}"
assert abs(la - lb) <= 1e-5, f"test losses {la} and {lb}"
PY
}
close accum1x2 accum1big
close accum2x2 accum2big

# 2. Exact resume for every optimizer the trainer offers.
optimizers=$("$bin" train --help | sed -n 's/^ *--optim.name arg (=[a-z]*) *//p' | grep -oE '^[a-z]+( \| [a-z]+)*' |
  tr -d ' ' | tr '|' ' ')
[ -n "$optimizers" ] && [[ " $optimizers " == *" adam "* ]] || fail "no optimizer list in train --help: '$optimizers'"
for opt in $optimizers; do
  lr=0.05; [ "$opt" = adam ] && lr=0.002
  for np in 1 2; do
    batch=$((100 / np))
    args=(--optim.name "$opt" --optim.lr "$lr" --train.batch_size "$batch" --checkpoint.every_steps 20
          --checkpoint.keep_last 10)
    run "$np" "ref-$opt$np" "${args[@]}"
    run "$np" "stop-$opt$np" "${args[@]}" --train.max_steps 70
    rm "$work/stop-$opt$np/checkpoints/ckpt-0000000070.json"  # uncommitted: resumed at step 60
    run "$np" "stop-$opt$np" "${args[@]}" --resume auto
    grep -q "resuming from .*ckpt-0000000060.h5" "$work/stop-$opt$np.log" || fail "$opt at $np ranks: not resumed at step 60"
    [ "$(sha "stop-$opt$np")" = "$(sha "ref-$opt$np")" ] ||
      fail "$opt at $np ranks: stopped at step 70 and resumed from step 60, the weights differ from an uninterrupted run's"
  done
done

# 3. Resume at another world size: which samples each epoch trained (the sample log).
# check_samples RUN NP_BEFORE: every epoch of RUN trained each sample at most once, the first one
# exactly a prefix of the reference's (1 rank: the permutation in order) missing less than a
# global batch of the resumed world, the second one whole; samples_seen counts them.
check_samples() {
  $py - "$work/$1" "$work/order" "$rows" "$2" <<'PY' || fail "$1: sample accounting"
import glob, json, sys
run, order, rows, resumed_global = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def epochs(path):
    out = {}
    for f in sorted(glob.glob(path + "/samples/rank-*.jsonl")):
        for line in open(f):
            r = json.loads(line)
            out.setdefault(r["epoch"], []).extend(r["indices"])
    return out
got = epochs(run)
ref = {e: v for e, v in epochs(order).items()}  # one rank: each epoch's permutation in order
assert sorted(got) == [0, 1], sorted(got)
for e, idx in got.items():
    assert len(idx) == len(set(idx)), f"epoch {e}: {len(idx) - len(set(idx))} samples trained twice"
    perm = ref[e]
    assert sorted(perm) == list(range(rows)), "the reference does not cover the data"
    # the samples trained are the first len(idx) of the epoch's permutation: none skipped
    assert set(idx) == set(perm[:len(idx)]), f"epoch {e}: not a prefix of the permutation"
    assert rows - len(idx) < resumed_global, f"epoch {e}: {rows - len(idx)} samples left out"
res = json.load(open(run + "/result.json"))
total = sum(len(v) for v in got.values())
assert res["samples_seen"] == total, (res["samples_seen"], total)
assert res["epochs"] == 2, res["epochs"]
print(f"{run}: epoch sizes {[len(got[e]) for e in sorted(got)]}, samples_seen {total}")
PY
}
run 1 order --train.batch_size 100 --log-samples
# 1 -> 2 ranks, the same batch per rank (global 50 -> 100): step 100 of 120 in the first epoch at
# 1 rank is past the 60 steps of a 2-rank epoch; the rest of both epochs must still be trained.
run 1 up2 --train.batch_size 50 --train.max_steps 100 --log-samples
run 2 up2 --train.batch_size 50 --resume auto --log-samples
grep -q "re-sharded" "$work/up2.log" || fail "no warning when resuming at another world size"
check_samples up2 100
# 2 -> 3 ranks (global 100 -> 150): the re-sharded rest of the first epoch leaves 50 samples out.
run 2 up3 --train.batch_size 50 --train.max_steps 25 --log-samples
run 3 up3 --train.batch_size 50 --resume auto --log-samples
check_samples up3 150
# 2 -> 1 rank (global 100 -> 50); killed records after the checkpoint are dropped from the log.
run 2 down1 --train.batch_size 50 --train.max_steps 30 --checkpoint.every_steps 20 --log-samples
rm "$work/down1/checkpoints/ckpt-0000000030.json"  # resumed at step 20: steps 21-30 trained again
run 1 down1 --train.batch_size 50 --resume auto --log-samples
check_samples down1 50
echo "PASS: gradient accumulation, exact resume for: $optimizers, sample accounting across world sizes"
