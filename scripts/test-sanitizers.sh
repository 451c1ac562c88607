#!/usr/bin/env bash
# Builds the unit-test executables with AddressSanitizer (with LeakSanitizer) and
# UndefinedBehaviorSanitizer in build-asan/ and runs them; any report fails. Only the
# single-process GoogleTest binaries: nothing here needs mpirun, Slurm or a GPU (CUDA/NCCL is
# configured off). Leak suppressions, for third-party libraries only, are in tests/sanitizers/.
# Compiles go through ccache (CMakeLists.txt), so a rerun rebuilds only what changed.
# Usage: scripts/test-sanitizers.sh [GTEST_ARGS...]   (e.g. --gtest_filter=Catalog*; given to every binary)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=build-asan
targets=(perennial_unit_tests perennial_sched_tests perennial_model_tests)

# -O1 -g1 (line tables: file:line in every stack): with UBSan, a LibTorch unit at -O2 -g takes
# 2.4x as long to compile as in the Release build, at -O1 -g1 1.5x. _GLIBCXX_ASSERTIONS adds
# libstdc++'s bounds checks (operator[], front(), back()) without changing any layout.
# float-cast-overflow (a float-to-integer conversion out of range: undefined behaviour) is not
# part of GCC's -fsanitize=undefined.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
      -DCMAKE_CXX_FLAGS="-D_GLIBCXX_ASSERTIONS" \
      -DPERENNIAL_SANITIZE=address,undefined,float-cast-overflow \
      -DPERENNIAL_WITH_CUDA=OFF -DPERENNIAL_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"

# ASan: detect_stack_use_after_return catches references to a returned function's locals;
# check_initialization_order/strict_init_order catch a static initialiser reading another
# translation unit's global before it is constructed. halt_on_error: the first report ends the
# binary with a non-zero status (UBSan too: compiled with -fno-sanitize-recover=all).
asan_common="halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:print_summary=1"
export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:print_summary=1"

status=0
for t in "${targets[@]}"; do
  asan=$asan_common
  # perennial_model_tests builds an MpiCommunicator, so the process initialises Open MPI as a
  # singleton (no mpirun). That works under ASan as it is (no MPI-specific ASan option is
  # needed); what Open MPI leaves allocated at exit is suppressed by function name, and the
  # fast unwinder cannot walk Debian's libmpi (built without frame pointers) up to those frames.
  # The slow unwinder costs time on every allocation, so only this binary uses it.
  [ "$t" = perennial_model_tests ] && asan="$asan:fast_unwind_on_malloc=0"
  echo "=== $t (address,undefined)"
  start=$SECONDS
  if (cd "$build/tests" && ASAN_OPTIONS=$asan "./$t" "$@"); then
    echo "=== $t: passed in $((SECONDS - start)) s"
  else
    echo "=== $t: FAILED after $((SECONDS - start)) s" >&2
    status=1
  fi
done
exit $status
