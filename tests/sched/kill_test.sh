#!/usr/bin/env bash
# SIGKILL the scheduler at each step of ingest and run handling (PERENNIAL_FAULT_AT, NOTE [Fault points] in common/fault.h), restart
# it, let it settle, and check the invariants: every valid shard ingested exactly once, the bad
# one quarantined exactly once, incoming/ empty, exactly one run, started exactly once (one
# attempt, one training in its log), validated and promoted once (one registry version, the
# champion), with the same param_sha256 as an uninterrupted run's.
# usage: kill_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
scratch

sched_fixture "$bin" "$t"
$py "$src/tests/sched/make_shards.py" "$t/fm/train/shard-00000.h5" "$t/bad" >/dev/null

# trial NAME [KILL_AT [killrun]]: one scheduler root through to a finished run; prints its
# param_sha256. With killrun, the run's processes are SIGKILLed too while the scheduler is down:
# the restarted scheduler must find the attempt lost and start a second one.
trial() {
  local root=$t/$1 at=${2:-} killrun=${3:-} killed=0
  mkdir -p "$root/incoming"
  for i in 0 1; do cp "$t/fm/train/shard-0000$i.h5" "$root/incoming/shard-$i.h5"; done
  cp "$t/bad/labels--out-of-range.h5" "$root/incoming/"
  # Ticks with the kill point armed until it is reached (the process dies with SIGKILL: 137).
  if [ -n "$at" ]; then
    for _ in $(seq 300); do
      set +e
      PERENNIAL_FAULT_AT=$at "$bin" sched tick --root "$root" --config "$t/sched.cfg" >>"$root.log" 2>&1
      rc=$?
      set -e
      if [ $rc = 137 ]; then killed=1; break; fi
      [ $rc = 0 ] || fail "$1: tick exited $rc"
      sleep 0.1
    done
    [ $killed = 1 ] || fail "$1: the kill point $at was never reached"
  fi
  if [ -n "$killrun" ]; then
    for _ in $(seq 100); do ls "$root"/runs/*/attempt-1/pid >/dev/null 2>&1 && break; sleep 0.1; done
    pidfile=$(ls "$root"/runs/*/attempt-1/pid)
    read -r sup pgid < <($py -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['pid'], j['child_pgid'])" "$pidfile")
    kill -9 "$sup" 2>/dev/null || true
    kill -9 -- "-$pgid" 2>/dev/null || true
    while kill -0 "$sup" 2>/dev/null || kill -0 -- "-$pgid" 2>/dev/null; do sleep 0.1; done
  fi
  local want_attempts=${killrun:+2}
  # Restarted: tick until the run has ended.
  for _ in $(seq 600); do
    "$bin" sched tick --root "$root" --config "$t/sched.cfg" >>"$root.log" 2>&1 || fail "$1: tick after restart failed"
    state=$("$bin" sched runs --root "$root" --json | $py -c "import json,sys; r=json.load(sys.stdin); print(r[0]['state'] if r else 'none')")
    case $state in promoted|rejected|failed|cancelled) break ;; esac
    sleep 0.1
  done
  $py - "$root" "$1" "${want_attempts:-1}" <<'PY' || { cat "$root.log" >&2; fail "$1: invariants after a kill at ${at:-nowhere}"; }
import json, os, sqlite3, sys
root, name, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = sqlite3.connect(os.path.join(root, "catalog.db"))
shards = db.execute("SELECT source, hash FROM shards ORDER BY seq").fetchall()
assert sorted(s for s, _ in shards) == ["shard-0.h5", "shard-1.h5"], shards
assert sorted(os.listdir(os.path.join(root, "data"))) == sorted(h + ".h5" for _, h in shards), os.listdir(os.path.join(root, "data"))
assert os.listdir(os.path.join(root, "incoming")) == [], os.listdir(os.path.join(root, "incoming"))
q = db.execute("SELECT source, rule FROM quarantine").fetchall()
assert q == [("labels--out-of-range.h5", "labels")], q
files = sorted(os.listdir(os.path.join(root, "quarantine")))
assert len(files) == 2 and files[1].endswith(".reason.json"), files
runs = db.execute("SELECT id, state, attempt FROM runs").fetchall()
assert len(runs) == 1, runs
rid, state, attempt = runs[0]
assert state == "promoted" and attempt == want, runs
vroot = os.path.join(root, "registry", "fashion-mnist", "versions")
assert sorted(os.listdir(vroot)) == ["v1"], os.listdir(vroot)
assert json.load(open(os.path.join(root, "registry", "fashion-mnist", "aliases.json"))) == {"champion": "v1"}
assert json.load(open(os.path.join(vroot, "v1", "lineage.json")))["run_id"] == runs[0][0]
rdir = os.path.join(root, "runs", rid)
attempts = sorted(d for d in os.listdir(rdir) if d.startswith("attempt-"))
assert attempts == ["attempt-%d" % (k + 1) for k in range(want)], attempts
for a in attempts:
    log = open(os.path.join(rdir, a, "log")).read()
    assert log.count(" parameters; ") <= 1, "%s: the trainer started %d times" % (a, log.count(" parameters; "))
if want == 2:
    assert not os.path.exists(os.path.join(rdir, "attempt-1", "exit.json")), "the killed attempt has no exit status"
    lost = db.execute("SELECT COUNT(*) FROM events WHERE kind='run' AND detail LIKE '%lost%'").fetchone()[0]
    assert lost >= 1, "the lost attempt is recorded"
subs = db.execute("SELECT COUNT(*) FROM events WHERE kind='run' AND detail LIKE '%\"state\":\"submitted\"%'").fetchone()[0]
assert subs == want, "%d submissions recorded" % subs
print(json.load(open(os.path.join(rdir, "train", "result.json")))["param_sha256"])
PY
}

reference=$(trial reference)
points="validated linked recorded quarantine-recorded quarantine-moved run-created materialized submitted-recorded spawned attempt-ended attempt-recorded validated-run publish-files-written publish-renamed published promoted"
n=0
for p in $points; do
  got=$(trial "kill-$p" "$p")
  [ "$got" = "$reference" ] || fail "kill at $p: param_sha256 $got differs from the uninterrupted run's $reference"
  "$bin" registry verify --root "$t/kill-$p" fashion-mnist:v1 >/dev/null || fail "kill at $p: the registry version does not verify"
  n=$((n + 1))
done
# The scheduler and the run's processes die together; the restart finds the attempt lost.
got=$(trial kill-run-too spawned killrun)
[ "$got" = "$reference" ] || fail "run killed with the scheduler: param_sha256 $got differs from $reference"
echo "PASS: scheduler killed at $n points, each restart kept every invariant (param_sha256 ${reference:0:16})"
