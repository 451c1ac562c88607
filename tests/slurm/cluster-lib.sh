# shellcheck shell=bash
# cluster-lib.sh - what local-cluster.sh (one node) and multi-node-cluster.sh (N nodes in network
# namespaces) share: finding, waiting for and stopping this cluster's processes, munged, slurmctld,
# the common part of slurm.conf, and the stop sequence. Sourced, never run.
#
# The sourcing script sets PROG, calls cluster_paths DIR (which sets DIR CONF ETC MUNGE_DIR
# MUNGE_KEY MUNGE_SOCKET RUN STATE LOGDIR TMPFS), and sets, before calling anything else here:
#   CTLD_PORT SLURMD_PORT MIN_JOB_AGE MEM_MARGIN_MB CLUSTER_NAME START_TIMEOUT STOP_TIMEOUT
# and may define show_logs (the log tails printed by fail_start) and do_stop.
#
# A daemon belongs to this cluster when its comm is the daemon's name and one of its arguments is
# exactly this cluster's slurm.conf (slurmctld, slurmd are started with -f CONF) or munge socket
# (munged --socket=...). This is immune to stale pid files and pid reuse. PID 1 on some machines
# reaps slowly, so a stopped daemon may linger as a zombie: a process is judged by
# /proc/PID/stat's state (Z = gone), never by `kill -0`.

SLURM_PACKAGES="slurmctld slurmd slurm-client munge libpmix-dev"

log() { echo "$PROG: $*" >&2; }

# help_if_asked SCRIPT ARGS...: with -h or --help, prints SCRIPT's header comment and exits 0.
help_if_asked() {
  [[ ${2:-} == -h || ${2:-} == --help ]] || return 0
  sed -n '2,/^set -euo/p' "$1" | sed '$d; s/^# \{0,1\}//'
  exit 0
}

# cluster_paths ARG: DIR from the command line's folder ARG (absolute, normalised: no trailing
# slash, ./ or ../, whether or not it exists) and the cluster's paths under it; points Slurm's
# clients at it, and away from any job's settings in the caller's environment (e.g. inside a job).
cluster_paths() {
  case $1 in /*) DIR=$1 ;; *) DIR=$PWD/$1 ;; esac
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
  LOGDIR=$DIR/log
  TMPFS=$DIR/tmp
  export SLURM_CONF=$CONF
  unset SLURM_CLUSTERS SLURM_PARTITION SLURM_JOB_ID SLURM_JOBID 2>/dev/null || true
}
die() { echo "$PROG: error: $*" >&2; exit 1; }

# need_slurm: exit 2 with the packages to install unless Slurm's daemons and clients are here.
need_slurm() {
  local c
  for c in slurmctld slurmd munged sinfo scontrol; do
    command -v "$c" >/dev/null 2>&1 || {
      echo "$PROG: $c not found. Install Debian's packages: apt-get install $SLURM_PACKAGES" >&2
      exit 2
    }
  done
}

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

# daemon_pids NAME: the live pids of this cluster's daemon NAME (every node's, for slurmd).
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

# port_in_use PORT: true if something listens on TCP PORT (any address) in this network namespace.
port_in_use() {
  local hex
  hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v h=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }'
}

# real_memory_mb: RealMemory for a node: MemTotal minus MEM_MARGIN_MB (half of it if small).
real_memory_mb() {
  local mem_kb mem_mb real_mem
  mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
  mem_mb=$((mem_kb / 1024))
  real_mem=$((mem_mb - MEM_MARGIN_MB))
  ((real_mem >= 256)) || real_mem=$((mem_mb / 2))
  echo "$real_mem"
}

# common_config SCRIPT CONTROLLER EXTRA: the body of slurm.conf both scripts share (on stdout).
# CONTROLLER is SlurmctldHost's value; SCRIPT names the writer; EXTRA lines are appended to the
# daemon settings (e.g. SlurmdTimeout, config_overrides). Node-specific paths (SlurmdSpoolDir,
# SlurmdPidFile, SlurmdLogFile) and the node and partition lines are the caller's.
common_config() {
  cat <<EOF
# Written by tests/slurm/$1: files all under $DIR. Rewritten by every start; edit the script,
# not this file.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$2
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
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
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
InactiveLimit=0
KillWait=10
$3
EOF
}

# make_dirs: the cluster's folders with the modes munged and the daemons want, the munge key,
# an empty plugstack.conf (else Slurm would read /etc/slurm/plugstack.conf).
make_dirs() {
  mkdir -p "$ETC" "$MUNGE_DIR" "$STATE" "$LOGDIR" "$RUN" "$TMPFS"
  chmod 0755 "$DIR" "$ETC" "$STATE" "$LOGDIR" "$RUN"
  chmod 0700 "$MUNGE_DIR"
  chmod 1777 "$TMPFS"
  if [[ ! -s $MUNGE_KEY ]]; then
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile="$MUNGE_KEY" >/dev/null
    else
      dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
  fi
  chmod 0400 "$MUNGE_KEY"
  : >"$ETC/plugstack.conf"
}

# tail_logs FILE...: the last lines of each existing FILE, on stderr.
tail_logs() {
  local f
  for f in "$@"; do
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

# start_munged: this cluster's munged, answering on MUNGE_SOCKET (it forks by itself).
start_munged() {
  munged --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" --pid-file="$RUN/munged.pid" \
    --log-file="$LOGDIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" </dev/null ||
    fail_start "munged failed to start"
  local deadline=$((SECONDS + 15))
  until munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail_start "munged does not answer on $MUNGE_SOCKET"
    sleep 0.2
  done
}

# start_slurmctld [PREFIX...]: runs PREFIX... slurmctld -f CONF and waits until it answers.
# The daemons fork twice: right after the command returns the final process may not exist yet,
# so "exited" is only judged after a grace period.
start_slurmctld() {
  "$@" slurmctld -f "$CONF" </dev/null || fail_start "slurmctld failed to start"
  local launched=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
  until scontrol ping 2>/dev/null | grep -q 'is UP'; do
    if ((SECONDS - launched >= 3)) && [[ -z $(daemon_pids slurmctld) ]]; then
      fail_start "slurmctld exited"
    fi
    ((SECONDS < deadline)) || fail_start "slurmctld did not answer within ${START_TIMEOUT}s"
    sleep 0.2
  done
}

# stop_daemons: cancel every job, stop slurmctld, every slurmd, leftover steps and munged.
stop_daemons() {
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
  return 0
}

# status_daemons: one line per daemon kind (running with its pids, or stopped); returns how many
# kinds run, as the exit status (0 to 3).
status_daemons() {
  local d n=0
  local -a pids
  for d in munged slurmctld slurmd; do
    mapfile -t pids < <(daemon_pids "$d")
    if [[ ${#pids[@]} -gt 0 ]]; then
      echo "$d: running (pid ${pids[*]})"
      n=$((n + 1))
    else
      echo "$d: stopped"
    fi
  done
  return $n
}
