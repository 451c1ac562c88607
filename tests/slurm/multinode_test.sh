#!/usr/bin/env bash
# Training across nodes on a real 2-node Slurm cluster (tests/slurm/multi-node-cluster.sh: two
# network, UTS and mount namespaces on a bridge of their own, a slurmd in each):
#  0. the cluster: tasks of one step run on node1 and node2 (their own host names and addresses),
#     PMIx gives them their ranks;
#  1. a reference at world size 2 on ONE node (sbatch --nodes=1 --ntasks-per-node=2), its
#     gradients summed in memory the ranks share (NOTE [Shared-memory all-reduce]);
#  2. srun + PMIx across the nodes (sbatch --nodes=2 --ntasks-per-node=1 slurm/train.sbatch),
#     Open MPI over TCP on the namespaces' eth0 (OMPI_MCA_btl_tcp_if_include): the same
#     param_sha256 as 1 (MPI's sums are the shared-memory ones bit for bit at 2 ranks), ranks on
#     node1 and node2 in result.json, every rank's log line names its host, its local rank and
#     the interface MPI uses, and says the buckets are not shared (the ranks span 2 nodes);
#  3. mpirun across the nodes, started on node1, its daemon on node2 through the cluster's rsh
#     stand-in (no ssh): the same param_sha256, and Open MPI's own log says it connects over eth0;
#  4. two ranks per node on two nodes (PERENNIAL_RANKS_PER_NODE=2 with --nodes=2, the way node
#     ranges get several ranks per node): each rank reports its host and the local rank, and so
#     the local GPU, it takes (0 and 1 on each node); the same param_sha256 as 4 ranks on one node
#     (under mpirun on node1);
#  5. stopping the cluster leaves no namespace, interface or process behind.
# Exit 77 (skipped) without Slurm, without root, or where network namespaces cannot be made.
# usage: multinode_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
. "$src/tests/cli/lib.sh"
. "$src/tests/slurm/lib.sh"
started=$SECONDS
multinode_test pmnt 10.213.1
export PERENNIAL=$bin
net=10.213.1

# 0. One step, a task on each node.
# shellcheck disable=SC2016  # expanded by the tasks
out=$(timeout 60 srun -N2 -n2 --mpi=pmix bash -c \
  'echo "$SLURM_PROCID $PMIX_RANK $(hostname) $(ip -4 -br addr show eth0 | awk "{ print \$3 }")"' | sort)
[ "$out" = "0 0 node1 $net.11/24
1 1 node2 $net.12/24" ] || fail "srun -N2 -n2: $out"
echo "cluster: node1 and node2 up, a 2-task PMIx step spans them ($((SECONDS - started)) s)"

fm_fixture "$bin"
mkdir -p "$t/train"
cp "$t"/fm/train/shard-0000[0-3].h5 "$t/train/"
cat >"$t/train.cfg" <<CFG
[model]
arch = mlp
hidden = 32
[train]
epochs = 1
batch_size = 32
log_every = 50
[checkpoint]
every_steps = 50
[comm]
timeout_s = 60
[log]
progress = lines
CFG
# Open MPI's TCP transport on the nodes' interface (the bridge side has no eth0 of its own).
export OMPI_MCA_btl_tcp_if_include=eth0 OMPI_MCA_oob_tcp_if_include=eth0

# train NAME SBATCH_OPTION...: a training job into $t/NAME; waits for it; fails unless COMPLETED.
train() {
  local name=$1 job state
  shift
  job=$(sbatch --parsable --output="$t/$name.log" --chdir="$t" "$@" "$src/slurm/train.sbatch" \
    --config "$t/train.cfg" --run-dir "$t/$name" --data.train "$t/train" --data.test "$t/holdout")
  state=$(wait_job "$job" 240)
  [ "$state" = COMPLETED ] || { cat "$t/$name.log"; fail "job $name ended '$state'"; }
}
sha() { json "$t/$1/result.json" param_sha256; }
hosts() { /usr/bin/python3 -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['hosts']))" "$t/$1/result.json"; }
# expect_line NAME RANK TEXT: rank RANK's log line in $t/NAME.log contains TEXT.
expect_line() {
  grep -F "[rank $2] info [train] on host " "$t/$1.log" | grep -qF -- "$3" ||
    { grep -F "on host" "$t/$1.log"; fail "$1: rank $2 does not say '$3'"; }
}

# 1. World size 2 on one node.
train one --nodes=1 --ntasks-per-node=2
reference=$(sha one)
[ "$(hosts one)" = "node1 node1" ] || fail "one node: hosts $(hosts one)"
grep -qF "two-shot all-reduce" "$t/one.log" || fail "one node: the buckets were not reduced in shared memory"
echo "1 node, 2 ranks: param_sha256 ${reference:0:16} ($((SECONDS - started)) s)"

# 2. srun + PMIx across the nodes.
train srun --nodes=2 --ntasks-per-node=1
[ "$(sha srun)" = "$reference" ] || fail "2 nodes (srun): param_sha256 $(sha srun), 1 node: $reference"
[ "$(hosts srun)" = "node1 node2" ] || fail "2 nodes (srun): hosts $(hosts srun)"
[ "$(json "$t/srun/result.json" nodes)" = 2 ] || fail "2 nodes (srun): result.json nodes"
grep -qF "world size 2 on 2 node(s): node1 (rank 0), node2 (rank 1)" "$t/srun.log" || { cat "$t/srun.log"; fail "srun: the job's layout"; }
grep -qF "not in shared memory: the ranks run on 2 nodes" "$t/srun.log" || fail "srun: the log does not say why the buckets are not shared"
expect_line srun 0 "on host node1: local rank 0 of 1 on this node (from SLURM_LOCALID)"
expect_line srun 0 "MPI over TCP: eth0 $net.11/24 (btl_tcp_if_include = eth0)"
expect_line srun 1 "on host node2: local rank 0 of 1 on this node (from SLURM_LOCALID)"
expect_line srun 1 "MPI over TCP: eth0 $net.12/24 (btl_tcp_if_include = eth0)"
echo "2 nodes, srun + PMIx: same param_sha256, ranks on node1 and node2 over eth0 ($((SECONDS - started)) s)"

# 3. mpirun on node1, its daemon on node2 through the rsh stand-in; Open MPI says which interface.
"$cluster_sh" exec "$cluster" node1 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  timeout 240 mpirun --mca plm_rsh_agent "$cluster/bin/rsh" --host node1,node2 -np 2 \
  --mca btl self,tcp --mca btl_base_verbose 100 -x OMPI_MCA_btl_tcp_if_include \
  "$bin" train --config "$t/train.cfg" --run-dir "$t/mpirun" --data.train "$t/train" --data.test "$t/holdout" \
  >"$t/mpirun.log" 2>&1 || { tail -50 "$t/mpirun.log"; fail "mpirun across the nodes failed"; }
[ "$(sha mpirun)" = "$reference" ] || fail "2 nodes (mpirun): param_sha256 $(sha mpirun), 1 node: $reference"
[ "$(hosts mpirun)" = "node1 node2" ] || fail "2 nodes (mpirun): hosts $(hosts mpirun)"
expect_line mpirun 1 "on host node2: local rank 0 of 1 on this node (from OMPI_COMM_WORLD_LOCAL_RANK)"
for n in 1 2; do
  grep -F "[node$n:" "$t/mpirun.log" | grep -F "btl: tcp: Using interface: eth0" >/dev/null ||
    { grep -F "btl" "$t/mpirun.log" | head; fail "mpirun: Open MPI on node$n does not say it uses eth0"; }
done
grep -qE "\[node2:[0-9]+\] btl:tcp: (connect\(\) to $net\.11|now connected to $net\.11)|\[node1:[0-9]+\] btl:tcp: (connect\(\) to $net\.12|now connected to $net\.12)" "$t/mpirun.log" ||
  { grep -F "btl:tcp" "$t/mpirun.log" | head; fail "mpirun: no TCP connection between the nodes' addresses in Open MPI's log"; }
echo "2 nodes, mpirun: same param_sha256; Open MPI's TCP transport on eth0 between $net.11 and $net.12 ($((SECONDS - started)) s)"

# 4. Two ranks per node on two nodes, against four ranks on one node.
# (The reference under mpirun on node1: Slurm will not place 4 tasks on a node of 2 CPUs.)
"$cluster_sh" exec "$cluster" node1 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  timeout 240 mpirun -np 4 --oversubscribe "$bin" train --config "$t/train.cfg" --run-dir "$t/four-one" \
  --data.train "$t/train" --data.test "$t/holdout" >"$t/four-one.log" 2>&1 ||
  { tail -30 "$t/four-one.log"; fail "4 ranks on node1 failed"; }
PERENNIAL_RANKS_PER_NODE=2 train four-two --nodes=2 --cpus-per-task=2
[ "$(sha four-two)" = "$(sha four-one)" ] || fail "4 ranks: param_sha256 on 2 nodes $(sha four-two), on 1 node $(sha four-one)"
[ "$(hosts four-two)" = "node1 node1 node2 node2" ] || fail "4 ranks on 2 nodes: hosts $(hosts four-two)"
grep -qF "2 rank(s) on each of 2 node(s)" "$t/four-two.log" || fail "train.sbatch does not say it runs 2 ranks per node"
for r in 0 1 2 3; do
  node=node$((r / 2 + 1)) local=$((r % 2))
  expect_line four-two $r "on host $node: local rank $local of 2 on this node (from SLURM_LOCALID)"
  expect_line four-two $r "(on GPUs it would take local GPU $local:"
done
if grep -qF "but MPI_COMM_TYPE_SHARED gives" "$t/four-two.log"; then fail "the launcher's and MPI's local ranks disagree"; fi
echo "2 ranks per node on 2 nodes: local ranks (and GPUs) 0 and 1 on each node; same param_sha256 as 4 ranks on 1 node ($((SECONDS - started)) s)"

# 5. Nothing left behind.
"$cluster_sh" stop "$cluster" 2>/dev/null
left=$(ip netns list | grep -E "^$MULTI_SLURM_PREFIX-" || true)
[ -z "$left" ] || fail "network namespaces left after stop: $left"
if ip link show "${MULTI_SLURM_PREFIX}br" >/dev/null 2>&1; then fail "bridge ${MULTI_SLURM_PREFIX}br left after stop"; fi
if left=$(pgrep -af -- "$cluster/"); then fail "processes left after stop: $left"; fi
echo "PASS: multi-node training (srun + PMIx and mpirun across 2 nodes, 2 ranks per node, determinism against 1 node) in $((SECONDS - started)) s"
