#!/usr/bin/env bash
# The collective watchdog turns a stall into a prompt, named failure instead of a hang.
# usage: stall_test.sh MPIEXEC STALL_BINARY
set -uo pipefail
mpiexec=$1 bin=$2
start=$(date +%s)
out=$("$mpiexec" -np 2 --oversubscribe "$bin" 2>&1); rc=$?
took=$(( $(date +%s) - start ))
fail() { echo "FAIL: $*"; echo "$out"; exit 1; }
[ "$rc" != 0 ] || fail "a stalled job exited 0"
[ "$took" -lt 30 ] || fail "the stall took ${took}s to end (timeout 1 s)"
grep -q "MPI_Allreduce (collective #2) timed out" <<<"$out" || fail "the message does not name the call"
grep -q "on rank 0/2" <<<"$out" || fail "the message does not name the rank"
echo "stall detected and the job ended in ${took}s (exit $rc)"
