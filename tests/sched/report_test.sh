#!/usr/bin/env bash
# `perennial report` on a scheduler root with real content: two shards of Fashion-MNIST and a
# bad file arrive, the new-data trigger starts a 2-rank run that passes the gate and becomes v1;
# a third shard and `sched trigger` start a second run that ends promoted or rejected. The report
# of that root is rendered in headless Chromium: it must load nothing from the network, log no
# console errors, show every section and both runs; its screenshot is kept as an artifact.
# usage: report_test.sh PERENNIAL SOURCE_DIR   (exit 77: no chromium)
# REPORT_TEST_KEEP=DIR keeps the scheduler root in DIR (for a look at the page by hand).
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$chromium" ]; then
  echo "SKIP: chromium is not installed (scripts/install-deps.sh installs it)"
  exit 77
fi
start=$SECONDS
scratch
artifacts=${PERENNIAL_TEST_ARTIFACTS:-${TMPDIR:-/tmp}}
mkdir -p "$artifacts"

sched_fixture "$bin" "$t" --shard-size 2000 --epochs 2 --batch-size 64 --lr 0.05 --new-data-rows 4000
printf '[train]\nlog_every = 10\n' >>"$t/train.cfg"
cat >>"$t/sched.cfg" <<CFG
[train]
max_attempts = 1
[triggers]
drift_psi = 0.001
drift_min_rows = 1000
[gate]
min_accuracy = 0.3
max_accuracy_drop = 0.05
max_class_drop = 0.5
min_improvement = 0.001
[registry]
model = fashion
CFG
root=$t/root
"$bin" sched tick --root "$root" --config "$t/sched.cfg" >/dev/null

arrive() {  # FILE NAME: the arrival convention (write under .tmp, then rename)
  cp "$1" "$root/incoming/$2.tmp"
  mv "$root/incoming/$2.tmp" "$root/incoming/$2"
}
# tick_until SECONDS PYTHON_CONDITION: ticks until the condition on `sched runs --json` (as R) holds.
tick_until() {
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt "$deadline" ]; do
    "$bin" sched tick --root "$root" --config "$t/sched.cfg" >>"$t/ticks.log" 2>&1 || {
      cat "$t/ticks.log" >&2
      fail "sched tick"
    }
    if "$bin" sched runs --root "$root" --json |
      $py -c "import json,sys; R=json.load(sys.stdin); sys.exit(0 if ($2) else 1)"; then
      return 0
    fi
    sleep 0.5
  done
  "$bin" sched runs --root "$root" >&2 || true
  tail -50 "$t/ticks.log" >&2
  fail "timed out waiting for: $2"
}

arrive "$t/fm/train/shard-00000.h5" "shard-00000.h5"
arrive "$t/fm/train/shard-00001.h5" "shard-00001.h5"
# A bad file, with characters in its name that HTML must escape.
echo "not an HDF5 file" >"$root/incoming/notes<b>&\"x\".h5"
tick_until 240 "len(R) == 1 and R[0]['state'] == 'promoted'"
# A third shard: its drift against the champion's data (a tiny threshold, so it fires) starts a
# second run; then one on demand, on the same data.
arrive "$t/fm/train/shard-00002.h5" "shard-00002.h5"
tick_until 240 "len(R) == 2 and R[0]['state'] in ('promoted', 'rejected', 'failed')"
"$bin" sched trigger --root "$root" --reason "a second model <for the report>" >/dev/null
tick_until 240 "len(R) == 3 and R[0]['state'] in ('promoted', 'rejected', 'failed')"
"$bin" sched runs --root "$root"
runs=$("$bin" sched runs --root "$root" --json | $py -c "import json,sys; print(' '.join(r['id'] for r in json.load(sys.stdin)))")
echo "scheduler root ready after $((SECONDS - start)) s: runs $runs"

# The command line: help, errors.
grep -q -- "--root" <<<"$("$bin" report --help)" || fail "report --help"
set +e
"$bin" report --out "$t/x.html" 2>"$t/err.txt"
rc=$?
"$bin" report --root "$t/nonexistent" --out "$t/x.html" 2>>"$t/err.txt"
rc2=$?
set -e
[ "$rc" = 2 ] && [ "$rc2" = 2 ] || { cat "$t/err.txt"; fail "report without --root or with a missing root: exit 2 ($rc, $rc2)"; }

html=$root/report.html
"$bin" report --root "$root" --out "$html" || fail "perennial report"
size=$(stat -c %s "$html")
echo "report: $html ($size bytes)"
[ "$size" -lt 2000000 ] || fail "the page is too large ($size bytes)"
# Self-contained: nothing is loaded from anywhere (the one <link> is the empty data: icon).
external='(src|href) *= *"(https?:|ftp:)?//|@import|url\(|<script[^>]* src=|<link [^>]*href="[^d]'
if grep -Eqi "$external" "$html"; then
  grep -Eoi ".{0,40}($external).{0,40}" "$html" >&2 || true
  fail "the page refers to external resources"
fi
grep -q 'notes&lt;b&gt;&amp;&quot;x&quot;.h5' "$html" || fail "the quarantined file's name is escaped"
! grep -q 'notes<b>' "$html" || fail "an unescaped name from the catalog"
grep -q 'a second model &lt;for the report&gt;' "$html" || fail "the trigger's reason is escaped"

# Headless Chromium: renders, no console errors, every section and both runs in the DOM.
profile=$t/chromium-profile
chrome() {
  timeout 120 "$chromium" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
    --user-data-dir="$profile" --enable-logging=stderr --v=0 "$@"
}
png=$t/report.png
chrome --screenshot="$png" --window-size=1280,4800 --hide-scrollbars "file://$html" >"$t/shot.out" 2>"$t/chromium.log" ||
  { cat "$t/chromium.log" >&2; fail "chromium --screenshot"; }
chrome --dump-dom "file://$html" >"$t/dom.html" 2>"$t/chromium-dom.log" || { cat "$t/chromium-dom.log" >&2; fail "chromium --dump-dom"; }
# console_clean LOG: the page logged its marker and nothing else. Chromium logs every console
# message as INFO:CONSOLE (errors and uncaught exceptions included), so any other message, or a
# failed load, is a failure.
console_clean() {
  if grep -E 'CONSOLE|Uncaught|net::ERR_|Failed to load' "$1" | grep -v '"report-ok: ' | grep -q .; then
    grep -E 'CONSOLE|Uncaught|net::ERR_|Failed to load' "$1" >&2
    fail "console messages while rendering the report ($1)"
  fi
  grep -E 'CONSOLE' "$1" | grep -q '"report-ok: ' || {
    cat "$1" >&2
    fail "the page's script did not run (no report-ok on the console in $1)"
  }
}
console_clean "$t/chromium.log"
console_clean "$t/chromium-dom.log"
grep -q 'data-report-ready="1"' "$t/dom.html" || fail "the script ran in the DOM dump"
for id in summary quality curves timeline lineage verdicts runs quarantine; do
  grep -q "id=\"$id\"" "$t/dom.html" || fail "section #$id missing from the DOM"
done
for h in Triggers "Model quality" "Training curves" Timeline "Champion lineage" Verdicts Runs Quarantine; do
  grep -q "<h2[^>]*>$h</h2>" "$t/dom.html" || fail "heading $h missing"
done
for r in $runs; do
  grep -q "$r" "$t/dom.html" || fail "run $r missing from the page"
done
grep -q "fashion:v1" "$t/dom.html" || fail "the registry version fashion:v1"
grep -q "drift PSI" "$t/dom.html" || fail "the drift trigger's PSI on the timeline"
[ -s "$png" ] || fail "no screenshot"
pngsize=$(stat -c %s "$png")
[ "$pngsize" -gt 20000 ] || fail "the screenshot is only $pngsize bytes"
cp "$png" "$artifacts/report.png"
cp "$html" "$artifacts/report.html"
echo "screenshot: $artifacts/report.png ($pngsize bytes)"

# An empty root (a scheduler that ticked once, nothing arrived) renders too.
"$bin" sched tick --root "$t/empty" --config "$t/sched.cfg" >/dev/null
"$bin" report --root "$t/empty" --out "$t/empty.html" || fail "report of an empty root"
chrome --dump-dom "file://$t/empty.html" >"$t/empty-dom.html" 2>"$t/chromium-empty.log" || fail "chromium on the empty report"
console_clean "$t/chromium-empty.log"
grep -q 'data-report-ready="1"' "$t/empty-dom.html" || fail "the empty report's script"
grep -q 'No runs yet' "$t/empty-dom.html" || fail "the empty report says there are no runs"

if [ -n "${REPORT_TEST_KEEP:-}" ]; then
  rm -rf "$REPORT_TEST_KEEP"
  cp -a "$root" "$REPORT_TEST_KEEP"
fi
echo "PASS: report of $runs, rendered in headless Chromium without console errors ($((SECONDS - start)) s)"
