"""Every message docs/troubleshooting.md quotes is one that users can meet: each quoted message
(the first column's `code spans`) is found in the project's sources or in what the binary (or
mpirun) prints for a few bad command lines.

A quoted message is literal text with placeholders: a word in capitals (FILE, KEY, N, R/W, ...)
stands for a value, and "..." for any text. The literal pieces between placeholders (those with
at least 4 characters and a letter) must each occur as they are. Exits 1 listing the rows whose
pieces occur nowhere.

usage: docs_messages.py PERENNIAL SOURCE_DIR [MPIEXEC]
"""
import glob
import os
import re
import subprocess
import sys
import tempfile

perennial, src = sys.argv[1], sys.argv[2]
mpiexec = sys.argv[3] if len(sys.argv) > 3 else "mpirun"

# The project's own text: its C++ sources and scripts.
sources = []
for pattern in ("common/**/*", "checkpoint/**/*", "dataset/**/*", "trainer/**/*", "scheduler/**/*", "cli/**/*", "slurm/*"):
    for path in glob.glob(os.path.join(src, pattern), recursive=True):
        if os.path.isfile(path) and path.endswith((".cpp", ".h", ".sbatch", ".sh")):
            sources.append(open(path, encoding="utf-8", errors="replace").read())
text = "\n".join(sources)

# What the programs print for bad command lines: Boost.Program_options' and Open MPI's messages.
with tempfile.TemporaryDirectory() as tmp:
    open(os.path.join(tmp, "train.cfg"), "w").write("[model]\narch = mlp\n")
    open(os.path.join(tmp, "sched.cfg"), "w").write("[train]\nconfig = train.cfg\nholdout = missing\n")
    probes = [
        [perennial, "train", "--train.epoch=3", "--run-dir", tmp],
        [perennial, "sched", "status", "--roo", tmp],
        [perennial, "sched", "tick", "--root", os.path.join(tmp, "root"), "--config", os.path.join(tmp, "sched.cfg")],
        [perennial, "registry", "promote", "--root", os.path.join(tmp, "root"), "../x", "v1"],
        [mpiexec, "--allow-run-as-root", "-np", "100000", "true"],
    ]
    if os.geteuid() == 0:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMPI_ALLOW_RUN_AS_ROOT")}
        probes.append(([mpiexec, "-np", "1", "true"], env))
    for probe in probes:
        argv, env = probe if isinstance(probe, tuple) else (probe, None)
        try:
            out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
            text += "\n" + out.stdout + out.stderr
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"probe {argv[:3]} failed: {e}", file=sys.stderr)

placeholder = re.compile(r"\.\.\.|\b[A-Z][A-Z0-9_]*(?:/[A-Z][A-Z0-9_]*)*\b")
doc = os.path.join(src, "docs/troubleshooting.md")
missing, checked = [], 0
for lineno, line in enumerate(open(doc, encoding="utf-8"), 1):
    if not line.startswith("|") or set(line.strip()) <= set("|-: "):
        continue
    first = line.split("|")[1]
    for quoted in re.findall(r"`([^`]+)`", first):
        pieces = [p.strip() for p in placeholder.split(quoted)]
        pieces = [p for p in pieces if len(p) >= 4 and re.search(r"[a-z]", p)]
        checked += bool(pieces)
        absent = [p for p in pieces if p not in text]
        if absent:
            missing.append(f"docs/troubleshooting.md:{lineno}: `{quoted}`: not found: {absent}")
if missing:
    print("\n".join(missing), file=sys.stderr)
    print(f"FAIL: {len(missing)} quoted message(s) that neither the code nor the programs produce", file=sys.stderr)
    sys.exit(1)
if checked < 20:
    sys.exit(f"FAIL: only {checked} quoted messages found in {doc}: the table format changed?")
print(f"PASS: the {checked} messages docs/troubleshooting.md quotes occur in the code or the programs' output")
