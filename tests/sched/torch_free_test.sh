#!/usr/bin/env bash
# The scheduler library links no LibTorch and no MPI (issue 18): the programs built on it alone
# (its tests, its benchmark) must not load libtorch, libc10 or libmpi. The check is on what the
# dynamic loader resolves (ldd: the whole closure, so a library that links them counts too). It
# must be able to fail: the `perennial` executable, which does link the trainer, is checked to load
# them (a control), so a broken ldd or a changed library name cannot make the test pass.
# usage: torch_free_test.sh PERENNIAL TORCH_FREE_PROGRAM...
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
heavy='lib(torch|torch_cpu|c10|mpi)\.so'
control=$1
shift
[ $# -gt 0 ] || fail "no program to check"
command -v ldd >/dev/null || fail "ldd not found"
# ldd's output is taken whole before it is searched: `ldd | grep -q` under pipefail fails when grep
# exits at its first match while ldd is still writing (SIGPIPE).
deps=$(ldd "$control") || fail "ldd $control failed"
grep -Eq "$heavy" <<<"$deps" || fail "the control $control loads none of $heavy: the check cannot see them"
for program in "$@"; do
  [ -x "$program" ] || fail "$program: not built"
  deps=$(ldd "$program") || fail "ldd $program failed"
  found=$(grep -E "$heavy" <<<"$deps" || true)
  [ -z "$found" ] || fail "$program loads LibTorch or MPI (perennial::scheduler must link neither):
$found"
  echo "ok: $program loads neither LibTorch nor MPI"
done
echo "PASS: the scheduler's programs are torch-free and MPI-free"
