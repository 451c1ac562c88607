#!/usr/bin/env bash
# The main job: continuous training on the embedded defaults. On a fresh machine it installs the
# packages, builds, and runs the demo (scripts/demo-run.sh) in DIR (default out/demo): Fashion-MNIST
# arrives as a stream of shards, the scheduler ingests them, triggers retraining, trains on 2
# ranks, judges each model with the validation gate and promotes or rejects it, survives a killed
# run, and ends with a summary and an HTML report. About 3-6 minutes on 2 cores after the build.
#   scripts/demo.sh [DIR] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-out/demo}
scripts/install-deps.sh
scripts/build.sh --target perennial
exec scripts/demo-run.sh build/bin/perennial "$dir" "${2:-}"
