#!/usr/bin/env bash
# The README's demo, shortened (--quick): it must show at least one promotion, one rejection, a
# killed run that resumed from its checkpoint, a quarantined file, and write the report.
# usage: demo_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
scratch
bash "$src/scripts/demo-run.sh" "$bin" "$t/demo" --quick >"$t/out.txt" 2>&1 || { cat "$t/out.txt"; fail "the demo failed"; }
root=$t/demo/root
/usr/bin/python3 - "$root" <<'PY' || { cat "$t/out.txt"; fail "what the demo must show"; }
import json, os, sqlite3, sys
root = sys.argv[1]
db = sqlite3.connect(os.path.join(root, "catalog.db"))
states = [s for (s,) in db.execute("SELECT state FROM runs")]
assert "promoted" in states and "rejected" in states, states
resumed = db.execute("SELECT COUNT(*) FROM runs WHERE attempt >= 2 AND state IN ('promoted', 'rejected')").fetchone()[0]
assert resumed >= 1, "no run was retried after the kill"
assert db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 1
print("runs:", states)
PY
grep -q "resuming from" "$t/out.txt" || fail "the demo does not show the resume"
grep -q "gate verdict" "$t/out.txt" || fail "the demo does not show the gate's verdicts"
grep -q "== Summary" "$t/out.txt" || fail "the demo has no summary"
if "$bin" report --help >/dev/null 2>&1; then [ -s "$t/demo/report.html" ] || fail "no report"; fi
echo "PASS: the quick demo ($(grep -o 'Summary ([0-9]* s)' "$t/out.txt"))"
