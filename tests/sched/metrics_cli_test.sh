#!/usr/bin/env bash
# The operator's view: JSON-lines logs (PERENNIAL_LOG_FORMAT=json, --log-format=json) and the
# daemon's Prometheus endpoint (`sched run --metrics-port P`): after two shards and a bad file
# arrive and the run they trigger is promoted, a scrape of http://127.0.0.1:P/metrics parses
# strictly and reports them; nothing answers on a non-loopback address; a bad or busy port is
# refused; SIGTERM stops the daemon (exit 0) and closes the port.
# usage: metrics_cli_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
scratch  # the daemon runs with --root "$t/root": scratch's cleanup kills it too
daemon=

sched_fixture "$bin" "$t" --lr 0.05 --progress lines
cat >>"$t/sched.cfg" <<CFG
[train]
max_attempts = 1
[sched]
tick_s = 0.3
[registry]
model = fashion
CFG

# 1. JSON logs: every stderr line of a tick is one JSON object with the required keys, also for
# messages with quotes, backslashes and newlines (a quarantined file's name).
check_json_lines() {  # FILE MIN_LINES
  $py - "$1" "$2" <<'PY' || fail "stderr of a JSON-format command: $(cat "$1")"
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
assert len(lines) >= int(sys.argv[2]), f"{len(lines)} lines"
for line in lines:
    j = json.loads(line)
    assert isinstance(j, dict), line
    for k in ("time", "level", "component", "rank", "world_size", "message"):
        assert k in j, (k, line)
    assert j["time"].endswith("Z") and len(j["time"]) == 24, j["time"]
    assert j["rank"] == 0 and j["world_size"] == 1, line
PY
}
mkdir -p "$t/r1/incoming"
cp "$t/fm/train/shard-00000.h5" "$t/r1/incoming/good.h5"
bad=$'bad "quoted" back\\slash\nnewline.h5'
echo "not hdf5" >"$t/r1/incoming/$bad"
PERENNIAL_LOG_FORMAT=json "$bin" sched tick --root "$t/r1" --config "$t/sched.cfg" --triggers.new_data_rows=1000000 >"$t/tick.out" 2>"$t/tick.err" ||
  fail "sched tick with PERENNIAL_LOG_FORMAT=json: $(cat "$t/tick.err")"
check_json_lines "$t/tick.err" 2
$py - "$t/tick.err" "$bad" <<'PY' || fail "the quarantine message names the file exactly"
import json, sys
msgs = [json.loads(l)["message"] for l in open(sys.argv[1], encoding="utf-8")]
assert any(m.startswith("quarantined " + sys.argv[2] + " (hdf5)") for m in msgs), msgs
assert any(m.startswith("ingested good.h5") for m in msgs), msgs
PY
cp "$t/fm/train/shard-00001.h5" "$t/r1/incoming/second.h5"
"$bin" --log-format=json sched tick --root "$t/r1" --config "$t/sched.cfg" --triggers.new_data_rows=1000000 >/dev/null 2>"$t/tick2.err" ||
  fail "--log-format=json sched tick: $(cat "$t/tick2.err")"
check_json_lines "$t/tick2.err" 1
"$bin" --log-format json sched status --root "$t/r1" >/dev/null 2>&1 || fail "--log-format json (two words)"
# Errors are JSON lines too; bad formats are refused with exit 2.
rc=0; PERENNIAL_LOG_FORMAT=json "$bin" sched status --root "$t/nothing" >/dev/null 2>"$t/err.json" || rc=$?
[ "$rc" = 2 ] || fail "exit $rc for a missing root"
check_json_lines "$t/err.json" 1
rc=0; "$bin" --log-format=xml sched status --root "$t/r1" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] && grep -q -- "--log-format: unknown log format 'xml'" "$t/err" || fail "--log-format=xml: exit $rc, $(cat "$t/err")"
rc=0; PERENNIAL_LOG_FORMAT=yaml "$bin" version 2>"$t/err" >/dev/null || rc=$?
[ "$rc" = 2 ] && grep -q "PERENNIAL_LOG_FORMAT: unknown log format 'yaml'" "$t/err" || fail "PERENNIAL_LOG_FORMAT=yaml: exit $rc"
cp "$t/fm/train/shard-00002.h5" "$t/r1/incoming/third.h5"
"$bin" sched tick --root "$t/r1" --config "$t/sched.cfg" --triggers.new_data_rows=1000000 >/dev/null 2>"$t/text.err"
grep -q "^info \[ingest\] ingested third.h5" "$t/text.err" || fail "text is the default: $(cat "$t/text.err")"

# 2. The metrics endpoint.
free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
for p in 70000 -1; do
  rc=0; "$bin" sched run --root "$t/rx" --config "$t/sched.cfg" --metrics-port=$p 2>"$t/err" || rc=$?
  [ "$rc" = 2 ] && grep -q -- "--metrics-port" "$t/err" || fail "--metrics-port=$p: exit $rc, $(cat "$t/err")"
done
root=$t/root
"$bin" sched run --root "$root" --config "$t/sched.cfg" --metrics-port "$port" >"$t/daemon.log" 2>&1 &
daemon=$!

# scrape FILE: GETs /metrics into FILE (exit 1 when nothing answers).
scrape() {
  $py - "$port" "$1" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10) as r:
    assert r.status == 200, r.status
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", r.headers["Content-Type"]
    open(sys.argv[2], "wb").write(r.read())
PY
}
for _ in $(seq 100); do scrape "$t/m0.txt" 2>/dev/null && break; kill -0 "$daemon" 2>/dev/null || { cat "$t/daemon.log"; fail "the daemon died"; }; sleep 0.1; done
[ -s "$t/m0.txt" ] || { cat "$t/daemon.log"; fail "the metrics endpoint never answered"; }
grep -q "metrics on http://127.0.0.1:$port/metrics" "$t/daemon.log" || fail "the daemon logs the address"

# Another daemon (another root) cannot take the same port.
rc=0; timeout 60 "$bin" sched run --root "$t/r2" --config "$t/sched.cfg" --metrics-port "$port" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q -- "--metrics-port: cannot listen on 127.0.0.1:$port" "$t/err" ||
  fail "a second daemon on the same port: exit $rc, $(cat "$t/err")"

arrive() {
  cp "$1" "$root/incoming/$2.tmp"
  mv "$root/incoming/$2.tmp" "$root/incoming/$2"
}
arrive "$t/fm/train/shard-00002.h5" a.h5
echo "not hdf5" >"$root/incoming/junk.h5.tmp" && mv "$root/incoming/junk.h5.tmp" "$root/incoming/junk.h5"
arrive "$t/fm/train/shard-00003.h5" b.h5

deadline=$((SECONDS + 300))
until "$bin" sched runs --root "$root" --json 2>/dev/null |
  $py -c "import json,sys; R=json.load(sys.stdin); sys.exit(0 if len(R) == 1 and R[0]['state'] == 'promoted' else 1)"; do
  kill -0 "$daemon" 2>/dev/null || { cat "$t/daemon.log"; fail "the daemon died"; }
  [ $SECONDS -lt $deadline ] || { "$bin" sched runs --root "$root"; cat "$t/daemon.log"; fail "no promoted run"; }
  sleep 0.3
done
run=$("$bin" sched runs --root "$root" --json | $py -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
scrape "$t/m1.txt" || fail "scrape after the promotion"

$py - "$t/m1.txt" "$run" <<'PY' || { cat "$t/m1.txt"; fail "the metrics after the promotion"; }
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
run = sys.argv[2]
# A strict reader of the text format 0.0.4 (HELP and TYPE comments, then samples).
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
VALUE = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|NaN|[-+]Inf"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(rf"({NAME})(?:\{{((?:{LABEL},?)*)\}})? ({VALUE})")
assert text.endswith("\n")
types, helps, samples = {}, set(), {}
for line in text.split("\n")[:-1]:
    if line.startswith("# HELP "):
        fam = line.split(" ")[2]
        assert re.fullmatch(NAME, fam) and fam not in helps, line
        helps.add(fam)
        continue
    if line.startswith("# TYPE "):
        _, _, fam, typ = line.split(" ")
        assert fam in helps and fam not in types and typ in ("counter", "gauge"), line
        types[fam] = typ
        continue
    m = SAMPLE.fullmatch(line)
    assert m, f"not a sample line: {line!r}"
    name, labels, value = m.group(1), m.group(2) or "", m.group(5)
    assert name in types, f"{name} has no TYPE"
    lab = tuple((k, re.sub(r"\\(.)", lambda x: "\n" if x.group(1) == "n" else x.group(1), v))
                for k, v in re.findall(LABEL, labels))
    key = (name, lab)
    assert key not in samples, f"duplicate {key}"
    samples[key] = float(value)

def get(name, **labels):
    for (n, lab), v in samples.items():
        if n == name and dict(lab) == labels:
            return v
    raise AssertionError(f"no sample {name} {labels}")

assert get("perennial_shards_ingested_total") == 2, get("perennial_shards_ingested_total")
assert get("perennial_shard_rows_ingested_total") == 2000
assert get("perennial_shards_quarantined_total") == 1
assert get("perennial_shards_quarantined_by_rule_total", rule="hdf5") == 1
for st in ("pending", "submitted", "running", "succeeded", "failed", "preempted", "cancelled", "validating",
           "promoted", "rejected"):
    assert get("perennial_runs", state=st) == (1 if st == "promoted" else 0), st
assert get("perennial_trigger_firings_total", trigger="new_data") >= 1
assert get("perennial_trigger_fired", trigger="new_data") in (0, 1)
assert get("perennial_scheduler_ticks_total") > 0
assert get("perennial_scheduler_tick_duration_seconds") > 0
assert get("perennial_scheduler_last_tick_timestamp_seconds") > 1.6e9
assert get("perennial_last_training_duration_seconds") > 0
assert get("perennial_champion_info", model="fashion", version="v1", run=run) == 1
assert 0.3 < get("perennial_champion_accuracy") <= 1
assert types["perennial_shards_ingested_total"] == "counter" and types["perennial_runs"] == "gauge"
print(f"metrics: {len(samples)} samples in {len(types)} families")
PY

# Not found elsewhere; loopback only.
$py - "$port" <<'PY' || fail "/other is 404"
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/other", timeout=10)
    raise SystemExit("no error")
except urllib.error.HTTPError as e:
    assert e.code == 404, e.code
PY
ip=$( (hostname -I 2>/dev/null || true) | tr ' ' '\n' | grep -E '^[0-9]+\.' | grep -v '^127\.' | head -1 || true)
if [ -n "$ip" ]; then
  $py - "$ip" "$port" <<'PY' || fail "the metrics answer on $ip"
import socket, sys
s = socket.socket()
s.settimeout(5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    raise SystemExit(f"connected to {sys.argv[1]}:{sys.argv[2]}")
except (ConnectionRefusedError, socket.timeout):
    pass
PY
  echo "not served on $ip"
else
  echo "SKIP (no non-loopback address): the loopback-only check"
fi

# SIGTERM: exit 0, port closed.
kill -TERM "$daemon"
rc=0; wait "$daemon" || rc=$?
daemon=
[ "$rc" = 0 ] || { cat "$t/daemon.log"; fail "the daemon's exit status on SIGTERM: $rc"; }
grep -q "scheduler stopped" "$t/daemon.log" || fail "the daemon says it stopped"
$py - "$port" <<'PY' || fail "the port is still open after SIGTERM"
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    raise SystemExit("connected")
except ConnectionRefusedError:
    pass
PY
echo "PASS: JSON logs; metrics of $run (promoted) on 127.0.0.1:$port, loopback only, closed on SIGTERM"
