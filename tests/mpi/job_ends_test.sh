#!/usr/bin/env bash
# A multi-rank job that goes wrong must end promptly (well under 30 s), non-zero, saying why.
# usage: job_ends_test.sh [-np N] MPIEXEC BINARY [ARG...] [+PATTERN | -PATTERN]...
#   N ranks (default 2); ARGs (words without a leading + or -) go to BINARY;
#   +PATTERN: the output must contain it; -PATTERN: the output must not. @HOST@ in a pattern
#   stands for this machine's host name.
set -uo pipefail
np=2
if [ "$1" = -np ]; then np=$2; shift 2; fi
mpiexec=$1 bin=$2
shift 2
args=()
while [ $# -gt 0 ] && [[ $1 != [+-]* ]]; do args+=("$1"); shift; done
start=$(date +%s)
out=$("$mpiexec" -np "$np" --oversubscribe "$bin" "${args[@]}" 2>&1); rc=$?
took=$(( $(date +%s) - start ))
fail() { echo "FAIL: $*"; echo "$out"; exit 1; }
[ "$rc" != 0 ] || fail "the job exited 0"
[ "$took" -lt 30 ] || fail "the job took ${took}s to end"
host=$(hostname)
for p in "$@"; do
  p=${p//@HOST@/$host}
  case $p in
    +*) grep -qF -- "${p#+}" <<<"$out" || fail "the output does not say '${p#+}'" ;;
    -*) if grep -qF -- "${p#-}" <<<"$out"; then fail "the output says '${p#-}'"; fi ;;
  esac
done
echo "the job ended in ${took}s (exit $rc)"
