#!/usr/bin/env bash
# An error on one rank ends the whole job promptly (MPI_Abort), not after the collective timeout.
# usage: rank_failure_test.sh MPIEXEC BINARY
set -uo pipefail
mpiexec=$1 bin=$2
start=$(date +%s)
out=$("$mpiexec" -np 2 --oversubscribe "$bin" 2>&1); rc=$?
took=$(( $(date +%s) - start ))
fail() { echo "FAIL: $*"; echo "$out"; exit 1; }
[ "$rc" != 0 ] || fail "the job exited 0 although rank 1 failed"
[ "$took" -lt 30 ] || fail "the job took ${took}s to end: the other rank waited for its timeout"
grep -q "rank 1: error: injected" <<<"$out" || fail "rank 1's error was not printed"
if grep -q "timed out" <<<"$out"; then fail "the job ended by the watchdog, not by the failing rank"; fi
echo "one rank's failure ended the job in ${took}s (exit $rc)"
