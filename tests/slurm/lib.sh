# shellcheck shell=bash
# Helpers shared by the Slurm test scripts (sourced, after tests/cli/lib.sh).

# need_slurm_root WHY: exit 77 (skipped) unless Slurm is installed and this runs as root.
need_slurm_root() {
  if ! command -v slurmctld >/dev/null; then
    echo "SKIP: Slurm is not installed (scripts/install-deps.sh installs slurmctld slurmd slurm-client munge)"
    exit 77
  fi
  [ "$(id -u)" = 0 ] || { echo "SKIP: needs root ($1)"; exit 77; }
}

# free_ports VAR1 [VAR2]: exports VAR1 (and VAR2 = VAR1 + 1) as free TCP ports in 20000-29999
# (below Linux's ephemeral range), unless VAR1 is set already, so a cluster of the test's own can
# run beside a system Slurm or another test's cluster.
free_ports() {
  [ -z "${!1:-}" ] || return 0
  local p hex _
  port_free() {
    hex=$(printf '%04X' "$1")
    ! cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
      awk -v h=":$hex" 'substr($2, length($2) - 4) == h { found = 1 } END { exit !found }'
  }
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 5000 * 2))
    if port_free "$p" && port_free $((p + 1)); then
      export "$1=$p"
      [ -z "${2:-}" ] || export "$2=$((p + 1))"
      return 0
    fi
  done
}

# fm_fixture PERENNIAL: Fashion-MNIST in shards of 2000 rows ($t/fm/train, $t/fm/test) and a
# holdout of one test shard ($t/holdout).
fm_fixture() {
  "$1" data import-fashion-mnist --out "$t/fm" --shard-size 2000 >/dev/null
  mkdir -p "$t/holdout"
  cp "$t/fm/test/shard-00000.h5" "$t/holdout/"
}

# job_state JOB: Slurm's state of a job (empty once forgotten).
job_state() { scontrol show job "$1" -o 2>/dev/null | sed -n 's/.* JobState=\([^ ]*\).*/\1/p'; }

# wait_job JOB SECONDS: until the job has ended; prints its final state (TIMEDOUT if it has not).
wait_job() {
  local deadline=$((SECONDS + $2)) s
  while [ $SECONDS -lt "$deadline" ]; do
    s=$(job_state "$1")
    case $s in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE) echo "$s"; return 0 ;; esac
    sleep 1
  done
  echo "TIMEDOUT"
}

# slurm_test_dir NAME CLUSTER_SCRIPT: a fresh folder $t under /tmp (short, for the unix socket
# paths under it) holding the cluster's folder $cluster; on exit the cluster is stopped (by
# CLUSTER_SCRIPT stop) and $t removed.
slurm_test_dir() {
  t=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$t"  # munged needs every folder on its socket path searchable by all
  cluster=$t/c
  cluster_script=$2
  trap slurm_test_cleanup EXIT
}
slurm_test_cleanup() {
  "$cluster_script" stop "$cluster" >/dev/null 2>&1 || true
  rm -rf "$t"
}

# multinode_test PREFIX SUBNET: skips (exit 77) without Slurm or root; a test folder ($t, removed
# on exit) and in it a running 2-node cluster ($cluster, stopped on exit; multi-node-cluster.sh
# as $cluster_sh) with network names PREFIX* and the /24 SUBNET of the test's own (so that another
# multi-node cluster may run beside it), on a free controller port; exit 77 where network
# namespaces cannot be made. Exports SLURM_CONF.
multinode_test() {
  # shellcheck disable=SC2154  # src: the sources, set by the calling test
  cluster_sh=$src/tests/slurm/multi-node-cluster.sh
  need_slurm_root "network namespaces; the cluster runs SlurmUser=root"
  slurm_test_dir "$1" "$cluster_sh"
  export MULTI_SLURM_PREFIX=$1 MULTI_SLURM_SUBNET=$2
  free_ports MULTI_SLURM_CTLD_PORT
  local rc=0
  "$cluster_sh" start "$cluster" 2 >"$t/start.out" 2>"$t/start.err" || rc=$?
  if [ $rc = 2 ]; then
    echo "SKIP: $(cat "$t/start.err")"
    exit 77
  fi
  [ $rc = 0 ] || { cat "$t/start.err"; fail "multi-node-cluster.sh start failed ($rc)"; }
  export SLURM_CONF=$cluster/etc/slurm.conf
}
