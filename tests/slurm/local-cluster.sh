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
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=cluster-lib.sh
. "$HERE/cluster-lib.sh"
CTLD_PORT=${LOCAL_SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${LOCAL_SLURM_SLURMD_PORT:-16818}
MEM_MARGIN_MB=${LOCAL_SLURM_MEM_MARGIN_MB:-1024}
MIN_JOB_AGE=${LOCAL_SLURM_MIN_JOB_AGE:-300}
CLUSTER_NAME=${LOCAL_SLURM_CLUSTER_NAME:-perennial}
OVERSUBSCRIBE=${LOCAL_SLURM_OVERSUBSCRIBE:-FORCE:4}
START_TIMEOUT=${LOCAL_SLURM_START_TIMEOUT:-60}
STOP_TIMEOUT=${LOCAL_SLURM_STOP_TIMEOUT:-30}
DAEMONS=(munged slurmctld slurmd)

usage() {
  echo "usage: $PROG start|stop|status DIR" >&2
  exit 2
}

help_if_asked "$0" "$@"
[[ $# -eq 2 ]] || usage
ACTION=$1
[[ -n $2 ]] || usage
cluster_paths "$2"
SPOOL=$DIR/spool

cluster_up() {
  [[ -n $(daemon_pids munged) && -n $(daemon_pids slurmctld) && -n $(daemon_pids slurmd) ]]
}

node_state() {
  sinfo -h -N -n localhost -o %T 2>/dev/null | head -n1
}

# ---------------------------------------------------------------------------------------------
write_config() {
  local cpus hw_cpus overrides=""
  hw_cpus=$(nproc)
  cpus=${LOCAL_SLURM_CPUS:-$hw_cpus}
  [[ $cpus =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_CPUS must be a positive integer, not '$cpus'"
  # Claiming more CPUs than slurmd finds would mark the node INVAL unless config_overrides.
  ((cpus <= hw_cpus)) || overrides="SlurmdParameters=config_overrides"
  {
    common_config local-cluster.sh "localhost(127.0.0.1)" "SlurmctldTimeout=60
SlurmdTimeout=60
$overrides"
    cat <<EOF
SlurmdSpoolDir=$SPOOL
SlurmdPidFile=$RUN/slurmd.pid
SlurmdLogFile=$LOGDIR/slurmd.log

NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$(real_memory_mb) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=$OVERSUBSCRIBE
EOF
  } >"$CONF"
}

show_logs() { tail_logs "$LOGDIR"/munged.log "$LOGDIR"/slurmctld.log "$LOGDIR"/slurmd.log; }

print_env() {
  echo "export SLURM_CONF=$CONF"
}

do_start() {
  need_slurm
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
  make_dirs
  mkdir -p "$SPOOL"
  chmod 0755 "$SPOOL"
  write_config
  rm -f "$RUN"/munged.pid "$RUN"/slurmctld.pid "$RUN"/slurmd.pid
  start_munged
  # shellcheck disable=SC2119  # no prefix: slurmctld runs in this namespace
  start_slurmctld

  slurmd -f "$CONF" -N localhost </dev/null || fail_start "slurmd failed to start"
  local launched=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
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
  stop_daemons
  log "cluster in $DIR stopped"
  return 0
}

do_status() {
  local n=0
  echo "cluster in $DIR (SLURM_CONF=$CONF)"
  status_daemons || n=$?
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
