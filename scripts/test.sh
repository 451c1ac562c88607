#!/usr/bin/env bash
# Sets up a fresh machine (Debian packages), builds everything and runs the whole test suite:
# unit tests, multi-rank tests under mpiexec at 1, 2 and 3 ranks, end-to-end CLI and scheduler
# tests (the chaos test among them), the unit tests under sanitizers, and the fuzzers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd build
# One test at a time: the multi-rank tests already use every core of a 2-core machine.
ctest --output-on-failure
# The unit tests again under AddressSanitizer and UndefinedBehaviorSanitizer (build-asan/).
../scripts/test-sanitizers.sh
# The fuzzers (clang, build-fuzz/): their regression inputs, then 30 s of fuzzing per target.
../tests/fuzz/run.sh 30
