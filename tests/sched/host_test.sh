#!/usr/bin/env bash
# NOTE [Catalog host] end to end: a scheduler root's catalog (SQLite in WAL mode) belongs to the
# host that opened it first. From another host (simulated by a UTS namespace with another host
# name: `unshare --uts`, which needs root) every command that opens the catalog refuses, naming
# both hosts, with exit 2, and SQLite never opens the file; on its own host, with the daemon
# running, they work. Skipped (77) without root or UTS namespaces.
# usage: host_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1
src=$2
. "$src/tests/cli/lib.sh"
if [ "$(id -u)" != 0 ] || ! unshare --uts true 2>/dev/null; then
  echo "SKIP: simulating another host needs root and UTS namespaces (unshare --uts)"
  exit 77
fi
t=$(mktemp -d)
daemon=
cleanup() {
  [ -n "$daemon" ] && kill -9 "$daemon" 2>/dev/null || true
  rm -rf "$t"
}
trap cleanup EXIT

mkdir -p "$t/holdout"
printf '[model]\narch = mlp\n' >"$t/train.cfg"
printf '[train]\nconfig = train.cfg\nholdout = holdout\n[sched]\ntick_s = 0.2\n' >"$t/sched.cfg"
root=$t/root
here=$(hostname)
other=perennial-test-other-host
[ "$here" != "$other" ] || fail "this host is named like the simulated other one"
# on_other ARGS...: perennial ARGS on "another host"; its output in $t/other.log, its status echoed
on_other() {
  set +e
  unshare --uts sh -c 'hostname "$0" && exec "$@"' "$other" "$bin" "$@" >"$t/other.log" 2>&1
  echo $?
  set -e
}

"$bin" sched tick --root "$root" --config "$t/sched.cfg" >"$t/tick.log" 2>&1 || { cat "$t/tick.log"; fail "first tick"; }
[ "$(json "$root/catalog.db.host" host)" = "$here" ] || fail "the catalog's host record does not name this host ($here)"
[ "$(json "$root/catalog.db.host" boot_id)" = "$(cat /proc/sys/kernel/random/boot_id)" ] || fail "no boot id in the record"
[ ! -e "$root/catalog.db-wal" ] && [ ! -e "$root/catalog.db-shm" ] || fail "SQLite's files outlived the tick"

# The daemon runs on its host; every catalog command from the other host is refused.
"$bin" sched run --root "$root" --config "$t/sched.cfg" >"$t/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
  "$bin" sched status --root "$root" 2>/dev/null | grep -q "a scheduler is running" && break
  sleep 0.1
done
"$bin" sched status --root "$root" | grep -q "a scheduler is running" || { cat "$t/daemon.log"; fail "the daemon did not start"; }
for cmd in "sched status" "sched status --json" "sched runs" "sched shards" "sched events" "sched trigger --reason x" \
           "sched cancel r000001" "sched tick --config $t/sched.cfg" "report --out $t/report.html"; do
  # shellcheck disable=SC2086
  rc=$(on_other $cmd --root "$root")
  [ "$rc" = 2 ] || { cat "$t/other.log"; fail "'$cmd' on another host: exit $rc, expected 2 (refused)"; }
  grep -qF "$root/catalog.db: the catalog belongs to host '$here' (recorded in $root/catalog.db.host), this is '$other'" \
    "$t/other.log" || { cat "$t/other.log"; fail "'$cmd' on another host: the refusal does not name the hosts"; }
done
grep -qF "run this command on '$here'" "$t/other.log" || fail "the refusal does not say where to run the command"
[ ! -e "$t/report.html" ] || fail "report wrote a page from another host"
kill -TERM "$daemon"
wait "$daemon" || { cat "$t/daemon.log"; fail "the daemon did not stop cleanly"; }
daemon=
grep -q "tick failed" "$t/daemon.log" && { cat "$t/daemon.log"; fail "the daemon's ticks failed"; }
# Nothing from the other host reached the catalog: no trigger request, no cancel.
[ "$("$bin" sched events --root "$root" --json | /usr/bin/python3 -c 'import json,sys; print(sum(e["kind"] == "request" for e in json.load(sys.stdin)))')" = 0 ] ||
  fail "a request from the other host was recorded"

# A daemon is refused on the other host too, before it opens anything.
rc=$(on_other sched run --root "$root" --config "$t/sched.cfg")
[ "$rc" = 2 ] || { cat "$t/other.log"; fail "sched run on another host: exit $rc, expected 2"; }
# On its own host the commands work; moving the root for good is deleting the record.
"$bin" sched trigger --root "$root" --reason here >/dev/null || fail "sched trigger on the catalog's own host"
"$bin" report --root "$root" --out "$t/report.html" >/dev/null 2>&1 || fail "report on the catalog's own host"
rm "$root/catalog.db.host"
rc=$(on_other sched status --root "$root")
[ "$rc" = 0 ] || { cat "$t/other.log"; fail "sched status on the new host after the record was deleted: exit $rc"; }
[ "$(json "$root/catalog.db.host" host)" = "$other" ] || fail "the new host was not recorded"
rc=$("$bin" sched status --root "$root" >"$t/here.log" 2>&1; echo $?)
[ "$rc" = 2 ] || fail "the old host still opens the catalog after it moved: exit $rc"
echo "PASS: the catalog is used from its own host only"
