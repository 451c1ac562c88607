#!/usr/bin/env python3
"""Writes the bad shards of the scheduler's ingest tests, one per validation rule, next to a
valid shard they are derived from.

usage: make_shards.py VALID_SHARD OUT_DIR

Each file is named after the rule it must be quarantined for: <rule>--<what>.h5.
"""
import os
import shutil
import sys

import h5py
import numpy as np

valid, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)

with h5py.File(valid, "r") as f:
    images = f["images"][()]
    labels = f["labels"][()]
    attrs = {k: f.attrs[k] for k in f.attrs}


def write(name, imgs=images, labs=labels, drop_attr=None, attr_over=None, skip=()):
    path = os.path.join(out, name)
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            if k != drop_attr:
                f.attrs[k] = v
        for k, v in (attr_over or {}).items():
            f.attrs[k] = v
        if "images" not in skip:
            f.create_dataset("images", data=imgs)
        if "labels" not in skip:
            f.create_dataset("labels", data=labs)


with open(os.path.join(out, "hdf5--not-hdf5.h5"), "wb") as f:
    f.write(b"this is a CSV file, not HDF5\n1,2,3\n")
with open(valid, "rb") as f:
    data = f.read()
with open(os.path.join(out, "hdf5--truncated.h5"), "wb") as f:
    f.write(data[: len(data) // 2])
open(os.path.join(out, "hdf5--zero-bytes.h5"), "wb").close()
write("spec--no-spec-attributes.h5", drop_attr="spec.version")
write("spec--other-class-count.h5", attr_over={"spec.num_classes": np.int64(7)})
write("dataset--no-labels.h5", skip=("labels",))
write("dtype--float-images.h5", imgs=images.astype(np.float32))
write("dtype--int32-labels.h5", labs=labels.astype(np.int32))
write("shape--flat-images.h5", imgs=images.reshape(len(images), -1))
bad = labels.copy()
bad[3] = 10
write("labels--out-of-range.h5", labs=bad)
neg = labels.copy()
neg[0] = -1
write("labels--negative.h5", labs=neg)
write("empty--no-rows.h5", imgs=images[:0], labs=labels[:0])
write("rows--mismatched.h5", labs=labels[:-1])
write("size--oversized.h5", imgs=np.concatenate([images] * 5), labs=np.concatenate([labels] * 5))
shutil.copyfile(valid, os.path.join(out, "duplicate--same-bytes.h5"))
