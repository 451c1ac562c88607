#!/usr/bin/env python3
"""Helpers of the chaos test (tests/chaos/chaos_test.sh): the seeded plan of a trial, finding
the processes of a scheduler root, killing a trainer while it writes a checkpoint, and the
invariants checked once the scheduler has settled.

usage:
  chaos.py plan SEED STREAM_DIR BAD_DIR ENOSPC(0|1)    prints the trial's plan (see plan())
  chaos.py pids ROOT ROLE [RANK]                       pids of ROLE: rank, supervisor, launcher, child,
                                                       any (all of those)
  chaos.py snipe ROOT SKIP TIMEOUT_S                   SIGKILLs the next writer of a checkpoint
  chaos.py deliver INCOMING PATH MODE DELIVERED        a hostile producer's delivery (see deliver())
  chaos.py produce KIND INCOMING ID DELIVERED          a FIFO or a symlink to /dev/zero in INCOMING
  chaos.py settled BIN ROOT DELIVERED                  "yes" once nothing is left to do
  chaos.py check BIN ROOT DELIVERED WORK MPIRUN_ARGS   the invariants; prints a JSON summary
"""
import glob
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

# Every kind of fault; enospc needs a file system of our own (a tmpfs the test may mount).
KINDS = ["daemon-kill", "crash", "supervisor-kill", "rank-kill", "ckpt-kill", "fsize-trainer", "fsize-daemon",
         "enospc"]
# Bad files offered to the stream (make_shards.py names them RULE--WHAT.h5); duplicate--same-bytes
# has the bytes of the first clean shard, so one of the two is quarantined as a duplicate.
BAD = ["hdf5--not-hdf5.h5", "hdf5--truncated.h5", "hdf5--zero-bytes.h5", "spec--other-class-count.h5",
       "dataset--no-labels.h5", "dtype--float-images.h5", "shape--flat-images.h5", "labels--out-of-range.h5",
       "labels--negative.h5", "empty--no-rows.h5", "rows--mismatched.h5", "size--oversized.h5",
       "duplicate--same-bytes.h5"]


# The producer's faults (RELIABILITY.md, SECURITY.md): what another user who can write incoming/
# does, in every trial beside the kills. Two are arrivals (the MODE of an `arrive` line):
#   name:HEX       the file arrives under a hostile name (HEX: its bytes): control characters, an
#                  escape sequence, invalid UTF-8, 250 bytes long
#   swap:BAD       the file arrives, and the moment the scheduler opens it (inotify IN_OPEN) the
#                  producer exchanges it with BAD (renameat2 RENAME_EXCHANGE) and renames the
#                  original to NAME-again.h5: a rename mid-validation
# and two are faults at a random moment: a FIFO, and a symbolic link to /dev/zero, in incoming/.
PRODUCER_FAULTS = ["producer-fifo", "producer-symlink"]


def hostile_name(rng, length):
    """A file name of LENGTH bytes that no terminal, log or JSON writer may take as it is."""
    head = b"\x1b[2J\x1b]0;forged\x07 line\nbreak \xff\xfe\xc3( \xe2\x80\xae "
    tail = b" %d.h5" % rng.randint(0, 999999)
    return head + b"v" * (length - len(head) - len(tail)) + tail


def plan(seed, stream_dir, bad_dir, enospc):
    """One line per action, in order (times in milliseconds):
      config KEY VALUE             a training setting for this trial
      arrive GAP_MS PATH [MODE]    a file arrives GAP_MS after the previous one (MODE: see
                                   PRODUCER_FAULTS; none: by the convention, under its own name)
      fault AT_MS KIND A B         a fault, not before AT_MS into the trial (A, B: see below)
    Faults: every kind once (enospc only when a small file system is available) and two more,
    at random moments over the arrival window and up to 10 s after it; the producer's faults
    come from a random generator of their own, so older seeds replay the same kills."""
    rng = random.Random(seed)
    ms = lambda lo, hi: int(rng.uniform(lo, hi) * 1000)
    out = []
    out.append("config checkpoint.async %s" % rng.choice(["true", "false"]))
    out.append("config checkpoint.every_steps %d" % rng.choice([2, 3, 5]))
    stream = sorted(glob.glob(os.path.join(stream_dir, "*.h5")))
    clean = [p for p in stream if "mislabel" not in p]
    mislabel = [p for p in stream if "mislabel" in p]
    bad = [os.path.join(bad_dir, b) for b in rng.sample(BAD, 3)]
    # Clean shards first (bad files among them), the labelling bug last: the runs that train on
    # it should be rejected by the gate.
    files = clean[:]
    for b in bad:
        files.insert(rng.randint(0, len(files)), b)
    files += mislabel
    window = 0
    for f in files:
        gap = ms(0.2, 2.0)
        window += gap
        out.append("arrive %d %s" % (gap, f))
    kinds = [k for k in KINDS if enospc or k != "enospc"]
    faults = kinds[:] + [rng.choice(kinds) for _ in range(2)]
    rng.shuffle(faults)
    times = sorted(ms(1.0, window / 1000 + 10.0) for _ in faults)
    for at, kind in zip(times, faults):
        if kind == "daemon-kill":
            a, b = ms(0, 2), 0                        # restart after A
        elif kind == "crash":
            a, b = ms(0, 2), ms(0, 1.5)               # restart after A; B after a run is found
        elif kind == "rank-kill":
            a, b = rng.randint(0, 1), ms(0, 1.5)      # rank A, B after it is found
        elif kind == "ckpt-kill":
            a, b = rng.randint(0, 4), 0               # let A checkpoint writes pass first
        elif kind == "supervisor-kill":
            a, b = ms(0, 1.5), 0                      # A after it is found
        elif kind == "fsize-trainer":
            a, b = rng.randint(0, 240000), ms(0, 1)   # A bytes, B after rank 0 is found
        elif kind == "fsize-daemon":
            a, b = rng.randint(0, 65536), ms(2, 6)    # A bytes, for B
        else:  # enospc
            a, b = rng.randint(0, 65536), ms(2, 6)    # A bytes left free, for B
        out.append("fault %d %s %d %d" % (at, kind, a, b))
    # The producer's faults. Neither hostile delivery uses the first clean shard, whose bytes
    # duplicate--same-bytes.h5 repeats.
    prng = random.Random("producer-%d" % seed)
    arrivals = [i for i, line in enumerate(out) if line.startswith("arrive ")]
    clean_at = [i for i in arrivals if out[i].split()[2] in clean[1:]]
    bad_at = [i for i in arrivals if out[i].split()[2] in bad and "duplicate--" not in out[i]]
    named, swapped = prng.sample(clean_at, 2)
    out[named] += " name:" + hostile_name(prng, 250).hex()
    if bad_at:
        i = prng.choice(bad_at)
        out[i] += " name:" + hostile_name(prng, 240).hex()
    spare = [b for b in BAD if os.path.join(bad_dir, b) not in bad and b != "duplicate--same-bytes.h5"]
    out[swapped] += " swap:" + os.path.join(bad_dir, prng.choice(spare))
    faults = [l for l in out if l.startswith("fault ")]
    for kind in PRODUCER_FAULTS:
        faults.append("fault %d %s %d 0" % (int(prng.uniform(1.0, window / 1000 + 10.0) * 1000), kind,
                                            prng.randint(0, 999999)))
    faults.sort(key=lambda l: int(l.split()[1]))
    out = [l for l in out if not l.startswith("fault ")] + faults
    print("\n".join(out))


# ---------------------------------------------------------------------------------------------
# The producer's faults. Each delivery is recorded in DELIVERED, one line per delivery:
#   NAME PATH       a file delivered by the convention under its own (plain) name
#   {JSON}          a hostile one: {"name": HEX, "path": PATH or null, "rule": RULE or null}, and
#                   for a swap {"swap": {"a": PATH, "a_names": [HEX...], "b": PATH, "b_name": HEX}}
#   "min" in the JSON is how many catalog records (shards and quarantined files) it must give.

IN_OPEN, IN_ISDIR, IN_NONBLOCK, IN_CLOEXEC = 0x20, 0x40000000, 0o4000, 0o2000000
RENAME_EXCHANGE = 2


def record(delivered, entry):
    with open(delivered, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def place(incoming, src, name):
    """SRC into INCOMING under the bytes NAME by the convention (a hidden temporary, renamed)."""
    tmp = os.path.join(incoming, ".chaos-%d.tmp" % os.getpid())
    try:
        with open(src, "rb") as i, open(tmp, "wb") as o:
            o.write(i.read())
        os.rename(tmp, os.path.join(os.fsencode(incoming), name))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def deliver(incoming, path, mode, delivered):
    """MODE name:HEX: PATH under that name. MODE swap:BAD: PATH under its own name, exchanged
    with BAD the moment the scheduler opens it, then renamed to NAME-again.h5. Exits 1 (nothing
    delivered) when the disk is full; the feeder tries again."""
    kind, arg = mode.split(":", 1)
    try:
        if kind == "name":
            place(incoming, path, bytes.fromhex(arg))
            record(delivered, {"name": arg, "path": path, "rule": None, "min": 1})
            print("a file under a hostile name of %d bytes" % (len(arg) // 2))
            return 0
        return swap(incoming, path, arg, delivered)
    except OSError as e:
        print("not delivered: %s" % e)
        return 1


def swap(incoming, path, bad, delivered):
    import ctypes
    import select
    import struct
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    name = os.fsencode(os.path.basename(path))
    again = name[:-3] + b"-again.h5"
    hidden = os.fsencode(".chaos-swap-%d.tmp" % os.getpid())
    dfd = os.open(incoming, os.O_RDONLY | os.O_DIRECTORY)
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0 or libc.inotify_add_watch(fd, os.fsencode(incoming), IN_OPEN) < 0:
        sys.exit("inotify: " + os.strerror(ctypes.get_errno()))
    try:
        with open(bad, "rb") as i, open(os.path.join(os.fsencode(incoming), hidden), "wb") as o:
            o.write(i.read())
        place(incoming, path, name)
    except OSError:
        os.close(fd)
        try:
            os.unlink(os.path.join(os.fsencode(incoming), hidden))
        except OSError:
            pass
        raise
    # Delivered: from here on every outcome is recorded.
    deadline = time.monotonic() + 60
    opened = False
    while not opened and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            continue
        try:
            buf = os.read(fd, 65536)
        except BlockingIOError:
            continue
        off = 0
        while off + 16 <= len(buf):
            _wd, mask, _cookie, ln = struct.unpack_from("iIII", buf, off)
            n = buf[off + 16: off + 16 + ln].rstrip(b"\0")
            off += 16 + ln
            if not mask & IN_ISDIR and n == name:
                opened = True
    os.close(fd)
    entry = {"swap": {"a": path, "a_names": [name.hex()], "b": bad, "b_name": name.hex()}, "name": name.hex(),
             "path": None, "rule": None}
    if not opened:
        os.unlink(hidden, dir_fd=dfd)
        entry["swap"]["b"] = None
        entry["min"] = 1
        record(delivered, entry)
        print("swap: the scheduler never opened %s in 60 s; delivered as it is" % name.decode())
        return 0
    if libc.renameat2(dfd, name, dfd, hidden, RENAME_EXCHANGE) == 0:
        # The original, now under the hidden name, comes back under a name of its own.
        os.rename(hidden, again, src_dir_fd=dfd, dst_dir_fd=dfd)
        entry["swap"]["a_names"].append(again.hex())
        how = "exchanged with %s the moment it was opened; the original renamed to %s" % (
            os.path.basename(bad), again.decode())
    else:
        # Ingested before the producer could act (it is gone from incoming/): BAD comes after it.
        os.rename(hidden, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        how = "ingested before the exchange (%s); %s renamed to its name after" % (
            os.strerror(ctypes.get_errno()), os.path.basename(bad))
    os.close(dfd)
    entry["min"] = 2
    record(delivered, entry)
    print("swap: %s %s" % (name.decode(), how))
    return 0


def produce(kind, incoming, ident, delivered):
    """A FIFO (kind producer-fifo) or a symbolic link to /dev/zero (producer-symlink) in
    INCOMING: never opened for reading, never followed, quarantined as rule 'type'."""
    name = ("fifo-%s.h5" if kind == "producer-fifo" else "zero-%s.h5") % ident
    path = os.path.join(incoming, name)
    if kind == "producer-fifo":
        os.mkfifo(path, 0o644)
    else:
        os.symlink("/dev/zero", path)
    record(delivered, {"name": name.encode().hex(), "path": None, "rule": "type", "min": 1})
    print("%s %s in incoming/" % ("a FIFO" if kind == "producer-fifo" else "a symbolic link to /dev/zero", name))


def shown(name_hex):
    """A delivered name as the scheduler's JSON gives it (invalid UTF-8 replaced by U+FFFD; how
    many U+FFFD per invalid sequence is the JSON writer's business, so runs are compared as one)."""
    return squash(bytes.fromhex(name_hex).decode("utf-8", errors="replace"))


def squash(text):
    out = []
    for c in text:
        if c == "\ufffd" and out and out[-1] == "\ufffd":
            continue
        out.append(c)
    return "".join(out)


def read_delivered(path):
    """(plain, hostile): plain [(name, path)], hostile [dict] (see record())."""
    plain, hostile = [], []
    for line in open(path).read().splitlines():
        if line.startswith("{"):
            hostile.append(json.loads(line))
        elif line.strip():
            plain.append(tuple(line.split(None, 1)))
    return plain, hostile


def processes(root):
    """(pid, argv, environ) of every process whose command line names ROOT."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            if not any(root + "/" in a or a == root for a in argv):
                continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = dict(kv.decode(errors="replace").split("=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        out.append((int(pid), argv, env))
    return out


def role(argv, env):
    name = os.path.basename(argv[0]) if argv else ""
    if name in ("mpirun", "mpiexec", "orterun", "prterun"):
        return "launcher"
    if len(argv) > 2 and argv[1] == "sched" and argv[2] == "exec":
        return "supervisor"
    if len(argv) > 2 and argv[1] == "sched" and argv[2] == "run":
        return "daemon"
    if len(argv) > 1 and argv[1] == "train" and "OMPI_COMM_WORLD_RANK" in env:
        return "rank"
    if name == "perennial":
        return "child"  # validate, eval
    return "other"      # not ours (the feeder's cp and mv)


def pids(root, want, rank=None):
    for pid, argv, env in processes(root):
        r = role(argv, env)
        if want == "any" and r not in ("daemon", "other") or r == want and (rank is None or env.get("OMPI_COMM_WORLD_RANK") == rank):
            print(pid)


def snipe(root, skip, timeout):
    """Waits for a trainer to start writing a checkpoint (or its final weights), lets SKIP such
    writes pass, and SIGKILLs the writer: the temporary file is named after its pid. Prints what
    it hit, and whether the write was still in progress (its temporary file left behind)."""
    seen = set()
    deadline = time.time() + timeout
    while time.time() < deadline:
        for d in glob.glob(root + "/runs/*/train/checkpoints") + glob.glob(root + "/runs/*/train"):
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                if ".tmp." not in n or not (n.startswith("ckpt-") or n.startswith("model.h5")):
                    continue
                path = os.path.join(d, n)
                if path in seen:
                    continue
                seen.add(path)
                if skip > 0:
                    skip -= 1
                    continue
                pid = int(n.rsplit(".", 1)[1])
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                time.sleep(0.05)
                mid = os.path.exists(path)
                print("killed pid %d writing %s (%s)" % (pid, os.path.relpath(path, root),
                                                          "mid-write" if mid else "write had just ended"))
                return 0
        time.sleep(0.0005)
    print("no checkpoint write within %d s" % timeout)
    return 1


def settled(bin_, root, delivered):
    """Prints "yes" when every delivered file was ingested or quarantined and no run is pending
    or active, else what is still going on."""
    plain, hostile = read_delivered(delivered)
    n = len(plain) + sum(h["min"] for h in hostile)
    try:
        s = json.loads(subprocess.run([bin_, "sched", "status", "--root", root, "--json"], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, check=True).stdout)
    except (subprocess.CalledProcessError, ValueError):
        print("no status yet")
        return
    seen = s["shards"]["count"] + s["shards"]["quarantined"]
    busy = {k: v for k, v in s["runs"].items() if k not in ("promoted", "rejected", "failed", "cancelled") and v}
    incoming = os.listdir(os.path.join(root, "incoming"))
    # At least N: a swap's original may come back under its second name as a duplicate.
    if seen >= n and not busy and not incoming:
        print("yes")
    else:
        print("no: %d of %d files handled, incoming %s, runs %s" % (seen, n, incoming, busy))


# ---------------------------------------------------------------------------------------------
# Invariants


class Checker:
    def __init__(self, bin_, root, delivered, work, mpirun_args):
        self.bin, self.root, self.work = bin_, root, work
        self.mpirun_args = mpirun_args.split()
        plain, self.hostile = read_delivered(delivered)
        # (name as the scheduler's JSON shows it, path) of every file delivered with its bytes.
        self.delivered = [(squash(n), p) for n, p in plain] + [(shown(h["name"]), h["path"]) for h in self.hostile
                                                               if h["path"]]
        self.problems = []
        self.summary = {}

    def cli(self, *args):
        r = subprocess.run([self.bin] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("perennial %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
        return r.stdout

    def cli_json(self, *args):
        return json.loads(self.cli(*args))

    def bad(self, what):
        self.problems.append(what)

    def run(self):
        self.catalog()
        self.ingest()
        runs = self.runs()
        self.checkpoints(runs)
        self.registry(runs)
        self.reproduce(runs)
        # Everything the report reads is readable.
        try:
            self.cli("report", "--root", self.root, "--out", os.path.join(self.work, "report.html"))
        except RuntimeError as e:
            self.bad(str(e))
        return self.problems

    def catalog(self):
        db = sqlite3.connect("file:%s/catalog.db?mode=ro" % self.root, uri=True)
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            self.bad("catalog integrity_check: %s" % ok)

    def ingest(self):
        """Every valid shard ingested exactly once, every bad file quarantined exactly once for its
        rule; of files with the same bytes, one is ingested and the others are duplicates."""
        shards = self.cli_json("sched", "shards", "--root", self.root, "--json", "--limit", "1000000")
        quarantine = self.cli_json("sched", "shards", "--root", self.root, "--json", "--quarantine", "--limit", "1000000")
        by_hash = {}
        for name, path in self.delivered:
            h = hashlib.sha256(open(path, "rb").read()).hexdigest()
            rule = os.path.basename(path).split("--")[0] if "--" in os.path.basename(path) else ""
            by_hash.setdefault(h, []).append((name, rule))
        ingested = {}
        for s in shards:
            ingested.setdefault(s["sha256"], []).append(squash(s["source"]))
        quarantined = {}
        for q in quarantine:
            quarantined.setdefault(squash(q["source"]), []).append(q["rule"])
        names = {n for n, _ in self.delivered}
        for h in self.hostile:
            names.add(shown(h["name"]))
            if h["rule"]:  # a FIFO, a symbolic link: quarantined unread, once
                if quarantined.get(shown(h["name"])) != [h["rule"]]:
                    self.bad("%s: quarantined as %s, expected once as %s" % (shown(h["name"]),
                                                                            quarantined.get(shown(h["name"])), h["rule"]))
            if "swap" in h:
                self.swapped(h["swap"], ingested, quarantined, by_hash, names)
        for h, files in by_hash.items():
            valid = [n for n, rule in files if rule in ("", "duplicate")]
            if valid:
                got = ingested.get(h, [])
                if len(got) != 1 or got[0] not in valid:
                    self.bad("shard %s (%s) ingested %d times as %s" % (h[:16], valid, len(got), got))
                for n in valid:
                    if got and n == got[0]:
                        continue
                    if quarantined.get(n) != ["duplicate"]:
                        self.bad("%s: the same bytes as an ingested shard, quarantined as %s, not once as duplicate"
                                 % (n, quarantined.get(n)))
            for n, rule in files:
                if rule in ("", "duplicate"):
                    continue
                if quarantined.get(n) != [rule]:
                    self.bad("%s: quarantined as %s, expected once as %s" % (n, quarantined.get(n), rule))
        for h, srcs in ingested.items():
            if h not in by_hash:
                self.bad("shard %s ingested from %s was never delivered" % (h[:16], srcs))
        for src in quarantined:
            if src not in names:
                self.bad("quarantined %s was never delivered" % src)
        # What is stored is what was validated, and the producer cannot change it.
        for sh in shards:
            path = os.path.join(self.root, sh["file"])
            st = os.lstat(path)
            if hashlib.sha256(open(path, "rb").read()).hexdigest() != sh["sha256"] or st.st_mode & 0o222:
                self.bad("%s: not the validated bytes of shard %s (or writable: mode %o)" % (sh["file"], sh["sha256"][:16],
                                                                                              st.st_mode & 0o7777))
        data = sorted(os.listdir(os.path.join(self.root, "data")))
        if data != sorted(os.path.basename(s["file"]) for s in shards):
            self.bad("data/ holds %s, the catalog %d shards" % (data, len(shards)))
        qfiles = os.listdir(os.path.join(self.root, "quarantine"))
        if len(qfiles) != 2 * len(quarantine):
            self.bad("quarantine/ holds %d files for %d records" % (len(qfiles), len(quarantine)))
        left = os.listdir(os.path.join(self.root, "incoming"))
        if left:
            self.bad("incoming/ still holds %s" % left)
        self.summary["shards_ingested"] = len(shards)
        self.summary["files_quarantined"] = len(quarantine)

    def swapped(self, sw, ingested, quarantined, by_hash, names):
        """A file exchanged with a bad one mid-validation: its bytes ingested once, under its name
        or the one it came back under (the other, if seen, a duplicate), and the bad file that took
        its name quarantined once for its rule."""
        a_names = [shown(n) for n in sw["a_names"]]
        names.update(a_names)
        h = hashlib.sha256(open(sw["a"], "rb").read()).hexdigest()
        by_hash.setdefault(h, [])  # delivered (checked here, not by the plain rule)
        got = ingested.get(h, [])
        if len(got) != 1 or got[0] not in a_names:
            self.bad("swap: %s ingested %d times as %s, expected once as one of %s" % (a_names[0], len(got), got, a_names))
        elif got[0] != a_names[-1] and len(a_names) > 1:
            if quarantined.get(a_names[-1]) != ["duplicate"]:
                self.bad("swap: %s (the original, back under a second name) quarantined as %s, not once as duplicate"
                         % (a_names[-1], quarantined.get(a_names[-1])))
        if sw["b"]:
            rule = os.path.basename(sw["b"]).split("--")[0]
            if quarantined.get(shown(sw["b_name"])) != [rule]:
                self.bad("swap: %s (the bad file exchanged in) quarantined as %s, expected once as %s"
                         % (shown(sw["b_name"]), quarantined.get(shown(sw["b_name"])), rule))
        self.summary.setdefault("swaps", []).append("exchanged" if len(a_names) > 1 else "not exchanged")

    def runs(self):
        """Every run ended; a failed one says why; each attempt was started once."""
        runs = self.cli_json("sched", "runs", "--root", self.root, "--json", "--limit", "1000000")
        events = self.cli_json("sched", "events", "--root", self.root, "--json", "--kind", "run", "--limit", "1000000")
        states = {}
        for r in runs:
            states[r["state"]] = states.get(r["state"], 0) + 1
            if r["state"] not in ("promoted", "rejected", "failed", "cancelled"):
                self.bad("run %s did not finish: %s" % (r["id"], r["state"]))
            if r["state"] in ("failed", "rejected") and not r.get("message"):
                self.bad("run %s is %s without a recorded reason" % (r["id"], r["state"]))
            if r["state"] == "rejected":
                # A rejection is a judgement: the verdict beside the run says reject and why.
                path = os.path.join(self.root, "runs", r["id"], "verdict.json")
                v = json.load(open(path)) if os.path.exists(path) else {}
                if v.get("decision") != "reject" or not v.get("failed"):
                    self.bad("run %s was rejected (%s) without a verdict that rejects it: %s"
                             % (r["id"], r.get("message"), {k: v.get(k) for k in ("decision", "failed")}))
                # The faults never damage a model: a rejection is about its quality, never its file
                # (integrity) or a holdout it could not read (sanity).
                broken = [c for c in v.get("failed", []) if c in ("integrity", "sanity")]
                if broken:
                    self.bad("run %s was rejected for %s: %s" % (r["id"], broken, [c.get("detail") for c in v.get("checks", [])
                                                                                  if c.get("name") in broken]))
            subs = sum(1 for e in events if e["subject"] == r["id"] and e["detail"].get("state") == "submitted")
            if subs != r["attempt"]:
                self.bad("run %s: %d submissions recorded for %d attempts" % (r["id"], subs, r["attempt"]))
            rdir = os.path.join(self.root, "runs", r["id"])
            for k in range(1, r["attempt"] + 1):
                log = os.path.join(rdir, "attempt-%d" % k, "log")
                if os.path.exists(log):
                    n = open(log, errors="replace").read().count(" parameters; ")
                    if n > 1:
                        self.bad("run %s attempt %d: the trainer started %d times" % (r["id"], k, n))
        for e in events:
            d = e["detail"]
            if d.get("state") == "failed" and not d.get("message"):
                self.bad("event %d: run %s failed without a reason" % (e["id"], e["subject"]))
        self.summary["runs"] = states
        self.summary["attempts"] = sum(r["attempt"] for r in runs)
        self.summary["retried_runs"] = sum(1 for r in runs if r["attempt"] > 1)
        self.summary["failed_attempts"] = sum(1 for e in events if e["detail"].get("state") in ("failed", "preempted"))
        self.summary["failure_reasons"] = sorted({self.reason(e["detail"].get("message", ""))
                                                  for e in events if e["detail"].get("state") == "failed"})
        self.summary["failed_runs"] = [self.reason(r.get("message", "")) for r in runs if r["state"] == "failed"]
        return runs

    @staticmethod
    def reason(message):
        """A failure message without its log tail and numbers: its kind."""
        m = message.split("; log:")[0][:120]
        if message.endswith("(no attempts left)") and not m.endswith("(no attempts left)"):
            m += " (no attempts left)"
        return "".join("N" if c.isdigit() else c for c in m)

    def checkpoints(self, runs):
        """Every committed checkpoint (one with a manifest) verifies, and so does every model.h5."""
        n = 0
        for r in runs:
            tdir = os.path.join(self.root, "runs", r["id"], "train")
            files = [m[:-5] + ".h5" for m in sorted(glob.glob(os.path.join(tdir, "checkpoints", "ckpt-*.json")))]
            if os.path.exists(os.path.join(tdir, "model.h5")):
                files.append(os.path.join(tdir, "model.h5"))
            n += len(files)
            if not files:
                continue
            p = subprocess.run([self.bin, "ckpt", "verify"] + files, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
            if p.returncode != 0 or p.stdout.count("OK ") != len(files):
                self.bad("run %s: committed checkpoints or weights do not verify: %s" % (r["id"], p.stdout.strip()))
        self.summary["checkpoints_verified"] = n

    def registry(self, runs):
        """Every version verifies and comes from a promoted run, one version per promoted run; the
        champion alias is the newest promotion's; no rejected run was ever the champion."""
        byid = {r["id"]: r for r in runs}
        models = self.cli_json("registry", "list", "--root", self.root, "--json")
        promoted = {r["id"] for r in runs if r["state"] == "promoted"}
        seen = {}
        for m in models:
            name = m["model"]
            for v in m["versions"]:
                ref = "%s:%s" % (name, v["version"])
                p = subprocess.run([self.bin, "registry", "verify", "--root", self.root, ref], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
                if p.returncode != 0:
                    self.bad("registry version %s does not verify: %s" % (ref, p.stdout.strip()))
                rid = v.get("run_id")
                run = byid.get(rid)
                if not run or run["state"] != "promoted":
                    self.bad("registry version %s comes from run %s, which is %s" % (ref, rid, run and run["state"]))
                if rid in seen:
                    self.bad("run %s published twice: %s and %s" % (rid, seen[rid], ref))
                seen[rid] = ref
                if run and run.get("message") != ref:
                    self.bad("run %s says it was promoted as %s, the registry has %s" % (rid, run.get("message"), ref))
                verdict = json.load(open(os.path.join(self.root, "registry", name, "versions", v["version"], "verdict.json")))
                if verdict.get("decision") != "pass":
                    self.bad("registry version %s was published with the verdict %s" % (ref, verdict.get("decision")))
            mdir = os.path.join(self.root, "registry", name)
            history = []
            for i, line in enumerate(open(os.path.join(mdir, "history.jsonl")).read().splitlines()):
                try:
                    history.append(json.loads(line))
                except ValueError:
                    self.bad("%s/history.jsonl line %d is not JSON: %r" % (name, i + 1, line[:80]))
            prev = None
            for e in history:
                if e.get("from") != prev:
                    self.bad("%s/history.jsonl: a promotion from %s follows one to %s" % (name, e.get("from"), prev))
                prev = e.get("to")
            if m["aliases"].get("champion") != prev:
                self.bad("%s: champion alias %s, history ends at %s" % (name, m["aliases"].get("champion"), prev))
            leftovers = [d for d in os.listdir(os.path.join(mdir, "versions")) if d.startswith(".tmp-")]
            if leftovers:
                self.summary.setdefault("registry_leftovers", []).extend(leftovers)
        for rid in promoted - set(seen):
            self.bad("promoted run %s has no registry version" % rid)
        # The champion, as recorded over time and now.
        champions = self.cli_json("sched", "events", "--root", self.root, "--json", "--kind", "champion", "--limit", "1000000")
        for e in champions:
            run = byid.get(e["subject"])
            if not run or run["state"] != "promoted":
                self.bad("run %s became the champion but is %s" % (e["subject"], run and run["state"]))
        status = self.cli_json("sched", "status", "--root", self.root, "--json")
        if promoted:
            newest = max((r for r in runs if r["state"] == "promoted"), key=lambda r: r["finished_at"])
            if status.get("champion") != newest["id"]:
                self.bad("the champion is %s, the newest promoted run %s" % (status.get("champion"), newest["id"]))
            for m in models:
                if "%s:%s" % (m["model"], m["aliases"].get("champion")) != newest.get("message"):
                    self.bad("the champion alias is %s, the newest promotion %s" % (m["aliases"].get("champion"),
                                                                                    newest.get("message")))
        elif status.get("champion"):
            self.bad("champion %s without a promoted run" % status.get("champion"))
        self.summary["registry_versions"] = len(seen)

    def reproduce(self, runs):
        """Runs that were retried and trained a model ended with the weights of an uninterrupted
        run of the same configuration and snapshot (their config.cfg, trained again here)."""
        same = 0
        for r in runs:
            res = r.get("result") or {}
            if r["attempt"] < 2 or not res.get("param_sha256"):
                continue
            rdir = os.path.join(self.root, "runs", r["id"])
            ref = os.path.join(self.work, "reference-" + r["id"])
            cmd = ["mpirun", "-np", str(res.get("world_size", 2))] + self.mpirun_args + [
                self.bin, "train", "--config", os.path.join(rdir, "config.cfg"), "--run-dir", ref, "--log.progress=none"]
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode != 0:
                self.bad("run %s: the uninterrupted reference failed: %s" % (r["id"], p.stdout[-2000:]))
                continue
            want = json.load(open(os.path.join(ref, "result.json")))["param_sha256"]
            if want != res["param_sha256"]:
                self.bad("run %s (%d attempts) ended with param_sha256 %s, an uninterrupted run with %s"
                         % (r["id"], r["attempt"], res["param_sha256"][:16], want[:16]))
            else:
                same += 1
        self.summary["resumed_runs_reproduced"] = same


def main():
    cmd = sys.argv[1]
    if cmd == "plan":
        plan(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1")
    elif cmd == "pids":
        pids(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif cmd == "snipe":
        sys.exit(snipe(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    elif cmd == "deliver":
        sys.exit(deliver(*sys.argv[2:6]))
    elif cmd == "produce":
        produce(*sys.argv[2:6])
    elif cmd == "settled":
        settled(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "check":
        c = Checker(*sys.argv[2:7])
        problems = c.run()
        print(json.dumps(c.summary, sort_keys=True))
        for p in problems:
            print("VIOLATION: " + p, file=sys.stderr)
        sys.exit(1 if problems else 0)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
