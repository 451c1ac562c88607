#!/usr/bin/env bash
# Arrival-to-submission latency of the scheduler daemon (`perennial sched run`): the time from
# the rename that publishes a shard in ROOT/incoming/ to the catalog's 'submitted' event of the
# run that shard triggers. See BENCHMARKS.md ("Scheduler").
#
# usage: benchmarks/scheduler/latency.sh [BUILD_DIR] [WORK_DIR]
#   BUILD_DIR  default build (uses BUILD_DIR/bin/perennial)
#   WORK_DIR   default a new directory under ${TMPDIR:-/tmp}; removed at the end unless KEEP=1
# environment:
#   TRIALS=10       measured trials (one warm-up trial runs first)
#   TICK_S=30       sched.tick_s: the daemon's periodic pass; large, so only inotify wakes it
#   STUB_SLEEP=600  how long each stub "training run" sleeps (longer than the benchmark, so no
#                   run ends, and no run transition lands in a measured tick)
#   POLL_DELAY=2    seconds after the rename before the first catalog poll, so the polling
#                   CLI (which loads LibTorch) does not compete with the daemon for the CPU
#   FM_DIR=DIR      an existing `perennial data import-fashion-mnist --shard-size 1000` output
#   OUT=FILE        also write the JSON result there
#
# The executor's launcher (executor.mpirun) is a stub that sleeps: the scheduler is measured,
# not training. Triggers: new_data at 1000 rows (one shard), cool-down 0, max_concurrent 1000,
# train.max_attempts 1. Every trial drops a distinct 1000-row Fashion-MNIST training shard
# (written as *.tmp in incoming/, fsynced, renamed after POLL_DELAY/4 s so the .tmp's own
# inotify wake-up has passed) and records the rename's wall-clock time in ns; the latency is
# the run's 'submitted' event time ('at', the scheduler's wall clock) minus that.
set -euo pipefail

BUILD_DIR=${1:-build}
PERENNIAL=$(realpath "$BUILD_DIR/bin/perennial")
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${2:-$(mktemp -d "${TMPDIR:-/tmp}/perennial-sched-latency.XXXXXX")}
mkdir -p "$WORK"
WORK=$(realpath "$WORK")
TRIALS=${TRIALS:-10}
TICK_S=${TICK_S:-30}
STUB_SLEEP=${STUB_SLEEP:-600}
POLL_DELAY=${POLL_DELAY:-2}
ROOT=$WORK/root
CFG=$WORK/sched.cfg
DAEMON=

cleanup() {
  set +e
  if [[ -n "$DAEMON" ]] && kill -0 "$DAEMON" 2>/dev/null; then
    kill -TERM "$DAEMON"
    wait "$DAEMON" 2>/dev/null
  fi
  # The stubs (each recorded its pid) and their supervisors (`perennial sched exec`, pid files).
  if [[ -f "$WORK/stub.pids" ]]; then
    while read -r pid; do kill -TERM "$pid" 2>/dev/null; done <"$WORK/stub.pids"
  fi
  for f in "$ROOT"/runs/*/attempt-*/pid; do
    [[ -f "$f" ]] || continue
    pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$f" 2>/dev/null)
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null
  done
  sleep 0.5
  if [[ "${KEEP:-0}" != 1 ]]; then
    rm -rf "$WORK"
  else
    echo "kept $WORK"
  fi
}
trap cleanup EXIT

# Fashion-MNIST in 1000-row shards.
if [[ -n "${FM_DIR:-}" ]]; then
  DATA=$(realpath "$FM_DIR")
else
  DATA=$WORK/fm
  "$PERENNIAL" data import-fashion-mnist --out "$DATA" --shard-size 1000 >/dev/null
fi
mapfile -t SHARDS < <(ls "$DATA"/train/*.h5)
if (( ${#SHARDS[@]} < TRIALS + 1 )); then
  echo "latency.sh: need $((TRIALS + 1)) training shards in $DATA/train, found ${#SHARDS[@]}" >&2
  exit 1
fi

# The stub launcher: the executor runs `STUB -np N [mpirun_args] perennial train ...`.
cat >"$WORK/stub-mpirun" <<EOF
#!/bin/sh
echo \$\$ >>"$WORK/stub.pids"
exec sleep $STUB_SLEEP
EOF
chmod +x "$WORK/stub-mpirun"

cat >"$CFG" <<EOF
[ingest]
rescan_s = 3600
settle_s = 0
[train]
config = $SRC/configs/fashion-mlp.cfg
holdout = $DATA/test
ranks = 1
max_attempts = 1
[triggers]
on_demand = true
new_data_rows = 1000
cooldown_s = 0
max_concurrent = 1000
[executor]
kind = local
mpirun = $WORK/stub-mpirun
[sched]
tick_s = $TICK_S
EOF

mkdir -p "$ROOT"
"$PERENNIAL" sched run --root "$ROOT" --config "$CFG" >"$WORK/daemon.log" 2>&1 &
DAEMON=$!

# Idle: the daemon holds the root's lock and has finished its first pass.
for _ in $(seq 1 300); do
  if [[ -f "$ROOT/catalog.db" ]] &&
     "$PERENNIAL" sched status --root "$ROOT" --json 2>/dev/null |
       python3 -c 'import json,sys; j=json.load(sys.stdin); sys.exit(0 if j["daemon_running"] and j["last_tick_at"] else 1)'; then
    break
  fi
  kill -0 "$DAEMON" 2>/dev/null || { echo "latency.sh: the daemon exited:" >&2; cat "$WORK/daemon.log" >&2; exit 1; }
  sleep 0.2
done
sleep 1

run_events() { "$PERENNIAL" sched events --root "$ROOT" --json --kind "$1" --limit "$2"; }

# One trial: publish SHARD as NAME; prints "rename_ns ingest_at submitted_at running_at run_id".
trial() {
  local shard=$1 name=$2
  local known
  known=$(run_events run 100000 | python3 -c 'import json,sys; print(",".join(sorted({e["subject"] for e in json.load(sys.stdin)})))')
  cp "$shard" "$ROOT/incoming/$name.tmp"
  sync "$ROOT/incoming/$name.tmp"
  sleep "$(python3 -c "print($POLL_DELAY / 4)")"
  local renamed
  renamed=$(python3 -c 'import os,sys,time; os.rename(sys.argv[1], sys.argv[2]); print(time.time_ns())' \
              "$ROOT/incoming/$name.tmp" "$ROOT/incoming/$name")
  sleep "$POLL_DELAY"
  local deadline=$((SECONDS + 60)) line=""
  while (( SECONDS < deadline )); do
    line=$( { run_events run 50; echo; echo '@@'; run_events ingest 20; } | python3 -c '
import json, sys
known, name = set(sys.argv[1].split(",")), sys.argv[2]
runs, ingests = sys.stdin.read().split("@@")
sub = run = None
for e in json.loads(runs):
    if e["subject"] in known:
        continue
    st = e["detail"].get("state")
    if st == "submitted":
        sub = e
    if st == "running":
        run = e
ing = [e for e in json.loads(ingests) if e["detail"].get("source") == name]
if sub and run and ing:
    print(repr(ing[0]["at"]), repr(sub["at"]), repr(run["at"]), sub["subject"])
' "$known" "$name")
    [[ -n "$line" ]] && break
    sleep 0.5
  done
  if [[ -z "$line" ]]; then
    echo "latency.sh: no run was submitted for $name within 60 s; daemon log:" >&2
    tail -20 "$WORK/daemon.log" >&2
    exit 1
  fi
  echo "$renamed $line"
}

trial "${SHARDS[0]}" "warmup.h5" >"$WORK/warmup.txt"
sleep 1
: >"$WORK/trials.txt"
for k in $(seq 1 "$TRIALS"); do
  trial "${SHARDS[$k]}" "trial-$k.h5" | tee -a "$WORK/trials.txt" >/dev/null
  sleep 1
done

python3 - "$WORK/trials.txt" "$WORK/warmup.txt" "${OUT:-}" "$TICK_S" "$(df -PT "$ROOT" | awk 'NR==2 {print $2" ("$1" at "$7")"}')" <<'EOF'
import json, statistics, sys
def load(path):
    rows = []
    for line in open(path):
        ns, ing, sub, run, rid = line.split()
        t = int(ns) / 1e9
        rows.append({"run": rid, "ingested_ms": (float(ing) - t) * 1e3, "submitted_ms": (float(sub) - t) * 1e3,
                     "running_ms": (float(run) - t) * 1e3})
    return rows
trials, warm = load(sys.argv[1]), load(sys.argv[2])
def summary(key):
    v = sorted(r[key] for r in trials)
    return {"median": statistics.median(v), "max": v[-1], "min": v[0]}
out = {"bench": "sched_latency", "trials": len(trials), "tick_s": float(sys.argv[4]), "filesystem": sys.argv[5],
       "target_ms": 1000.0, "arrival_to_submitted_ms": summary("submitted_ms"),
       "arrival_to_ingested_ms": summary("ingested_ms"), "arrival_to_running_ms": summary("running_ms"),
       "warmup": warm[0], "per_trial": trials}
s = out["arrival_to_submitted_ms"]
print("arrival -> submitted over %d trials: median %.1f ms, max %.1f ms (min %.1f): target 1000 ms %s"
      % (len(trials), s["median"], s["max"], s["min"], "met" if s["max"] <= 1000 else "MISSED"))
print("  arrival -> ingest recorded: median %.1f ms; arrival -> running (launcher spawned): median %.1f ms"
      % (out["arrival_to_ingested_ms"]["median"], out["arrival_to_running_ms"]["median"]))
print("  per trial (ms): " + " ".join("%.1f" % r["submitted_ms"] for r in trials))
print("  warm-up trial (first run of the daemon): %.1f ms" % warm[0]["submitted_ms"])
print("JSON " + json.dumps(out))
if sys.argv[3]:
    json.dump(out, open(sys.argv[3], "w"), indent=2)
EOF
