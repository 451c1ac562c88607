#!/usr/bin/env bash
# Prepares .gpu-carry/: what a bare GPU machine (CUDA toolkit, CUDA PyTorch, CMake, ninja, g++,
# no OpenMPI, HDF5, Boost, ... and no registry to fetch them from) needs to configure, build and
# run Perennial, for benchmarks/gpu/device_check.sh there. Runs on Debian 12 (bookworm, whose
# libraries need glibc 2.36 and so also run on the GPU machine's newer glibc), as root or with
# sudo for apt-get; reaches Debian's registry only.
#
#   benchmarks/gpu/prepare_carry.sh [OUT_DIR]     # default: .gpu-carry at the repository root
#
# OUT_DIR then holds
#   deps.tar.xz      Debian packages extracted with dpkg -x into one tree (usr/...), pruned: no
#                    docs, man pages, static libraries (GoogleTest's excepted), Fortran/Java/
#                    OpenSHMEM parts, Open MPI plugins whose libraries are not carried (UCX,
#                    libfabric, verbs, PSM), Boost headers beyond what <boost/program_options.hpp>
#                    includes. Absolute symbolic links are made relative so the tree can move.
#   fashion-mnist/   the four IDX files (gzipped, as Debian's dataset-fashion-mnist installs them)
#   MANIFEST.txt     packages and versions, sizes, and the closure check's verdict
# The closure check: every shared library any ELF file in the tree needs is in the tree, or is
# glibc's, libstdc++'s or libgcc_s's (what every g++ machine has); missing ones are resolved to
# the Debian package that holds them here (dpkg -S) and added, until nothing is missing.
# The total that travels (repository without .git, plus OUT_DIR) must stay under 64 MiB.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/.gpu-carry}
work=${PERENNIAL_CARRY_WORK:-/var/tmp/perennial-carry-work}
arch=x86_64-linux-gnu

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
say() { echo "prepare_carry: $*" >&2; }

# What the build and the run need, by Debian package. Runtime libraries these pull in are found
# by the closure check below; listing the obvious ones here saves rounds.
packages=(
  # MPI: headers, mpicc (opal_wrapper), mpirun/orted, plugins and help files, PMIx, hwloc, libevent
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15
  libevent-core-2.1-7 libevent-pthreads-2.1-7
  # HDF5 (serial C library; FindHDF5 finds include/hdf5/serial without h5cc)
  libhdf5-dev libhdf5-103-1 libsz2 libaec0
  # Boost.Program_options (headers are pruned to what program_options.hpp includes)
  libboost-program-options1.74-dev libboost-program-options1.74.0 libboost1.74-dev
  # JSON, logging, SHA-256, SQLite, zlib, metrics endpoint, CSV, XXH3, tests
  nlohmann-json3-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libssl-dev libssl3
  libsqlite3-dev libsqlite3-0 zlib1g-dev zlib1g libcpp-httplib-dev libcpp-httplib0.11
  libbrotli-dev libbrotli1 libcsv-dev libcsv3 libxxhash-dev libgtest-dev
  # pkg-config (cpp-httplib is found through it)
  pkgconf pkgconf-bin libpkgconf3
)

# Libraries every machine with g++ has: never carried.
system_sonames='^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libresolv\.so\.2|libutil\.so\.1|libanl\.so\.1|ld-linux-x86-64\.so\.2|libstdc\+\+\.so\.6|libgcc_s\.so\.1)$'
# Plugins that need these are dropped rather than carrying high-speed network stacks a one-node
# run never uses (Debian's own openmpi-mca-params.conf turns most of them off too).
unwanted_sonames='^(libucp|libucs|libuct|libucm|libfabric|libibverbs|librdmacm|libpsm2|libpsm_infinipath|libnl-3|libnl-route-3|libcuda|libjvm|libgfortran|liboshmem|libmca_common_(ofi|ucx|verbs))\.'

mkdir -p "$work/debs"
chown _apt "$work/debs" 2>/dev/null || true  # apt-get download's sandbox user
stage="$work/stage"
rm -rf "$stage"
mkdir -p "$stage"

fetch() {  # PACKAGE... : download (cached) and extract into the stage
  local p deb
  (cd "$work/debs" && for p in "$@"; do
     ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download -q "$p" >/dev/null || { say "apt-get download $p failed"; exit 1; }
   done)
  for p in "$@"; do
    deb=$(ls "$work/debs/${p}"_*.deb | head -1)
    dpkg -x "$deb" "$stage"
    echo "$p" >>"$work/packages.list"
  done
}

if ! apt-get download -q --print-uris zlib1g >/dev/null 2>&1 || [ ! -d /var/lib/apt/lists ] || \
   [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -m1 Packages)" ]; then
  $SUDO apt-get update -q
fi
: >"$work/packages.list"
say "downloading and extracting ${#packages[@]} packages"
fetch "${packages[@]}"

# ---- pruning ---------------------------------------------------------------------------------
prune() {
  cd "$stage"
  rm -rf usr/share/doc usr/share/man usr/share/info usr/share/lintian usr/share/locale \
         usr/share/bug usr/share/bash-completion usr/share/zsh usr/share/gdb usr/share/java \
         usr/share/aclocal usr/share/doc-base usr/share/pkgconfig/*.pc.in etc/openmpi/openmpi-totalview.tcl
  # static libraries and libtool archives (GoogleTest ships only static ones: keep those)
  find . \( -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' \) -delete
  find . -name '*.la' -delete
  # Open MPI: Fortran, Java, C++ bindings, OpenSHMEM, tracing, and tools we never run
  find . \( -name 'libmpi_mpifh*' -o -name 'libmpi_usempi*' -o -name 'libmpi_java*' -o -name 'libmpi_cxx*' \
            -o -name 'liboshmem*' -o -name 'libompitrace*' -o -name 'libmca_common_ofi*' -o -name 'libmca_common_ucx*' \
            -o -name 'libmca_common_verbs*' -o -name 'ompi_monitoring_prof.so' \
            -o -name '*.mod' -o -name 'mpif*.h' -o -name 'shmem*' -o -name 'pshmem*' \) -exec rm -rf {} +
  (cd usr/bin && ls | grep -vE '^(orterun|orted|opal_wrapper|ompi_info|mpirun\.openmpi|mpiexec\.openmpi|mpicc\.openmpi|pkgconf|pkg-config|x86_64-linux-gnu-pkg-config)$' | xargs -r rm -f) || true
  rm -rf usr/lib/$arch/openmpi/include/openmpi/ompi/mpi/fortran usr/lib/$arch/fortran usr/share/openmpi/mpif*-wrapper-data.txt \
         usr/share/openmpi/osh*-wrapper-data.txt usr/share/openmpi/shmem*-wrapper-data.txt usr/share/openmpi/mpijavac*
  # HDF5: the C library is all we link
  find . \( -name 'libhdf5*fortran*' -o -name 'libhdf5*cpp*' -o -name '*.f90' -o -name 'H5*.mod' \) -exec rm -rf {} +
  rm -rf usr/include/hdf5/serial/*.mod usr/lib/$arch/hdf5/openmpi usr/lib/$arch/hdf5/mpich usr/share/hdf5*
  # Boost: only the headers <boost/program_options.hpp> reaches (g++ -M), and the CMake configs
  local keep="$work/boost-keep.txt"
  printf '#include <boost/program_options.hpp>\n' >"$work/boost_po.cpp"
  g++ -std=c++17 -M -I"$stage/usr/include" "$work/boost_po.cpp" | tr ' \\' '\n\n' | grep "^$stage/usr/include/boost/" \
    | sed "s|^$stage/||" | sort -u >"$keep"
  [ -s "$keep" ] || { say "g++ -M found no Boost headers"; exit 1; }
  find usr/include/boost -type f | sort >"$work/boost-all.txt"
  comm -23 "$work/boost-all.txt" "$keep" | xargs -r rm -f
  find usr/include/boost -type d -empty -delete
  find usr/lib/$arch/cmake -maxdepth 1 -type d -name 'boost_*' ! -name 'boost_headers-*' ! -name 'boost_program_options-*' \
    -exec rm -rf {} +
  # absolute symbolic links (Debian's /usr/lib/... targets) become relative, so the tree can move
  find . -type l | while read -r l; do
    t=$(readlink "$l")
    case "$t" in
      /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$l")" ".$t")" "$l" ;;
    esac
  done
  # the links update-alternatives would make (mpicc, mpirun and friends are device_check.sh's
  # wrappers, which set OPAL_PREFIX first; these are for the headers and the library)
  ln -sfn ../lib/$arch/openmpi/include usr/include/$arch/mpi 2>/dev/null || { mkdir -p usr/include/$arch; ln -sfn ../../lib/$arch/openmpi/include usr/include/$arch/mpi; }
  # dangling links left by pruning
  find . -xtype l -delete
  find . -type d -empty -delete
  cd - >/dev/null
}

# ---- closure -------------------------------------------------------------------------------------
is_elf() { [ "$(head -c4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }
closure_round() {  # prints the sonames needed but not provided; drops plugins needing unwanted ones
  local provided="$work/provided.txt" needed="$work/needed.txt"
  find "$stage" \( -type f -o -type l \) -name '*.so*' -printf '%f\n' | sort -u >"$provided"
  : >"$needed"
  while IFS= read -r f; do
    is_elf "$f" || continue
    local libs
    libs=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    if grep -qE "$unwanted_sonames" <<<"$libs"; then
      case "$f" in
        */openmpi3/mca_*|*/pmix/pmix_mca_*|*/hwloc/hwloc_*) rm -f "$f"; continue ;;
      esac
    fi
    echo "$libs" | grep -vE "$system_sonames" | grep -v '^$' | sed "s|$| $f|" >>"$needed" || true
  done < <(find "$stage" -type f \( -perm -u+x -o -name '*.so*' \))
  awk '{print $1}' "$needed" | sort -u | comm -23 - "$provided"
}

prune
for round in 1 2 3 4 5 6; do
  missing=$(closure_round)
  [ -z "$missing" ] && break
  say "round $round: needed but not carried: $(echo $missing)"
  add=()
  for so in $missing; do
    if grep -qE "$unwanted_sonames" <<<"$so"; then
      say "  $so is needed by: $(grep "^$so " "$work/needed.txt" | awk '{print $2}' | sed "s|$stage/||" | tr '\n' ' ')"
      say "  ... and is not carried on purpose; those files must go (extend the pruning)"; exit 1
    fi
    pkg=$(dpkg -S "/$so" 2>/dev/null | grep -v diversion | head -1 | cut -d: -f1 || true)
    [ -n "$pkg" ] || pkg=$(dpkg -S "$so" 2>/dev/null | grep -E "/$so\$" | head -1 | cut -d: -f1 || true)
    [ -n "$pkg" ] || { say "no installed package here holds $so (needed by $(grep "^$so " "$work/needed.txt" | head -1 | awk '{print $2}'))"; exit 1; }
    add+=("$pkg")
  done
  mapfile -t add < <(printf '%s\n' "${add[@]}" | sort -u)
  say "  adding ${add[*]}"
  fetch "${add[@]}"
  prune
done
[ -z "$(closure_round)" ] || { say "closure not reached after 6 rounds"; exit 1; }

# ---- output --------------------------------------------------------------------------------------
set +o pipefail  # head and sort below close pipes early
rm -rf "$out"
mkdir -p "$out/fashion-mnist"
say "compressing $(du -sh "$stage" | cut -f1) into deps.tar.xz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner --sort=name -cf - . | xz -T0 -9 >"$out/deps.tar.xz"
src=/usr/share/datasets/fashion-mnist
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  cp "$src/$f.gz" "$out/fashion-mnist/" 2>/dev/null || cp "$src/$f" "$out/fashion-mnist/" \
    || { say "$src/$f(.gz) missing (Debian: dataset-fashion-mnist)"; exit 1; }
done
{
  echo "# .gpu-carry, made by benchmarks/gpu/prepare_carry.sh on $(. /etc/os-release; echo "$PRETTY_NAME") ($(date -u +%F))"
  echo "## packages"
  sort -u "$work/packages.list" | while read -r p; do
    echo "$p $(dpkg-deb -f "$(ls "$work/debs/${p}"_*.deb | head -1)" Version)"
  done
  echo "## sizes"
  echo "stage (unpacked): $(du -sh "$stage" | cut -f1)"
  (cd "$out" && du -ab deps.tar.xz fashion-mnist | sort -k2)
  echo "repository without .git: $(cd "$repo" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1) bytes"
  echo "## biggest parts of the stage"
  (cd "$stage" && du -a . | sort -rn | head -25)
  echo "## closure"
  echo "every NEEDED library is carried or is glibc/libstdc++/libgcc_s"
} >"$out/MANIFEST.txt"
total=$(( $(du -sb "$out" | cut -f1) + $(cd "$repo" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1) ))
say "$out: $(du -sh "$out" | cut -f1); with the repository: $((total / 1048576)) MiB of 64 MiB"
if [ "$total" -gt $((56 * 1048576)) ]; then say "over 56 MiB: prune more"; exit 1; fi
