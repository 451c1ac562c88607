#!/usr/bin/env bash
# Configures and builds Perennial into build/ (Release). Extra arguments go to `cmake --build`,
# for example `scripts/build.sh --target perennial`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Of CMake's output only the summary of what this build has: the NCCL communicator (left out
# without a CUDA toolkit) and the LibTorch with its CUDA.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release | { grep -E '^-- (NCCL communicator:|LibTorch )' || true; }
cmake --build build -j"$(nproc)" "$@"
