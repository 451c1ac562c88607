#!/usr/bin/env bash
# The scheduler's Slurm executor on a real one-node cluster (tests/slurm/local-cluster.sh), in
# the cases where it used to lose or mistake a job (NOTE [Slurm attempt identity] in
# scheduler/slurm_executor.h):
#  percent  a root under a folder named "%x %j": sbatch expanded the patterns in --output, the job
#           could not open its log and failed; now it runs, logs into RUN/attempt-1/log and the
#           run is promoted.
#  crash    the scheduler SIGKILLed between sbatch and recording the job id (an sbatch wrapper on
#           PATH kills its parent, the scheduler, once the real sbatch answered); the job runs to
#           its end and leaves the queue; meanwhile another Unix user (created here) submits a
#           sleeping job with the same name and the same comment (our token: comments are
#           public). The restarted scheduler must adopt its own job, not the other user's, and
#           never submit the attempt a second time: exactly one sbatch for the run, which is
#           promoted with the id of that one job. (Before: the other user's job was adopted; and
#           without it, the ended job was not found and the attempt was submitted again.)
# PERENNIAL_SLURM_TEST_CASES picks cases (default "percent crash"; "crash-alone" is crash without
# the other user's job). Every wait is bounded; the whole test takes about a minute.
# usage: executor_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
. "$src/tests/cli/lib.sh"
. "$src/tests/slurm/lib.sh"
cases=${PERENNIAL_SLURM_TEST_CASES:-percent crash}
if ! command -v slurmctld >/dev/null; then
  echo "SKIP: Slurm is not installed (scripts/install-deps.sh installs slurmctld slurmd slurm-client munge)"
  exit 77
fi
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (the cluster runs SlurmUser=root; the test creates a user)"; exit 77; }
command -v useradd >/dev/null && command -v runuser >/dev/null || { echo "SKIP: needs useradd and runuser"; exit 77; }
real_sbatch=$(command -v sbatch)
t=$(mktemp -d /tmp/pslx.XXXXXX)
chmod 755 "$t"  # munged needs every folder on its socket path searchable by all
cluster=$t/c
other=perennial-o$$
made_user=0
cleanup() {
  "$src/tests/slurm/local-cluster.sh" stop "$cluster" >/dev/null 2>&1 || true
  if [ $made_user = 1 ]; then userdel "$other" >/dev/null 2>&1 || true; fi
  rm -rf "$t"
}
trap cleanup EXIT
started=$SECONDS

# Ports of our own, so a system Slurm or another cluster may run beside.
free_ports LOCAL_SLURM_CTLD_PORT LOCAL_SLURM_SLURMD_PORT
"$src/tests/slurm/local-cluster.sh" start "$cluster" >/dev/null
export SLURM_CONF=$cluster/etc/slurm.conf
export PERENNIAL=$bin

sched_fixture "$bin" "$t" --ranks 1 --executor slurm
printf '[gate]\nmin_accuracy = 0.3\n' >>"$t/sched.cfg"

# run_field ROOT FIELD: a field of the root's first run ("none" without one).
run_field() {
  "$bin" sched runs --root "$1" --json 2>/dev/null |
    $py -c "import json,sys; r=json.load(sys.stdin); print(r[0].get(sys.argv[1], '') if r else 'none')" "$2" || echo none
}
# new_root DIR: a scheduler root at DIR with two shards waiting (a run's worth of new data).
new_root() {
  mkdir -p "$1/incoming"
  for i in 0 1; do cp "$t/fm/train/shard-0000$i.h5" "$1/incoming/s$i.h5"; done
}
# until_promoted ROOT LOG WHAT [CHECK]: ticks (120 s each at most) until the root's run ended,
# at most 240 s; fails unless it was promoted. CHECK, a command, runs after every tick and
# fails the test early.
until_promoted() {
  local root=$1 log=$2 what=$3 check=${4:-true} state=none deadline=$((SECONDS + 240))
  while [ $SECONDS -lt $deadline ]; do
    timeout 120 "$bin" sched tick --root "$root" --config "$t/sched.cfg" >>"$log" 2>&1 ||
      { cat "$log"; fail "$what: sched tick failed"; }
    $check
    state=$(run_field "$root" state)
    case $state in promoted|rejected|failed|cancelled) break ;; esac
    sleep 0.5
  done
  if [ "$state" != promoted ]; then
    cat "$log"; tail -n 30 "$root"/runs/*/attempt-*/log 2>/dev/null || true
    fail "$what: the run ended '$state', not promoted"
  fi
}

# --- percent: a root whose path holds sbatch's file name patterns -------------------------------
if [[ " $cases " == *" percent "* ]]; then
  root="$t/%x %j 100%/root"
  new_root "$root"
  until_promoted "$root" "$t/percent.log" "root under '%x %j 100%'"
  a="$root/runs/r000001/attempt-1"
  grep -q "train.sbatch: job $(run_field "$root" exec_id): start 1" "$a/log" ||
    { ls -la "$a"; fail "percent: the job's output is not in $a/log"; }
  grep -q "done: test accuracy" "$a/log" || { cat "$a/log"; fail "percent: no training output in $a/log"; }
  [ "$(run_field "$root" attempt)" = 1 ] || fail "percent: the run needed $(run_field "$root" attempt) attempts"
  echo "percent: a root under '%x %j 100%': the job logged into its attempt directory; promoted after 1 attempt"
fi

# --- crash: SIGKILL between sbatch and recording the job id ---------------------------------------
if [[ " $cases " == *" crash "* || " $cases " == *" crash-alone "* ]]; then
  root=$t/crash
  new_root "$root"
  mkdir -p "$t/wrap"
  # sbatch, then (the first time only) SIGKILL the scheduler that ran it before it can read the id.
  cat >"$t/wrap/sbatch" <<SH
#!/bin/bash
printf '%s\n' "\$*" >>"$t/sbatch-calls"
out=\$("$real_sbatch" "\$@")
rc=\$?
if [ \$rc = 0 ] && mkdir "$t/crashed" 2>/dev/null; then
  printf '%s\n' "\${out%%;*}" >"$t/crash-job"
  kill -KILL \$PPID
  exit 1
fi
printf '%s\n' "\$out"
exit \$rc
SH
  chmod +x "$t/wrap/sbatch"
  export PATH="$t/wrap:$PATH"
  killed=0
  for _ in $(seq 20); do
    rc=0
    timeout 120 "$bin" sched tick --root "$root" --config "$t/sched.cfg" >>"$t/crash.log" 2>&1 || rc=$?
    if [ $rc = 137 ]; then killed=1; break; fi
    [ $rc = 0 ] || { cat "$t/crash.log"; fail "crash: tick exited $rc"; }
  done
  [ $killed = 1 ] || { cat "$t/crash.log"; fail "crash: the scheduler never reached sbatch"; }
  job=$(cat "$t/crash-job")
  a=$root/runs/r000001/attempt-1
  [ ! -e "$a/job" ] || fail "crash: the job id was recorded before the kill; the test missed its point"
  [ "$(run_field "$root" state)" = submitted ] || fail "crash: run state $(run_field "$root" state) after the kill"
  name=$(timeout 60 squeue --me -h --states=all -j "$job" -o %j)
  [[ $name == perennial-r000001-a1-* ]] || fail "crash: job $job is named '$name'"
  # (Its comment is checked against the token at the end, so that a build without tokens fails on
  # what it does with the job.)
  token=$(timeout 60 squeue -h -j "$job" --states=all -o %k)
  if [[ " $cases " == *" crash "* ]]; then
    # Another user's job, with our job's name and comment, that is still running at the restart.
    if ! id -u "$other" >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin "$other"
      made_user=1
    fi
    comment=()
    [ "$token" = "(null)" ] || comment=(--comment="$token")
    foreign=$(cd / && timeout 60 runuser -u "$other" -- env SLURM_CONF="$SLURM_CONF" "$real_sbatch" --parsable \
      --job-name="$name" "${comment[@]}" --output=/dev/null --chdir=/ --time=5 --wrap 'sleep 240')
    foreign=${foreign%%;*}
  fi
  # Our job runs to its end and leaves the queue before the scheduler comes back.
  deadline=$((SECONDS + 180))
  while [ -n "$(timeout 60 squeue -h -j "$job" -o %T 2>/dev/null)" ]; do
    [ $SECONDS -lt $deadline ] || fail "crash: job $job still queued after 180 s"
    sleep 1
  done
  [ -s "$a/exit.json" ] || { cat "$a/log" 2>/dev/null; fail "crash: job $job ended without its exit record"; }
  # restart: the attempt must be adopted, not submitted again, and never become another's job.
  check_crash() {
    local n id
    n=$(wc -l <"$t/sbatch-calls")
    [ "$n" = 1 ] || { cat "$t/sbatch-calls" "$t/crash.log"; fail "crash: $n sbatch calls for one attempt"; }
    id=$(run_field "$root" exec_id)
    if [ -n "${foreign:-}" ] && [ "$id" = "$foreign" ]; then
      fail "crash: the run adopted job $foreign of user $other"
    fi
  }
  until_promoted "$root" "$t/crash.log" "crash" check_crash
  check_crash
  [ "$(run_field "$root" exec_id)" = "$job" ] || fail "crash: the run's job is $(run_field "$root" exec_id), not $job"
  [ "$(run_field "$root" attempt)" = 1 ] || fail "crash: the run needed $(run_field "$root" attempt) attempts"
  [ "$(cat "$a/job")" = "$job" ] || fail "crash: attempt-1/job holds $(cat "$a/job")"
  ours=$(timeout 60 squeue --me -h --states=all --name="$name" -o %i | wc -l)
  [ "$ours" = 1 ] || fail "crash: $ours jobs of ours named $name"
  [ "$token" = "$(cat "$a/token")" ] || fail "crash: job $job's comment '$token' is not the attempt's token $(cat "$a/token")"
  if [ -n "${foreign:-}" ]; then
    case $(timeout 60 squeue -h -j "$foreign" -o %T) in RUNNING|PENDING) ;; *) fail "crash: the other user's job $foreign was disturbed" ;; esac
    echo "crash: job $job adopted after the restart (one sbatch); user $other's job $foreign of the same name and comment was not"
  else
    echo "crash: job $job adopted after the restart (one sbatch)"
  fi
fi
echo "PASS: Slurm executor ($cases) in $((SECONDS - started)) s"
