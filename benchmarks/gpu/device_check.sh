#!/usr/bin/env bash
# The GPU machine's check of Perennial, in one go (see benchmarks/gpu/README.md): on a bare machine
# with one GPU, the CUDA toolkit, a CUDA PyTorch, CMake, ninja and g++ (and no OpenMPI, HDF5,
# Boost, ... nor a registry), with .gpu-carry/ (benchmarks/gpu/prepare_carry.sh) beside it:
#   facts      the machine: OS, glibc, compilers, GPU, PyTorch/CUDA/NCCL, which libraries exist
#   deps       unpack .gpu-carry/deps.tar.xz into a prefix; wrappers for mpicc/mpirun
#   configure  the CUDA variant against the CUDA PyTorch's LibTorch (torch.utils.cmake_prefix_path)
#   build      perennial, the unit and model tests, the all-reduce and checkpoint benchmarks
#   tests      the NCCL test, the Device tests (on the GPU) and the unit tests under mpirun -np 1
#   import     Fashion-MNIST from the carried IDX files into shards
#   train      configs/fashion-cnn.cfg for one epoch on the device (samples/s from result.json)
#   eager      the same CNN in PyTorch eager on the same device (benchmarks/gpu/eager_peer.py)
#   nccl       all-reduce of GPU tensors through NCCL at one rank (perennial_bench_allreduce
#              --device cuda: the gradient reducer and one raw collective, per size)
#   resume     interrupted with train.max_steps, resumed with --resume auto: same param_sha256
#              as the uninterrupted run; ckpt verify; the GPU-trained model evaluated on the CPU
#              and on the GPU (perennial eval --device cpu|cuda)
# Every step is timed and recorded; a failed step does not stop the later ones that can still
# run. Stops starting steps when the time budget runs out. Writes into OUT (default
# out/device_check): log.txt, results.json, summary.md, facts.txt, configure.txt, build.txt and
# details.tgz (the rest: found.txt, the training logs and results, the eager and NCCL results).
# Exit status 0 only when every step passed.
#
# Environment (all optional):
#   OUT        output folder (the device tool sets it)         DEVICE   cuda (default) or cpu
#   CARRY      the carried folder (.gpu-carry)                 DEPS     unpack prefix (/tmp/perennial-deps)
#   PYTHON     the CUDA PyTorch's python (/opt/torch/.venv/bin/python3, else python3)
#   TORCH_DIR  LibTorch's CMake folder (default: from PYTHON's torch.utils.cmake_prefix_path)
#   CUDA_HOME  the CUDA toolkit (/usr/local/cuda)                JOBS     build jobs (nproc)
#   BUDGET_S   seconds for the whole script (470)               BUILD    build folder (build)
#   TRAIN_MAX_STEPS  stop each training run after this many steps (0: the whole epoch; the CPU
#                    rehearsal uses a few hundred)
#   KEEP_BUILD=1  reuse BUILD instead of configuring afresh (rehearsals)
#   SKIP       steps not to run, e.g. "eager nccl" (the run then counts as failed)
#   BACKEND    comm.backend to ask for (nccl when DEVICE=cuda; empty: the trainer's default)
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
START=$(date +%s)
OUT=${OUT:-$REPO/out/device_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DEVICE=${DEVICE:-cuda}
CARRY=$(cd "${CARRY:-.gpu-carry}" 2>/dev/null && pwd || echo "${CARRY:-.gpu-carry}")
DEPS=${DEPS:-/tmp/perennial-deps}
BUILD=${BUILD:-build}
BUDGET_S=${BUDGET_S:-470}
JOBS=${JOBS:-$(nproc)}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
TRAIN_MAX_STEPS=${TRAIN_MAX_STEPS:-0}
if [ -z "${BACKEND+x}" ]; then BACKEND=$([ "$DEVICE" = cuda ] && echo nccl || echo ""); fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x /opt/torch/.venv/bin/python3 ]; then PYTHON=/opt/torch/.venv/bin/python3; else PYTHON=$(command -v python3); fi
fi
WORK=${WORK:-/tmp/perennial-device-check}
rm -rf "$WORK"
mkdir -p "$WORK"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
export CCACHE_DISABLE=1

exec > >(tee -a "$OUT/log.txt") 2>&1
: >"$OUT/steps.tsv"
: >"$OUT/values.tsv"

now() { date +%s; }
elapsed() { echo $(( $(now) - START )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }
log() { echo "[$(printf '%4d' "$(elapsed)")s] $*"; }
# val KEY JSON_VALUE: one result, gathered into results.json
val() { printf '%s\t%s\n' "$1" "$2" >>"$OUT/values.tsv"; }
sval() { val "$1" "\"$(printf '%s' "$2" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n\t' '  ')\""; }
NOTE=""
note() { NOTE="${NOTE:+$NOTE; }$*"; log "  note: $*"; }
# t CMD...: the command, killed when the budget (less a few seconds for the summary) runs out
t() { local s=$(( $(left) - 10 )); [ "$s" -gt 5 ] || s=5; timeout -k 5 "$s" "$@"; }

declare -A STATUS
FAILED=0
# step NAME MIN_SECONDS [NEEDS...] : runs the function step_NAME when at least MIN_SECONDS are
# left and every step it NEEDS passed; records pass/fail/skip and the time taken.
step() {
  local name=$1 need_s=$2; shift 2
  local dep
  if [[ " ${SKIP:-} " == *" $name "* ]]; then
    log "== $name: skipped (SKIP)"
    STATUS[$name]=skip; printf '%s\tskip\t0\t%s\n' "$name" "SKIP" >>"$OUT/steps.tsv"; FAILED=1; return
  fi
  for dep in "$@"; do
    if [ "${STATUS[$dep]:-}" != pass ]; then
      log "== $name: skipped ($dep did not pass)"
      STATUS[$name]=skip; printf '%s\tskip\t0\t%s\n' "$name" "needs $dep" >>"$OUT/steps.tsv"; FAILED=1; return
    fi
  done
  if [ "$(left)" -lt "$need_s" ]; then
    log "== $name: skipped (only $(left) s of the budget left, it needs about $need_s)"
    STATUS[$name]=skip; printf '%s\tskip\t0\t%s\n' "$name" "out of time" >>"$OUT/steps.tsv"; FAILED=1; return
  fi
  log "== $name"
  NOTE=""
  local t0 rc
  t0=$(now)
  "step_$name"
  rc=$?
  local secs=$(( $(now) - t0 ))
  if [ $rc -eq 0 ]; then STATUS[$name]=pass; else STATUS[$name]=fail; FAILED=1; fi
  log "== $name: ${STATUS[$name]} (rc $rc, $secs s)"
  printf '%s\t%s\t%s\t%s\n' "$name" "${STATUS[$name]}" "$secs" "$(echo "$NOTE" | tr '\t\n' '  ')" >>"$OUT/steps.tsv"
}

# Our programs and the carried MPI launcher run with the carried libraries; nothing else does
# (CMake, the compiler and Python keep the machine's own).
LIBDIR=$DEPS/usr/lib/x86_64-linux-gnu
ours() { LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }  # bash exports it to functions too
MPIRUN=$DEPS/bin/mpirun
PERENNIAL=$REPO/$BUILD/bin/perennial
train_args=()  # train.device and comm.backend, when the trainer has them
end_args=()    # where every training run ends: the whole epoch, or TRAIN_MAX_STEPS
[ "$TRAIN_MAX_STEPS" -gt 0 ] && end_args=("--train.max_steps=$TRAIN_MAX_STEPS")

# ---------------------------------------------------------------------------------------------
step_facts() {
  local f="$OUT/facts.txt"
  {
    echo "## date"; date -u
    echo "## uname"; uname -a
    echo "## os-release"; cat /etc/os-release 2>/dev/null
    echo "## glibc"; ldd --version 2>&1 | head -1
    echo "## cpu/memory/disk"; nproc; free -g 2>/dev/null | head -2; df -h "$REPO" /tmp 2>/dev/null
    echo "## compilers and tools"
    for c in gcc g++ c++ cc cmake ninja make nvcc pkg-config ccache mpirun mpicc h5cc; do
      printf '%-10s %s\n' "$c" "$(command -v $c || echo '(none)')"
    done
    g++ --version 2>&1 | head -1; cmake --version 2>&1 | head -1; echo "ninja $(ninja --version 2>&1)"
    "$CUDA_HOME/bin/nvcc" --version 2>&1 | tail -2
    echo "## nvidia-smi"; nvidia-smi 2>&1 | head -20
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1
    echo "## CUDA toolkit at $CUDA_HOME"; ls -la "$CUDA_HOME" 2>&1 | head -3
    ls "$CUDA_HOME"/include/nccl.h "$CUDA_HOME"/lib64/libnccl* "$CUDA_HOME"/lib/libnccl* "$CUDA_HOME"/include/nvtx3 -d 2>&1
    cat "$CUDA_HOME/version.json" 2>/dev/null | head -5
    echo "## python: $PYTHON"
    "$PYTHON" - <<'EOF' 2>&1
import sys, os
print("python", sys.version.split()[0])
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
    print("cxx11_abi", torch._C._GLIBCXX_USE_CXX11_ABI)
    print("cmake_prefix_path", torch.utils.cmake_prefix_path)
    if torch.cuda.is_available():
        print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
        print("nccl", torch.cuda.nccl.version(), "cudnn", torch.backends.cudnn.version())
    print("torch lib", os.path.join(os.path.dirname(torch.__file__), "lib"))
except Exception as e:
    print("torch: import failed:", e)
for m in ("h5py", "numpy", "mpi4py"):
    try:
        mod = __import__(m); print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "missing:", e)
try:
    import nvidia.nccl, os.path as p
    d = p.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0]
    print("pip nccl at", d, os.listdir(d))
except Exception as e:
    print("pip nccl: none:", e)
EOF
    echo "## libraries the machine has (ldconfig -p)"
    ldconfig -p 2>/dev/null | grep -E 'libmpi\.|libhdf5|libboost_program|libsqlite3|libssl\.|libcrypto\.|libcurl|libz\.so|libfmt|libspdlog|libnccl|libcudart|libhwloc|libevent|libpmix|libcsv|libcpp-httplib|libbrotli' \
      | awk '{print $1}' | sort -u | tr '\n' ' '; echo
    echo "## headers the machine has"
    ls -d /usr/include/{mpi.h,hdf5.h,hdf5,boost,zlib.h,openssl,sqlite3.h,spdlog,fmt,nlohmann,gtest,xxhash.h} 2>/dev/null | tr '\n' ' '; echo
  } >"$f" 2>&1
  cat "$f"
  local tv
  tv=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null)
  sval torch_version "${tv:-none}"
  sval gpu "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  sval driver "$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
  sval gxx "$(g++ -dumpfullversion 2>/dev/null)"
  sval glibc "$(ldd --version 2>&1 | head -1 | awk '{print $NF}')"
  sval os "$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}")"
  sval cmake "$(cmake --version 2>/dev/null | head -1 | awk '{print $3}')"
  if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
      || { note "PyTorch sees no CUDA device"; return 1; }
  fi
  return 0
}

step_deps() {
  [ -f "$CARRY/deps.tar.xz" ] || { note "$CARRY/deps.tar.xz missing (run benchmarks/gpu/prepare_carry.sh and carry .gpu-carry)"; return 1; }
  rm -rf "$DEPS"; mkdir -p "$DEPS"
  tar -C "$DEPS" -xJf "$CARRY/deps.tar.xz" || return 1
  # pkg-config files name /usr; point them at the prefix
  find "$DEPS/usr" -name '*.pc' -exec sed -i "s|=/usr|=$DEPS/usr|; s| /usr/| $DEPS/usr/|g; s|-I/usr/|-I$DEPS/usr/|g; s|-L/usr/|-L$DEPS/usr/|g" {} +
  mkdir -p "$DEPS/bin"
  # Open MPI finds its plugins and help files from OPAL_PREFIX, PMIx from PMIX_PREFIX;
  # /etc/openmpi is not carried, so the settings Debian keeps there are given here.
  cat >"$DEPS/bin/ompi-env" <<EOF
export OPAL_PREFIX=$DEPS/usr
export PMIX_PREFIX=$LIBDIR/pmix2 PMIX_INSTALL_PREFIX=$LIBDIR/pmix2
export PMIX_MCA_mca_base_component_path=$LIBDIR/pmix2/lib/pmix PMIX_MCA_pcompress_base_silence_warning=1
export LD_LIBRARY_PATH=$LIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export OMPI_MCA_btl_base_warn_component_unused=0 OMPI_MCA_btl=self,vader,tcp OMPI_MCA_pml=ob1
export OMPI_MCA_mtl=^ofi,psm,psm2 OMPI_MCA_osc=^ucx,pt2pt OMPI_MCA_orte_default_hostfile=
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI 4 refuses to start, even on one node, when it finds neither ssh nor rsh
command -v ssh >/dev/null || command -v rsh >/dev/null || export OMPI_MCA_plm_rsh_agent=sh
EOF
  local w
  for w in mpicc:mpicc.openmpi mpirun:mpirun.openmpi mpiexec:mpiexec.openmpi ompi_info:ompi_info; do
    printf '#!/bin/bash\n. %s\nexec -a %s %s "$@"\n' "$DEPS/bin/ompi-env" "${w%%:*}" "$DEPS/usr/bin/${w#*:}" >"$DEPS/bin/${w%%:*}"
    chmod +x "$DEPS/bin/${w%%:*}"
  done
  printf '#!/bin/sh\nexport PKG_CONFIG_LIBDIR=%s\nexec env LD_LIBRARY_PATH=%s %s "$@"\n' \
    "$LIBDIR/pkgconfig:$DEPS/usr/share/pkgconfig" "$LIBDIR" "$DEPS/usr/bin/pkgconf" >"$DEPS/bin/pkg-config"
  chmod +x "$DEPS/bin/pkg-config"
  log "  unpacked $(du -sh "$DEPS" | cut -f1) into $DEPS"
  "$DEPS/bin/ompi_info" --version 2>&1 | head -2
  "$DEPS/bin/ompi_info" --path all 2>&1 | grep -E 'Prefix|Libdir|Pkglibdir|Pkgdatadir' | head -4
  "$DEPS/bin/mpicc" --showme 2>&1
  "$DEPS/bin/pkg-config" --cflags --libs cpp-httplib 2>&1
  local out rc
  out=$(t "$MPIRUN" -np 1 sh -c 'echo "rank $OMPI_COMM_WORLD_RANK of $OMPI_COMM_WORLD_SIZE on $(uname -n)"' 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 0 ] || { note "mpirun -np 1 sh failed (rc $rc)"; return 1; }
  return 0
}

NCCL_NOTE=""
step_configure() {
  local tdir="${TORCH_DIR:-}"
  if [ -z "$tdir" ]; then
    local p
    p=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
    [ -n "$p" ] && tdir="$p/Torch"
  fi
  [ -f "$tdir/TorchConfig.cmake" ] || { note "no TorchConfig.cmake at '$tdir' (set TORCH_DIR)"; return 1; }
  sval torch_dir "$tdir"
  # NCCL: the toolkit's, else the pip nvidia-nccl package's in the PyTorch environment
  local nccl_args=()
  if [ -f "$CUDA_HOME/include/nccl.h" ] && ls "$CUDA_HOME"/lib*/libnccl.so* >/dev/null 2>&1; then
    NCCL_NOTE="toolkit ($CUDA_HOME)"
  else
    local pipn
    pipn=$("$PYTHON" -c 'import nvidia.nccl as n, os; print(list(n.__path__)[0])' 2>/dev/null)
    if [ -n "$pipn" ] && [ -f "$pipn/include/nccl.h" ]; then
      local lib
      lib=$(ls "$pipn"/lib/libnccl.so* 2>/dev/null | head -1)
      if [ -n "$lib" ]; then
        [ -e "$pipn/lib/libnccl.so" ] || { mkdir -p "$WORK/nccl"; ln -sf "$lib" "$WORK/nccl/libnccl.so"; lib=$WORK/nccl/libnccl.so; }
        nccl_args=(-DNCCL_INCLUDE_DIR="$pipn/include" -DNCCL_LIBRARY="$lib")
        NCCL_NOTE="pip nvidia-nccl ($pipn)"
      fi
    fi
  fi
  [ -n "$NCCL_NOTE" ] || NCCL_NOTE="none found (toolkit nor pip)"
  log "  NCCL: $NCCL_NOTE"
  sval nccl_from "$NCCL_NOTE"
  local linkflags="-Wl,-rpath-link,$LIBDIR:$LIBDIR/pmix2/lib"
  # Debian keeps some headers (openssl/opensslconf.h) in the multiarch folder, which the compiler
  # searches under /usr only
  local cflags="-isystem $DEPS/usr/include/x86_64-linux-gnu"
  local args=(-S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release
    -DTorch_DIR="$tdir" -DCMAKE_PREFIX_PATH="$DEPS/usr"
    -DMPI_C_COMPILER="$DEPS/bin/mpicc" -DMPIEXEC_EXECUTABLE="$DEPS/bin/mpirun"
    -DPKG_CONFIG_EXECUTABLE="$DEPS/bin/pkg-config" -DHDF5_PREFER_PARALLEL=OFF
    -DCCACHE_PROGRAM=CCACHE_PROGRAM-NOTFOUND
    -DCMAKE_EXE_LINKER_FLAGS="$linkflags" -DCMAKE_SHARED_LINKER_FLAGS="$linkflags"
    -DCMAKE_CXX_FLAGS="$cflags" -DCMAKE_C_FLAGS="$cflags"
    -DPERENNIAL_BUILD_TESTS=ON -DPERENNIAL_BUILD_BENCHMARKS=ON -DPERENNIAL_WITH_CUDA=ON
    -DCUDAToolkit_ROOT="$CUDA_HOME" -DUSE_SYSTEM_NVTX=ON "${nccl_args[@]}")
  [ -x "$CUDA_HOME/bin/nvcc" ] && args+=(-DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc")
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  [ -n "${KEEP_BUILD:-}" ] || rm -rf "$BUILD"
  echo "cmake ${args[*]}"
  PATH="$CUDA_HOME/bin:$PATH" t cmake "${args[@]}" >"$OUT/configure.txt" 2>&1
  local rc=$?
  grep -vE '^-- (Looking for|Performing|Check|Detecting)' "$OUT/configure.txt" | tail -60
  [ $rc -eq 0 ] || { note "cmake configure failed (rc $rc): see configure.txt"; return 1; }
  # C++20 where the LibTorch headers demand it (PyTorch 2.14 and later), else C++17
  sval cxx_standard "$(sed -n 's/.*the build is C++\([0-9]*\).*/\1/p' "$OUT/configure.txt" | head -1)"
  # where each dependency was found: everything but LibTorch/CUDA should come from $DEPS
  local c="$BUILD/CMakeCache.txt"
  grep -E '^(MPI_C_(HEADER_DIR|LIB_NAMES|COMPILER)|MPI_mpi_LIBRARY|MPIEXEC_EXECUTABLE|HDF5_C_INCLUDE_DIR|HDF5_C_LIBRARY_hdf5|HDF5_hdf5_LIBRARY_RELEASE|Boost_DIR|boost_program_options_DIR|spdlog_DIR|fmt_DIR|nlohmann_json_DIR|GTest_DIR|OPENSSL_(CRYPTO_LIBRARY|INCLUDE_DIR)|SQLite3_(INCLUDE_DIR|LIBRARY)|ZLIB_(INCLUDE_DIR|LIBRARY_RELEASE)|PERENNIAL_CSV_LIBRARY|XXHASH_INCLUDE_DIR|NCCL_(INCLUDE_DIR|LIBRARY)|CUDAToolkit_(BIN_DIR|LIBRARY_DIR)|Torch_DIR|PKG_CONFIG_EXECUTABLE)[:=]' "$c" \
    | tee "$OUT/found.txt"
  local outside
  outside=$(grep -E '^(MPI_C_HEADER_DIR|HDF5_C_INCLUDE_DIR|HDF5_C_LIBRARY_hdf5|HDF5_hdf5_LIBRARY_RELEASE|Boost_DIR|spdlog_DIR|fmt_DIR|nlohmann_json_DIR|GTest_DIR|OPENSSL_CRYPTO_LIBRARY|SQLite3_LIBRARY|ZLIB_LIBRARY_RELEASE|PERENNIAL_CSV_LIBRARY|XXHASH_INCLUDE_DIR)[:=]' "$c" \
    | grep -v "$DEPS" | cut -d= -f1 | tr '\n' ' ')
  [ -z "$outside" ] || note "found outside the carried prefix (the machine's own): $outside"
  grep -q 'NCCL communicator: on' "$OUT/configure.txt" && sval nccl_build on || { sval nccl_build off; note "NCCL communicator off"; [ "$DEVICE" = cuda ] && return 1; }
  return 0
}

BUILD_TARGETS=(perennial perennial_unit_tests perennial_model_tests perennial_bench_allreduce perennial_bench_checkpoint)
step_build() {
  local targets=("${BUILD_TARGETS[@]}")
  log "  ninja -j$JOBS ${targets[*]}"
  t cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}" >"$OUT/build.txt" 2>&1
  local rc=$?
  grep -E 'error|Error|warning: ' "$OUT/build.txt" | head -40
  tail -5 "$OUT/build.txt"
  [ $rc -eq 0 ] || { note "build failed (rc $rc): see build.txt"; return 1; }
  ours ldd "$PERENNIAL" >"$OUT/ldd-perennial.txt" 2>&1
  grep -E 'not found|torch|c10|mpi|hdf5|nccl|cudart' "$OUT/ldd-perennial.txt" | sed 's/^/  /'
  grep -q 'not found' "$OUT/ldd-perennial.txt" && { note "libraries not found at run time (ldd-perennial.txt)"; return 1; }
  return 0
}

step_tests() {
  local ut="$BUILD/tests/perennial_unit_tests" rc=0 out
  out=$(ours t "$MPIRUN" -np 1 "$ut" --gtest_filter='Nccl*' 2>&1); local r1=$?
  echo "$out" | tail -15
  if grep -q '\[  SKIPPED \]' <<<"$out"; then
    sval nccl_test skipped; note "NCCL test skipped: $(echo "$out" | grep -m1 -i 'no CUDA' | sed 's/^ *//')"
    [ "$DEVICE" = cuda ] && rc=1
  elif [ $r1 -eq 0 ] && grep -q '\[  PASSED  \] 1 test' <<<"$out"; then
    sval nccl_test passed
  else
    sval nccl_test failed; note "NCCL test failed (rc $r1)"; rc=1
  fi
  # the device tests (tests/trainer/device_test.cpp) run on the GPU when there is one: collectives on
  # GPU tensors, checkpoints between GPU and CPU, exact resume, CPU evaluation
  out=$(ours t "$MPIRUN" -np 1 "$BUILD/tests/perennial_model_tests" 2>&1); local r3=$?
  echo "$out" | grep -E 'device (cpu|cuda)|\[  (PASSED|FAILED|SKIPPED) \]|Failure|error' | sort -u | head -20
  sval model_tests "$([ $r3 -eq 0 ] && echo passed || echo failed)"
  [ $r3 -eq 0 ] || { note "model/device tests failed (rc $r3)"; rc=1; }
  # the rest of the unit tests: HDF5, checkpoints, the sampler, ... against the carried libraries
  out=$(ours t "$MPIRUN" -np 1 "$ut" --gtest_filter='-Nccl*' --gtest_brief=1 2>&1); local r2=$?
  echo "$out" | tail -8
  sval unit_tests "$([ $r2 -eq 0 ] && echo passed || echo failed)"
  [ $r2 -eq 0 ] || { note "unit tests failed (rc $r2)"; rc=1; }
  return $rc
}

DATA=$WORK/data
step_import() {
  ours t "$PERENNIAL" data import-fashion-mnist --source "$CARRY/fashion-mnist" --out "$DATA" 2>&1 | tail -5
  local rc=${PIPESTATUS[0]}
  [ $rc -eq 0 ] && [ -d "$DATA/train" ] || { note "import failed (rc $rc)"; return 1; }
  ours "$PERENNIAL" data info "$DATA/train" 2>&1 | head -5
  return 0
}

# train RUN_DIR EXTRA... : one training run of the CNN under mpirun -np 1
train() {
  local run=$1; shift
  ours t "$MPIRUN" -np 1 "$PERENNIAL" train --config configs/fashion-cnn.cfg --run-dir "$run" \
    --data.train "$DATA/train" --data.test "$DATA/test" --train.epochs=1 "${train_args[@]}" "$@" >"$run.log" 2>&1
  local rc=$?
  tr '\r' '\n' <"$run.log" | grep -vE '^ *$|pmix_mca_base|dlopen error|Perhaps a missing' | tail -8 | cut -c1-200
  return $rc
}
json_get() {  # FILE KEY
  "$PYTHON" -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2" 2>/dev/null
}

# eval_matches KIND [ARGS...]: perennial eval of the trained model with ARGS (KIND cpu or gpu, the
# results' key prefix); its accuracy must match the trainer's own evaluation
eval_matches() {
  local kind=$1 where=${1^^}; shift
  if ! ours t "$MPIRUN" -np 1 "$PERENNIAL" eval --model "$WORK/run/model.h5" --data "$DATA/test" \
      --json "$WORK/eval_$kind.json" "$@" >"$WORK/eval_$kind.log" 2>&1; then
    tail -5 "$WORK/eval_$kind.log"; note "perennial eval on the $where failed"; return 1
  fi
  local a b
  a=$(json_get "$WORK/run/result.json" test_accuracy)
  b=$(json_get "$WORK/eval_$kind.json" accuracy)
  log "  test accuracy: trainer ($DEVICE) $a, perennial eval on the $where $b ($(json_get "$WORK/eval_$kind.json" device))"
  val "${kind}_eval_test_accuracy" "${b:-null}"
  if [ -n "$a" ] && [ -n "$b" ] && "$PYTHON" -c "import sys; sys.exit(0 if abs($a-$b) <= 0.002 else 1)"; then
    sval "${kind}_eval_matches" true
  else
    sval "${kind}_eval_matches" false; note "$where evaluation of the device-trained model disagrees ($a vs $b)"; return 1
  fi
}

step_train() {
  train_args=()
  local help
  help=$(ours "$PERENNIAL" train --help 2>&1)
  for kv in "train.device=$DEVICE" "comm.backend=$BACKEND"; do
    local key=${kv%%=*} value=${kv#*=}
    [ -n "$value" ] || continue
    if grep -q -- "$key" <<<"$help"; then
      train_args+=("--$kv")
    elif [ "$key" = train.device ] && [ "$value" = cpu ]; then
      :  # CPU is where a trainer without train.device trains anyway
    else
      note "this trainer has no $key: --$kv not passed"
      [ "$DEVICE" = cuda ] && NO_DEVICE_KEY=1
    fi
  done
  log "  train ${train_args[*]} ${end_args[*]}"
  train "$WORK/run" --checkpoint.every_epochs=1 "${end_args[@]}"
  local rc=$?
  [ $rc -eq 0 ] && [ -f "$WORK/run/result.json" ] || { note "training failed (rc $rc): see train.log"; cp "$WORK/run.log" "$OUT/train.log"; return 1; }
  cp "$WORK/run/result.json" "$OUT/train_result.json"
  cp "$WORK/run/metrics.jsonl" "$OUT/train_metrics.jsonl" 2>/dev/null
  cp "$WORK/run.log" "$OUT/train.log"
  local sps acc steps
  sps=$(json_get "$WORK/run/result.json" samples_per_second)
  acc=$(json_get "$WORK/run/result.json" test_accuracy)
  steps=$(json_get "$WORK/run/result.json" steps)
  local median
  median=$("$PYTHON" - "$WORK/run/metrics.jsonl" <<'EOF' 2>/dev/null
import json, sys, statistics
w = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
w = [r["samples_per_second"] for r in w if r.get("kind") == "train"][1:]
print(round(statistics.median(w)) if w else "")
EOF
)
  sps=$(printf '%.0f' "${sps:-0}" 2>/dev/null)
  log "  perennial: $sps samples/s (median window ${median:-?}), $steps steps, test accuracy $acc"
  val perennial_samples_per_second "${sps:-null}"
  val perennial_median_window_samples_per_second "${median:-null}"
  val perennial_test_accuracy "${acc:-null}"
  val perennial_steps "${steps:-null}"
  sval perennial_comm_backend "$(json_get "$WORK/run/result.json" comm_backend)"
  sval perennial_param_sha256 "$(json_get "$WORK/run/result.json" param_sha256)"
  sval train_args "${train_args[*]}"
  [ -n "${NO_DEVICE_KEY:-}" ] && return 1
  return 0
}

step_eager() {
  local extra=()
  [ "$TRAIN_MAX_STEPS" -gt 0 ] && extra+=(--max-steps "$TRAIN_MAX_STEPS")
  t "$PYTHON" benchmarks/gpu/eager_peer.py --idx "$CARRY/fashion-mnist" --device "$DEVICE" \
    --out "$OUT/eager_result.json" "${extra[@]}" 2>&1 | grep -v Warning | tail -6
  local rc=${PIPESTATUS[0]}
  [ $rc -eq 0 ] && [ -f "$OUT/eager_result.json" ] || { note "eager peer failed (rc $rc)"; return 1; }
  local line
  line=$("$PYTHON" - "$OUT/eager_result.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(" ".join(f'{x["loader"]}={x["samples_per_second"]:.0f}/{x["median_window_samples_per_second"]:.0f}/{x["test_accuracy"]:.4f}' for x in r["runs"]))
EOF
)
  for kv in $line; do
    local name=${kv%%=*} v=${kv#*=}
    IFS=/ read -r sps med acc <<<"$v"
    val "eager_${name}_samples_per_second" "$sps"
    val "eager_${name}_median_window_samples_per_second" "$med"
    val "eager_${name}_test_accuracy" "$acc"
  done
  return 0
}

step_nccl() {
  local b="$BUILD/bin/perennial_bench_allreduce"
  [ -x "$b" ] || { note "perennial_bench_allreduce was not built"; return 1; }
  if [ "$DEVICE" != cuda ]; then note "DEVICE=$DEVICE: no GPU tensors to reduce over NCCL"; sval nccl_allreduce skipped; return 0; fi
  ours t "$MPIRUN" -np 1 "$b" --device cuda -b 8 -e 256M -f 4 -w 5 -n 20 --json "$OUT/nccl_allreduce.json" 2>&1 | tail -20
  local rc=${PIPESTATUS[0]}
  [ $rc -eq 0 ] || { note "all-reduce benchmark on the GPU failed (rc $rc)"; return 1; }
  return 0
}

step_resume() {
  local steps half rc=0 ref
  steps=$(json_get "$WORK/run/result.json" steps)
  ref=$(json_get "$WORK/run/result.json" param_sha256)
  half=$(( steps / 2 ))
  [ "$half" -ge 1 ] || { note "too few steps ($steps) to interrupt"; return 1; }
  # interrupted at half the steps (a checkpoint is saved there), then resumed to the same end
  train "$WORK/resumed" --checkpoint.every_epochs=1 "--train.max_steps=$half" || { note "interrupted run failed"; return 1; }
  train "$WORK/resumed" --checkpoint.every_epochs=1 --resume auto "${end_args[@]}" || { note "resumed run failed"; return 1; }
  grep -m1 -i "resuming from" "$WORK/resumed.log" | sed 's/^/  /'
  local got
  got=$(json_get "$WORK/resumed/result.json" param_sha256)
  log "  param_sha256 uninterrupted $ref"
  log "  param_sha256 resumed       $got"
  if [ -n "$got" ] && [ "$got" = "$ref" ]; then
    sval resume_equal true
  else
    sval resume_equal false; rc=1
    # is it the resume, or does this device not repeat itself? one more uninterrupted run
    if [ "$(left)" -gt 90 ]; then
      train "$WORK/again" --checkpoint.every_epochs=1 "${end_args[@]}" >/dev/null
      local again
      again=$(json_get "$WORK/again/result.json" param_sha256)
      sval rerun_equal "$([ "$again" = "$ref" ] && echo true || echo false)"
      note "resumed weights differ; a second uninterrupted run $([ "$again" = "$ref" ] && echo matches the first: the resume is at fault || echo differs too: training on this device is not deterministic)"
    else
      note "resumed weights differ (no time to tell resume from nondeterminism)"
    fi
  fi
  local ck
  ck=$(ls "$WORK"/resumed/checkpoints/ckpt-*.h5 2>/dev/null)
  if ours t "$PERENNIAL" ckpt verify $ck 2>&1 | tail -4; then sval ckpt_verify passed; else sval ckpt_verify failed; note "ckpt verify failed"; rc=1; fi
  # the model trained on the device, evaluated on the CPU (perennial eval --device cpu) and, on a
  # GPU machine, on the GPU: the accuracy must match the trainer's own evaluation
  local evalargs=()
  grep -q -- '--device' <<<"$(ours "$PERENNIAL" eval --help 2>&1)" && evalargs+=(--device cpu)
  eval_matches cpu "${evalargs[@]}" || rc=1
  if [ "$DEVICE" = cuda ] && [ ${#evalargs[@]} -gt 0 ]; then eval_matches gpu --device cuda || rc=1; fi
  return $rc
}

summarize() {
  local status=$1
  "$PYTHON" - "$OUT" "$status" "$DEVICE" "$(elapsed)" <<'EOF' || {
import json, sys, os
out, status, device, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
steps = []
for line in open(os.path.join(out, "steps.tsv")):
    p = line.rstrip("\n").split("\t")
    steps.append({"name": p[0], "status": p[1], "seconds": int(p[2]), "note": p[3] if len(p) > 3 else ""})
values = {}
for line in open(os.path.join(out, "values.tsv")):
    k, v = line.rstrip("\n").split("\t", 1)
    try:
        values[k] = json.loads(v)
    except Exception:
        values[k] = v
nccl = None
try:
    nccl = json.load(open(os.path.join(out, "nccl_allreduce.json")))
except Exception:
    pass
res = {"ok": status == 0, "device": device, "seconds": secs, "steps": steps, "values": values, "nccl_allreduce": nccl}
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
v = values.get
L = [f"# device_check: {'PASS' if status == 0 else 'FAIL'} ({device}, {secs} s)", "",
     f"GPU: {v('gpu') or '-'} (driver {v('driver') or '-'}); PyTorch {v('torch_version')}; g++ {v('gxx')}; "
     f"glibc {v('glibc')}; {v('os')}; NCCL from {v('nccl_from')}", "",
     "| step | status | seconds | note |", "| --- | --- | --- | --- |"]
L += [f"| {s['name']} | {s['status']} | {s['seconds']} | {s['note']} |" for s in steps]
L += ["", "| CNN, one epoch, batch 64 | samples/s | median window | test accuracy |", "| --- | --- | --- | --- |"]
L.append(f"| Perennial ({v('perennial_comm_backend')}) | {v('perennial_samples_per_second')} | "
         f"{v('perennial_median_window_samples_per_second')} | {v('perennial_test_accuracy')} |")
for mode in ("host", "resident"):
    if v(f"eager_{mode}_samples_per_second") is not None:
        L.append(f"| PyTorch eager, {mode} batches | {v(f'eager_{mode}_samples_per_second')} | "
                 f"{v(f'eager_{mode}_median_window_samples_per_second')} | {v(f'eager_{mode}_test_accuracy')} |")
if nccl:
    L += ["", f"{nccl['backend_version']} all-reduce of GPU tensors at {nccl['ranks']} rank(s), float32 sum "
          "(bucketed: the gradient reducer over a model-like tensor list; raw: one collective on one buffer):", "",
          "| bytes | bucketed (us) | bucketed algbw (GB/s) | raw (us) | raw algbw (GB/s) | wrong |",
          "| --- | --- | --- | --- | --- | --- |"]
    L += [f"| {r['bytes']} | {r['bucketed']['time_us']:.1f} | {r['bucketed']['algbw_gbs']:.2f} | "
          f"{r['raw']['time_us']:.1f} | {r['raw']['algbw_gbs']:.2f} | {r['bucketed']['wrong'] + r['raw']['wrong']} |"
          for r in nccl["rows"]]
L += ["", f"Resume: param_sha256 equal after interrupt+resume: {v('resume_equal')}; second run equal: "
      f"{v('rerun_equal', '-')}; ckpt verify: {v('ckpt_verify')}; CPU eval of the device model matches: "
      f"{v('cpu_eval_matches')} ({v('cpu_eval_test_accuracy')}); on the GPU: "
      f"{v('gpu_eval_matches', '-')} ({v('gpu_eval_test_accuracy', '-')})", ""]
open(os.path.join(out, "summary.md"), "w").write("\n".join(L))
print("\n".join(L))
EOF
    # no usable Python: the step table is still worth having
    { echo "# device_check: status $status (no Python for the summary)"; cat "$OUT/steps.tsv"; } >"$OUT/summary.md"
    cat "$OUT/summary.md"
  }
}

log "device_check: DEVICE=$DEVICE CARRY=$CARRY DEPS=$DEPS BUILD=$BUILD BUDGET_S=$BUDGET_S JOBS=$JOBS PYTHON=$PYTHON"
step facts 0
step deps 30
step configure 60 deps
step build 60 configure
step tests 20 build
step import 20 build
step train 30 import
step eager 30 facts
step nccl 15 build
step resume 40 train
summarize "$FAILED"
# The device tool brings back at most 8 files: the main ones stay, the rest go into details.tgz.
(cd "$OUT" && ls | grep -vxE 'summary.md|results.json|log.txt|facts.txt|configure.txt|build.txt|details.tgz' \
   | tar czf details.tgz --remove-files -T - 2>/dev/null)
log "device_check: $([ $FAILED -eq 0 ] && echo PASS || echo FAIL), output in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit "$FAILED"
