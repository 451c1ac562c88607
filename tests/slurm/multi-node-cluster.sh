#!/usr/bin/env bash
# multi-node-cluster.sh - a real Slurm cluster of N nodes on this one machine: every node is its
# own network namespace (its own address on a bridge the script creates), UTS namespace (its own
# hostname) and mount namespace (its own /etc/hosts and Slurm TmpFS), running its own slurmd.
#
# Usage:
#   tests/slurm/multi-node-cluster.sh start  DIR [NODES]  # network, munged, slurmctld, N slurmd (default 2)
#   tests/slurm/multi-node-cluster.sh stop   DIR          # cancel jobs, stop daemons, remove the network
#   tests/slurm/multi-node-cluster.sh status DIR          # daemons, nodes, links, sinfo
#   tests/slurm/multi-node-cluster.sh exec   DIR NODE COMMAND...  # run COMMAND on NODE
#   tests/slurm/multi-node-cluster.sh kill-node DIR NODE          # SIGKILL every process of NODE
#   tests/slurm/multi-node-cluster.sh link   DIR NODE up|down     # plug / unplug NODE's cable
# (kill-node and link print the time of the act, in seconds since the epoch, on stdout.)
#   tests/slurm/multi-node-cluster.sh restart-node DIR NODE       # NODE's slurmd again (after kill-node)
#
# After `start`, point the Slurm clients at the cluster: start prints `export SLURM_CONF=...` on
# stdout and writes it to DIR/env.sh (progress messages go to stderr). The clients (sbatch,
# squeue, ...) run on this machine's own network namespace, the "login node", which reaches the
# nodes through the bridge; jobs run on the nodes.
#
# The cluster (defaults; settings below):
#   network   bridge pmnbr with 10.213.0.254/24 on this machine (no uplink, no default route in
#             any node: nothing can leave the machine); node K is network namespace pmn-nodeK
#             with eth0 = 10.213.0.(10+K)/24 (a veth pair whose other end pmnvK is on the bridge)
#             and lo. The objects created are listed in DIR/net; stop removes exactly those, also
#             after a failed start.
#   head      slurmctld (SlurmctldHost=head(10.213.0.254)) and munged run in this machine's network
#             namespace, slurmctld under the hostname "head" (a UTS namespace of its own).
#   nodes     node1..nodeN (NodeAddr = their address), CPUs = nproc each (the nodes share this
#             machine's cores), partition "debug" (Default=YES, OverSubscribe=FORCE:4, MaxTime
#             INFINITE). Each slurmd runs with `-N nodeK` in the node's namespaces; hostname nodeK;
#             /etc/hosts is DIR/etc/hosts (head and every node) and DIR/tmp (Slurm's TmpFS, where
#             PMIx keeps per-step files) is the node's own DIR/nodes/nodeK/tmp.
#   timing    SlurmdTimeout=10 s: a node that stops answering is DOWN about 10 s later and its
#             jobs are requeued or end NODE_FAIL; ReturnToService=2: it comes back by itself when
#             its slurmd answers again. The rest as local-cluster.sh (cred_expire=10, fast
#             scheduling, jobcomp/filetxt for `sacct -c`, MinJobAge).
#   files     DIR/etc/{slurm.conf,hosts,plugstack.conf}, DIR/munge, DIR/run, DIR/state, DIR/log
#             (munged.log, slurmctld.log, slurmd-nodeK.log), DIR/nodes/nodeK/{spool,tmp,run},
#             DIR/net, DIR/env.sh, DIR/bin/rsh.
#
# Running programs on a node: `exec DIR NODE COMMAND...` enters NODE's namespaces (as a job step
# there would run). DIR/bin/rsh is an rsh/ssh stand-in for Open MPI's launcher: with
#   mpirun --mca plm_rsh_agent DIR/bin/rsh --host node1,node2 ...
# run on node1 (exec DIR node1 mpirun ...), mpirun starts its daemon on node2 through it (no ssh,
# no traffic off the machine). Set OMPI_MCA_btl_tcp_if_include=eth0 (and oob_tcp_if_include) so
# that Open MPI uses the nodes' interface.
#
# Settings (environment; defaults in brackets). Ports are away from Slurm's and local-cluster.sh's
# (16817/16818) so that a one-node cluster can run beside this one:
#   MULTI_SLURM_CTLD_PORT [16837]   SlurmctldPort (on this machine)
#   MULTI_SLURM_SLURMD_PORT [16838] SlurmdPort (in each node's namespace)
#   MULTI_SLURM_SUBNET [10.213.0]   the /24 of the bridge: refused if this machine already routes it
#   MULTI_SLURM_PREFIX [pmn]        names of the bridge (PREFIXbr), namespaces (PREFIX-nodeK) and
#                                   veth ends (PREFIXvK): at most 8 letters or digits
#   MULTI_SLURM_CPUS [nproc]        CPUs of each node
#   MULTI_SLURM_SLURMD_TIMEOUT [10] SlurmdTimeout (seconds until an unanswering node is DOWN)
#   MULTI_SLURM_MIN_JOB_AGE [300]   MinJobAge
#   MULTI_SLURM_MEM_MARGIN_MB [1024], MULTI_SLURM_START_TIMEOUT [60], MULTI_SLURM_STOP_TIMEOUT [15]
#
# Exit codes: 0 ok; 1 failure (start prints the log tails and removes what it made); 2 usage
# error, Slurm or a tool missing, or network namespaces cannot be made here (the message says
# why). `status` exits 0 if munged, slurmctld and every node's slurmd run, 3 if nothing runs, 1
# otherwise. Needs root, Debian's slurmctld slurmd slurm-client munge libpmix-dev, iproute2 and
# util-linux (unshare). DIR: at most 64 characters, no white space.
set -euo pipefail

PROG=$(basename "$0")
SELF=$(realpath "$0")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=cluster-lib.sh
. "$HERE/cluster-lib.sh"

CTLD_PORT=${MULTI_SLURM_CTLD_PORT:-16837}
SLURMD_PORT=${MULTI_SLURM_SLURMD_PORT:-16838}
SUBNET=${MULTI_SLURM_SUBNET:-10.213.0}
PREFIX=${MULTI_SLURM_PREFIX:-pmn}
SLURMD_TIMEOUT=${MULTI_SLURM_SLURMD_TIMEOUT:-10}
MEM_MARGIN_MB=${MULTI_SLURM_MEM_MARGIN_MB:-1024}
MIN_JOB_AGE=${MULTI_SLURM_MIN_JOB_AGE:-300}
START_TIMEOUT=${MULTI_SLURM_START_TIMEOUT:-60}
STOP_TIMEOUT=${MULTI_SLURM_STOP_TIMEOUT:-15}
CLUSTER_NAME=perennial-multi
HEAD_ADDR=$SUBNET.254
BRIDGE=${PREFIX}br

usage() {
  cat >&2 <<EOF
usage: $PROG start DIR [NODES] | stop DIR | status DIR | exec DIR NODE COMMAND...
       | kill-node DIR NODE | link DIR NODE up|down | restart-node DIR NODE
EOF
  exit 2
}
help_if_asked "$0" "$@"
[[ $# -ge 2 && -n $2 ]] || usage
ACTION=$1
cluster_paths "$2"
shift 2
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || { echo "$PROG: MULTI_SLURM_PREFIX must be 1-8 lower-case letters or digits, starting with a letter (network interface names are at most 15 characters)" >&2; exit 2; }
[[ $SUBNET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || { echo "$PROG: MULTI_SLURM_SUBNET must be the first three numbers of a /24, like 10.213.0 (got '$SUBNET')" >&2; exit 2; }
[[ $SLURMD_TIMEOUT =~ ^[1-9][0-9]*$ ]] || { echo "$PROG: MULTI_SLURM_SLURMD_TIMEOUT must be a positive number of seconds" >&2; exit 2; }

HOSTS=$ETC/hosts
NODES_DIR=$DIR/nodes
NETLIST=$DIR/net

# The nodes of this cluster (from slurm.conf's NodeName line once written).
node_names() {
  [[ -f $CONF ]] || return 0
  sed -n 's/^NodeName=node\[1-\([0-9]*\)\].*/\1/p' "$CONF" | head -n1 | { read -r n && seq -f 'node%g' 1 "$n"; } || true
}
node_index() { [[ $1 =~ ^node([1-9][0-9]*)$ ]] && echo "${BASH_REMATCH[1]}"; }
netns_of() { echo "$PREFIX-$1"; }
addr_of() { echo "$SUBNET.$((10 + $(node_index "$1")))"; }

# known_node NODE: exit 2 unless NODE is one of this cluster's nodes.
known_node() {
  local n
  for n in $(node_names); do [[ $n == "$1" ]] && return 0; done
  echo "$PROG: no node '$1' in the cluster in $DIR (nodes: $(node_names | tr '\n' ' '))" >&2
  exit 2
}

# on_node NODE COMMAND...: COMMAND in NODE's network namespace, with its own UTS namespace
# (hostname NODE) and mount namespace (DIR/etc/hosts on /etc/hosts, the node's tmp on TmpFS).
on_node() {
  local node=$1
  shift
  # shellcheck disable=SC2016  # the inner shell expands its own arguments
  # nsenter, not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup, which slurmd needs.
  nsenter --net="/run/netns/$(netns_of "$node")" unshare --uts --mount --propagation private -- /bin/sh -c '
    hostname "$1" && mount --bind "$2" /etc/hosts && mount --bind "$3" "$4" || exit 111
    shift 4
    exec "$@"' sh "$node" "$HOSTS" "$NODES_DIR/$node/tmp" "$TMPFS" "$@"
}

# ---------------------------------------------------------------------------------------------
# The network. Every object is recorded in DIR/net before it is made, so that stop (also after a
# failed start) removes what this cluster made and nothing else.
net_record() { echo "$1 $2" >>"$NETLIST"; }

net_fail() {
  log "cannot make network namespaces here: $*"
  log "(needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN, iproute2, and veth and bridge support in the kernel)"
  do_stop >/dev/null 2>&1 || true
  exit 2
}

make_network() {
  local n=$1 k node ns veth err
  : >"$NETLIST"
  if ip -4 route show to match "$SUBNET.1" 2>/dev/null | grep -qv '^default'; then
    die "$SUBNET.0/24 is already routed on this machine ($(ip -4 route show to match "$SUBNET.1" | grep -v '^default' | head -n1)); choose another MULTI_SLURM_SUBNET"
  fi
  ip link show "$BRIDGE" >/dev/null 2>&1 && die "a network interface $BRIDGE exists already (another cluster with MULTI_SLURM_PREFIX=$PREFIX?)"
  for k in $(seq "$n"); do
    ns=$(netns_of "node$k")
    [[ -e /run/netns/$ns ]] && die "network namespace $ns exists already (another cluster with MULTI_SLURM_PREFIX=$PREFIX?)"
  done
  net_record bridge "$BRIDGE"
  err=$(ip link add "$BRIDGE" type bridge 2>&1) || net_fail "ip link add $BRIDGE type bridge: $err"
  err=$({ ip addr add "$HEAD_ADDR/24" dev "$BRIDGE" && ip link set "$BRIDGE" up; } 2>&1) || net_fail "$BRIDGE: $err"
  for k in $(seq "$n"); do
    node=node$k
    ns=$(netns_of "$node")
    veth=${PREFIX}v$k
    node_dirs "$node"
    net_record netns "$ns"
    err=$(ip netns add "$ns" 2>&1) || net_fail "ip netns add $ns: $err"
    net_record link "$veth"
    err=$({
      ip link add "$veth" type veth peer name eth0 netns "$ns" &&
        ip link set "$veth" master "$BRIDGE" up &&
        ip -n "$ns" addr add "$(addr_of "$node")/24" dev eth0 &&
        ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up
    } 2>&1) || net_fail "$node: $err"
  done
  # Namespaced commands must work too (unshare, mount in a new mount namespace, hostname).
  err=$(on_node node1 hostname 2>&1) || net_fail "entering node1's namespaces: $err"
  [[ $err == node1 ]] || net_fail "node1's hostname is '$err'"
}

remove_network() {
  [[ -f $NETLIST ]] || return 0
  local kind name p
  local -a pids
  # Processes left in the nodes' namespaces (tasks of a killed slurmd, an mpirun's daemons).
  while read -r kind name; do
    [[ $kind == netns && -e /run/netns/$name ]] || continue
    mapfile -t pids < <(ip netns pids "$name" 2>/dev/null || true)
    if [[ ${#pids[@]} -gt 0 ]]; then
      log "killing processes left in $name: ${pids[*]}"
      kill -KILL "${pids[@]}" 2>/dev/null || true
      wait_gone 10 "${pids[@]}" || log "warning: processes of $name still present after SIGKILL"
    fi
  done <"$NETLIST"
  while read -r kind name; do
    case $kind in
      netns) [[ -e /run/netns/$name ]] && { ip netns delete "$name" 2>/dev/null || log "warning: could not delete network namespace $name"; } ;;
      link | bridge) ip link show "$name" >/dev/null 2>&1 && { ip link delete "$name" 2>/dev/null || log "warning: could not delete $name"; } ;;
    esac
  done < <(tac "$NETLIST")
  rm -f "$NETLIST"
  for p in "$NODES_DIR"/*/tmp; do [[ -d $p ]] && find "$p" -mindepth 1 -delete 2>/dev/null; done
  return 0
}

# ---------------------------------------------------------------------------------------------
write_config() {
  local n=$1 cpus hw_cpus overrides="" k
  hw_cpus=$(nproc)
  cpus=${MULTI_SLURM_CPUS:-$hw_cpus}
  [[ $cpus =~ ^[1-9][0-9]*$ ]] || die "MULTI_SLURM_CPUS must be a positive integer, not '$cpus'"
  ((cpus <= hw_cpus)) || overrides="SlurmdParameters=config_overrides"
  {
    common_config multi-node-cluster.sh "head($HEAD_ADDR)" "SlurmctldTimeout=60
# A node that stops answering is DOWN after this many seconds, its jobs requeued or ended.
SlurmdTimeout=$SLURMD_TIMEOUT
$overrides"
    cat <<EOF
# Per node (slurmd expands %n to its node name).
SlurmdSpoolDir=$NODES_DIR/%n/spool
SlurmdPidFile=$NODES_DIR/%n/run/slurmd.pid
SlurmdLogFile=$LOGDIR/slurmd-%n.log

NodeName=node[1-$n] NodeAddr=$SUBNET.[11-$((10 + n))] CPUs=$cpus RealMemory=$(real_memory_mb) State=UNKNOWN
PartitionName=debug Nodes=node[1-$n] Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  } >"$CONF"
  {
    echo "127.0.0.1 localhost"
    echo "$HEAD_ADDR head"
    for k in $(seq "$n"); do echo "$SUBNET.$((10 + k)) node$k"; done
  } >"$HOSTS"
  mkdir -p "$DIR/bin"
  cat >"$DIR/bin/rsh" <<EOF
#!/bin/sh
# Written by multi-node-cluster.sh: an rsh/ssh stand-in for Open MPI's launcher
# (--mca plm_rsh_agent $DIR/bin/rsh): rsh [-options] NODE COMMAND... runs the command line
# COMMAND on NODE of the cluster in $DIR, through its namespaces instead of the network.
while [ \$# -gt 0 ]; do case \$1 in -*) shift ;; *) break ;; esac; done
[ \$# -ge 2 ] || { echo "usage: rsh NODE COMMAND..." >&2; exit 2; }
node=\$1
shift
exec "$SELF" exec "$DIR" "\$node" /bin/sh -c "\$*"
EOF
  chmod 0755 "$DIR/bin/rsh"
}

show_logs() {
  local n
  tail_logs "$LOGDIR"/munged.log "$LOGDIR"/slurmctld.log
  for n in $(node_names); do tail_logs "$LOGDIR/slurmd-$n.log"; done
}

print_env() { echo "export SLURM_CONF=$CONF"; }

# slurmd_pid NODE: the live slurmd of NODE (by its -N argument), or nothing.
slurmd_pid() {
  local p
  for p in $(daemon_pids slurmd); do
    tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | grep -qxF -- "$1" && echo "$p"
  done
  return 0
}

node_state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n1; }

# node_dirs NODE: the node's own folders (spool, pid file, TmpFS).
node_dirs() {
  mkdir -p "$NODES_DIR/$1/spool" "$NODES_DIR/$1/tmp" "$NODES_DIR/$1/run"
  chmod 0755 "$NODES_DIR" "$NODES_DIR/$1" "$NODES_DIR/$1/spool" "$NODES_DIR/$1/run"
  chmod 1777 "$NODES_DIR/$1/tmp"
}

start_slurmd() {
  local node=$1
  node_dirs "$node"
  rm -f "$NODES_DIR/$node/run/slurmd.pid"
  on_node "$node" slurmd -f "$CONF" -N "$node" </dev/null || fail_start "slurmd of $node failed to start"
}

# wait_idle NODE...: until every NODE is idle (bringing back one left down by an earlier run).
wait_idle() {
  local launched=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) node state pending
  while :; do
    pending=()
    for node in "$@"; do
      state=$(node_state "$node" || true)
      [[ $state == idle* || $state == mixed* || $state == alloc* ]] && continue
      pending+=("$node:${state:-unknown}")
      if [[ $state == down* || $state == drain* || $state == fail* ]]; then
        scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
      fi
      if ((SECONDS - launched >= 3)) && [[ -z $(slurmd_pid "$node") ]]; then
        fail_start "slurmd of $node exited"
      fi
    done
    [[ ${#pending[@]} -eq 0 ]] && return 0
    ((SECONDS < deadline)) || fail_start "nodes not idle within ${START_TIMEOUT}s: ${pending[*]}"
    sleep 0.2
  done
}

cluster_up() {
  local n
  [[ -n $(daemon_pids munged) && -n $(daemon_pids slurmctld) && -f $NETLIST ]] || return 1
  for n in $(node_names); do [[ -n $(slurmd_pid "$n") ]] || return 1; done
  [[ -n $(node_names) ]]
}

do_start() {
  local n=${1:-2}
  [[ $n =~ ^[1-9][0-9]*$ && $n -le 64 ]] || { echo "$PROG: NODES must be a number from 1 to 64 (got '$n')" >&2; exit 2; }
  need_slurm
  local c
  for c in ip unshare nsenter tac; do
    command -v "$c" >/dev/null 2>&1 || { echo "$PROG: $c not found (Debian: iproute2, util-linux, coreutils)" >&2; exit 2; }
  done
  [[ $(id -u) -eq 0 ]] || { echo "$PROG: must run as root (network namespaces, SlurmUser=root)" >&2; exit 2; }
  ((${#DIR} <= 64)) || die "DIR is ${#DIR} characters; at most 64 (unix socket paths under it must fit 107 bytes)"
  if cluster_up; then
    log "a cluster is already running from $DIR (nodes: $(node_names | tr '\n' ' '))"
    print_env
    return 0
  fi
  if [[ -f $NETLIST || -n $(daemon_pids munged) || -n $(daemon_pids slurmctld) || -n $(daemon_pids slurmd) ]]; then
    log "part of a cluster is running from $DIR: stopping it before a fresh start"
    do_stop >/dev/null
  fi
  port_in_use "$CTLD_PORT" && die "TCP port $CTLD_PORT is in use; choose another with MULTI_SLURM_CTLD_PORT"

  local t0=$SECONDS node
  make_dirs
  write_config "$n"
  make_network "$n"
  rm -f "$RUN"/munged.pid "$RUN"/slurmctld.pid
  start_munged
  # slurmctld under the hostname of SlurmctldHost, with the cluster's /etc/hosts.
  # shellcheck disable=SC2016  # the inner shell expands its own arguments
  start_slurmctld unshare --uts --mount --propagation private -- /bin/sh -c \
    'hostname head && mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$HOSTS"
  for node in $(node_names); do start_slurmd "$node"; done
  # shellcheck disable=SC2046  # node names have no spaces
  wait_idle $(node_names)

  print_env >"$DIR/env.sh"
  log "cluster '$CLUSTER_NAME' up in $((SECONDS - t0))s: $(node_names | tr '\n' ' ')idle on $SUBNET.0/24" \
    "(bridge $BRIDGE), partition debug, slurmctld on $HEAD_ADDR:$CTLD_PORT, logs in $LOGDIR"
  print_env
}

do_stop() {
  stop_daemons
  remove_network
  log "cluster in $DIR stopped"
  return 0
}

do_status() {
  local n=0 node ns link pid all=1
  echo "cluster in $DIR (SLURM_CONF=$CONF)"
  status_daemons || n=$?
  for node in $(node_names); do
    ns=$(netns_of "$node")
    if [[ -e /run/netns/$ns ]]; then
      link=$(ip -n "$ns" -br addr show eth0 2>/dev/null | awk '{ print $2, $3 }')
    else
      link="no namespace"
    fi
    [[ -n $(slurmd_pid "$node") ]] || all=0
    pid=$(slurmd_pid "$node")
    echo "$node: netns $ns, eth0 ${link:-missing}, slurmd ${pid:-stopped}"
  done
  if [[ -n $(daemon_pids slurmctld) ]]; then sinfo -N 2>&1 || true; fi
  ((n == 3 && all)) && return 0
  ((n == 0)) && return 3
  return 1
}

case $ACTION in
  start) [[ $# -le 1 ]] || usage; do_start "$@" ;;
  stop) [[ $# -eq 0 ]] || usage; do_stop ;;
  status) [[ $# -eq 0 ]] || usage; do_status ;;
  exec)
    [[ $# -ge 2 ]] || usage
    known_node "$1"
    on_node "$@"
    ;;
  kill-node)
    [[ $# -eq 1 ]] || usage
    known_node "$1"
    mapfile -t pids < <(ip netns pids "$(netns_of "$1")" 2>/dev/null || true)
    [[ ${#pids[@]} -gt 0 ]] || { log "$1: no processes"; exit 0; }
    at=$(date +%s.%N)
    kill -KILL "${pids[@]}" 2>/dev/null || true
    echo "$at"
    wait_gone 10 "${pids[@]}" || true
    log "$1: SIGKILLed ${#pids[@]} processes: ${pids[*]}"
    ;;
  link)
    [[ $# -eq 2 && ($2 == up || $2 == down) ]] || usage
    known_node "$1"
    ip link set "${PREFIX}v$(node_index "$1")" "$2"
    date +%s.%N
    log "$1: link $2"
    ;;
  restart-node)
    [[ $# -eq 1 ]] || usage
    known_node "$1"
    [[ -z $(slurmd_pid "$1") ]] || { log "$1: slurmd runs already"; exit 0; }
    node=$1
    fail_start() { log "error: $*"; tail_logs "$LOGDIR/slurmd-$node.log"; exit 1; }
    start_slurmd "$1"
    wait_idle "$1"
    log "$1: slurmd restarted, node idle"
    ;;
  *) usage ;;
esac
