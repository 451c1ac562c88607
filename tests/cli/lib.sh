# Helpers shared by the CLI test scripts (sourced).
fail() { echo "FAIL: $*" >&2; exit 1; }
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
# sched_fixture PERENNIAL DIR: what the scheduler tests train on: Fashion-MNIST in shards of 1000
# rows (DIR/fm/train, DIR/fm/test), a holdout of one test shard (DIR/holdout), DIR/train.cfg (an
# MLP of 32 hidden units, one epoch, batches of 50) and DIR/sched.cfg (2 ranks, a run per 2000 new
# rows); append sections to DIR/sched.cfg for more.
sched_fixture() {
  "$1" data import-fashion-mnist --out "$2/fm" --shard-size 1000 >/dev/null
  mkdir -p "$2/holdout"
  cp "$2/fm/test/shard-00000.h5" "$2/holdout/"
  cat >"$2/train.cfg" <<CFG
[model]
arch = mlp
hidden = 32
[train]
epochs = 1
batch_size = 50
[log]
progress = none
CFG
  cat >"$2/sched.cfg" <<CFG
[train]
config = train.cfg
holdout = holdout
ranks = 2
[triggers]
new_data_rows = 2000
[executor]
mpirun_args = --oversubscribe
CFG
}
