#!/usr/bin/env python3
"""Helpers of tests/sched/producer_test.sh: a data producer's attacks on the scheduler, shards to
attack with, and the checks of what the scheduler stored.

usage:
  producer_attack.py swap --dir DIR --on NAME --ready FILE [--timeout S] [--all] [--last-delay D] SRC:DST...
      Watches DIR with inotify (IN_OPEN). Each time somebody opens DIR/NAME, renames the next
      DIR/SRC over DIR/DST (with --all: every pair at the first open). Writes FILE once the watch
      is in place; prints one line per rename and the count at the end; exits after the last
      rename or after S seconds (default 30). --last-delay D: wait D seconds before the last one.
  producer_attack.py make-shard OUT --from SHARD... [--roll K] [--label10 ROW]
      A shard of the given shards' rows (rolled by K rows; with --label10, ROW's label set to 10,
      outside the 10 classes), with the first shard's spec attributes.
  producer_attack.py chunked OUT --like SHARD [--rows N]
      A shard whose datasets are chunked and whose chunks were never written (N rows, default
      1,000,000), with SHARD's spec attributes.
  producer_attack.py try-modify FILE
      Tries to change a label of FILE in place (h5py r+); exit 0 if it could, 1 if not.
  producer_attack.py try-open-write FILE
      Tries open(FILE, O_WRONLY); exit 0 if it could, 1 if not.
  producer_attack.py check ROOT --shards JSON --quarantine JSON --uid U --spec SHARD
                     [--forbid-inode DEV:INO...] [--opened SHA256]
      The invariants of a scheduler root (see check() below); prints a summary or
      'FAIL: ...' and exits 1.
"""
import argparse
import ctypes
import hashlib
import json
import os
import re
import select
import stat
import struct
import sys
import time

IN_OPEN = 0x00000020
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


def swap(a):
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        sys.exit("inotify_init1: " + os.strerror(ctypes.get_errno()))
    if libc.inotify_add_watch(fd, os.fsencode(a.dir), IN_OPEN) < 0:
        sys.exit("inotify_add_watch: " + os.strerror(ctypes.get_errno()))
    pairs = [p.split(":", 1) for p in a.pairs]
    target = os.fsencode(a.on)
    with open(a.ready, "w") as f:
        f.write("ready\n")
    done = 0
    opens = 0
    deadline = time.monotonic() + a.timeout
    while done < len(pairs):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        try:
            buf = os.read(fd, 65536)
        except BlockingIOError:
            continue
        off = 0
        while off + 16 <= len(buf) and done < len(pairs):
            _wd, mask, _cookie, ln = struct.unpack_from("iIII", buf, off)
            name = buf[off + 16: off + 16 + ln].rstrip(b"\0")
            off += 16 + ln
            if mask & IN_ISDIR or name != target:
                continue
            opens += 1
            todo = pairs[done:] if a.all else [pairs[done]]
            for src, dst in todo:
                if done == len(pairs) - 1 and a.last_delay:
                    time.sleep(a.last_delay)
                os.rename(os.path.join(a.dir, src), os.path.join(a.dir, dst))
                done += 1
                print("attacker: open %d of %s: renamed %s over %s" % (opens, a.on, src, dst), flush=True)
    print("attacker: %d of %d renames done (%d opens seen)" % (done, len(pairs), opens), flush=True)
    os.close(fd)


def make_shard(a):
    import h5py
    import numpy as np
    imgs, labs = [], []
    for p in a.sources:
        with h5py.File(p, "r") as f:
            imgs.append(f["images"][()])
            labs.append(f["labels"][()])
    with h5py.File(a.sources[0], "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
    images = np.roll(np.concatenate(imgs), a.roll, axis=0)
    labels = np.roll(np.concatenate(labs), a.roll, axis=0)
    if a.label10 is not None:
        labels[a.label10] = 10
    tmp = a.out + ".writing"
    with h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels.astype(np.int64))
    os.rename(tmp, a.out)


def chunked(a):
    import h5py
    import numpy as np
    with h5py.File(a.like, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
    tmp = a.out + ".writing"
    with h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("images", shape=(a.rows, 28, 28), dtype=np.uint8, chunks=(1000, 28, 28))
        f.create_dataset("labels", shape=(a.rows,), dtype=np.int64, chunks=(1000,))
    os.rename(tmp, a.out)


def try_modify(a):
    import h5py
    try:
        with h5py.File(a.file, "r+") as f:
            f["labels"][0] = (int(f["labels"][0]) + 1) % 10
    except Exception as e:  # noqa: BLE001 -- any failure is what we hope for
        print("cannot modify %s: %s" % (a.file, e))
        sys.exit(1)
    print("modified %s" % a.file)


def try_open_write(a):
    try:
        os.close(os.open(a.file, os.O_WRONLY))
    except OSError as e:
        print("cannot open %s for writing: %s" % (a.file, e.strerror))
        sys.exit(1)
    print("opened %s for writing" % a.file)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_json(path, what):
    raw = open(path, "rb").read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        fail("%s is not valid JSON (UTF-8): %s" % (what, e))


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def shard_problems(p, rows, spec):
    """What is wrong with the shard at P, recorded with ROWS rows, against the reference SPEC."""
    import h5py
    import numpy as np
    out = []
    try:
        with h5py.File(p, "r") as f:
            for k, v in spec.items():
                if k not in f.attrs or not np.array_equal(f.attrs[k], v):
                    out.append("spec attribute %s differs" % k)
            im, lb = f["images"], f["labels"]
            if im.dtype != np.uint8 or im.shape != (rows, 28, 28):
                out.append("images are %s %s, the catalog says %d rows" % (im.dtype, im.shape, rows))
            if lb.dtype != np.int64 or lb.shape != (rows,):
                out.append("labels are %s %s, the catalog says %d rows" % (lb.dtype, lb.shape, rows))
            for ds in (im, lb):
                need = ds.size * ds.dtype.itemsize
                if ds.id.get_storage_size() < need:
                    out.append("%s has %d of %d bytes stored (chunks never written)"
                               % (ds.name, ds.id.get_storage_size(), need))
            labels = lb[()]
            bad = np.flatnonzero((labels < 0) | (labels >= 10))
            if len(bad):
                out.append("row %d has label %d, outside [0, 10)" % (bad[0], labels[bad[0]]))
            if rows <= 100000:
                im[()]
    except (OSError, KeyError) as e:
        out.append("does not read as a shard: %s" % e)
    return out


def check(a):
    import h5py
    import numpy as np
    root = a.root
    shards = load_json(a.shards, "sched shards --json")
    quarantine = load_json(a.quarantine, "sched shards --quarantine --json")
    forbidden = set(a.forbid_inode or [])
    with h5py.File(a.spec, "r") as f:
        spec = {k: f.attrs[k] for k in f.attrs}
    by_hash = {}
    for s in shards:
        if s["sha256"] in by_hash:
            fail("sha256 %s is in the catalog twice" % s["sha256"])
        by_hash[s["sha256"]] = s
    # Hard links from runs/*/data/ to data/ files (a run's snapshot) are the scheduler's own.
    run_links = {}
    runs = os.path.join(root, "runs")
    for r in os.listdir(runs) if os.path.isdir(runs) else []:
        d = os.path.join(runs, r, "data")
        for n in os.listdir(d) if os.path.isdir(d) else []:
            st = os.lstat(os.path.join(d, n))
            run_links[(st.st_dev, st.st_ino)] = run_links.get((st.st_dev, st.st_ino), 0) + 1
    data = os.path.join(root, "data")
    names = sorted(os.listdir(data))
    for n in names:
        p = os.path.join(data, n)
        st = os.lstat(p)
        what = "data/" + n
        if not stat.S_ISREG(st.st_mode):
            kind = "a symlink to " + os.readlink(p) if stat.S_ISLNK(st.st_mode) else "not a regular file"
            fail("%s is %s" % (what, kind))
        problems = []
        m = re.fullmatch(r"([0-9a-f]{64})\.h5", n)
        digest = sha256(p)
        if not m:
            problems.append("is not named <sha256>.h5")
        elif digest != m.group(1):
            problems.append("holds other bytes than its name says (sha256 %s)" % digest[:16])
        rec = by_hash.get(m.group(1) if m else digest)
        if rec is None:
            problems.append("is not in the catalog")
        elif rec["file"] != what:
            problems.append("is recorded as %s" % rec["file"])
        else:
            problems += shard_problems(p, rec["rows"], spec)
        if "%d:%d" % (st.st_dev, st.st_ino) in forbidden:
            problems.append("is the producer's own file (inode %d), not the scheduler's copy" % st.st_ino)
        if st.st_uid != a.uid:
            problems.append("is owned by uid %d, not the scheduler (uid %d)" % (st.st_uid, a.uid))
        if stat.S_IMODE(st.st_mode) != 0o444:
            problems.append("has mode %o, not 444" % stat.S_IMODE(st.st_mode))
        links = 1 + run_links.get((st.st_dev, st.st_ino), 0)
        if st.st_nlink != links:
            problems.append("has %d links, expected %d (a link the scheduler does not own)" % (st.st_nlink, links))
        if problems:
            fail("%s: %s" % (what, "; ".join(problems)))
    for h, s in by_hash.items():
        if s["file"][len("data/"):] not in names:
            fail("catalog shard %s (%s) has no file in data/" % (h[:16], s["file"]))
    # Quarantine: every record has its file and reason; a reason's sha256 is the file's.
    qdir = os.path.join(root, "quarantine")
    reasons = [n for n in os.listdir(qdir) if n.endswith(".reason.json")]
    for r in quarantine:
        if not os.path.lexists(os.path.join(root, r["file"])):
            fail("quarantine record %r names %r, which does not exist" % (r["source"], r["file"]))
    if len(reasons) != len(quarantine):
        fail("%d quarantine records but %d .reason.json files" % (len(quarantine), len(reasons)))
    for n in reasons:
        why = load_json(os.path.join(qdir, n), "quarantine/" + repr(n))
        f = os.path.join(qdir, n[: -len(".reason.json")])
        if not os.path.lexists(f):
            fail("quarantine/%r has no file beside it" % n)
        st = os.lstat(f)
        # (Files over 64 MiB are not hashed here: the size rule refuses them unread.)
        if why.get("sha256") and stat.S_ISREG(st.st_mode) and st.st_size <= 64 << 20:
            digest = sha256(f)
            if digest != why["sha256"]:
                fail("quarantine/%r: its reason says sha256 %s (%s), the file holds %s: the record describes "
                     "other bytes than were kept" % (n, why["sha256"][:16], why.get("rule"), digest[:16]))
    if a.opened:
        # The shard the scheduler had open when its name was swapped: ingested (its bytes, read
        # through the scheduler's own descriptor), or else no record may claim its hash.
        if a.opened in by_hash:
            print("   ok: the shard the scheduler opened (sha256 %s) is ingested" % a.opened[:16])
        else:
            for n in reasons:
                why = load_json(os.path.join(qdir, n), "quarantine/" + repr(n))
                if why.get("sha256") != a.opened:
                    continue
                f = os.path.join(qdir, n[: -len(".reason.json")])
                st = os.lstat(f)
                held = ("a symlink to " + os.readlink(f) if stat.S_ISLNK(st.st_mode) else
                        "bytes with sha256 " + sha256(f)[:16] if stat.S_ISREG(st.st_mode) else "not a regular file")
                if held != "bytes with sha256 " + a.opened[:16]:
                    fail("the shard the scheduler opened (sha256 %s) is not ingested, and quarantine/%r claims its "
                         "hash (rule %s: %s) but holds %s" % (a.opened[:16], n, why.get("rule"),
                                                              why.get("reason", "")[-80:], held))
            print("   note: the shard the scheduler opened (sha256 %s) was not ingested; no record claims it"
                  % a.opened[:16])
    print("   ok: %d shards in data/ (regular, the scheduler's, 0444, named by their sha256, valid), "
          "%d quarantined, accounted for" % (len(names), len(quarantine)))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("swap")
    s.add_argument("--dir", required=True)
    s.add_argument("--on", required=True)
    s.add_argument("--ready", required=True)
    s.add_argument("--timeout", type=float, default=30)
    s.add_argument("--all", action="store_true")
    s.add_argument("--last-delay", type=float, default=0)
    s.add_argument("pairs", nargs="+")
    s = sub.add_parser("make-shard")
    s.add_argument("out")
    s.add_argument("--from", dest="sources", nargs="+", required=True)
    s.add_argument("--roll", type=int, default=0)
    s.add_argument("--label10", type=int)
    s = sub.add_parser("chunked")
    s.add_argument("out")
    s.add_argument("--like", required=True)
    s.add_argument("--rows", type=int, default=1000000)
    s = sub.add_parser("try-modify")
    s.add_argument("file")
    s = sub.add_parser("try-open-write")
    s.add_argument("file")
    s = sub.add_parser("check")
    s.add_argument("root")
    s.add_argument("--shards", required=True)
    s.add_argument("--quarantine", required=True)
    s.add_argument("--uid", type=int, required=True)
    s.add_argument("--spec", required=True)
    s.add_argument("--forbid-inode", nargs="*")
    s.add_argument("--opened")
    a = ap.parse_args()
    {"swap": swap, "make-shard": make_shard, "chunked": chunked, "try-modify": try_modify,
     "try-open-write": try_open_write, "check": check}[a.cmd](a)


if __name__ == "__main__":
    main()
