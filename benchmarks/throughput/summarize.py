#!/usr/bin/python3
"""Summarises a throughput benchmark directory written by run.sh (standard library only).

    summarize.py OUT_DIR [--json FILE]

OUT_DIR holds one directory per run, named <system>-<ranks>r-<repeat> (system: perennial, ddp or
bare). Perennial runs are `perennial train` run directories (metrics.jsonl, result.json); DDP runs
hold ddp.json from ddp_peer.py, bare runs bare.json from perennial_bench_bare_loop.

Both systems are measured the same way: samples/s of each window of --log-every steps (timed on
rank 0, each window closed by an all-reduce, so it covers every rank's work), the first window
dropped as warm-up, and windows with an epoch boundary strictly inside dropped too (Perennial's
would include or misreport evaluation time, DDP's the next epoch's set-up). A run's figure is the
median of its remaining windows; a configuration's figure is the median over its runs. For
Perennial and the bare loop it also prints the step-time breakdown (result.json's step_time_ms;
the bare loop's own), median per phase over the runs.
"""
import argparse
import json
import os
import re
import statistics
import sys

TARGETS = (
    # (numerator, denominator, minimum ratio, label)
    (("perennial", 2), ("perennial", 1), 1.8, "Perennial 2-rank / Perennial 1-rank"),
    (("perennial", 1), ("bare", 1), 1.0, "Perennial 1-rank / bare LibTorch loop"),
    (("perennial", 2), ("ddp", 2), 3.0, "Perennial 2-rank / DDP 2-rank"),
)
NAMES = {"perennial": "Perennial (MPI)", "ddp": "PyTorch DDP (gloo)", "bare": "bare LibTorch loop"}
RUN_DIR = re.compile(r"^(perennial|ddp|bare)-(\d+)r-(\d+)$")
PHASES = ("loader_wait", "forward", "backward", "reduce", "optimizer", "other", "loader_thread_cpu")


def perennial_windows(run_dir):
    """[(first_step, last_step, samples_per_second)] and the epoch boundaries (eval steps)."""
    windows, evals, prev = [], [], 0
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec["kind"] == "train":
                windows.append((prev + 1, rec["step"], rec["samples_per_second"]))
                prev = rec["step"]
            elif rec["kind"] == "eval":
                evals.append(rec["step"])
    # An evaluation at step e runs after step e; a window (first..last) has it strictly inside
    # when first <= e < last.
    return [w for w in windows if not any(w[0] <= e < w[1] for e in evals)], windows


def peer_windows(run_dir, name):
    with open(os.path.join(run_dir, name)) as f:
        windows = json.load(f)["windows"]
    kept = [(w["first_step"], w["last_step"], w["samples_per_second"]) for w in windows
            if not w["crosses_epoch"]]
    return kept, windows


def run_figure(system, run_dir):
    if system == "perennial":
        kept, all_windows = perennial_windows(run_dir)
    else:
        kept, all_windows = peer_windows(run_dir, "ddp.json" if system == "ddp" else "bare.json")
    kept = [w for w in kept if w[0] > 1]  # the first window is warm-up
    if not kept:
        raise SystemExit(f"summarize: {run_dir}: no usable windows ({len(all_windows)} in all); "
                         "raise the step count or lower the window size")
    figure = {"samples_per_second": statistics.median(w[2] for w in kept), "windows": len(kept)}
    if system == "perennial":
        with open(os.path.join(run_dir, "result.json")) as f:
            result = json.load(f)
        figure["result_samples_per_second"] = result["samples_per_second"]
        figure["step_time_ms"] = result.get("step_time_ms", {})
        figure["global_batch"] = result["global_batch"]
    else:
        with open(os.path.join(run_dir, "ddp.json" if system == "ddp" else "bare.json")) as f:
            peer = json.load(f)
        figure["step_time_ms"] = peer.get("step_time_ms", {})
        figure["global_batch"] = peer["global_batch"]
    return figure


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)

    runs = {}
    for name in sorted(os.listdir(args.out_dir)):
        m = RUN_DIR.match(name)
        if m:
            key = (m.group(1), int(m.group(2)))
            runs.setdefault(key, []).append(run_figure(m.group(1), os.path.join(args.out_dir, name)))
    if not runs:
        raise SystemExit(f"summarize: no run directories in {args.out_dir}")

    medians = {k: statistics.median(r["samples_per_second"] for r in v) for k, v in runs.items()}
    print(f"{'system':<20} {'ranks':>5} {'runs':>4} {'median samples/s':>17}   per run (median window)"
          "         result.json samples/s")
    for key in sorted(runs, key=lambda k: (k[0] != "perennial", k[1])):
        per_run = ", ".join(f"{r['samples_per_second']:.0f}" for r in runs[key])
        loop = ", ".join(f"{r['result_samples_per_second']:.0f}" for r in runs[key]
                         if "result_samples_per_second" in r)
        print(f"{NAMES[key[0]]:<20} {key[1]:>5} {len(runs[key]):>4} {medians[key]:>17.0f}   "
              f"{per_run:<30} {loop or '-'}")

    ratios = []
    print()
    for num, den, target, label in TARGETS:
        if num in medians and den in medians:
            ratio = medians[num] / medians[den]
            ratios.append({"ratio": label, "value": ratio, "target": target, "met": ratio >= target})
            print(f"{label:<38} {ratio:6.2f}x   (target >= {target}x: {'met' if ratio >= target else 'MISSED'})")
    if ("ddp", 2) in medians and ("ddp", 1) in medians:
        print(f"{'DDP 2-rank / DDP 1-rank (reference)':<38} {medians[('ddp', 2)] / medians[('ddp', 1)]:6.2f}x")

    breakdowns = {}
    for key in sorted(runs):
        per_phase = {p: [r["step_time_ms"][p] for r in runs[key] if p in r.get("step_time_ms", {})] for p in PHASES}
        if any(per_phase.values()):
            breakdowns[key] = {p: statistics.median(v) for p, v in per_phase.items() if v}
    if breakdowns:
        print()
        print("step time (ms per step, median over runs; rank 0):")
        print(f"{'':<26}" + "".join(f"{p:>18}" for p in PHASES) + f"{'step (from samples/s)':>24}")
        for key, b in breakdowns.items():
            step_ms = 1000.0 * runs[key][0]["global_batch"] / medians[key] if medians.get(key) else 0
            label = f"{NAMES[key[0]]} {key[1]}r"
            print(f"{label:<26}" + "".join(f"{b.get(p, float('nan')):>18.3f}" for p in PHASES) + f"{step_ms:>24.3f}")

    if args.json:
        summary = {"configurations": [{"system": k[0], "ranks": k[1], "median_samples_per_second": medians[k],
                                       "step_time_ms": breakdowns.get(k, {}), "runs": runs[k]}
                                      for k in sorted(runs)],
                   "ratios": ratios}
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
