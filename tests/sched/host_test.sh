#!/usr/bin/env bash
# NOTE [Catalog host] end to end: a scheduler root's catalog (SQLite in WAL mode) is open on one
# host at a time. Another host is simulated by a UTS namespace with another host name
# (`unshare --uts`, which needs root). While the daemon runs on its host, every command that
# opens the catalog refuses on the other host, naming both hosts, with exit 1, and records
# nothing; once the daemon stopped the other host may take the catalog over (a daemon requeued on
# another node), and then the first host is refused while it is in use there. Skipped (77)
# without root or UTS namespaces.
# usage: host_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
if [ "$(id -u)" != 0 ] || ! unshare --uts true 2>/dev/null; then
  echo "SKIP: simulating another host needs root and UTS namespaces (unshare --uts)"
  exit 77
fi
scratch  # the daemons run with --root "$t/root": scratch's cleanup kills them too
daemon=

mkdir -p "$t/holdout"
printf '[model]\narch = mlp\n' >"$t/train.cfg"
printf '[train]\nconfig = train.cfg\nholdout = holdout\n[sched]\ntick_s = 0.2\n' >"$t/sched.cfg"
root=$t/root
here=$(hostname)
other=perennial-test-other-host
[ "$here" != "$other" ] || fail "this host is named like the simulated other one"
on_other() {  # on_other ARGS...: perennial ARGS on "another host"
  unshare --uts sh -c 'hostname "$0" && exec "$@"' "$other" "$bin" "$@"
}
status_of() {  # status_of WHERE ARGS...: WHERE (here | other) runs perennial ARGS; output in $t/out.log
  local where=$1 rc=0
  shift
  if [ "$where" = other ]; then on_other "$@" >"$t/out.log" 2>&1 || rc=$?; else "$bin" "$@" >"$t/out.log" 2>&1 || rc=$?; fi
  echo "$rc"
}
start_daemon() {  # start_daemon WHERE: `sched run` on WHERE, waiting until it holds the catalog
  if [ "$1" = other ]; then
    # Not through on_other: a backgrounded function runs in a subshell, whose PID is not the
    # daemon's (SIGTERM would stop the subshell and leave the daemon running).
    unshare --uts sh -c 'hostname "$0" && exec "$@"' "$other" "$bin" sched run --root "$root" --config "$t/sched.cfg" \
      >"$t/daemon-$1.log" 2>&1 &
  else
    "$bin" sched run --root "$root" --config "$t/sched.cfg" >"$t/daemon-$1.log" 2>&1 &
  fi
  daemon=$!
  for _ in $(seq 100); do
    grep -q "scheduler running" "$t/daemon-$1.log" && return 0
    sleep 0.1
  done
  cat "$t/daemon-$1.log"
  fail "the daemon on $1 did not start"
}
stop_daemon() {
  kill -TERM "$daemon"
  local rc=0
  wait "$daemon" || rc=$?
  [ "$rc" = 0 ] || { tail -n 5 "$t"/daemon-*.log; fail "the daemon did not stop cleanly (exit $rc)"; }
  daemon=
}
refused() {  # refused WHERE HOLDER CMD...: CMD on WHERE exits 1 naming HOLDER's host and its own
  local where=$1 holder=$2 me rc
  shift 2
  me=$here; [ "$where" = other ] && me=$other
  rc=$(status_of "$where" "$@")
  [ "$rc" = 1 ] || { cat "$t/out.log"; fail "'$*' on $where while $holder uses the catalog: exit $rc, expected 1"; }
  grep -qF "$root/catalog.db: the catalog is in use on host '$holder' (recorded in $root/catalog.db.host), this is '$me'" \
    "$t/out.log" || { cat "$t/out.log"; fail "'$*' on $where: the refusal does not name the hosts"; }
}

"$bin" sched tick --root "$root" --config "$t/sched.cfg" >"$t/tick.log" 2>&1 || { cat "$t/tick.log"; fail "first tick"; }
[ "$(json "$root/catalog.db.host" host)" = "$here" ] || fail "the catalog's host record does not name this host ($here)"
[ "$(json "$root/catalog.db.host" boot_id)" = "$(cat /proc/sys/kernel/random/boot_id)" ] || fail "no boot id in the record"

# The daemon runs here: every catalog command on the other host is refused, and records nothing.
start_daemon here
for cmd in "sched status" "sched status --json" "sched runs" "sched shards" "sched events" "sched trigger --reason x" \
           "sched cancel r000001" "sched tick --config $t/sched.cfg" "sched run --config $t/sched.cfg" \
           "report --out $t/report.html"; do
  # shellcheck disable=SC2086
  refused other "$here" $cmd --root "$root"
done
grep -qF "run this command on '$here'" "$t/out.log" || fail "the refusal does not say where to run the command"
[ ! -e "$t/report.html" ] || fail "report wrote a page from another host"
[ "$(status_of here sched status --root "$root")" = 0 ] || { cat "$t/out.log"; fail "sched status beside the daemon"; }
stop_daemon
grep -q "tick failed" "$t/daemon-here.log" && { cat "$t/daemon-here.log"; fail "the daemon's ticks failed"; }
[ "$("$bin" sched events --root "$root" --json | /usr/bin/python3 -c 'import json,sys; print(sum(e["kind"] == "request" for e in json.load(sys.stdin)))')" = 0 ] ||
  fail "a request from the other host was recorded"

# Idle, the catalog moves: a daemon on the other host (a requeued job on another node) takes it
# over, and now this host is refused while it runs there.
start_daemon other
[ "$(json "$root/catalog.db.host" host)" = "$other" ] || fail "the other host did not record itself"
refused here "$other" sched status --root "$root"
refused here "$other" sched trigger --root "$root"
stop_daemon
[ "$(status_of here sched trigger --root "$root" --reason back)" = 0 ] || { cat "$t/out.log"; fail "back on this host"; }
[ "$(json "$root/catalog.db.host" host)" = "$here" ] || fail "this host did not record itself again"
echo "PASS: the catalog is open on one host at a time"
