# shellcheck shell=bash
# Helpers shared by the CLI test scripts (sourced).
fail() { echo "FAIL: $*" >&2; exit 1; }
# shellcheck disable=SC2034  # used by the scripts that source this file
py=/usr/bin/python3  # the system Python, with h5py and numpy, for the scripts' helpers
# scratch [VAR]: a fresh temporary folder in $VAR (default t), removed at exit together with every
# process still running from it (a daemon, mpirun's ranks, a supervisor) so that a failing test
# leaves nothing behind. Sets the EXIT trap; a test that needs more cleanup sets its own instead.
scratch() {
  local var=${1:-t} dir
  dir=$(mktemp -d)
  printf -v "$var" '%s' "$dir"
  # shellcheck disable=SC2064  # the folder is known now
  trap "pkill -9 -f '$dir/' 2>/dev/null || true; rm -rf '$dir'" EXIT
}
# json FILE KEY: prints a top-level value of a JSON file.
json() { /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
# sched_until_promoted BIN ROOT SCHED_CFG LOG WHAT: ticks the scheduler (its output appended to LOG)
# until its first run has ended; fails, showing the logs, unless that run (WHAT) was promoted.
sched_until_promoted() {
  local bin=$1 root=$2 cfg=$3 log=$4 what=$5 state=none
  for _ in $(seq 900); do
    "$bin" sched tick --root "$root" --config "$cfg" >>"$log" 2>&1 || { cat "$log"; fail "sched tick"; }
    state=$("$bin" sched runs --root "$root" --json | /usr/bin/python3 -c "import json,sys; r=json.load(sys.stdin); print(r[0]['state'] if r else 'none')")
    case $state in promoted|rejected|failed|cancelled) break ;; esac
    sleep 0.2
  done
  if [ "$state" != promoted ]; then
    cat "$log"; cat "$root"/runs/*/attempt-*/log 2>/dev/null | tail -40
    fail "$what ended '$state', not promoted"
  fi
}
# sched_fixture PERENNIAL DIR [OPTION VALUE]...: what the scheduler tests train on: Fashion-MNIST
# in shards (DIR/fm/train, DIR/fm/test), a holdout of one test shard (DIR/holdout), DIR/train.cfg
# (an MLP of 32 hidden units) and DIR/sched.cfg (2 ranks, a run per so many new rows). Options and
# their defaults: --shard-size 1000, --epochs 1, --batch-size 50, --lr (optim.lr; unset),
# --progress none, --new-data-rows 2000, --ranks 2, --executor local (mpirun --oversubscribe; or
# slurm: slurm/train.sbatch with a 10-minute limit). Append sections to DIR/train.cfg or DIR/sched.cfg for
# more (a section may appear twice; a key may not).
sched_fixture() {
  local bin=$1 dir=$2 shard_size=1000 epochs=1 batch_size=50 lr='' progress=none rows=2000 ranks=2 executor=local
  shift 2
  while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || fail "sched_fixture: $1 needs a value"
    case $1 in
      --shard-size) shard_size=$2 ;;
      --epochs) epochs=$2 ;;
      --batch-size) batch_size=$2 ;;
      --lr) lr=$2 ;;
      --progress) progress=$2 ;;
      --new-data-rows) rows=$2 ;;
      --ranks) ranks=$2 ;;
      --executor) executor=$2 ;;
      *) fail "sched_fixture: unknown option $1" ;;
    esac
    shift 2
  done
  "$bin" data import-fashion-mnist --out "$dir/fm" --shard-size "$shard_size" >/dev/null
  mkdir -p "$dir/holdout"
  cp "$dir/fm/test/shard-00000.h5" "$dir/holdout/"
  cat >"$dir/train.cfg" <<CFG
[model]
arch = mlp
hidden = 32
[train]
epochs = $epochs
batch_size = $batch_size
[log]
progress = $progress
CFG
  [ -z "$lr" ] || printf '[optim]\nlr = %s\n' "$lr" >>"$dir/train.cfg"
  cat >"$dir/sched.cfg" <<CFG
[train]
config = train.cfg
holdout = holdout
ranks = $ranks
[triggers]
new_data_rows = $rows
CFG
  case $executor in
    local) printf '[executor]\nmpirun_args = --oversubscribe\n' >>"$dir/sched.cfg" ;;
    slurm) printf '[executor]\nkind = slurm\n[slurm]\nscript = %s\ntime = 00:10:00\n' \
             "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/slurm/train.sbatch" >>"$dir/sched.cfg" ;;
    *) fail "sched_fixture: --executor $executor: not local or slurm" ;;
  esac
}
