#!/usr/bin/env bash
# The chaos test of the whole loop with the local executor (RELIABILITY.md). Each trial feeds a
# fresh scheduler root a stream of Fashion-MNIST shards (bad files among them, a labelling bug at
# the end) while `perennial sched run` works, and meanwhile injects faults at random moments:
#   daemon-kill      SIGKILL the scheduler, restart it
#   crash            SIGKILL the scheduler and every process of its runs at once, restart it
#   supervisor-kill  SIGKILL a run's supervisor (`sched exec`); its launcher goes on
#   rank-kill        SIGKILL one training rank
#   ckpt-kill        SIGKILL the trainer while it writes a checkpoint or its final weights
#   fsize-trainer    lower RLIMIT_FSIZE of a training rank 0 (its next larger write fails: EFBIG)
#   fsize-daemon     lower RLIMIT_FSIZE of the scheduler (and what it starts) for a few seconds
#   enospc           fill the root's file system for a few seconds (a tmpfs of its own, in a
#                    private mount namespace; skipped where the machine does not allow mounts)
# and, as a hostile producer would (SECURITY.md), in every trial:
#   producer-name    a valid shard and a bad file arrive under names of control characters,
#                    escape sequences and invalid UTF-8, 240-250 bytes long
#   producer-swap    a valid shard is exchanged with a bad file (renameat2 RENAME_EXCHANGE) the
#                    moment the scheduler opens it (inotify), and comes back under a second name
#   producer-fifo    a FIFO in incoming/
#   producer-symlink a symbolic link to /dev/zero in incoming/
# then lets the scheduler settle and checks (tests/chaos/chaos.py check): every valid shard
# ingested exactly once and every bad file quarantined once (a swapped shard once under one of its
# two names, the file swapped in quarantined; a FIFO and a link quarantined unread), the stored
# shards the validated bytes, read-only, every run ended (a failed one with
# its reason), every committed checkpoint and weights file verifies, every retried run that
# trained ended with the weights of an uninterrupted run of its configuration, the registry
# verifies and agrees with the catalog, and no rejected run was ever the champion. The scheduler
# must also never die of a fault that was not aimed at it.
#
# usage: chaos_test.sh PERENNIAL SOURCE_DIR [TRIALS] [SEED]
#        chaos_test.sh PERENNIAL SOURCE_DIR --seeds FILE     one trial per seed listed in FILE
#   Trial k (1-based) uses the seed SEED+k-1: `chaos_test.sh PERENNIAL SOURCE_DIR 1 SEED+k-1`
#   plays that trial's plan (the same shards, faults and moments; the processes' timing varies).
#   A seed that ever fails goes into tests/chaos/regression-seeds.txt, which CI always runs
#   (`sched.chaos.regressions`) beside two trials of new random seeds (`sched.chaos`).
#   Each trial is bounded: it fails, never hangs, once it has run PERENNIAL_CHAOS_TRIAL_S
#   seconds (default 300: the faults, settling until 200 s at most, the checks in the rest), so
#   the CTest timeouts (tests/CMakeLists.txt) hold whatever the seed.
#   env: PERENNIAL_CHAOS_SUMMARY=FILE  append each trial's summary (JSON lines) to FILE
#        PERENNIAL_CHAOS_KEEP=1        keep the work directory
set -euo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
seeds=()
if [ "${3:-}" = --seeds ]; then
  seeds_file=$(realpath "$4")
  while read -r s _; do seeds+=("$s"); done < <(grep -v '^[[:space:]]*\(#\|$\)' "$seeds_file")
  [ ${#seeds[@]} -gt 0 ] || { echo "chaos: $seeds_file lists no seed" >&2; exit 2; }
  trials=${#seeds[@]}
  seed=${seeds[0]}
  set -- "$1" "$2" --seeds "$seeds_file"
else
  trials=${3:-2}
  seed=${4:-$(( ($(date +%s) ^ $$) % 1000000 ))}
  set -- "$1" "$2" "$trials" "$seed"
fi
trial_limit=${PERENNIAL_CHAOS_TRIAL_S:-300}
check_limit=$((trial_limit / 3))
. "$src/tests/cli/lib.sh"
chaos() { $py "$src/tests/chaos/chaos.py" "$@"; }
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

# A private mount namespace, where the trials may mount small file systems that vanish with it.
if [ -z "${PERENNIAL_CHAOS_NS:-}" ] && unshare --mount --propagation private true 2>/dev/null; then
  exec env PERENNIAL_CHAOS_NS=1 unshare --mount --propagation private bash "$0" "$@"
fi

t=$(mktemp -d)
daemon=
feeder=
cleanup() {
  [ -z "$feeder" ] || kill "$feeder" 2>/dev/null || true
  pkill -9 -f "$t/" 2>/dev/null || true
  for m in $(awk -v t="$t/" 'index($2, t) == 1 {print $2}' /proc/mounts); do umount -l "$m" 2>/dev/null || true; done
  if [ "${PERENNIAL_CHAOS_KEEP:-}" = 1 ]; then echo "chaos: kept $t" >&2; else rm -rf "$t"; fi
}
trap cleanup EXIT
if [ ${#seeds[@]} -gt 0 ]; then
  echo "chaos: the regression seeds ${seeds[*]} (each replays with: $0 PERENNIAL SOURCE_DIR 1 SEED)"
else
  echo "chaos: seed $seed, $trials trial(s) (trial k replays with: $0 PERENNIAL SOURCE_DIR 1 \$(($seed + k - 1)))"
fi
start_all=$SECONDS

"$bin" data import-fashion-mnist --out "$t/fm" --shard-size 1000 >/dev/null
mkdir -p "$t/holdout"
cp "$t/fm/test/shard-00000.h5" "$t/fm/test/shard-00001.h5" "$t/holdout/"
# 6 clean shards of 1000 rows, then 2 with a labelling bug (dresses labelled as shirts).
$py "$src/scripts/demo_stream.py" "$t/fm/train" "$t/stream" --rows 1000 --per-phase 4 2 0 2 >/dev/null
$py "$src/tests/sched/make_shards.py" "$t/stream/01-clean.h5" "$t/bad" >/dev/null

mounts=0
mkdir -p "$t/probe"
if mount -t tmpfs -o size=1m tmpfs "$t/probe" 2>/dev/null; then
  umount "$t/probe"
  mounts=1
else
  echo "chaos: cannot mount a tmpfs here: no enospc faults (RLIMIT_FSIZE faults only)"
fi

# Milliseconds since the trial started.
elapsed() { local us=${EPOCHREALTIME/./}; echo $(((us - trial_start) / 1000)); }
note() { printf '%6.1f %s\n' "$(elapsed)e-3" "$*" >>"$faults"; }

alive() { [ -n "$1" ] && [ -e "/proc/$1" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
daemon_alive() { alive "$daemon"; }
# idle: every file has arrived and the scheduler has nothing left to do, so no run will come.
idle() { ! alive "$feeder" && [ "$(chaos settled "$bin" "$root" "$dir/delivered.txt")" = yes ]; }
start_daemon() {
  # Where this daemon's log starts, to tell a refused start from a death.
  daemon_log=$(stat -c %s "$dir/daemon.log" 2>/dev/null || echo 0)
  # Logs through a pipe: a file-size limit on the daemon must not cut its log.
  "$bin" sched run --root "$root" --config "$dir/sched.cfg" > >(cat >>"$dir/daemon.log") 2>&1 &
  daemon=$!
}
# kill_daemon SIG: stops the daemon and reaps it.
kill_daemon() {
  kill "-$1" "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  daemon=
}
# The scheduler's supervisor (systemd, a Slurm job) restarts it. A death we did not cause, once
# it was running, fails the test; a start it refused with an error (it could not open its
# catalog: the disk was full, or a file-size limit hit while it recovered the catalog) is counted.
watchdog() {
  if [ -n "$daemon" ] && ! daemon_alive; then
    local rc=0 log
    wait "$daemon" 2>/dev/null || rc=$?
    sleep 0.1  # the log's pipe
    log=$(tail -c +$((daemon_log + 1)) "$dir/daemon.log")
    if grep -q "scheduler running on" <<<"$log"; then
      note "UNEXPECTED the scheduler died on its own (exit $rc); restarted"
      unexpected=$((unexpected + 1))
    else
      note "start-refused: the scheduler did not start (exit $rc: $(grep -m1 'error' <<<"$log" | cut -c1-200)); restarted"
    fi
    daemon=
  fi
  [ -n "$daemon" ] || start_daemon
}
# pause MS: sleeps MS milliseconds, keeping the scheduler up.
pause() {
  local until=$(($(elapsed) + $1))
  while [ "$(elapsed)" -lt $until ]; do
    watchdog
    sleep 0.1
  done
}
# target ROLE [RANK]: waits (up to 20 s, less once the scheduler is idle) for a process of ROLE
# to exist; sets p to its pid, or why to why there is none. (Not in a subshell: the watchdog may
# start the scheduler, and must know it.)
target() {
  local i
  for i in $(seq 100); do
    watchdog
    p=$(chaos pids "$root" "$@" | head -1)
    [ -n "$p" ] && return 0
    if [ $((i % 10)) = 0 ] && idle; then
      why="(the scheduler is idle and every file has arrived)"
      return 1
    fi
    sleep 0.2
  done
  why="in 20 s"
  return 1
}
runof() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -o 'runs/r[0-9]*' | head -1 | cut -d/ -f2; }
# on_process KIND DELAY_MS ACTION WHO ROLE [RANK] -- COMMAND...: waits (up to 20 s) for a process
# of ROLE, DELAY_MS more, then runs COMMAND with its pid as the last argument; notes "KIND applied:
# ACTION WHO of RUN", or why it was skipped.
on_process() {
  local kind=$1 delay=$2 action=$3 who=$4 run p why role=()
  shift 4
  while [ "$1" != -- ]; do role+=("$1"); shift; done
  shift
  if ! target "${role[@]}"; then note "$kind skipped: no $who $why"; return; fi
  run=$(runof "$p")
  pause "$delay"
  if "$@" "$p" 2>/dev/null; then note "$kind applied: $action $who of $run"
  else note "$kind skipped: $who of $run ended first"; fi
}

fault() {
  local kind=$1 a=$2 b=$3 p run avail why
  case $kind in
    daemon-kill)
      watchdog
      kill_daemon KILL
      note "daemon-kill applied: SIGKILL to the scheduler; restart after $a ms"
      sleep "${a}e-3"
      start_daemon ;;
    crash)
      # The machine fails while a run is in flight (or after 20 s without one).
      target supervisor || true
      sleep "${b}e-3"
      watchdog
      local victims
      victims=$(chaos pids "$root" any | tr '\n' ' ')
      kill_daemon KILL
      # shellcheck disable=SC2086
      [ -z "$victims" ] || kill -9 $victims 2>/dev/null || true
      note "crash applied: SIGKILL to the scheduler and $(echo $victims | wc -w) process(es) of its runs; restart after $a ms"
      sleep "${a}e-3"
      start_daemon ;;
    supervisor-kill) on_process supervisor-kill "$a" "SIGKILL to" "the supervisor" supervisor -- kill -9 ;;
    rank-kill) on_process rank-kill "$b" "SIGKILL to" "rank $a" rank "$a" -- kill -9 ;;
    ckpt-kill)
      watchdog
      local out
      if idle; then note "ckpt-kill skipped: no write to come (the scheduler is idle and every file has arrived)"
      elif out=$(chaos snipe "$root" "$a" 20); then note "ckpt-kill applied: $out (after $a write(s))"
      else note "ckpt-kill skipped: $out"; fi ;;
    fsize-trainer) on_process fsize-trainer "$b" "RLIMIT_FSIZE $a bytes on" "rank 0" rank 0 -- prlimit --fsize="$a": --pid ;;
    fsize-daemon)
      watchdog
      # The soft limit only: the hard one could not be raised again without CAP_SYS_RESOURCE.
      prlimit --pid "$daemon" --fsize="$a": || true
      note "fsize-daemon applied: RLIMIT_FSIZE $a bytes on the scheduler for $b ms"
      pause "$b"
      if daemon_alive; then prlimit --pid "$daemon" --fsize=unlimited: || true; fi
      note "fsize-daemon lifted" ;;
    enospc)
      avail=$(df --output=avail -B1 "$fs" | tail -1)
      if [ "$avail" -gt "$a" ] && fallocate -l $((avail - a)) "$fs/ballast" 2>/dev/null; then
        note "enospc applied: the root's file system full but $(df --output=avail -B1 "$fs" | tail -1) bytes for $b ms"
        pause "$b"
        rm -f "$fs/ballast"
        note "enospc lifted"
      else
        rm -f "$fs/ballast"
        note "enospc skipped: cannot fill the file system ($avail bytes free)"
      fi ;;
    producer-fifo|producer-symlink)
      local out
      if out=$(chaos produce "$kind" "$root/incoming" "$a" "$dir/delivered.txt" 2>&1); then note "$kind applied: $out"
      else note "$kind skipped: $out"; fi ;;
  esac
}

# The producer: each file arrives by the convention (written under a hidden .tmp name, renamed),
# trying again while the disk is full; a hostile one (a MODE: tests/chaos/chaos.py) through
# chaos.py, which records it in delivered.txt itself.
feed() {
  local gap path mode name out
  while read -r gap path mode; do
    sleep "${gap}e-3"
    if [ -n "$mode" ]; then
      until out=$(chaos deliver "$root/incoming" "$path" "$mode" "$dir/delivered.txt"); do
        [ -d "$root/incoming" ] || return 0
        sleep 0.5
      done
      note "producer-${mode%%:*} applied: $out"
      continue
    fi
    name=$(basename "$path")
    until cp "$path" "$root/incoming/.$name.tmp" 2>/dev/null && mv "$root/incoming/.$name.tmp" "$root/incoming/$name"; do
      [ -d "$root/incoming" ] || return 0  # the trial is over
      rm -f "$root/incoming/.$name.tmp"
      sleep 0.5
    done
    echo "$name $path" >>"$dir/delivered.txt"
  done < <(awk '$1 == "arrive" {print $2, $3, $4}' "$dir/plan")
}

trial() {
  local k=$1 s=$2
  dir=$t/trial-$k
  fs=$dir/fs
  root=$fs/root
  faults=$dir/faults.log
  unexpected=0
  mkdir -p "$fs"
  [ $mounts = 0 ] || mount -t tmpfs -o size=64m tmpfs "$fs"
  chaos plan "$s" "$t/stream" "$t/bad" $mounts >"$dir/plan"
  : >"$dir/delivered.txt"
  : >"$faults"
  cat >"$dir/train.cfg" <<CFG
[model]
arch = mlp
hidden = 32
[train]
epochs = 2
batch_size = 25
[optim]
lr = 0.05
momentum = 0.9
[checkpoint]
keep_last = 2
$(awk '$1 == "config" {sub(/^checkpoint\./, "", $2); print $2, "=", $3}' "$dir/plan")
[log]
progress = none
CFG
  cat >"$dir/sched.cfg" <<CFG
[dataset]
max_shard_bytes = 3500000
[ingest]
rescan_s = 2
[train]
config = train.cfg
holdout = $t/holdout
ranks = 2
warm_start = champion
max_attempts = 4
[triggers]
new_data_rows = 2000
[executor]
mpirun_args = --oversubscribe
cancel_grace_s = 5
[sched]
tick_s = 0.5
[gate]
min_accuracy = 0.5
max_accuracy_drop = 0.02
max_class_drop = 0.1
newest_shards = 2
CFG
  trial_start=${EPOCHREALTIME/./}
  start_daemon
  while [ ! -d "$root/incoming" ]; do watchdog; sleep 0.1; done
  feed &
  feeder=$!
  local at kind a b
  while read -r at kind a b; do
    while [ "$(elapsed)" -lt "$at" ]; do
      watchdog
      sleep 0.2
    done
    fault "$kind" "$a" "$b"
  done < <(awk '$1 == "fault" {print $2, $3, $4, $5}' "$dir/plan")
  wait "$feeder"
  feeder=
  note "faults over; settling"
  # Settled: nothing left to do, three times in a row (tick 0.5 s); not past the trial's bound
  # less the time its checks may take.
  local calm=0 why=""
  for _ in $(seq 300); do
    [ "$(elapsed)" -lt $(((trial_limit - check_limit) * 1000)) ] || break
    watchdog
    why=$(chaos settled "$bin" "$root" "$dir/delivered.txt")
    if [ "$why" = yes ]; then calm=$((calm + 1)); else calm=0; fi
    [ $calm -ge 3 ] && break
    sleep 1
  done
  local took
  took=$(($(elapsed) / 1000))
  kill_daemon TERM
  local ok=1 summary left=""
  [ $calm -ge 3 ] || { echo "FAIL trial $k (seed $s): did not settle within $((trial_limit - check_limit)) s of its start: $why" >&2; ok=0; }
  # Nothing of the root lives on once it has settled and the scheduler has stopped.
  for _ in $(seq 50); do
    left=$(chaos pids "$root" any)
    [ -z "$left" ] && break
    sleep 0.1
  done
  [ -z "$left" ] || { echo "FAIL trial $k (seed $s): processes left behind: $(ps -o pid=,args= -p "${left//$'\n'/,}")" >&2; ok=0; }
  [ $unexpected = 0 ] || { echo "FAIL trial $k (seed $s): the scheduler died on its own $unexpected time(s)" >&2; ok=0; }
  mkdir -p "$dir/work"
  local checked=$SECONDS
  if ! summary=$(timeout -k 5 "$check_limit" $py "$src/tests/chaos/chaos.py" check "$bin" "$root" "$dir/delivered.txt" \
                   "$dir/work" "--oversubscribe" 2>"$dir/violations"); then
    [ -s "$dir/violations" ] || echo "the checks did not finish in $check_limit s" >"$dir/violations"
    echo "FAIL trial $k (seed $s): invariants violated:" >&2
    cat "$dir/violations" >&2
    ok=0
  fi
  if [ $ok = 0 ]; then
    [ "${PERENNIAL_CHAOS_KEEP:-}" != 1 ] || cp -a "$root" "$dir/root"
    echo "--- plan" >&2; cat "$dir/plan" >&2
    echo "--- faults" >&2; cat "$faults" >&2
    echo "--- scheduler log (tail)" >&2; tail -60 "$dir/daemon.log" >&2
    echo "reproduce with: $0 $bin $src 1 $s" >&2
    exit 1
  fi
  # One line for the campaign's report: the summary and the faults by kind and outcome.
  $py - "$summary" "$faults" "$k" "$s" "$took" $((SECONDS - checked)) <<'PY' | tee -a "${PERENNIAL_CHAOS_SUMMARY:-/dev/null}" >"$dir/summary.json"
import json, sys
summary, faults, k, s, took = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
summary["check_seconds"] = int(sys.argv[6])
counts = {}
for line in open(faults):
    parts = line.split()
    if len(parts) >= 3 and parts[2].rstrip(":") in ("applied", "skipped"):
        kind, outcome = parts[1], parts[2].rstrip(":")
        counts.setdefault(kind, {}).setdefault(outcome, 0)
        counts[kind][outcome] += 1
summary.update(trial=k, seed=s, seconds=took, faults=counts,
               ckpt_mid_write=sum(1 for l in open(faults) if "ckpt-kill applied" in l and "(mid-write)" in l),
               starts_refused=sum(1 for l in open(faults) if " start-refused:" in l))
print(json.dumps(summary, sort_keys=True))
PY
  $py - "$dir/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
applied = sum(v.get("applied", 0) for v in s["faults"].values())
skipped = sum(v.get("skipped", 0) for v in s["faults"].values())
print("trial %d (seed %d): %d faults applied, %d skipped; %d shards, %d quarantined; runs %s, %d attempts, "
      "%d resumed run(s) reproduced bit for bit; %d checkpoints verified; %d registry versions; settled at %.0f s, "
      "checked in %d s"
      % (s["trial"], s["seed"], applied, skipped, s["shards_ingested"], s["files_quarantined"], s["runs"],
         s["attempts"], s["resumed_runs_reproduced"], s["checkpoints_verified"], s["registry_versions"], s["seconds"],
         s["check_seconds"]))
PY
  sed 's/^/    /' "$faults"
  pkill -9 -f "$root/" 2>/dev/null || true
  [ "${PERENNIAL_CHAOS_KEEP:-}" != 1 ] || cp -a "$root" "$dir/root"  # the tmpfs goes with the namespace
  [ $mounts = 0 ] || umount -l "$fs"
  rm -rf "$dir/fs" "$dir/work"
}

for k in $(seq "$trials"); do
  if [ ${#seeds[@]} -gt 0 ]; then trial "$k" "${seeds[$((k - 1))]}"; else trial "$k" $((seed + k - 1)); fi
done
$py - "$t"/trial-*/summary.json <<'PY'
import json, sys
trials = [json.load(open(p)) for p in sys.argv[1:]]
kinds, runs = {}, {}
for t in trials:
    for kind, c in t["faults"].items():
        k = kinds.setdefault(kind, {"applied": 0, "skipped": 0})
        for outcome, n in c.items():
            k[outcome] += n
    for state, n in t["runs"].items():
        runs[state] = runs.get(state, 0) + n
print("faults by kind (applied/skipped): " + ", ".join("%s %d/%d" % (k, v["applied"], v["skipped"]) for k, v in sorted(kinds.items())))
print("checkpoint kills that caught a write in progress: %d; scheduler starts refused with an error: %d"
      % (sum(t["ckpt_mid_write"] for t in trials), sum(t["starts_refused"] for t in trials)))
print("runs: %s; %d attempts; %d retried run(s) reproduced bit for bit; %d checkpoints verified"
      % (runs, sum(t["attempts"] for t in trials), sum(t["resumed_runs_reproduced"] for t in trials),
         sum(t["checkpoints_verified"] for t in trials)))
PY
if [ ${#seeds[@]} -gt 0 ]; then
  echo "PASS: the regression seeds ${seeds[*]} kept every invariant ($((SECONDS - start_all)) s)"
else
  echo "PASS: $trials chaos trial(s) from seed $seed kept every invariant ($((SECONDS - start_all)) s)"
fi
