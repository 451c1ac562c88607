#!/usr/bin/env bash
# Perennial on a real one-node Slurm cluster (tests/slurm/local-cluster.sh):
#  1. a 2-task training job `sbatch slurm/train.sbatch` completes with the expected result.json;
#  2. `scancel --signal=USR1` during training makes it checkpoint, requeue itself and resume,
#     and it ends with the uninterrupted job's param_sha256;
#  3. a real time limit: the pre-timeout SIGUSR1 does the same;
#  4. the scheduler, itself run by slurm/scheduler.sbatch (a self-resubmitting tick job), with
#     the Slurm executor: shards arrive, a training job is submitted with sbatch, trains, passes
#     the gate and is promoted in the registry;
#  0. first, train.sbatch's exit handling with stand-ins for srun and scontrol: a step killed by
#     SIGUSR1 before the trainer could install its handler is requeued, and the script, sent
#     SIGTERM by the requeue, ends in a later second than the requeue's; one killed by SIGTERM is
#     not requeued.
# usage: slurm_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
. "$src/tests/cli/lib.sh"
. "$src/tests/slurm/lib.sh"
if ! command -v slurmctld >/dev/null; then
  echo "SKIP: Slurm is not installed (scripts/install-deps.sh installs slurmctld slurmd slurm-client munge)"
  exit 77
fi
slurm_test_dir pslurm "$src/tests/slurm/local-cluster.sh"

# 0. The step's exit status as train.sbatch sees it (srun exits 128 + N for a task killed by N).
# The stub scontrol, like Slurm on a requeue, sends SIGTERM to every process of the job (the
# script runs in a session of its own): the script must stay up into a later second than the
# requeue's before it exits 0 (slurmd refuses a restart in the second of the requeue).
mkdir -p "$t/stub"
cat >"$t/stub/scontrol" <<'SH'
#!/bin/sh
trap '' TERM
echo "$*" >>"$STUB_LOG"
case $1 in requeue) date +%s.%N >"$STUB_LOG.requeued"; kill -s TERM 0 ;; esac
SH
for sig in USR1 TERM; do
  printf '#!/bin/bash\nkill -s %s $$\n' "$sig" >"$t/stub/srun"
  chmod +x "$t/stub/srun" "$t/stub/scontrol"
  : >"$t/stub/log"
  rc=0
  STUB_LOG=$t/stub/log SLURM_JOB_ID=99 PATH="$t/stub:$PATH" setsid -w bash "$src/slurm/train.sbatch" --config none \
    >"$t/stub/out" 2>&1 || rc=$?
  ended=$(date +%s.%N)
  if [ "$sig" = USR1 ]; then
    [ "$rc" = 0 ] && grep -q "^requeue 99$" "$t/stub/log" ||
      { cat "$t/stub/out"; fail "a step killed by SIGUSR1 during start-up was not requeued (exit $rc)"; }
    requeued=$(cat "$t/stub/log.requeued")
    awk -v r="$requeued" -v e="$ended" 'BEGIN { exit !(int(e) > int(r) && e - r >= 1) }' ||
      { cat "$t/stub/out"; fail "train.sbatch ended $requeued -> $ended: in the second of its requeue, or under 1 s after it"; }
  else
    [ "$rc" = 143 ] && [ ! -s "$t/stub/log" ] ||
      { cat "$t/stub/out"; fail "a step killed by SIGTERM was requeued or misreported (exit $rc)"; }
  fi
done
echo "train.sbatch: a step killed by SIGUSR1 before its handler is requeued, the script outlasting the requeue's second; SIGTERM is not"
"$src/tests/slurm/local-cluster.sh" start "$cluster" >/dev/null
export SLURM_CONF=$cluster/etc/slurm.conf
export PERENNIAL=$bin

fm_fixture "$bin"
cat >"$t/train.cfg" <<CFG
[model]
arch = mlp
hidden = 256,128
[train]
epochs = 3
batch_size = 32
log_every = 100
[optim]
lr = 0.05
[checkpoint]
every_steps = 200
keep_last = 2
[log]
progress = lines
CFG

# submit NAME DATA [sbatch options...] [-- trainer options...]: a 2-task training job into
# $t/NAME; prints the job id.
submit() {
  local name=$1 data=$2 opts=() extra=()
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift && extra=("$@")
  sbatch --parsable --ntasks=2 --output="$t/$name.log" --chdir="$t" "${opts[@]}" "$src/slurm/train.sbatch" \
    --config "$t/train.cfg" --run-dir "$t/$name" --data.train "$data" --data.test "$t/holdout" "${extra[@]}"
}
sha() { json "$t/$1/result.json" param_sha256; }

# 1. Uninterrupted.
job=$(submit plain "$t/fm/train")
state=$(wait_job "$job" 300)
[ "$state" = COMPLETED ] || { cat "$t/plain.log"; fail "plain job ended $state"; }
[ "$(json "$t/plain/result.json" world_size)" = 2 ] || fail "plain job: world size"
[ "$(json "$t/plain/result.json" epochs)" = 3 ] || fail "plain job: epochs"
reference=$(sha plain)
echo "plain job $job: COMPLETED, param_sha256 ${reference:0:16}"

# 2. scancel --signal=USR1 mid-training: checkpoint, requeue, resume, same weights.
job=$(submit usr1 "$t/fm/train")
for _ in $(seq 300); do grep -q "step 500" "$t/usr1.log" 2>/dev/null && break; sleep 0.2; done
grep -q "step 500" "$t/usr1.log" || { cat "$t/usr1.log"; fail "usr1 job never reached step 500"; }
scancel --signal=USR1 "$job"
state=$(wait_job "$job" 300)
[ "$state" = COMPLETED ] || { cat "$t/usr1.log"; fail "usr1 job ended $state"; }
grep -q "requeueing (restart 1)" "$t/usr1.log" || { cat "$t/usr1.log"; fail "usr1 job did not requeue itself"; }
grep -q "resuming from" "$t/usr1.log" || { cat "$t/usr1.log"; fail "usr1 job did not resume from its checkpoint"; }
[ "$(sha usr1)" = "$reference" ] || fail "usr1 job: param_sha256 $(sha usr1) differs from the uninterrupted $reference"
echo "usr1 job $job: checkpointed, requeued, resumed; same param_sha256"

# 3. A real time limit of one minute, SIGUSR1 50 s before it (slurmctld checks time limits about
# every 30 s, so the signal comes 10 to 40 s after the start). The training takes about 40 s
# alone: it is interrupted at least once.
mkdir -p "$t/small"
cp "$t"/fm/train/shard-0000[0-2].h5 "$t/small/"
long=(--model.hidden 1024,1024 --train.epochs 55 --checkpoint.every_steps 100)
job=$(submit long-plain "$t/small" -- "${long[@]}")
state=$(wait_job "$job" 400)
[ "$state" = COMPLETED ] || { cat "$t/long-plain.log"; fail "long job ended $state"; }
# (On a busy machine the training is slower and needs more restarts than the default budget.)
job=$(PERENNIAL_MAX_RESTARTS=50 submit limit "$t/small" --time=1 --signal=USR1@50 -- "${long[@]}")
state=$(wait_job "$job" 900)
[ "$state" = COMPLETED ] || { cat "$t/limit.log"; fail "time-limited job ended $state"; }
grep -q "requeueing (restart 1)" "$t/limit.log" || { cat "$t/limit.log"; fail "the time-limited job did not requeue"; }
[ "$(sha limit)" = "$(sha long-plain)" ] || fail "time-limited job: param_sha256 differs from the uninterrupted run's"
echo "time-limited job $job: $(grep -c 'requeueing' "$t/limit.log") requeue(s), same param_sha256 as the uninterrupted one"

# 4. The scheduler with the Slurm executor.
cat >"$t/sched-train.cfg" <<CFG
[model]
arch = mlp
hidden = 64
[train]
epochs = 1
batch_size = 32
[log]
progress = none
CFG
cat >"$t/sched.cfg" <<CFG
[train]
config = sched-train.cfg
holdout = holdout
ranks = 2
[triggers]
new_data_rows = 4000
[executor]
kind = slurm
[slurm]
script = $src/slurm/train.sbatch
time = 00:10:00
[gate]
min_accuracy = 0.5
CFG
root=$t/root
mkdir -p "$root/incoming"
for i in 00 01; do cp "$t/fm/train/shard-000$i.h5" "$root/incoming/s$i.h5"; done
# The scheduler itself runs as slurm/scheduler.sbatch: a tick every 2 s that resubmits itself.
sbatch --parsable --output="$t/sched.log" --chdir="$t" "$src/slurm/scheduler.sbatch" "$root" "$t/sched.cfg" 2 >/dev/null
for _ in $(seq 300); do
  state=$("$bin" sched runs --root "$root" --json 2>/dev/null | $py -c "import json,sys; r=json.load(sys.stdin); print(r[0]['state'] if r else 'none')" 2>/dev/null || echo none)
  case $state in promoted|rejected|failed|cancelled) break ;; esac
  sleep 1
done
scancel --name=perennial-sched-tick
[ "$state" = promoted ] || { cat "$t/sched.log"; cat "$root"/runs/*/attempt-1/log; fail "scheduler run ended $state"; }
[ "$(grep -c 'ingested\|run r000001' "$t/sched.log")" -ge 2 ] || { cat "$t/sched.log"; fail "the tick jobs' log"; }
"$bin" sched runs --root "$root" --json | $py -c "
import json,sys; r=json.load(sys.stdin)[0]
assert r['executor'] == 'slurm' and r['exec_id'].isdigit() and r['attempt'] == 1, r
assert r['result']['world_size'] == 2, r['result']" || fail "scheduler run record"
"$bin" registry verify --root "$root" fashion-mnist:champion >/dev/null || fail "registry version"
echo "PASS: Slurm (sbatch job, USR1 requeue, time-limit requeue, scheduler.sbatch with the Slurm executor)"
