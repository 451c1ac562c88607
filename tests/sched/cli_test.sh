#!/usr/bin/env bash
# The scheduler end to end with real processes: the daemon (`perennial sched run`) ingests
# shards as they arrive, quarantines bad ones (one per rule) while it keeps running, starts a
# 2-rank training run through the local executor when enough new data arrived, records its
# result and checkpoint, passes it through the validation gate into the registry (running the
# on_promote hook), and cancels a run on request.
# usage: cli_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
scratch  # the daemon runs with --root "$t/root": scratch's cleanup kills it too
daemon=

sched_fixture "$bin" "$t" --epochs 40 --lr 0.05 --progress lines --new-data-rows 3000
cat >>"$t/sched.cfg" <<CFG
[dataset]
max_shard_bytes = 3500000
[train]
max_attempts = 1
[executor]
cancel_grace_s = 20
[sched]
tick_s = 0.3
[gate]
min_accuracy = 0.5
[registry]
model = fashion
on_promote = /usr/bin/env
CFG
root=$t/root
"$bin" sched run --root "$root" --config "$t/sched.cfg" >"$t/daemon.log" 2>&1 &
daemon=$!

# wait_for SECONDS PYTHON_CONDITION: polls `sched runs --json` (as R) until the condition holds.
# The bounds are several times what an idle 2-core machine needs (the whole test: about 40 s), so
# a loaded machine does not fail it; together they stay under CTest's 600 s.
wait_for() {
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt "$deadline" ]; do
    if "$bin" sched runs --root "$root" --json 2>/dev/null |
      $py -c "import json,sys; R=json.load(sys.stdin); sys.exit(0 if ($2) else 1)"; then
      return 0
    fi
    kill -0 "$daemon" 2>/dev/null || { cat "$t/daemon.log"; fail "the daemon died"; }
    sleep 0.3
  done
  "$bin" sched runs --root "$root" >&2 || true
  cat "$t/daemon.log" >&2
  fail "timed out waiting for: $2"
}

# Arrival convention: write under a .tmp name, then rename.
arrive() {
  cp "$1" "$root/incoming/$2.tmp"
  mv "$root/incoming/$2.tmp" "$root/incoming/$2"
}
while [ ! -d "$root/incoming" ]; do sleep 0.1; done

# Bad shards first: every one is quarantined with its rule, the daemon keeps going.
$py "$src/tests/sched/make_shards.py" "$t/fm/train/shard-00000.h5" "$t/bad"
arrive "$t/fm/train/shard-00000.h5" shard-00000.h5
sleep 1
for f in "$t"/bad/*.h5; do arrive "$f" "$(basename "$f")"; done
# A file still being written is never picked up.
echo partial >"$root/incoming/shard-99.h5.tmp"
arrive "$t/fm/train/shard-00001.h5" shard-00001.h5
arrive "$t/fm/train/shard-00002.h5" shard-00002.h5

wait_for 120 "len(R) == 1 and R[0]['state'] == 'promoted'"
run=$("$bin" sched runs --root "$root" --json | $py -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
kill -0 "$daemon" || fail "the daemon stopped"

nbad=$(ls "$t"/bad/*.h5 | wc -l)
"$bin" sched shards --root "$root" --quarantine --json --limit 100 >"$t/q.json"
$py - "$t/q.json" "$nbad" <<'PY' || fail "quarantine records"
import json, sys
q = json.load(open(sys.argv[1]))
assert len(q) == int(sys.argv[2]), f"{len(q)} quarantined, expected {sys.argv[2]}"
for r in q:
    want = r["source"].split("--")[0]
    assert r["rule"] == want, f"{r['source']}: rule {r['rule']}, expected {want} ({r['reason']})"
    assert r["source"] in r["reason"] or "incoming/" in r["reason"], r
print("quarantined:", ", ".join(sorted(r["rule"] for r in q)))
PY
[ "$(ls "$root"/quarantine/*.reason.json | wc -l)" = "$nbad" ] || fail "one reason file per quarantined file"
[ "$("$bin" sched shards --root "$root" --json | $py -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 3 ] ||
  fail "the three valid shards are ingested"
[ "$(ls "$root/data" | wc -l)" = 3 ] || fail "data/ holds the three shards"
[ -e "$root/incoming/shard-99.h5.tmp" ] || fail "a .tmp file was touched"
[ "$(ls "$root/incoming" | wc -l)" = 1 ] || fail "incoming/ keeps only the .tmp file"

# The run's record: result, checkpoint, snapshot, log.
"$bin" sched runs --root "$root" --json >"$t/runs.json"
$py - "$t/runs.json" "$root/runs/$run" <<'PY' || fail "run record"
import json, os, sys
r = json.load(open(sys.argv[1]))[0]
d = sys.argv[2]
assert r["trigger"] == "new_data" and r["attempt"] == 1 and r["exit_code"] == 0, r
res = json.load(open(os.path.join(d, "train/result.json")))
assert r["result"]["param_sha256"] == res["param_sha256"] and res["world_size"] == 2, (r, res)
assert r["result"]["test_accuracy"] > 0.5, r["result"]
snap = json.load(open(os.path.join(d, "snapshot.json")))
assert snap["id"] == r["snapshot"] and snap["rows"] == 3000 and snap["shards"] == 3, snap
assert any(f.endswith(".json") for f in os.listdir(os.path.join(d, "train/checkpoints"))), "a committed checkpoint"
PY
"$bin" ckpt verify "$(ls "$root/runs/$run/train/checkpoints/"*.h5 | tail -1)" >/dev/null || fail "checkpoint verifies"
"$bin" sched status --root "$root" | grep "champion:   $run" >/dev/null || fail "status names the champion"
# The gate's verdict, the registry version and its lineage, the hook's environment.
$py - "$root/runs/$run/verdict.json" <<'PY' || fail "verdict"
import json, sys
v = json.load(open(sys.argv[1]))
assert v["decision"] == "pass" and v["champion"] is None, v
assert [c["name"] for c in v["checks"]] == ["integrity", "sanity", "threshold.accuracy"], v["checks"]
PY
"$bin" registry list --root "$root" | grep "fashion  v1 .*\[champion\]" >/dev/null || fail "registry list shows v1 as champion"
# Registry versions say which holdout their accuracy comes from (its shards' snapshot id and rows),
# and `registry list --holdout DIR` measures every version again on one holdout.
holdout_rows=$("$bin" data info --json "$t/holdout" | $py -c 'import json,sys; print(json.load(sys.stdin)["rows"])')
holdout_id=$($py - "$root/runs/$run/verdict.json" "$holdout_rows" <<'PY'
import json, re, sys
v = json.load(open(sys.argv[1]))
assert re.fullmatch("[0-9a-f]{64}", v["holdout_id"]) and v["holdout_rows"] == int(sys.argv[2]), v
print(v["holdout_id"])
PY
) || fail "the verdict records the holdout's identity"
"$bin" registry list --root "$root" | grep -F "fashion  v1  accuracy" | grep -F "on holdout ${holdout_id:0:12} ($holdout_rows rows)" >/dev/null ||
  { "$bin" registry list --root "$root"; fail "registry list does not name the holdout of v1"; }
"$bin" registry list --root "$root" --holdout "$t/holdout" --json >"$t/remeasured.json" 2>"$t/remeasured.log" ||
  { cat "$t/remeasured.log"; fail "registry list --holdout"; }
$py - "$t/remeasured.json" "$root/runs/$run/verdict.json" <<'PY' || fail "registry list --holdout measures each version again"
import json, sys
versions = json.load(open(sys.argv[1]))[0]["versions"]
v = json.load(open(sys.argv[2]))
again = versions[0]["remeasured"]
assert versions[0]["metrics"]["holdout_id"] == v["holdout_id"] == again["holdout_id"], (versions[0], v)
# The same model on the same holdout: the same number of rows right.
assert abs(again["accuracy"] - v["candidate"]["accuracy"]) < 1e-12, (again, v["candidate"])
PY
# A measurement that runs past --timeout-s is that version's error, named, not the listing's.
"$bin" registry list --root "$root" --holdout "$t/holdout" --timeout-s 0.001 --json >"$t/timed-out.json" 2>"$t/timed-out.log" ||
  { cat "$t/timed-out.log"; fail "registry list --holdout --timeout-s"; }
$py -c 'import json,sys; e=json.load(open(sys.argv[1]))[0]["versions"][0]["remeasured"]; assert "ran past --timeout-s" in e["error"] and "accuracy" not in e, e' \
  "$t/timed-out.json" || fail "a re-measurement past --timeout-s is not reported as such"
for bad in "--timeout-s 0" "--timeout-s nan"; do
  # shellcheck disable=SC2086  # BAD is two words
  "$bin" registry list --root "$root" --holdout "$t/holdout" $bad >"$t/refused.log" 2>&1 && fail "registry list accepted $bad"
  grep -qF -- "--timeout-s" "$t/refused.log" || { cat "$t/refused.log"; fail "the refusal of $bad does not name --timeout-s"; }
done
"$bin" registry list --root "$root" --timeout-s 5 >"$t/refused.log" 2>&1 && fail "registry list accepted --timeout-s without --holdout"
grep -qF -- "--timeout-s goes with \`registry list --holdout DIR\` only" "$t/refused.log" || { cat "$t/refused.log"; fail "the refusal of --timeout-s"; }
"$bin" registry show --root "$root" fashion:v1 --holdout "$t/holdout" >"$t/refused.log" 2>&1 &&
  fail "registry show accepted --holdout"
grep -qF -- "--holdout and --device go with \`registry list\` only" "$t/refused.log" || { cat "$t/refused.log"; fail "the refusal of --holdout"; }
"$bin" registry verify --root "$root" fashion:v1 >/dev/null || fail "registry verify"
# The hand-off: the exported version has the MLP as TorchScript too, which PyTorch loads alone
# and which reproduces the trainer's logits.
"$bin" registry export --root "$root" fashion:v1 --out "$t/export" >/dev/null || fail "registry export"
[ -s "$t/export/model.pt" ] || fail "registry export gave no model.pt for the built-in MLP"
"$bin" eval --model "$t/export/model.h5" --data "$t/holdout" --logits 32 --json "$t/export-logits.json" >/dev/null 2>&1 ||
  fail "eval --logits of the exported model"
$py "$src/tests/python/check_torchscript_export.py" "$t/export/model.pt" "$t/export/model.h5" "$t/holdout" \
  "$t/export-logits.json" || fail "the exported model.pt does not reproduce the trainer's logits"
"$bin" registry show --root "$root" fashion >"$t/show.json"
$py - "$t/show.json" "$run" <<'PY' || fail "lineage"
import json, sys
v = json.load(open(sys.argv[1]))
l = v["lineage"]
assert v["version"] == "v1" and v["aliases"] == ["champion"], v
assert l["run_id"] == sys.argv[2] and len(l["shards"]) == 3 and l["world_size"] == 2 and l["parent_version"] is None, l
for k in ("data_snapshot", "config_sha256", "code_version", "checkpoint_sha256", "param_sha256", "config"):
    assert l[k], k
PY
grep -q "PERENNIAL_VERSION=v1" "$root/runs/$run/on_promote.log" || fail "on_promote got the version in its environment"
grep -q "PERENNIAL_WEIGHTS=$root/registry/fashion/versions/v1/model.h5" "$root/runs/$run/on_promote.log" ||
  fail "on_promote got the weights' path"
"$bin" sched events --root "$root" --kind trigger --json | grep '"new_rows": 3000' >/dev/null || fail "the firing is an event"

# Cancel: an on-demand run is started, then cancelled while it trains.
"$bin" sched trigger --root "$root" --reason "cancel test" >/dev/null
wait_for 120 "len(R) == 2 and R[0]['state'] == 'running'"
run2=$("$bin" sched runs --root "$root" --json | $py -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
for _ in $(seq 100); do grep -q "step " "$root/runs/$run2/attempt-1/log" 2>/dev/null && break; sleep 0.2; done
"$bin" sched cancel --root "$root" "$run2" >/dev/null
wait_for 120 "R[0]['state'] == 'cancelled'"
"$bin" sched runs --root "$root" --json | $py -c "
import json,sys; r=json.load(sys.stdin)[0]; assert r['attempt'] == 1 and r['trigger'] == 'on_demand', r" ||
  fail "a cancelled run is not retried"

# Another run on the same data trains the same model: it passes the gate and becomes v2; a
# rollback makes v1 the champion again.
"$bin" sched trigger --root "$root" --reason "second model" >/dev/null
wait_for 180 "len(R) == 3 and R[0]['state'] == 'promoted'"
"$bin" registry list --root "$root" | grep "fashion  v2 .*\[champion\]" >/dev/null || fail "v2 is the champion"
"$bin" registry rollback --root "$root" fashion --reason test >/dev/null
"$bin" registry show --root "$root" fashion:champion >"$t/champion.json"
[ "$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$t/champion.json")" = v1 ] ||
  fail "rollback restored v1"
[ "$(tail -1 "$root/registry/fashion/history.jsonl" | $py -c 'import json,sys; print(json.load(sys.stdin)["action"])')" = rollback ] ||
  fail "the rollback is in the history"

# SIGTERM stops the daemon cleanly.
kill -TERM "$daemon"
wait "$daemon" || fail "the daemon's exit status on SIGTERM"
daemon=
grep -q "scheduler stopped" "$t/daemon.log" || fail "the daemon says it stopped"
echo "PASS: scheduler end to end ($run trained, validated and promoted, $nbad bad shards quarantined, $run2 cancelled)"
