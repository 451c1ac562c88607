#!/usr/bin/env bash
# The scheduler daemon outlives failed writes (found by the chaos test, RELIABILITY.md): under
# RLIMIT_FSIZE its catalog writes fail with EFBIG, which SIGXFSZ used to turn into its death; and
# a publish that the registry cannot take (a std::filesystem error) used to end it too. Each
# failed pass is logged and retried; once the cause is gone it ingests, trains and promotes.
# usage: write_failure_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
scratch  # the daemon runs with --root "$t/root": scratch's cleanup kills it too
daemon=

sched_fixture "$bin" "$t"
cat >>"$t/sched.cfg" <<CFG
[sched]
tick_s = 0.2
[registry]
dir = $t/registry
CFG
root=$t/root
arrive() { cp "$1" "$root/incoming/.$2.tmp" && mv "$root/incoming/.$2.tmp" "$root/incoming/$2"; }
# until_ok SECONDS WHAT TEST: evaluates TEST (a shell condition) until it holds, failing after
# SECONDS or when the daemon dies.
until_ok() {
  local limit=$1 what=$2 test=$3
  for _ in $(seq $((limit * 5))); do
    eval "$test" && return 0
    kill -0 "$daemon" 2>/dev/null || { cat "$t/daemon.log"; fail "the daemon died while waiting for: $what"; }
    sleep 0.2
  done
  cat "$t/daemon.log"
  fail "timed out waiting for: $what"
}
count() { grep -c "$1" "$t/daemon.log" || true; }
shards() { "$bin" sched shards --root "$root" --json | $py -c "import json,sys; print(len(json.load(sys.stdin)))"; }
state() { "$bin" sched runs --root "$root" --json | $py -c "import json,sys; r=json.load(sys.stdin); print(r[0]['state'] if r else '')"; }

# The registry cannot take a version: its versions/ folder is a file.
mkdir -p "$t/registry/fashion-mnist"
: >"$t/registry/fashion-mnist/versions"
# Logs through a pipe: a file-size limit on the daemon must not cut its log.
"$bin" sched run --root "$root" --config "$t/sched.cfg" > >(cat >"$t/daemon.log") 2>&1 &
daemon=$!
until_ok 30 "the root" '[ -d "$root/incoming" ]'
until_ok 30 "the first pass" 'grep -q "scheduler running" "$t/daemon.log"'

# 1. A file-size limit of 1 byte: every write to the catalog fails (EFBIG).
prlimit --pid "$daemon" --fsize=1:
arrive "$t/fm/train/shard-00000.h5" s0.h5
until_ok 30 "a failed pass" '[ "$(count "tick failed")" -ge 2 ]'
[ "$(shards)" = 0 ] || fail "a shard was recorded while the catalog could not be written"
prlimit --pid "$daemon" --fsize=unlimited:
failures=$(count 'tick failed')
echo "daemon survived RLIMIT_FSIZE: $failures failed passes, e.g. $(grep -m1 'tick failed' "$t/daemon.log")"

# 2. With the limit gone: both shards ingested once, a run trains; publishing it fails.
arrive "$t/fm/train/shard-00001.h5" s1.h5
until_ok 30 "two shards" '[ "$(shards)" = 2 ]'
until_ok 120 "a failed publish" 'grep -q "tick failed: .*versions" "$t/daemon.log"'
sleep 1
[ "$(state)" = validating ] || fail "the run should wait in validating while publishing fails, not $(state)"
echo "daemon survived a failed publish: $(grep -m1 'tick failed: .*versions' "$t/daemon.log")"

# 3. The registry repaired: the run is published and promoted.
rm "$t/registry/fashion-mnist/versions"
until_ok 60 "the promotion" '[ "$(state)" = promoted ]'
kill -TERM "$daemon"
wait "$daemon" || fail "the daemon exited $? on SIGTERM"
daemon=
"$bin" registry verify --registry "$t/registry" fashion-mnist:v1 >/dev/null || fail "the version does not verify"
[ "$(shards)" = 2 ] || fail "shards were ingested more than once"
echo "PASS: the daemon outlived a file-size limit and a failed publish, then ingested, trained and promoted"
