#!/usr/bin/env bash
# local-cluster.sh - a real one-node Slurm cluster whose every file lives under one folder.
#
# Usage:
#   tests/slurm/local-cluster.sh start  DIR   # start munged, slurmctld, slurmd; wait for the node
#   tests/slurm/local-cluster.sh stop   DIR   # cancel all jobs, stop the daemons (exit 0 if stopped)
#   tests/slurm/local-cluster.sh status DIR   # which daemons run, and sinfo
#
# After `start`, point the Slurm clients at the cluster (start prints this line on stdout, and
# writes it to DIR/env.sh; all progress messages go to stderr):
#   export SLURM_CONF=DIR/etc/slurm.conf       # or: . DIR/env.sh, or: eval "$(... start DIR)"
#
# Needs root and Debian 12's packages: slurmctld slurmd slurm-client munge libpmix-dev
# (slurm-wlm 22.05). It installs nothing; without slurmctld it says so and exits 2. It never
# touches /etc/slurm, /etc/munge or the system munged: everything is under DIR:
#   DIR/etc/slurm.conf       the cluster: ClusterName=perennial, controller and node "localhost"
#                            on 127.0.0.1, partition "debug" (Default=YES, MaxTime=INFINITE),
#                            CPUs = nproc, RealMemory = MemTotal minus a margin, cores shared by
#                            up to 4 jobs (OverSubscribe=FORCE:4) so a 2-core box runs two 1-task
#                            jobs and a 2-task job at once; MpiDefault=pmix; no cgroups
#                            (proctrack/linuxproc, task/none); no accounting database, but
#                            jobcomp/filetxt so `sacct -c -j JOB` works; finished jobs stay in
#                            `scontrol show job` for MinJobAge seconds; fast scheduling
#                            (sched_interval=2, bf_interval=5) and cred_expire=10 so that
#                            `scontrol requeue` restarts a job in ~10 s instead of minutes.
#   DIR/etc/plugstack.conf   empty (else Slurm would read /etc/slurm/plugstack.conf)
#   DIR/munge/               the cluster's own munge key (0400, folder 0700) and PRNG seed
#   DIR/run/                 munge socket, pid files (0755)
#   DIR/state/               slurmctld StateSaveLocation (kept across stop/start: job ids go on)
#   DIR/spool/               slurmd spool (step sockets)
#   DIR/tmp/                 TmpFS: PMIx's per-step folders, so two clusters never share them
#   DIR/log/                 munged.log, slurmctld.log, slurmd.log, jobcomp.txt (sacct -c)
#   DIR/env.sh               `export SLURM_CONF=DIR/etc/slurm.conf`
# `rm -rf DIR` after `stop` forgets everything (job ids restart at 1).
#
# Settings (environment; defaults in brackets). Ports are away from Slurm's 6817/6818 so that a
# second cluster (another DIR, other ports) or a system Slurm can run beside this one:
#   LOCAL_SLURM_CTLD_PORT [16817]      SlurmctldPort
#   LOCAL_SLURM_SLURMD_PORT [16818]    SlurmdPort
#   LOCAL_SLURM_CPUS [nproc]           CPUs of the node (more than the real count is allowed)
#   LOCAL_SLURM_OVERSUBSCRIBE [FORCE:4] partition OverSubscribe= (NO: one job per CPU)
#   LOCAL_SLURM_MEM_MARGIN_MB [1024]   RealMemory = MemTotal - margin (half of MemTotal if small)
#   LOCAL_SLURM_MIN_JOB_AGE [300]      MinJobAge: seconds `scontrol show job` keeps ended jobs
#   LOCAL_SLURM_CLUSTER_NAME [perennial]
#   LOCAL_SLURM_START_TIMEOUT [60]     seconds to wait for the node to be idle
#   LOCAL_SLURM_STOP_TIMEOUT [30]      seconds to wait for jobs / each daemon before SIGKILL
#
# Exit codes: 0 ok; 1 failure (start prints the log tails and stops what it started);
# 2 usage error or Slurm not installed. `status` exits 0 if all three daemons run, 3 if none,
# 1 if only some.
#
# Notes: DIR must be short (unix socket paths are at most 107 bytes): at most 64 characters.
# PID 1 on some machines reaps slowly, so a stopped daemon may linger as a zombie: the script
# judges a process by /proc/PID/stat's state (Z = gone), never by `kill -0`.
set -euo pipefail

PROG=$(basename "$0")
CTLD_PORT=${LOCAL_SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${LOCAL_SLURM_SLURMD_PORT:-16818}
MEM_MARGIN_MB=${LOCAL_SLURM_MEM_MARGIN_MB:-1024}
MIN_JOB_AGE=${LOCAL_SLURM_MIN_JOB_AGE:-300}
CLUSTER_NAME=${LOCAL_SLURM_CLUSTER_NAME:-perennial}
OVERSUBSCRIBE=${LOCAL_SLURM_OVERSUBSCRIBE:-FORCE:4}
START_TIMEOUT=${LOCAL_SLURM_START_TIMEOUT:-60}
STOP_TIMEOUT=${LOCAL_SLURM_STOP_TIMEOUT:-30}
DAEMONS=(munged slurmctld slurmd)

log() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }
usage() {
  echo "usage: $PROG start|stop|status DIR" >&2
  exit 2
}

[[ $# -eq 2 ]] || usage
ACTION=$1
[[ -n $2 ]] || usage
case $2 in /*) DIR=$2 ;; *) DIR=$PWD/$2 ;; esac
# Normalise (no trailing slash, no ./ or ../) without requiring the folder to exist.
DIR=$(realpath -m -- "$DIR")
[[ $DIR != / ]] || die "DIR must not be /"
[[ $DIR != *[[:space:]]* ]] || die "DIR must not contain white space (slurm.conf paths)"

ETC=$DIR/etc
CONF=$ETC/slurm.conf
MUNGE_DIR=$DIR/munge
MUNGE_KEY=$MUNGE_DIR/munge.key
RUN=$DIR/run
MUNGE_SOCKET=$RUN/munge.socket.2
STATE=$DIR/state
SPOOL=$DIR/spool
LOGDIR=$DIR/log
TMPFS=$DIR/tmp
export SLURM_CONF=$CONF
# Slurm's clients read SLURM_* settings from the environment (e.g. inside a job): make sure the
# commands this script runs talk to this cluster only and are not steered by the caller's job.
unset SLURM_CLUSTERS SLURM_PARTITION SLURM_JOB_ID SLURM_JOBID 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
# Processes. A daemon belongs to this cluster when its comm is the daemon's name and one of its
# arguments is exactly this cluster's slurm.conf (slurmctld, slurmd are started with -f CONF) or
# munge socket (munged --socket=...). This is immune to stale pid files and pid reuse.

# proc_state PID: prints the state letter (R, S, D, Z, ...) or nothing if PID is gone.
proc_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  echo "${stat%% *}"
}

# alive PID: true if PID exists and is not a zombie.
alive() {
  local s
  s=$(proc_state "$1")
  [[ -n $s && $s != Z && $s != X ]]
}

# marker NAME: the argument that identifies NAME's process as this cluster's.
marker() {
  case $1 in
    munged) echo "--socket=$MUNGE_SOCKET" ;;
    *) echo "$CONF" ;;
  esac
}

# daemon_pids NAME: the live pids of this cluster's daemon NAME.
daemon_pids() {
  local name=$1 mark p comm
  mark=$(marker "$name")
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    [[ $comm == "$name" ]] || continue
    tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" | grep -qxF -- "$mark" || continue
    alive "$p" && echo "$p"
  done
  return 0
}

# stepd_pids: live slurmstepd processes of this cluster (they inherit SLURM_CONF from slurmd).
stepd_pids() {
  local p comm
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    [[ $comm == slurmstepd ]] || continue
    tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qxF -- "SLURM_CONF=$CONF" || continue
    alive "$p" && echo "$p"
  done
  return 0
}

# descendants PID...: every live descendant of the given processes (children first found by a
# scan of /proc's ppid fields).
descendants() {
  local -A kids=()
  local p stat ppid
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    ppid=$(echo "$stat" | cut -d' ' -f2)
    kids[$ppid]+="$p "
  done
  local -a queue=("$@")
  while [[ ${#queue[@]} -gt 0 ]]; do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    for ppid in ${kids[$p]:-}; do
      if alive "$ppid"; then echo "$ppid"; fi
      queue+=("$ppid")
    done
  done
  return 0
}

# wait_gone TIMEOUT PID...: waits until every PID is gone or a zombie; false on timeout.
wait_gone() {
  local p left deadline=$((SECONDS + $1))
  shift
  while :; do
    left=()
    for p in "$@"; do
      if alive "$p"; then left+=("$p"); fi
    done
    [[ ${#left[@]} -eq 0 ]] && return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# terminate LABEL PID...: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.
terminate() {
  local label=$1 p
  shift
  [[ $# -gt 0 ]] || return 0
  kill -TERM "$@" 2>/dev/null || true
  if ! wait_gone "$STOP_TIMEOUT" "$@"; then
    log "$label did not stop within ${STOP_TIMEOUT}s: SIGKILL"
    for p in "$@"; do
      if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    wait_gone 10 "$@" || log "warning: $label still present after SIGKILL"
  fi
  return 0
}

# port_in_use PORT: true if something listens on TCP PORT (any address).
port_in_use() {
  local hex
  hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v h=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }'
}

cluster_up() {
  [[ -n $(daemon_pids munged) && -n $(daemon_pids slurmctld) && -n $(daemon_pids slurmd) ]]
}

node_state() {
  sinfo -h -N -n localhost -o %T 2>/dev/null | head -n1
}

# ---------------------------------------------------------------------------------------------
write_config() {
  local cpus mem_kb mem_mb real_mem hw_cpus overrides=""
  hw_cpus=$(nproc)
  cpus=${LOCAL_SLURM_CPUS:-$hw_cpus}
  [[ $cpus =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_CPUS must be a positive integer, not '$cpus'"
  # Claiming more CPUs than slurmd finds would mark the node INVAL unless config_overrides.
  ((cpus <= hw_cpus)) || overrides="SlurmdParameters=config_overrides"
  mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
  mem_mb=$((mem_kb / 1024))
  real_mem=$((mem_mb - MEM_MARGIN_MB))
  ((real_mem >= 256)) || real_mem=$((mem_mb / 2))

  cat >"$CONF" <<EOF
# Written by tests/slurm/local-cluster.sh: a one-node cluster whose files are all under
# $DIR. Rewritten by every start; edit the script, not this file.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
MailProg=/bin/true

# Authentication through this cluster's own munged. cred_expire=10 (default 120): a requeued
# job may start again only once its old credential has expired.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10

StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$ETC/plugstack.conf
TmpFS=$TMPFS

# No cgroups, no accounting daemon.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Finished jobs: a text file that \`sacct -c\` reads, and MinJobAge seconds in scontrol.
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGDIR/jobcomp.txt
MinJobAge=$MIN_JOB_AGE

SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
ReturnToService=2
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
$overrides

NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=$OVERSUBSCRIBE
EOF
  : >"$ETC/plugstack.conf"
}

make_key() {
  [[ -s $MUNGE_KEY ]] && return 0
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile="$MUNGE_KEY" >/dev/null
  else
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
  fi
}

show_logs() {
  local f
  for f in "$LOGDIR"/munged.log "$LOGDIR"/slurmctld.log "$LOGDIR"/slurmd.log; do
    [[ -f $f ]] || continue
    echo "----- last lines of $f" >&2
    tail -n 20 "$f" >&2
  done
}

fail_start() {
  log "error: $*"
  show_logs
  log "stopping what was started"
  do_stop >/dev/null 2>&1 || true
  exit 1
}

print_env() {
  echo "export SLURM_CONF=$CONF"
}

do_start() {
  if ! command -v slurmctld >/dev/null 2>&1; then
    echo "$PROG: slurmctld not found. Install Debian's packages: apt-get install slurmctld slurmd slurm-client munge libpmix-dev" >&2
    exit 2
  fi
  local c
  for c in slurmd munged sinfo scontrol; do
    command -v "$c" >/dev/null 2>&1 || {
      echo "$PROG: $c not found. Install Debian's packages: apt-get install slurmctld slurmd slurm-client munge libpmix-dev" >&2
      exit 2
    }
  done
  [[ $(id -u) -eq 0 ]] || die "must run as root (SlurmUser=root, munged and slurmd need it)"
  ((${#DIR} <= 64)) || die "DIR is ${#DIR} characters; at most 64 (unix socket paths under it must fit 107 bytes)"

  if cluster_up; then
    log "a cluster is already running from $DIR (node: $(node_state || true))"
    print_env
    return 0
  fi
  local d any=0
  for d in "${DAEMONS[@]}"; do
    if [[ -n $(daemon_pids "$d") ]]; then any=1; fi
  done
  if ((any)); then
    log "part of a cluster is running from $DIR: stopping it before a fresh start"
    do_stop >/dev/null
  fi

  local port
  for port in "$CTLD_PORT" "$SLURMD_PORT"; do
    if port_in_use "$port"; then
      die "TCP port $port is in use; choose others with LOCAL_SLURM_CTLD_PORT / LOCAL_SLURM_SLURMD_PORT"
    fi
  done

  local t0=$SECONDS
  mkdir -p "$ETC" "$MUNGE_DIR" "$STATE" "$SPOOL" "$LOGDIR" "$RUN" "$TMPFS"
  chmod 0755 "$DIR" "$ETC" "$STATE" "$SPOOL" "$LOGDIR" "$RUN"
  chmod 0700 "$MUNGE_DIR"
  chmod 1777 "$TMPFS"
  make_key
  chmod 0400 "$MUNGE_KEY"
  write_config
  rm -f "$RUN"/munged.pid "$RUN"/slurmctld.pid "$RUN"/slurmd.pid

  # munged forks into the background by itself.
  munged --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" --pid-file="$RUN/munged.pid" \
    --log-file="$LOGDIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" </dev/null ||
    fail_start "munged failed to start"
  local deadline=$((SECONDS + 15))
  until munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail_start "munged does not answer on $MUNGE_SOCKET"
    sleep 0.2
  done

  # The daemons fork twice: right after the command returns the final process may not exist
  # yet, so "exited" is only judged after a grace period.
  slurmctld -f "$CONF" </dev/null || fail_start "slurmctld failed to start"
  local launched=$SECONDS
  deadline=$((SECONDS + START_TIMEOUT))
  until scontrol ping 2>/dev/null | grep -q 'is UP'; do
    if ((SECONDS - launched >= 3)) && [[ -z $(daemon_pids slurmctld) ]]; then
      fail_start "slurmctld exited"
    fi
    ((SECONDS < deadline)) || fail_start "slurmctld did not answer within ${START_TIMEOUT}s"
    sleep 0.2
  done

  slurmd -f "$CONF" -N localhost </dev/null || fail_start "slurmd failed to start"
  launched=$SECONDS
  local state=""
  while :; do
    state=$(node_state || true)
    [[ $state == idle* ]] && break
    # A node left DOWN/DRAIN by an earlier run: bring it back.
    if [[ $state == down* || $state == drain* || $state == fail* ]]; then
      scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    fi
    if ((SECONDS - launched >= 3)) && [[ -z $(daemon_pids slurmd) ]]; then
      fail_start "slurmd exited"
    fi
    ((SECONDS < deadline)) || fail_start "node not idle within ${START_TIMEOUT}s (state: ${state:-unknown})"
    sleep 0.2
  done

  print_env >"$DIR/env.sh"
  log "cluster '$CLUSTER_NAME' up in $((SECONDS - t0))s: node localhost idle, partition debug," \
    "ports $CTLD_PORT/$SLURMD_PORT, logs in $LOGDIR"
  print_env
}

do_stop() {
  local -a jobs pids helpers
  local p
  # slurmctld's helper (slurmscriptd) rewrites its command line: remember it by parentage.
  mapfile -t pids < <(daemon_pids slurmctld)
  helpers=()
  if [[ ${#pids[@]} -gt 0 ]]; then mapfile -t helpers < <(descendants "${pids[@]}"); fi
  # 1. Cancel every job and wait for them to leave the queue (needs slurmctld up).
  if [[ -n $(daemon_pids slurmctld) ]] && scontrol ping 2>/dev/null | grep -q 'is UP'; then
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null || true)
    if [[ ${#jobs[@]} -gt 0 ]]; then
      log "cancelling jobs: ${jobs[*]}"
      scancel "${jobs[@]}" 2>/dev/null || true
      local deadline=$((SECONDS + STOP_TIMEOUT))
      while [[ -n $(squeue -h -o %i 2>/dev/null || true) ]]; do
        if ((SECONDS >= deadline)); then
          log "jobs still listed after ${STOP_TIMEOUT}s; shutting down anyway"
          break
        fi
        sleep 0.5
      done
    fi
    # 2. scontrol shutdown stops slurmctld and every slurmd it knows.
    scontrol shutdown >/dev/null 2>&1 || true
  fi
  # 3. Whatever is still there: give it a moment, then SIGTERM, then SIGKILL after STOP_TIMEOUT.
  mapfile -t pids < <(daemon_pids slurmctld)
  if [[ ${#pids[@]} -gt 0 ]]; then
    wait_gone "$STOP_TIMEOUT" "${pids[@]}" || true
    mapfile -t pids < <(daemon_pids slurmctld)
    terminate slurmctld "${pids[@]}"
  fi
  pids=()
  for p in "${helpers[@]}"; do
    if alive "$p" && [[ $(cat "/proc/$p/comm" 2>/dev/null) == slurmscriptd ]]; then pids+=("$p"); fi
  done
  terminate slurmscriptd "${pids[@]}"
  mapfile -t pids < <(daemon_pids slurmd)
  if [[ ${#pids[@]} -gt 0 ]]; then
    wait_gone 10 "${pids[@]}" || true
    mapfile -t pids < <(daemon_pids slurmd)
    terminate slurmd "${pids[@]}"
  fi
  # Steps whose slurmd is gone (e.g. slurmctld had died, so no job was cancelled) would run on
  # unsupervised: kill them and their tasks.
  mapfile -t pids < <(stepd_pids)
  if [[ ${#pids[@]} -gt 0 ]]; then
    local -a tasks
    mapfile -t tasks < <(descendants "${pids[@]}")
    log "killing leftover slurmstepd ${pids[*]} and their tasks ${tasks[*]}"
    pids+=("${tasks[@]}")
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait_gone 10 "${pids[@]}" || true
  fi
  mapfile -t pids < <(daemon_pids munged)
  terminate munged "${pids[@]}"
  rm -f "$RUN"/munged.pid "$RUN"/slurmctld.pid "$RUN"/slurmd.pid
  log "cluster in $DIR stopped"
  return 0
}

do_status() {
  local d n=0
  local -a pids
  echo "cluster in $DIR (SLURM_CONF=$CONF)"
  for d in "${DAEMONS[@]}"; do
    mapfile -t pids < <(daemon_pids "$d")
    if [[ ${#pids[@]} -gt 0 ]]; then
      echo "$d: running (pid ${pids[*]})"
      n=$((n + 1))
    else
      echo "$d: stopped"
    fi
  done
  if [[ -n $(daemon_pids slurmctld) ]]; then
    sinfo 2>&1 || true
  fi
  ((n == 3)) && return 0
  ((n == 0)) && return 3
  return 1
}

case $ACTION in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) usage ;;
esac
