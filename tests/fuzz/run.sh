#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan; build-fuzz/) and, for each target:
#   1. replays every input in tests/fuzz/regressions/<target>/ once (crashes found earlier and
#      fixed: each must now be handled);
#   2. fuzzes for SECONDS (default 30) over a scratch copy of tests/fuzz/corpus/<target>/ (new
#      corpus entries never land in the repository).
# Fails when a replay fails or the fuzzer finds a crash, leak, timeout or OOM, except a crash of
# the known third-party class: one that faults inside HDF5 itself on HDF5's own memory
# (tests/fuzz/known-hdf5/README.md); that one is reported and fuzzing goes on.
# Crash inputs and logs are kept in build-fuzz/fuzz-artifacts/<target>/.
#
# usage: tests/fuzz/run.sh [SECONDS] [TARGET...]
#   env: PERENNIAL_FUZZ_JOBS (parallel targets, default: the number of cores),
#        PERENNIAL_FUZZ_BUILD (build directory, default build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
seconds=${1:-30}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint_reader shard_validator train_config sched_config csv_import)
build=${PERENNIAL_FUZZ_BUILD:-build-fuzz}
jobs=${PERENNIAL_FUZZ_JOBS:-$(nproc)}
start=$(date +%s)

for tool in clang clang++; do
  command -v $tool >/dev/null || { echo "fuzz: $tool not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
cmake -S . -B "$build" -DPERENNIAL_BUILD_FUZZERS=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target perennial_fuzzers
bin=$root/$build/tests/fuzz
artifacts=$root/$build/fuzz-artifacts

# Scratch space (corpus copies, the targets' input files): tmpfs when there is one.
shm=/dev/shm
[ -w "$shm" ] || shm=${TMPDIR:-/tmp}
work=$(mktemp -d "$shm/perennial-fuzz-run.XXXXXX")
trap 'rm -rf "$work"' EXIT

export PERENNIAL_FUZZ_TMP=$work
# max_allocation_size_mb=256 with allocator_may_return_null=1: malloc of more than 256 MiB returns
# NULL (glibc's does for an impossible size). HDF5 asks for sizes read from a damaged file, and
# reports a failure either way (tests/fuzz/known-hdf5/README.md); ASan would abort instead, after
# committing gigabytes of shadow memory. operator new still reports such a size, so our own code
# cannot ask for one unnoticed (on inputs of a few KiB, 256 MiB is absurd).
export ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=256
export LSAN_OPTIONS=suppressions=$root/tests/fuzz/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# Prints "hdf5" when the report in LOG is the known third-party class: the faulting frame (the
# first one outside the sanitizer runtime and libc) is in libhdf5, and the access is a read, or a
# write to memory HDF5 allocated (or no memory the report can name: a wild address). Anything
# else ("ours") fails the run: our exceptions and properties (==perennial-fuzz==), UBSan (HDF5 is
# not instrumented), leaks, timeouts, and HDF5 writing past a buffer of ours.
classify() {
  local log=$1
  if grep -q "==perennial-fuzz==\|runtime error:\|ERROR: LeakSanitizer\|ERROR: libFuzzer: timeout" "$log"; then
    echo ours
    return
  fi
  awk '
    # Runtime frames: the sanitizers, libFuzzer, libc, and the interceptors, which are C
    # functions in the target executable (strdup, memcpy, malloc: no "::" in the name).
    function outside_runtime(line) {
      if (line ~ / in [A-Za-z_0-9.]+ \([^)]*_fuzz\+0x/) return 0
      return line !~ /__interceptor_|__asan|__sanitizer|__lsan|__ubsan|libclang_rt|\/libc\.so|libc-|sysdeps\/|__(mem|str)[a-z]+_|operator (new|delete)|fuzzer::/
    }
    /^ *#[0-9]+ / {
      if (section == "fault" && fault == "" && outside_runtime($0)) fault = $0
      if (section == "alloc" && alloc == "" && outside_runtime($0)) alloc = $0
      next
    }
    /ERROR: (AddressSanitizer|libFuzzer)/ { if (section == "") section = "fault"; next }
    /^(READ|WRITE) of size/ { if (access == "") access = $1; next }
    /allocated by thread|freed by thread|located in stack of thread/ { if (section == "fault") section = "alloc"; next }
    END {
      # Our readers hand HDF5 only buffers to fill, so HDF5 reading out of bounds is HDF5 reading
      # its own memory; the block ASan names as the nearest one may be anybody'"'"'s.
      if (fault ~ /libhdf5/ && (access == "READ" || alloc == "" || alloc ~ /libhdf5/)) print "hdf5"; else print "ours"
    }' "$log"
}

# Runs one target; writes its verdict to $work/<target>.result and its log to artifacts.
fuzz_target() {
  local t=$1 exe=$bin/${1}_fuzz
  local out=$artifacts/$t
  rm -rf "$out"
  mkdir -p "$out" "$work/corpus/$t"
  cd "$work"  # artifacts of a replay (-runs) go to the working directory otherwise

  # 1. Regression inputs: each must be handled now.
  local regressions=()
  if [ -d "$root/tests/fuzz/regressions/$t" ]; then
    while IFS= read -r -d '' f; do regressions+=("$f"); done \
      < <(find "$root/tests/fuzz/regressions/$t" -type f ! -name '*.md' -print0 | sort -z)
  fi
  if [ ${#regressions[@]} -gt 0 ]; then
    if ! "$exe" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$out/" "${regressions[@]}" >"$out/regressions.log" 2>&1; then
      echo "FAIL $t: a regression input fails again (log: $out/regressions.log)" >"$work/$t.result"
      return
    fi
  fi
  # Known HDF5 crashes: informational (an HDF5 upgrade may fix them).
  local known=0 still=0
  if [ -d "$root/tests/fuzz/known-hdf5/$t" ]; then
    while IFS= read -r -d '' f; do
      known=$((known + 1))
      "$exe" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$work/known-" "$f" >/dev/null 2>&1 || still=$((still + 1))
    done < <(find "$root/tests/fuzz/known-hdf5/$t" -type f ! -name '*.md' -print0)
  fi

  # 2. Fuzz over a scratch copy of the committed corpus, restarting after known HDF5 crashes.
  cp -r "$root/tests/fuzz/corpus/$t/." "$work/corpus/$t/"
  local deadline=$(($(date +%s) + seconds)) round=0 hdf5=0
  while :; do
    local left=$((deadline - $(date +%s)))
    [ $left -ge 1 ] || break
    round=$((round + 1))
    local log=$out/fuzz-$round.log
    if "$exe" -max_total_time=$left -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
         -artifact_prefix="$out/" "$work/corpus/$t" >"$log" 2>&1; then
      break
    fi
    if [ "$(classify "$log")" = hdf5 ]; then
      hdf5=$((hdf5 + 1))
      echo "fuzz: $t: a crash inside HDF5 itself (known third-party class; log $log); fuzzing on" >&2
      continue
    fi
    echo "FAIL $t: the fuzzer found a crash (log: $log; input: $(ls -t "$out" | grep -v '\.log$' | head -1))" >"$work/$t.result"
    return
  done
  local execs
  execs=$(awk '/stat::number_of_executed_units/ {s += $2} END {print s + 0}' "$out"/fuzz-*.log 2>/dev/null || echo "?")
  echo "ok   $t: ${#regressions[@]} regression input(s) pass; $execs inputs in ${seconds}s;" \
       "$hdf5 crash(es) inside HDF5; $still of $known known HDF5 input(s) still crash" >"$work/$t.result"
}

running=0
for t in "${targets[@]}"; do
  [ -x "$bin/${t}_fuzz" ] || { echo "fuzz: no target $t" >&2; exit 2; }
  fuzz_target "$t" &
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

status=0
for t in "${targets[@]}"; do
  if [ -f "$work/$t.result" ]; then cat "$work/$t.result"; else echo "FAIL $t: no result"; fi
  grep -q '^ok ' "$work/$t.result" 2>/dev/null || status=1
done
for t in "${targets[@]}"; do
  if ! grep -q '^ok ' "$work/$t.result" 2>/dev/null; then
    log=$(grep -o 'log: [^;)]*' "$work/$t.result" | head -1 | cut -c6-)
    [ -n "$log" ] && [ -f "$log" ] && { echo "--- $t: $log (tail)"; tail -40 "$log"; }
  fi
done
echo "fuzz: $(($(date +%s) - start)) s in all (build included)"
exit $status
