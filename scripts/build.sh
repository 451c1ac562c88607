#!/usr/bin/env bash
# Configures and builds Perennial into build/ (Release). Extra arguments go to `cmake --build`,
# for example `scripts/build.sh --target perennial`.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" "$@"
