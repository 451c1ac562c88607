#!/usr/bin/env bash
# Issue 17: no data producer can stop, poison or escape the scheduler. End to end, as root: two
# Unix users are created, a scheduler user that owns the scheduler root and a producer user whose
# group may write ROOT/incoming/; the scheduler runs (`sched tick`) as the one, the attacks run as
# the other, on real files and real processes (an attacker process watches incoming/ with inotify
# and renames files over a shard while the scheduler reads it). Cases:
#   1 a name swapped during ingest (a symlink to a third party's file, a bad shard, another shard)
#   2 a FIFO and a symlink to /dev/zero (listed as regular files, then swapped in; or renamed in)
#   3 shards of the producer's with modes 0644 and 0664 (ingested; the stored copy is not theirs)
#   4 names that are not UTF-8, a 250-byte name, a trigger reason that is not UTF-8
#   5 `data add` through a symlink planted at incoming/.NAME.tmp; a name already waiting
#   6 the size limit before hashing (a 3 GiB sparse file); a chunked shard with no chunks written
#   7 names with terminal escapes and newlines in text output and logs
# usage: producer_test.sh PERENNIAL SOURCE_DIR
#   PRODUCER_TEST_CASES="1 3" runs only those cases ("1c": one attack of case 1).
set -euo pipefail
bin=$(readlink -f "$1")
src=$(readlink -f "$2")
py=/usr/bin/python3
helper=$src/tests/sched/producer_attack.py
cases=${PRODUCER_TEST_CASES:-1 2 3 4 5 6 7}
fail() { echo "FAIL: $*" >&2; exit 1; }
label=setup
[ "$(id -u)" = 0 ] || fail "producer_test.sh runs as root (it creates users)"
start=$SECONDS

t=$(mktemp -d /tmp/prn-producer.XXXXXX)
chmod 0755 "$t"
su=prn-sched-$$
pu=prn-prod-$$
pg=prn-pg-$$
bgpids=()
cleanup() {
  local p
  for p in "${bgpids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  # Whatever the test users still run was started by this script (a hung tick, a run's supervisor).
  for u in "$su" "$pu"; do
    if id "$u" >/dev/null 2>&1; then
      for p in $(pgrep -u "$u" 2>/dev/null || true); do kill -9 "$p" 2>/dev/null || true; done
    fi
  done
  sleep 0.2
  userdel "$su" 2>/dev/null || true
  userdel "$pu" 2>/dev/null || true
  groupdel "$su" 2>/dev/null || true
  groupdel "$pg" 2>/dev/null || true
  rm -rf "$t"
}
trap cleanup EXIT

# The test users run the binary and the attacker from a folder they can read: the checkout may
# sit under a home directory that only root may enter.
mkdir -p "$t/tools"
cp "$bin" "$t/tools/perennial"
cp "$helper" "$t/tools/producer_attack.py"
chmod -R a+rX "$t/tools"
bin=$t/tools/perennial
helper=$t/tools/producer_attack.py

groupadd "$pg"
useradd -M -N -g "$pg" -d "$t/prod" -s /usr/sbin/nologin "$pu"
# The scheduler is in the producers' group too (as an operator would set up incoming/).
useradd -M -U -G "$pg" -d "$t/sh" -s /usr/sbin/nologin "$su"
suid=$(id -u "$su")
mkdir -p "$t/prod" "$t/sh" "$t/third" "$t/fix/gen" "$t/fix/holdout"
chown "$pu:$pg" "$t/prod"
chown "$su:$su" "$t/sh"

# as_sched CMD...: as the scheduler user. as_prod CMD...: as the producer (umask 002, so its files
# are group-writable like a shared delivery folder's).
sched_cmd=(setpriv --reuid="$su" --regid="$su" --init-groups env HOME="$t/sh")
prod_cmd=(setpriv --reuid="$pu" --regid="$pg" --init-groups env HOME="$t/prod")
as_sched() { "${sched_cmd[@]}" "$@"; }
as_prod() { (umask 002 && exec "${prod_cmd[@]}" "$@"); }
# selected CASE: whether PRODUCER_TEST_CASES asks for CASE ("1" selects 1a..1e, "1c" selects 1 and 1c).
selected() {
  local c
  for c in $cases; do
    if [ "$c" = "$1" ] || [ "$c" = "${1:0:1}" ] || [ "${c:0:1}" = "$1" ]; then return 0; fi
  done
  return 1
}
sha() { sha256sum <"$1" | cut -c1-64; }
ino() { stat -c %d:%i "$1"; }
now_us() { echo "${EPOCHREALTIME/./}"; }

echo "setup: users $su (scheduler) and $pu (producer, group $pg); shards in $t/fix"
"$bin" data import-fashion-mnist --out "$t/fix/fm" --shard-size 1000 >/dev/null
fm=$t/fix/fm/train
gen=$t/fix/gen
cp "$t/fix/fm/test/shard-00000.h5" "$t/fix/holdout/"
# 10000-row shards (a few ms to hash and validate: the attacker has time to act), a shard with
# label 10, another valid shard; the third party's files.
$py - "$fm" "$gen" <<'PY'
import os, sys
import h5py, numpy as np
fm, gen = sys.argv[1:]
src = [os.path.join(fm, "shard-%05d.h5" % i) for i in range(10)]
with h5py.File(src[0], "r") as f:
    attrs = {k: f.attrs[k] for k in f.attrs}
images = np.concatenate([h5py.File(p, "r")["images"][()] for p in src])
labels = np.concatenate([h5py.File(p, "r")["labels"][()] for p in src])
def write(name, x, y):
    with h5py.File(os.path.join(gen, name), "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("images", data=x)
        f.create_dataset("labels", data=y.astype(np.int64))
for i, s in enumerate("abcder"):
    write("big-%s.h5" % s, np.roll(images, 97 * (i + 1), axis=0), np.roll(labels, 97 * (i + 1), axis=0))
with h5py.File(os.path.join(fm, "shard-00020.h5"), "r") as f:
    x, y = f["images"][()], f["labels"][()].copy()
y[3] = 10
write("label10.h5", x, y)
PY
cp "$fm/shard-00021.h5" "$gen/other.h5"
printf 'this is not a shard\n' >"$gen/junk-1"
printf 'nor is this one\n' >"$gen/junk-2"
printf 'placeholder %s\n' 1 >"$gen/placeholder-1"
printf 'placeholder %s\n' 2 >"$gen/placeholder-2"
cat >"$t/fix/train.cfg" <<'CFG'
[model]
arch = mlp
hidden = 32
[train]
epochs = 1
[log]
progress = none
CFG
# No trigger but on demand (only case 4 asks for a run, and its "launcher" fails at once).
cat >"$t/fix/sched.cfg" <<'CFG'
[train]
config = train.cfg
holdout = holdout
max_attempts = 1
[executor]
mpirun = /bin/false
CFG
{ cat "$t/fix/sched.cfg"; printf '[dataset]\nmax_shard_bytes = 1000000\n'; } >"$t/fix/size.cfg"
chmod -R a+rX "$t/fix"
cfg=$t/fix/sched.cfg
# A third party's file outside the root: a secret (root, 0600; its bytes are a valid shard).
cp "$fm/shard-00022.h5" "$t/third/secret.h5"
chmod 0600 "$t/third/secret.h5"
secret_sha=$(sha "$t/third/secret.h5")

# new_root NAME: a scheduler root owned by the scheduler, incoming/ writable by the producers.
new_root() {
  local r=$t/$1
  mkdir -p "$r/incoming"
  chown "$su:$su" "$r"
  chmod 0711 "$r"
  chown "$su:$pg" "$r/incoming"
  chmod 2770 "$r/incoming"
  echo "$r"
}
# pcp SRC DST: the producer writes a copy of SRC (mode 0664, as its umask makes new files).
pcp() { as_prod install -m 0664 "$1" "$2"; }
# drop SRC ROOT NAME: the producer delivers a file by the arrival convention (write, then rename).
drop() {
  pcp "$1" "$2/incoming/.drop.tmp"
  as_prod mv -T "$2/incoming/.drop.tmp" "$2/incoming/$3"
}
# tick ROOT CFG WHAT: one `sched tick` as the scheduler, bounded; $tick_rc, $tick_ms, output in
# $t/tick.out and $t/tick.err (appended to $t/ticks.log). A tick killed by the timeout fails.
tick() {
  local t0
  t0=$(now_us)
  set +e
  timeout -k 5 60 "${sched_cmd[@]}" "$bin" sched tick --root "$1" --config "$2" >"$t/tick.out" 2>"$t/tick.err"
  tick_rc=$?
  set -e
  tick_ms=$((($(now_us) - t0) / 1000))
  cat "$t/tick.out" "$t/tick.err" >>"$t/ticks.log"
  if [ "$tick_rc" = 124 ] || [ "$tick_rc" = 137 ]; then
    fail "$3: sched tick did not finish within 60 s (killed by timeout); its log: $(tail -n 3 "$t/tick.err" | cat -v)"
  fi
}
tick_ok() {
  tick "$@"
  [ "$tick_rc" = 0 ] || fail "$3: sched tick exited $tick_rc: $(tail -n 3 "$t/tick.err" | cat -v)"
}
# catalog ROOT: `sched shards --json` and `--quarantine --json` into $t/shards.json, $t/quar.json.
catalog() {
  as_sched "$bin" sched shards --root "$1" --json --limit 100000 >"$t/shards.json" 2>"$t/cat.err" ||
    fail "$label: sched shards --json exited $?: $(tail -n 2 "$t/cat.err" | cat -v)"
  as_sched "$bin" sched shards --root "$1" --quarantine --json --limit 100000 >"$t/quar.json" 2>"$t/cat.err" ||
    fail "$label: sched shards --quarantine --json exited $?: $(tail -n 2 "$t/cat.err" | cat -v)"
}
# expect PYTHON_CONDITION MESSAGE: about the last `catalog`: S shards, Q quarantine records.
expect() {
  local out
  out=$($py - "$t/shards.json" "$t/quar.json" "$1" <<'PY'
import json, sys
load = lambda p: json.loads(open(p, "rb").read().decode("utf-8"))
try:
    S, Q = load(sys.argv[1]), load(sys.argv[2])
except (UnicodeDecodeError, ValueError) as e:
    print("the catalog's JSON does not parse: %s" % e)
    sys.exit(1)
if eval(sys.argv[3]):
    sys.exit(0)
print("catalog: shards %s; quarantined %s" % ([(s["source"], s["sha256"][:16], s["rows"]) for s in S],
                                              [(q["source"], q["rule"], q["reason"][:90]) for q in Q]))
sys.exit(1)
PY
  ) || fail "$2 ($out)"
}
# check_root ROOT [CHECK_ARGS...]: every invariant of data/ and quarantine/ (producer_attack.py
# check; --forbid-inode DEV:INO...: none of the producer's files in data/); `sched status` works.
check_root() {
  local r=$1 out
  shift
  catalog "$r"
  out=$($py "$helper" check "$r" --shards "$t/shards.json" --quarantine "$t/quar.json" --uid "$suid" \
    --spec "$fm/shard-00000.h5" "$@") || fail "$label: ${out#*FAIL: }"
  echo "$out"
  as_sched "$bin" sched status --root "$r" >/dev/null 2>"$t/status.err" ||
    fail "$label: sched status exited $?: $(tail -n 2 "$t/status.err" | cat -v)"
}
# visible_incoming ROOT: names in incoming/ that the scheduler would pick up.
visible_incoming() {
  local f
  for f in "$1"/incoming/*; do
    if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\n' "${f##*/}"; fi
  done
}
# start_attacker ROOT NAME [--all] SRC:DST...: the producer's inotify watcher (background).
start_attacker() {
  local r=$1 name=$2
  shift 2
  rm -f "$t/prod/ready"
  (umask 002 && exec "${prod_cmd[@]}" "$py" "$helper" swap --dir "$r/incoming" --on "$name" \
    --ready "$t/prod/ready" --timeout 30 "$@") >"$t/attack.log" 2>&1 &
  apid=$!
  bgpids+=("$apid")
  for _ in $(seq 100); do
    [ -e "$t/prod/ready" ] && return 0
    kill -0 "$apid" 2>/dev/null || fail "the attacker did not start: $(cat "$t/attack.log")"
    sleep 0.1
  done
  fail "the attacker did not start within 10 s"
}
stop_attacker() {
  for _ in $(seq 20); do kill -0 "$apid" 2>/dev/null || break; sleep 0.1; done
  kill "$apid" 2>/dev/null || true
  wait "$apid" 2>/dev/null || true
  bgpids=()
  grep -q "renamed" "$t/attack.log" ||
    fail "$1: the attacker never saw the scheduler open the shard in incoming/, so nothing was swapped ($(tail -n 1 "$t/attack.log"))"
}

# ---------------------------------------------------------------------------------------------
case1() {
  local r inc s v hv what pairs forbid m
  r=$(new_root c1)
  inc=$r/incoming
  echo "case 1: the producer renames another file over a shard while the scheduler reads it"
  for s in a b c d e; do
    selected "1$s" || continue
    v=victim-$s.h5
    drop "$gen/big-$s.h5" "$r" "$v"
    hv=$(sha "$inc/$v")
    forbid=("$(ino "$inc/$v")")
    case $s in
      a) as_prod ln -s "$t/third/secret.h5" "$inc/.m-a.tmp"
         pairs=(".m-a.tmp:$v")
         what="at the scheduler's first open: a symlink to a third party's file (root, 0600)" ;;
      b) pcp "$gen/label10.h5" "$inc/.m-b.tmp"
         pairs=(".m-b.tmp:$v")
         what="at the scheduler's first open: a 1000-row shard with label 10" ;;
      c) pcp "$gen/other.h5" "$inc/.m-c.tmp"
         pairs=(".m-c.tmp:$v")
         what="at the scheduler's first open: another valid shard" ;;
      d) pcp "$inc/$v" "$inc/.c1-d.tmp"
         pcp "$inc/$v" "$inc/.c2-d.tmp"
         as_prod ln -s "$t/third/secret.h5" "$inc/.m-d.tmp"
         pairs=(--last-delay 0.003 ".c1-d.tmp:$v" ".c2-d.tmp:$v" ".m-d.tmp:$v")
         what="at each open a copy of the shard, then (3 ms after the third) a symlink to the third party's file" ;;
      e) pcp "$inc/$v" "$inc/.c1-e.tmp"
         pcp "$inc/$v" "$inc/.c2-e.tmp"
         pcp "$gen/label10.h5" "$inc/.m-e.tmp"
         pairs=(".c1-e.tmp:$v" ".c2-e.tmp:$v" ".m-e.tmp:$v")
         what="at each open a copy of the shard, then the shard with label 10" ;;
    esac
    for m in "${pairs[@]}"; do [[ $m == *:* ]] && forbid+=("$(ino "$inc/${m%%:*}")"); done
    label="case 1$s"
    echo " 1$s: $what"
    start_attacker "$r" "$v" "${pairs[@]}"
    tick "$r" "$cfg" "case 1$s"
    stop_attacker "case 1$s"
    sed 's/^/     /' "$t/attack.log"
    [ "$tick_rc" = 0 ] || fail "case 1$s: sched tick exited $tick_rc: $(tail -n 3 "$t/tick.err" | cat -v)"
    tick_ok "$r" "$cfg" "case 1$s (the pass after the attack)"
    echo "   checks: data/ holds only regular, read-only files of the scheduler's whose bytes are their name's hash"
    echo "           and validate; the shard the scheduler opened is ingested (or claimed by no record); the third"
    echo "           party's file is untouched"
    check_root "$r" --opened "$hv" --forbid-inode "${forbid[@]}"
    [ "$(stat -c '%a %u' "$t/third/secret.h5")" = "600 0" ] ||
      fail "case 1$s: the third party's file is now $(stat -c 'mode %a, uid %u' "$t/third/secret.h5")"
    [ "$(sha "$t/third/secret.h5")" = "$secret_sha" ] || fail "case 1$s: the third party's file changed"
    [ -z "$(visible_incoming "$r")" ] || fail "case 1$s: left in incoming/ after two passes: $(visible_incoming "$r" | cat -v)"
  done
}

# ---------------------------------------------------------------------------------------------
case2() {
  label="case 2"
  local r inc hv
  r=$(new_root c2)
  inc=$r/incoming
  echo "case 2: a FIFO and a symlink to /dev/zero never block a pass"
  if selected 2a; then
    echo " 2a: listed as regular files, then replaced by a FIFO and a /dev/zero symlink while the scheduler ingests another shard"
    drop "$gen/big-r.h5" "$r" a-first.h5
    drop "$gen/placeholder-1" "$r" z-fifo.h5
    drop "$gen/placeholder-2" "$r" z-zero.h5
    as_prod mkfifo "$inc/.fifo.tmp"
    as_prod ln -s /dev/zero "$inc/.zero.tmp"
    start_attacker "$r" a-first.h5 --all .fifo.tmp:z-fifo.h5 .zero.tmp:z-zero.h5
    tick "$r" "$cfg" "case 2a"
    stop_attacker "case 2a"
    sed 's/^/     /' "$t/attack.log"
    [ "$tick_rc" = 0 ] || fail "case 2a: sched tick exited $tick_rc: $(tail -n 3 "$t/tick.err" | cat -v)"
    [ "$tick_ms" -le 20000 ] || fail "case 2a: the pass took $tick_ms ms (limit 20 s)"
    echo "   the pass took $tick_ms ms"
    tick_ok "$r" "$cfg" "case 2a (the pass after)"
    [ "$tick_ms" -le 20000 ] || fail "case 2a: the pass after took $tick_ms ms (limit 20 s)"
    catalog "$r"
    expect "len([q for q in Q if q['source'] == 'z-fifo.h5']) == 1 and len([q for q in Q if q['source'] == 'z-zero.h5']) == 1" \
      "case 2a: the FIFO and the symlink are not quarantined, one record each"
    expect "all(q['rule'] == 'type' for q in Q if q['source'] in ('z-fifo.h5', 'z-zero.h5'))" \
      "case 2a: the FIFO and the symlink are not quarantined with rule 'type'"
    expect "any(x['source'] == 'a-first.h5' for x in S)" "case 2a: the valid shard is not ingested"
  fi

  if selected 2b; then
    echo " 2b: a FIFO and a symlink to /dev/zero renamed into incoming/; a valid shard after them"
    as_prod mkfifo "$inc/.f2.tmp"
    as_prod mv -T "$inc/.f2.tmp" "$inc/fifo2.h5"
    as_prod ln -s /dev/zero "$inc/.z2.tmp"
    as_prod mv -T "$inc/.z2.tmp" "$inc/zero2.h5"
    tick_ok "$r" "$cfg" "case 2b"
    [ "$tick_ms" -le 20000 ] || fail "case 2b: the pass took $tick_ms ms (limit 20 s)"
    echo "   the pass took $tick_ms ms"
    drop "$fm/shard-00023.h5" "$r" after.h5
    hv=$(sha "$fm/shard-00023.h5")
    tick_ok "$r" "$cfg" "case 2b (a valid shard after them)"
    [ "$tick_ms" -le 20000 ] || fail "case 2b: the pass took $tick_ms ms (limit 20 s)"
    catalog "$r"
    expect "any(x['sha256'] == '$hv' for x in S)" "case 2b: the valid shard dropped after the FIFO is not ingested"
    expect "len([q for q in Q if q['source'] == 'fifo2.h5']) == 1 and len([q for q in Q if q['source'] == 'zero2.h5']) == 1" \
      "case 2b: the FIFO and the symlink renamed into incoming/ are not quarantined, one record each"
    expect "all(q['rule'] == 'type' for q in Q if q['source'] in ('fifo2.h5', 'zero2.h5'))" \
      "case 2b: the FIFO and the symlink are not quarantined with rule 'type'"
  fi
  [ -z "$(visible_incoming "$r")" ] || fail "case 2: left in incoming/: $(visible_incoming "$r" | cat -v)"
  check_root "$r"
}

# ---------------------------------------------------------------------------------------------
case3() {
  label="case 3"
  local r inc m d forbid=() hlater
  local -A from=([644]=30 [664]=31) h=()
  r=$(new_root c3)
  inc=$r/incoming
  echo "case 3: the producer's shards of mode 0644 and 0664 are ingested at once; the stored copies are not theirs"
  for m in 644 664; do
    as_prod install -m "0$m" "$fm/shard-000${from[$m]}.h5" "$inc/.s$m.tmp"
    as_prod ln "$inc/.s$m.tmp" "$t/prod/keep-$m.h5"   # the producer keeps a link to its file
    forbid+=("$(ino "$inc/.s$m.tmp")")
    as_prod mv -T "$inc/.s$m.tmp" "$inc/s$m.h5"
  done
  h[644]=$(sha "$inc/s644.h5")
  h[664]=$(sha "$inc/s664.h5")
  tick "$r" "$cfg" "case 3"
  [ "$tick_rc" = 0 ] || fail "case 3: the first pass over shards of mode 0644 and 0664 exited $tick_rc: $(tail -n 3 "$t/tick.err" | cat -v)"
  catalog "$r"
  expect "{x['sha256'] for x in S} >= {'${h[644]}', '${h[664]}'}" "case 3: the shards of mode 0644 and 0664 are not both ingested on the first pass"
  drop "$fm/shard-00032.h5" "$r" later.h5
  forbid+=("$(ino "$inc/later.h5")")
  hlater=$(sha "$inc/later.h5")
  tick_ok "$r" "$cfg" "case 3 (a later shard)"
  catalog "$r"
  expect "any(x['sha256'] == '$hlater' for x in S)" "case 3: a shard dropped later is not ingested"
  echo "   checks: the producer cannot open data/<sha256>.h5 for writing or change a label in it; changing its own"
  echo "           file afterwards does not change the stored shard"
  for m in 644 664; do
    d=$r/data/${h[$m]}.h5
    if as_prod "$py" "$helper" try-open-write "$d" >"$t/try.log" 2>&1; then
      fail "case 3: the producer can open the stored shard $d for writing ($(cat "$t/try.log"))"
    fi
    if as_prod "$py" "$helper" try-modify "$d" >"$t/try.log" 2>&1; then
      fail "case 3: the producer changed a label of the stored shard $d ($(cat "$t/try.log"))"
    fi
    as_prod "$py" "$helper" try-modify "$t/prod/keep-$m.h5" >/dev/null 2>&1 ||
      fail "case 3: the producer cannot change its own file keep-$m.h5 (test setup)"
  done
  check_root "$r" --forbid-inode "${forbid[@]}"
}

# ---------------------------------------------------------------------------------------------
case4() {
  label="case 4"
  local r inc long hv rc
  r=$(new_root c4)
  inc=$r/incoming
  long=$(printf 'L%.0s' $(seq 247)).h5
  echo "case 4: a trigger reason that is not UTF-8, a name that is not UTF-8, a 250-byte name"
  json_ok() {
    as_sched "$bin" sched "$@" --root "$r" --json --limit 1000 >"$t/out.json" 2>"$t/out.err" ||
    fail "case 4: sched $* --json exited $?: $(tail -n 2 "$t/out.err" | cat -v)"
    $py -c "import json,sys; json.loads(open(sys.argv[1],'rb').read().decode('utf-8'))" "$t/out.json" 2>"$t/out.err" ||
    fail "case 4: sched $* --json is not valid JSON: $(tail -n 1 "$t/out.err")"
  }
  all_json_ok() { json_ok status; json_ok shards; json_ok shards --quarantine; json_ok events; json_ok runs; }
  tick_ok "$r" "$cfg" "case 4 (the first pass, on an empty root)"
  if selected 4a; then
    echo " 4a: sched trigger --reason \$'\\xff\\xfe'"
    set +e
    as_sched "$bin" sched trigger --root "$r" --reason $'\xff\xfe' >"$t/trigger.out" 2>&1
    rc=$?
    set -e
    echo "   exited $rc: $(head -n 1 "$t/trigger.out" | cat -v)"
    [ "$rc" = 0 ] || [ -s "$t/trigger.out" ] || fail "case 4a: sched trigger exited $rc without a message"
    tick_ok "$r" "$cfg" "case 4a (the pass after the trigger)"
    all_json_ok
  fi
  if selected 4b; then
    echo " 4b: a file named bad\\xff\\xfe.h5"
    drop "$gen/junk-1" "$r" $'bad\xff\xfe.h5'
    tick_ok "$r" "$cfg" "case 4b (the pass after a name that is not UTF-8)"
    all_json_ok
    catalog "$r"
    expect "len([q for q in Q if q['source'].startswith('bad') and q['source'].endswith('.h5')]) == 1" \
      "case 4b: the file named bad\\xff\\xfe.h5 is not quarantined with one record"
  fi
  if selected 4c; then
    echo " 4c: a file (not HDF5) with a 250-byte name"
    drop "$gen/junk-2" "$r" "$long"
    tick_ok "$r" "$cfg" "case 4c (the pass after a 250-byte name)"
    all_json_ok
    catalog "$r"
    expect "len([q for q in Q if q['source'] == '$long']) == 1" "case 4c: the file with a 250-byte name is not quarantined with one record"
  fi
  echo "   checks: every pass exits 0; status, shards, events, runs --json parse; one quarantine record each;"
  echo "           a valid shard after them is ingested"
  tick_ok "$r" "$cfg" "case 4 (a pass after them)"
  [ -z "$(visible_incoming "$r")" ] || fail "case 4: left in incoming/: $(visible_incoming "$r" | cat -v)"
  drop "$fm/shard-00024.h5" "$r" ok.h5
  hv=$(sha "$fm/shard-00024.h5")
  tick_ok "$r" "$cfg" "case 4 (a valid shard after them)"
  tick_ok "$r" "$cfg" "case 4 (the pass after)"
  all_json_ok
  catalog "$r"
  expect "any(x['sha256'] == '$hv' for x in S)" "case 4: the valid shard dropped after the bad names is not ingested"
  as_sched "$bin" sched runs --root "$r" >/dev/null 2>"$t/out.err" || fail "case 4: sched runs exited $?"
  check_root "$r"
}

# ---------------------------------------------------------------------------------------------
case5() {
  label="case 5"
  local r inc rc before hship hwait
  r=$(new_root c5)
  inc=$r/incoming
  echo "case 5: data add through a symlink the producer planted at incoming/.NAME.tmp; a name already waiting"
  if selected 5a; then
    echo " 5a: incoming/.ship.h5.tmp is the producer's symlink to the caller's precious.h5"
    as_sched cp "$fm/shard-00025.h5" "$t/sh/precious.h5"
    as_sched cp "$fm/shard-00026.h5" "$t/sh/ship.h5"
    before=$(sha "$t/sh/precious.h5")
    hship=$(sha "$t/sh/ship.h5")
    as_prod ln -s "$t/sh/precious.h5" "$inc/.ship.h5.tmp"
    set +e
    as_sched "$bin" data add --root "$r" "$t/sh/ship.h5" >"$t/add.out" 2>"$t/add.err"
    rc=$?
    set -e
    echo "   data add exited $rc: $(cat "$t/add.out" "$t/add.err" | head -n 2 | cat -v)"
    [ "$(sha "$t/sh/precious.h5")" = "$before" ] ||
      fail "case 5: data add (exit $rc, '$(head -n 1 "$t/add.out")') wrote through the symlink at incoming/.ship.h5.tmp: the caller's precious.h5 changed"
    if [ "$rc" = 0 ]; then
      tick_ok "$r" "$cfg" "case 5"
      catalog "$r"
      expect "any(x['sha256'] == '$hship' for x in S)" "case 5: data add exited 0 but the shard did not arrive"
    else
      [ -s "$t/add.err" ] || [ -s "$t/add.out" ] || fail "case 5: data add exited $rc without a message"
  fi
  fi
  if selected 5b; then
    echo " 5b: data add of a name that already waits in incoming/"
    drop "$fm/shard-00027.h5" "$r" wait.h5
    hwait=$(sha "$inc/wait.h5")
    as_sched cp "$fm/shard-00028.h5" "$t/sh/wait.h5"
    if as_sched "$bin" data add --root "$r" "$t/sh/wait.h5" >"$t/add.out" 2>&1; then
      fail "case 5: data add of a name already waiting in incoming/ exited 0"
  fi
  [ "$(sha "$inc/wait.h5")" = "$hwait" ] || fail "case 5: data add replaced the file waiting in incoming/"
  tick_ok "$r" "$cfg" "case 5 (the waiting file)"
  catalog "$r"
  expect "any(x['sha256'] == '$hwait' for x in S)" "case 5: the file that was waiting is not ingested"
  fi
  check_root "$r"
}

# ---------------------------------------------------------------------------------------------
case6() {
  label="case 6"
  local r inc hv
  r=$(new_root c6)
  inc=$r/incoming
  echo "case 6: max_shard_bytes = 1000000 holds before hashing; a shard whose chunks were never written"
  if selected 6a; then
    as_prod truncate -s 3G "$inc/.big.tmp"
    as_prod mv -T "$inc/.big.tmp" "$inc/big.h5"
    tick_ok "$r" "$t/fix/size.cfg" "case 6 (3 GiB sparse file)"
    echo "   the pass over a 3 GiB sparse file took $tick_ms ms"
    catalog "$r"
    expect "[q['rule'] for q in Q if q['source'] == 'big.h5'] == ['size']" "case 6: the 3 GiB file is not quarantined with rule 'size'"
    [ "$tick_ms" -lt 5000 ] || fail "case 6: the pass over a 3 GiB file over max_shard_bytes took $tick_ms ms (limit 5 s): read before the size was checked"
  fi
  if selected 6b; then
    as_prod "$py" "$helper" chunked "$inc/.chunked.tmp" --like "$fm/shard-00000.h5"
    as_prod mv -T "$inc/.chunked.tmp" "$inc/chunked.h5"
    echo "   chunked.h5: $(stat -c %s "$inc/chunked.h5") bytes, images (1000000, 28, 28) and labels with no chunk written"
    tick_ok "$r" "$t/fix/size.cfg" "case 6 (unwritten chunks)"
    catalog "$r"
    expect "not any(x['source'] == 'chunked.h5' for x in S)" "case 6: the shard whose chunks were never written was ingested"
    expect "[q['rule'] for q in Q if q['source'] == 'chunked.h5'] == ['hdf5']" \
      "case 6: the shard whose chunks were never written is not quarantined with rule 'hdf5'"
  fi
  drop "$fm/shard-00029.h5" "$r" after.h5
  hv=$(sha "$fm/shard-00029.h5")
  tick_ok "$r" "$t/fix/size.cfg" "case 6 (a valid shard after them)"
  catalog "$r"
  expect "any(x['sha256'] == '$hv' for x in S)" "case 6: a valid shard after them is not ingested"
  check_root "$r"
}

# ---------------------------------------------------------------------------------------------
case7() {
  label="case 7"
  local r inc n1 n2 f
  r=$(new_root c7)
  inc=$r/incoming
  n1=$'evil\e[31mred\nINFO fake.h5'
  n2=$'evil\e[2J\e]0;owned\a\nWARN q.h5'
  echo "case 7: names with terminal escapes and newlines"
  drop "$fm/shard-00033.h5" "$r" "$n1"
  drop "$gen/junk-1" "$r" "$n2"
  tick_ok "$r" "$cfg" "case 7"
  cp "$t/tick.out" "$t/c7-tick.out"
  cp "$t/tick.err" "$t/c7-tick.err"
  as_sched "$bin" sched shards --root "$r" >"$t/c7-shards.txt" 2>&1 || fail "case 7: sched shards exited $?"
  as_sched "$bin" sched shards --root "$r" --quarantine >"$t/c7-quar.txt" 2>&1 || fail "case 7: sched shards --quarantine exited $?"
  echo "   checks: no ESC/BEL byte and no newline from a name in the tick's output and log, sched shards, sched shards --quarantine,"
  echo "           or the names in quarantine/; the names show (escaped)"
  for f in c7-shards.txt c7-quar.txt c7-tick.err c7-tick.out; do
    $py - "$t/$f" <<'PY' || fail "case 7: $f $(tail -n 1 "$t/raw.txt")" 
import sys
data = open(sys.argv[1], "rb").read()
problems = []
if b"\x1b" in data:
    problems.append("holds a raw ESC byte")
if b"\x07" in data:
    problems.append("holds a raw BEL byte")
if b"\nINFO fake.h5" in data or b"\nWARN q.h5" in data:
    problems.append("holds a name's newline (a line starts with its tail, 'INFO fake.h5' or 'WARN q.h5')")
if b"evil" not in data:
    problems.append("does not show the names")
if problems:
    open(sys.argv[1].rsplit("/", 1)[0] + "/raw.txt", "w").write("; ".join(problems) + ": " + repr(data[-300:]) + "\n")
    sys.exit(1)
PY
  done
  $py - "$r/quarantine" <<'PY' || fail "case 7: a file name in quarantine/ holds control characters: $(ls "$r/quarantine" | cat -v)"
import os, sys
sys.exit(1 if any(any(c < 32 or c == 127 for c in os.fsencode(n)) for n in os.listdir(sys.argv[1])) else 0)
PY
  catalog "$r"
  expect "len(S) == 1 and 'evil' in S[0]['source'] and len(Q) == 1 and 'evil' in Q[0]['source']" \
    "case 7: the valid shard is not ingested or the other file not quarantined"
  check_root "$r"
}

for c in 1 2 3 4 5 6 7; do
  selected "$c" || continue
  case$c
done
echo "PASS: no data producer stopped, poisoned or escaped the scheduler (cases: $cases; $((SECONDS - start)) s)"
