#!/usr/bin/env bash
# Sets up a fresh machine (Debian packages), builds everything and runs the whole test suite:
# unit tests, multi-rank tests under mpiexec at 1, 2 and 3 ranks, and end-to-end CLI tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd build
# One test at a time: the multi-rank tests already use every core of a 2-core machine.
ctest --output-on-failure
# The unit tests again under AddressSanitizer and UndefinedBehaviorSanitizer (build-asan/).
../scripts/test-sanitizers.sh
