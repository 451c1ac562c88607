#!/usr/bin/env bash
# NOTE [Shared-memory all-reduce]: where /dev/shm has no room for a bucket's shared window (a
# container's 64 MiB, here a 24 MiB tmpfs in a mount namespace of the test's own), every rank
# agrees to reduce that bucket through MPI_Allreduce, rank 0 says why, and training goes on with
# the weights it gets with comm.shared_memory = false; so does a file size limit (RLIMIT_FSIZE)
# under the window's file. Exit 77 (skipped) where a mount namespace
# cannot be made (not root, no unshare).
# usage: shm_room_test.sh PERENNIAL SOURCE_DIR MPIEXEC
set -euo pipefail
bin=$1 src=$2 mpiexec=${3:-mpiexec}
source "$src/tests/cli/lib.sh"
scratch work
unshare --mount true 2>/dev/null || { echo "SKIP: cannot make a mount namespace"; exit 77; }

"$bin" data import-fashion-mnist --out "$work/fm" --shard-size 20000 >/dev/null
# 784 x 3072 + 3072 x 10 weights: one 9.8 MB bucket, whose window needs about 21 MB at 2 ranks.
common=(--data.train "$work/fm/train" --data.test "$work/fm/test" --model.arch mlp --model.hidden 3072
        --train.max_steps 3 --train.batch_size 16 --log.progress none --checkpoint.every_epochs 0 --eval.batch_size 5000)
run() {  # run NAME SHM_MIB [extra args]: 2 ranks with /dev/shm a tmpfs of SHM_MIB MiB
  local name=$1 mib=$2; shift 2
  unshare --mount bash -c 'mount -t tmpfs -o size="$1"M tmpfs /dev/shm && shift && exec "$@"' _ "$mib" \
    "$mpiexec" -np 2 --oversubscribe "$bin" train "${common[@]}" --run-dir "$work/$name" "$@" \
    >"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; fail "training $name exited non-zero"; }
}
run roomy 64
grep -qF "two-shot all-reduce" "$work/roomy.log" || fail "64 MiB of /dev/shm: the bucket was not shared: $(grep optimizer "$work/roomy.log")"
run cramped 16
grep -qF "stays with MPI_Allreduce: its shared window needs" "$work/cramped.log" || { cat "$work/cramped.log"; fail "16 MiB of /dev/shm: no message saying why the bucket is not shared"; }
! grep -qF "two-shot" "$work/cramped.log" || fail "16 MiB of /dev/shm: the log claims a shared bucket"
# A file size limit under the window's file (made by rank 0 alone, which would fail while the
# other waited for it in Open MPI): every rank sees the limit first and all reduce through MPI.
# (SGD without momentum: the final checkpoint, 9.8 MB, stays under the limit.)
(ulimit -f 15000 && run limited 64 --optim.momentum 0)
grep -qF "stays with MPI_Allreduce" "$work/limited.log" || { cat "$work/limited.log"; fail "a 15 MB file size limit: no message saying why the bucket is not shared"; }
run plain 64 --comm.shared_memory false
for name in roomy cramped; do
  [ "$(json "$work/$name/result.json" param_sha256)" = "$(json "$work/plain/result.json" param_sha256)" ] ||
    fail "$name: other weights than comm.shared_memory = false"
done
echo "PASS: a bucket without room in /dev/shm is reduced through MPI, with a message, and the same weights"
