#!/usr/bin/env bash
# Regenerates the seeds that the project's own writers produce (HDF5 checkpoints, weights files
# and shards, and the resolved default trainer configuration) into tests/fuzz/corpus/. The
# hand-written text seeds there are left alone. Needs the fuzz build (tests/fuzz/run.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${PERENNIAL_FUZZ_BUILD:-build-fuzz}
cmake -S . -B "$build" -DPERENNIAL_BUILD_FUZZERS=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target perennial_fuzz_seeds
rm -f tests/fuzz/corpus/checkpoint_reader/*.h5 tests/fuzz/corpus/shard_validator/*.h5
"$build/tests/fuzz/perennial_fuzz_seeds" tests/fuzz/corpus
du -sh tests/fuzz/corpus
