#!/usr/bin/env bash
# The demo of continuous training (scripts/demo.sh installs and builds, then runs this).
#
#   scripts/demo-run.sh PERENNIAL DIR [--quick]
#
# Fashion-MNIST arrives as a stream of shards into a fresh scheduler root (DIR/root) while the
# scheduler runs with the embedded defaults (local mpirun executor, SQLite catalog, file
# registry): clean data first, then a shift (darker images, another class mix), then a batch with
# a labelling bug. You see shards ingested (and a bad file quarantined), triggers firing and why,
# runs training, a run killed mid-training that resumes from its checkpoint, the gate's verdicts
# (promotions and a rejection), and at the end a summary and an HTML report. --quick uses smaller
# shards and fewer epochs (CI runs it).
set -euo pipefail
bin=$(realpath "$1")
dir=$2
quick=${3:-}
src=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
say() { printf '\n'; bold "== $*"; }
note() { printf '   %s\n' "$*"; }

rows=2000 epochs=6 new_rows=8000 drift_rows=4000 holdout_rows=10000
if [ "$quick" = --quick ]; then rows=1000 epochs=8 new_rows=4000 drift_rows=2000 holdout_rows=2000; fi

mkdir -p "$dir"
dir=$(realpath "$dir")
root=$dir/root
daemon=
cleanup() { [ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true; }
trap cleanup EXIT
rm -rf "$root" "$dir/stream" "$dir/holdout"
start=$SECONDS

say "Fashion-MNIST as HDF5 shards"
[ -d "$dir/fashion/train" ] || "$bin" data import-fashion-mnist --out "$dir/fashion" --shard-size 2000 >/dev/null
mkdir -p "$dir/holdout"
for f in $(ls "$dir"/fashion/test/*.h5 | head -n $((holdout_rows / 2000))); do cp "$f" "$dir/holdout/"; done
$py "$src/scripts/demo_stream.py" "$dir/fashion/train" "$dir/stream" --rows "$rows" | sed 's/^/   /'
note "golden holdout: $holdout_rows test rows in $dir/holdout"

cat >"$dir/train.cfg" <<CFG
# The demo's model: the MLP of configs/fashion-mlp.cfg, fewer epochs.
[model]
arch = mlp
hidden = 256,128,100
[train]
epochs = $epochs
batch_size = 64
log_every = 100
[optim]
lr = 0.05
momentum = 0.9
[lr]
schedule = cosine
[checkpoint]
every_steps = 50
keep_last = 2
[log]
progress = lines
CFG
cat >"$dir/scheduler.cfg" <<CFG
# The demo's scheduler: embedded defaults (local mpirun executor, SQLite catalog, file registry).
[train]
config = train.cfg
holdout = holdout
ranks = 2
max_attempts = 3
[triggers]
new_data_rows = $new_rows
drift_psi = 0.2
drift_min_rows = $drift_rows
decay_margin = 0.05
decay_min_rows = $drift_rows
[executor]
mpirun_args = --oversubscribe
[gate]
min_accuracy = 0.70
max_accuracy_drop = 0.01
max_class_drop = 0.10
newest_shards = 2
[registry]
model = fashion
[sched]
tick_s = 1
CFG

say "Starting the scheduler on $root"
"$bin" sched run --root "$root" --config "$dir/scheduler.cfg" >"$dir/scheduler.log" 2>&1 &
daemon=$!
while [ ! -d "$root/incoming" ]; do sleep 0.1; done
note "daemon pid $daemon, log $dir/scheduler.log; configuration $dir/scheduler.cfg"

runs_json() { "$bin" sched runs --root "$root" --json --limit 100; }
# run_field N KEY: KEY of the Nth run (1-based, creation order), empty if none yet.
run_field() {
  runs_json | $py -c "
import json,sys
r=sorted(json.load(sys.stdin), key=lambda x: x['id'])
n=int(sys.argv[1])
print(r[n-1].get(sys.argv[2], '') if len(r) >= n else '')" "$1" "$2"
}
arrive() {  # FILE: the arrival convention: write under a .tmp name, then rename
  local name
  name=$(basename "$1")
  cp "$1" "$root/incoming/.$name.tmp"
  mv "$root/incoming/.$name.tmp" "$root/incoming/$name"
  note "-> $name arrives"
}
# follow N [kill]: narrates the Nth run from its creation to its end; with kill, SIGKILLs its
# processes after its first checkpoint (a node failure) and follows the retry. Returns 1 when
# no trigger created the run within a minute.
follow() {
  local n=$1 kill=${2:-} id="" state="" attempt=0 shown=0 killed="" waited=0 polls=0
  while [ -z "$id" ]; do
    id=$(run_field "$n" id)
    [ -n "$id" ] && break
    waited=$((waited + 1))
    [ $waited -gt 12 ] && return 1
    sleep 0.5
  done
  note "run $id created by trigger '$(run_field "$n" trigger)': $(run_field "$n" reason)"
  while :; do
    # The newest attempt's log: the trainer's milestones as they come.
    local latest
    latest=$(ls -d "$root/runs/$id"/attempt-* 2>/dev/null | sed 's/.*attempt-//' | sort -n | tail -1)
    if [ -n "$latest" ] && [ "$latest" != "$attempt" ]; then
      [ "$attempt" != 0 ] && note "attempt $latest of $id starts (--resume auto)"
      attempt=$latest
      shown=0
    fi
    local log=$root/runs/$id/attempt-$attempt/log
    if [ -f "$log" ]; then
      local lines count
      lines=$(grep -E "resuming from|epoch [0-9]+: test accuracy|done: test accuracy" "$log" 2>/dev/null |
        sed 's/^\[rank 0\] info \[train\] //' || true)
      count=$(printf '%s' "$lines" | grep -c . || true)
      if [ "$count" -gt "$shown" ]; then
        printf '%s\n' "$lines" | tail -n $((count - shown)) | sed "s/^/   [$id attempt $attempt] /"
        shown=$count
      fi
      if [ "$kill" = kill ] && [ -z "$killed" ] && grep -q "checkpoint .*ckpt-" "$log"; then
        local pgid
        pgid=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['child_pgid'])" "$root/runs/$id/attempt-$attempt/pid")
        bold "   !! simulating a node failure: SIGKILL to every process of $id (process group $pgid)"
        kill -9 -- "-$pgid" 2>/dev/null || true
        killed=1
      fi
    fi
    # The run's state, once a second.
    polls=$((polls + 1))
    if [ $((polls % 10)) = 0 ]; then
      state=$(run_field "$n" state)
      case $state in promoted|rejected|failed|cancelled|succeeded) break ;; esac
      kill -0 "$daemon" || { cat "$dir/scheduler.log"; echo "the scheduler died" >&2; exit 1; }
    fi
    sleep 0.1
  done
  if [ -f "$root/runs/$id/verdict.json" ]; then
    $py - "$root/runs/$id/verdict.json" "$id" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
print("   gate verdict for %s: %s" % (sys.argv[2], v["decision"].upper()))
for c in v["checks"]:
    print("     %s %-20s %s" % ("ok  " if c["passed"] else "FAIL", c["name"], c["detail"]))
PY
  fi
  bold "   run $id: $state $(run_field "$n" message)"
}
# deliver FILE...: a batch arrives: each written under a hidden .tmp name, then all renamed.
deliver() {
  local f name
  for f in "$@"; do cp "$f" "$root/incoming/.$(basename "$f").tmp"; done
  for f in "$@"; do
    name=$(basename "$f")
    mv "$root/incoming/.$name.tmp" "$root/incoming/$name"
    note "-> $name arrives"
  done
}
runs_so_far() { runs_json | $py -c "import json,sys; print(len(json.load(sys.stdin)))"; }
# settle BEFORE [kill]: follows every run after the first BEFORE ones, one after the other, until
# the scheduler has nothing left to do.
settle() {
  local n=$(($1 + 1)) kill=${2:-}
  while follow "$n" "$kill"; do
    kill=""
    n=$((n + 1))
  done
}

clean=("$dir"/stream/*-clean.h5)
half=$((${#clean[@]} / 2))
say "1. A first batch of clean data arrives; the new-data trigger needs $new_rows rows"
echo "this is not a shard" >"$dir/notes.txt"
before=$(runs_so_far)
deliver "$dir/notes.txt" "${clean[@]:0:$half}"
settle "$before"

say "2. More clean data; this run's processes are killed mid-training and it resumes"
before=$(runs_so_far)
deliver "${clean[@]:$half}"
settle "$before" kill

say "3. A new camera: darker images and another class mix (drift)"
before=$(runs_so_far)
deliver "$dir"/stream/*-shifted.h5
settle "$before"

say "4. An upstream labelling bug: dresses labelled as shirts"
before=$(runs_so_far)
deliver "$dir"/stream/*-mislabel.h5
settle "$before"

kill -TERM "$daemon" && wait "$daemon" || true
daemon=
say "Summary ($((SECONDS - start)) s)"
"$bin" sched runs --root "$root" --limit 20
echo
"$bin" registry list --root "$root"
echo
"$bin" sched shards --root "$root" --quarantine
echo
"$bin" sched status --root "$root" | sed -n '/^triggers:/,$p'
if "$bin" report --help >/dev/null 2>&1; then
  "$bin" report --root "$root" --out "$dir/report.html" >/dev/null
  say "Report: $dir/report.html"
fi
note "catalog: $root/catalog.db   registry: $root/registry   scheduler log: $dir/scheduler.log"
note "explore: $bin sched events --root $root   |   $bin registry show --root $root fashion"
