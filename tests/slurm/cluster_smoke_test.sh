#!/usr/bin/env bash
# cluster_smoke_test.sh [DIR_BASE]: starts a one-node Slurm cluster (local-cluster.sh) in a fresh
# folder under DIR_BASE (default: $TMPDIR or /tmp), runs a 2-task PMIx step and a batch job to
# completion, stops the cluster and checks that none of its processes remain.
# Exit: 0 pass; 1 fail (with the reason and the daemons' log tails); 77 skipped (not root, or
# Slurm not installed: apt-get install slurmctld slurmd slurm-client munge libpmix-dev).
# Ports: LOCAL_SLURM_CTLD_PORT / LOCAL_SLURM_SLURMD_PORT if set, else a random free pair in
# 20000-29999 (below Linux's ephemeral range), so it can run beside another cluster or test.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER=$HERE/local-cluster.sh
NAME=cluster_smoke_test

skip() { echo "SKIP: $NAME: $*" >&2; exit 77; }
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  skip "Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge libpmix-dev)"
fi
[[ $(id -u) -eq 0 ]] || skip "needs root (the cluster runs SlurmUser=root)"

BASE=${1:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
DIR=$(mktemp -d "$(realpath "$BASE")/slurm-smoke.XXXXXX")
if ((${#DIR} > 64)); then
  # Unix socket paths under DIR must stay short: fall back to /tmp.
  rmdir "$DIR"
  DIR=$(mktemp -d /tmp/slurm-smoke.XXXXXX)
fi

# shellcheck source=lib.sh
. "$HERE/lib.sh"
free_ports LOCAL_SLURM_CTLD_PORT LOCAL_SLURM_SLURMD_PORT

KEEP=0
cleanup() {
  "$CLUSTER" stop "$DIR" >/dev/null 2>&1 || true
  if ((KEEP)); then
    echo "$NAME: cluster files kept in $DIR" >&2
  else
    rm -rf "$DIR"
  fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $NAME: $*" >&2
  local f
  for f in "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log "$DIR"/log/munged.log; do
    [[ -f $f ]] && { echo "----- last lines of $f" >&2; tail -n 15 "$f" >&2; }
  done
  KEEP=1
  exit 1
}

t0=$(date +%s.%N)
"$CLUSTER" start "$DIR" >/dev/null || fail "local-cluster.sh start failed"
t1=$(date +%s.%N)
export SLURM_CONF=$DIR/etc/slurm.conf
[[ $(cat "$DIR/env.sh") == "export SLURM_CONF=$SLURM_CONF" ]] || fail "env.sh is wrong"

# A 2-task step through PMIx: each task must see its own PMIx rank.
# shellcheck disable=SC2016  # expanded by the job, not here
out=$(timeout 120 srun -n 2 --mpi=pmix --time=2 bash -c 'echo "task $SLURM_PROCID pmix ${PMIX_RANK:-none}"' 2>"$DIR/srun.err") ||
  fail "srun -n 2 --mpi=pmix failed: $out $(cat "$DIR/srun.err")"
[[ $(sort <<<"$out") == $'task 0 pmix 0\ntask 1 pmix 1' ]] || fail "unexpected srun output: $out"
t2=$(date +%s.%N)

# A batch job to completion.
# shellcheck disable=SC2016
job=$(sbatch --parsable --time=2 -o "$DIR/job.out" --wrap 'sleep 1; echo "hello from $SLURM_JOB_ID"') ||
  fail "sbatch failed"
deadline=$((SECONDS + 120))
while [[ -n $(squeue -h -j "$job" 2>/dev/null) ]]; do
  ((SECONDS < deadline)) || fail "batch job $job still queued or running after 120 s"
  sleep 0.5
done
t3=$(date +%s.%N)
[[ $(cat "$DIR/job.out" 2>/dev/null) == "hello from $job" ]] ||
  fail "batch job $job output: $(cat "$DIR/job.out" 2>&1)"
info=$(scontrol show job "$job" 2>&1) || fail "scontrol show job $job: $info"
grep -q 'JobState=COMPLETED' <<<"$info" || fail "batch job $job not COMPLETED: $info"
grep -q 'ExitCode=0:0' <<<"$info" || fail "batch job $job exit code: $info"
acct=$(sacct -c -n -j "$job" -o State 2>&1) || fail "sacct -c failed: $acct"
grep -q COMPLETED <<<"$acct" || fail "sacct -c -j $job: $acct"

"$CLUSTER" stop "$DIR" >/dev/null 2>&1 || fail "local-cluster.sh stop failed"
if left=$(pgrep -af -- "$DIR/"); then
  fail "processes left after stop: $left"
fi
"$CLUSTER" status "$DIR" >/dev/null 2>&1 && fail "status says the cluster still runs after stop"

awk -v n="$NAME" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN {
  printf "%s: PASS (start %.1fs, srun -n 2 %.1fs, batch job %.1fs)\n", n, b - a, c - b, d - c }'
