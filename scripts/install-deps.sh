#!/usr/bin/env bash
# Installs every Debian package Perennial needs to build, test and run its demo.
# Idempotent: apt-get skips what is already installed. Needs root (or sudo).
set -euo pipefail

packages=(
  # build
  cmake g++ make ccache pkg-config
  # LibTorch (CPU) and a fast BLAS for it; without OpenBLAS, libblas.so.3 is the reference BLAS
  libtorch-dev libopenblas0-pthread
  # MPI (the CPU Communicator backend and the launcher)
  libopenmpi-dev openmpi-bin libpmix-dev
  # checkpoints and data shards
  libhdf5-dev
  # configuration and CLI
  libboost-program-options-dev
  # JSON (result.json, metrics.jsonl), SHA-256 (OpenSSL's libcrypto), SQLite (catalog)
  nlohmann-json3-dev libssl-dev libsqlite3-dev
  # logging (rank-prefixed, levelled) and reading the gzipped IDX files
  libspdlog-dev zlib1g-dev
  # the scheduler's Prometheus metrics endpoint (sched run --metrics-port; HTTP on loopback)
  libcpp-httplib-dev
  # perennial data import-csv (RFC 4180 parsing: quoted fields, embedded delimiters and newlines)
  libcsv-dev
  # per-tensor checksums in checkpoints (XXH3-64: fast enough to verify at disk speed)
  libxxhash-dev
  # tests and benchmarks
  googletest libgtest-dev libbenchmark-dev
  clang libclang-rt-14-dev  # the libFuzzer targets (tests/fuzz/run.sh); libFuzzer's runtime is only a Recommends of clang
  # the demo's and tests' data
  dataset-fashion-mnist
  # a real one-node Slurm cluster for the tests (tests/slurm/local-cluster.sh)
  slurmctld slurmd slurm-client munge
  # network namespaces, veth pairs and a bridge: the multi-node cluster (tests/slurm/multi-node-cluster.sh)
  iproute2
  # the peer in benchmarks (PyTorch DDP) and cross-checks with h5py
  python3 python3-torch python3-h5py python3-numpy
  # headless rendering test of the report (tests/sched/report_test.sh)
  chromium
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
