#!/usr/bin/env bash
# A 2-rank job that goes wrong must end promptly (well under 30 s), non-zero, saying why.
# usage: job_ends_test.sh MPIEXEC BINARY [+PATTERN | -PATTERN]...
#   +PATTERN: the output must contain it; -PATTERN: the output must not.
set -uo pipefail
mpiexec=$1 bin=$2
shift 2
start=$(date +%s)
out=$("$mpiexec" -np 2 --oversubscribe "$bin" 2>&1); rc=$?
took=$(( $(date +%s) - start ))
fail() { echo "FAIL: $*"; echo "$out"; exit 1; }
[ "$rc" != 0 ] || fail "the job exited 0"
[ "$took" -lt 30 ] || fail "the job took ${took}s to end"
for p in "$@"; do
  case $p in
    +*) grep -qF -- "${p#+}" <<<"$out" || fail "the output does not say '${p#+}'" ;;
    -*) if grep -qF -- "${p#-}" <<<"$out"; then fail "the output says '${p#-}'"; fi ;;
  esac
done
echo "the job ended in ${took}s (exit $rc)"
