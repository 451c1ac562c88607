#!/usr/bin/env python3
"""Makes the demo's stream of Fashion-MNIST shards: what a production feed might deliver.

usage: demo_stream.py TRAIN_DIR OUT_DIR [--rows N] [--per-phase K]

Writes OUT_DIR/NN-<phase>.h5 (in arrival order), each a valid Perennial shard of N rows:
  clean     rows as imported
  shifted   a new camera: darker images (intensity x 0.55) and a different class mix
            (mostly bags, sandals, sneakers and boots: classes 5, 7, 8, 9)
  mislabel  an upstream labelling bug: many shirts-like 'dress' images (class 3) labelled as
            'shirt' (class 6)
Shards are drawn from the imported training set without replacement, deterministically.
"""
import argparse
import glob
import os

import h5py
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("train_dir")
ap.add_argument("out_dir")
ap.add_argument("--rows", type=int, default=2000)
ap.add_argument("--per-phase", type=int, nargs=4, default=[4, 4, 3, 3],
                help="clean, clean, shifted, mislabel shards")
a = ap.parse_args()

files = sorted(glob.glob(os.path.join(a.train_dir, "*.h5")))
with h5py.File(files[0], "r") as f:
    attrs = {k: f.attrs[k] for k in f.attrs}
images = np.concatenate([h5py.File(p, "r")["images"][()] for p in files])
labels = np.concatenate([h5py.File(p, "r")["labels"][()] for p in files])
rng = np.random.default_rng(2026)
unused = np.ones(len(labels), dtype=bool)


def take(n, classes=None, weights=None):
    """N unused row indices; with CLASSES, drawn by class with WEIGHTS."""
    if classes is None:
        idx = np.flatnonzero(unused)[:n]
    else:
        counts = np.round(np.array(weights) / np.sum(weights) * n).astype(int)
        counts[-1] = n - counts[:-1].sum()
        idx = np.concatenate([np.flatnonzero(unused & (labels == c))[:k] for c, k in zip(classes, counts)])
        idx = rng.permutation(idx)
    unused[idx] = False
    return idx


os.makedirs(a.out_dir, exist_ok=True)
n = 0


def write(phase, x, y):
    global n
    n += 1
    path = os.path.join(a.out_dir, "%02d-%s.h5" % (n, phase))
    with h5py.File(path + ".tmp", "w", track_order=True) as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("images", data=x.astype(np.uint8))
        f.create_dataset("labels", data=y.astype(np.int64))
    os.replace(path + ".tmp", path)


for _ in range(a.per_phase[0] + a.per_phase[1]):
    i = take(a.rows)
    write("clean", images[i], labels[i])
for _ in range(a.per_phase[2]):
    i = take(a.rows, classes=[5, 7, 8, 9, 0, 1, 2, 3, 4, 6], weights=[4, 4, 4, 4, 1, 1, 1, 1, 1, 1])
    write("shifted", np.clip(images[i].astype(np.float32) * 0.55, 0, 255), labels[i])
for _ in range(a.per_phase[3]):
    i = take(a.rows, classes=[3, 0, 1, 2, 4, 5, 6, 7, 8, 9], weights=[10, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    y = labels[i].copy()
    y[y == 3] = 6
    write("mislabel", images[i], y)
print("wrote %d shards of %d rows to %s" % (n, a.rows, a.out_dir))
