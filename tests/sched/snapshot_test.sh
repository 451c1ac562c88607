#!/usr/bin/env bash
# The trainer checks what it reads (issue 17, point 8): a scheduler run's config.cfg names its
# snapshot.json (data.snapshot), and `perennial train` compares every shard of the run's data/
# with it (SHA-256 and rows, each rank hashing its share) before training. A run trains on the
# snapshot's data and records one snapshot id, the catalog's, in result.json and the lineage; a
# shard whose bytes changed after the snapshot, a row count or a shard count that differs each
# stop the real 2-rank trainer with exit 1 naming the shard file and both values; a run stopped
# and resumed with the check on ends with the uninterrupted run's weights.
# usage: snapshot_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
scratch

sched_fixture "$bin" "$t"
cat >>"$t/sched.cfg" <<CFG
[gate]
min_accuracy = 0.3
CFG
root=$t/root
"$bin" data add --root "$root" "$t"/fm/train/shard-0000[0-2].h5 >/dev/null
sched_until_promoted "$bin" "$root" "$t/sched.cfg" "$t/sched.log" "the run"
run=$("$bin" sched runs --root "$root" --json | $py -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
rdir=$root/runs/$run

# 1. One snapshot id: the catalog's, the snapshot file's, the trainer's and the lineage's.
"$bin" sched runs --root "$root" --json >"$t/runs.json"
$py - "$t/runs.json" "$rdir" "$root/registry/fashion-mnist/versions/v1/lineage.json" <<'PY' || fail "snapshot ids"
import json, sys
catalog = json.load(open(sys.argv[1]))[0]["snapshot"]
snap = json.load(open(sys.argv[2] + "/snapshot.json"))
result = json.load(open(sys.argv[2] + "/train/result.json"))
lineage = json.load(open(sys.argv[3]))
assert snap["id"] == catalog, (snap["id"], catalog)
assert result["data_snapshot"] == catalog, ("trainer", result["data_snapshot"], "catalog", catalog)
assert lineage["data_snapshot"] == catalog, lineage["data_snapshot"]
assert "trainer_data_snapshot" not in lineage, "the lineage holds a second id for the same data"
print("one snapshot id everywhere:", catalog[:16])
PY
grep -q "^snapshot = $rdir/snapshot.json$" "$rdir/config.cfg" || fail "config.cfg does not name the run's snapshot.json"
grep -q "hashed 3 training shards .* on 2 rank(s).*all match $rdir/snapshot.json" "$rdir"/attempt-1/log ||
  { cat "$rdir"/attempt-1/log; fail "the run's log does not say that its shards were checked, and how long it took"; }
grep -m1 "hashed 3 training shards" "$rdir"/attempt-1/log | sed 's/^.*\] //'

train() {  # RUN_DIR LOG [ARGS...]: the run's own configuration, 2 ranks, as the local executor starts it
  local dir=$1 log=$2
  shift 2
  set +e
  mpirun -np 2 --oversubscribe "$bin" train --config "$rdir/config.cfg" --run-dir "$dir" "$@" >"$log" 2>&1
  rc=$?
  set -e
}
shards=("$rdir"/data/*.h5)
victim=${shards[1]}
expected=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['manifest'][1]['sha256'])" "$rdir/snapshot.json")

# 2. A shard's bytes changed after the snapshot (labels rewritten, rows the same): exit 1, naming
# the file and both hashes, before any step.
cp "$victim" "$t/original.h5"
cp "$victim" "$t/changed.h5"
chmod u+w "$t/changed.h5"
$py - "$t/changed.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    y = f["labels"][()]
    f["labels"][...] = (y + 1) % 10
PY
found=$(sha256sum "$t/changed.h5" | cut -d' ' -f1)
mv "$t/changed.h5" "$victim"
train "$t/changed" "$t/changed.log"
[ "$rc" = 1 ] || { cat "$t/changed.log"; fail "a changed shard: exit $rc, expected 1"; }
grep -qF "$victim (snapshot entry 1" "$t/changed.log" && grep -qF "SHA-256 $found found, $expected expected" "$t/changed.log" ||
  { cat "$t/changed.log"; fail "the error does not name the shard, the found and the expected hash"; }
[ ! -e "$t/changed/result.json" ] && ! grep -q "checkpoint" "$t/changed.log" || fail "it trained on the changed shard"
echo "changed shard refused: $(grep -m1 -o 'the training shards differ.*' "$t/changed.log" | cut -c1-200)..."
cp "$t/original.h5" "$victim"

# 3. Rows that differ from the snapshot's record, and a shard the snapshot does not list.
cp "$rdir/snapshot.json" "$t/snapshot.json"
$py - "$rdir/snapshot.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
s["manifest"][0]["rows"] += 1
json.dump(s, open(sys.argv[1], "w"))
PY
train "$t/rows" "$t/rows.log"
[ "$rc" = 1 ] && grep -qF "${shards[0]} (snapshot entry 0" "$t/rows.log" && grep -q "1000 rows found, 1001 expected" "$t/rows.log" ||
  { cat "$t/rows.log"; fail "rows differing from the snapshot: exit $rc"; }
cp "$t/snapshot.json" "$rdir/snapshot.json"
cp "$t/fm/train/shard-00003.h5" "$rdir/data/999999999-extra.h5"
train "$t/extra" "$t/extra.log"
[ "$rc" = 1 ] && grep -q "4 shards, but the snapshot .* lists 3" "$t/extra.log" ||
  { cat "$t/extra.log"; fail "a shard the snapshot does not list: exit $rc"; }
rm "$rdir/data/999999999-extra.h5"
# A snapshot file that is not there: a configuration error (exit 2, not retried), before hashing.
train "$t/nosnap" "$t/nosnap.log" --data.snapshot="$t/no-such-snapshot.json"
[ "$rc" = 2 ] && grep -q "data.snapshot: $t/no-such-snapshot.json: no such file" "$t/nosnap.log" ||
  { cat "$t/nosnap.log"; fail "a missing snapshot file: exit $rc, expected 2"; }

# 4. Exact resume with the check: stopped after 10 steps, resumed, the same weights as the run.
train "$t/resumed" "$t/resumed-1.log" --train.max_steps=10
[ "$rc" = 0 ] || { cat "$t/resumed-1.log"; fail "the first half exited $rc"; }
train "$t/resumed" "$t/resumed-2.log" --resume auto
[ "$rc" = 0 ] || { cat "$t/resumed-2.log"; fail "the resumed half exited $rc"; }
grep -q "resuming from" "$t/resumed-2.log" && grep -q "all match" "$t/resumed-2.log" || { cat "$t/resumed-2.log"; fail "no checked resume"; }
want=$(json "$rdir/train/result.json" param_sha256)
got=$(json "$t/resumed/result.json" param_sha256)
[ "$got" = "$want" ] || fail "resumed run param_sha256 $got, the scheduler's run $want"
[ "$(json "$t/resumed/result.json" data_snapshot)" = "$(json "$rdir/train/result.json" data_snapshot)" ] || fail "resumed snapshot id"
echo "PASS: the trainer checks its shards against the run's snapshot (one id; changed bytes, rows and shard count refused; exact resume)"
