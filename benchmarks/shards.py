"""Reading Perennial shard directories from the Python peers of the benchmarks (h5py)."""
import glob
import os

import h5py
import numpy as np


def load_shards(directory, who):
    """All samples of a shard directory, in shard order: uint8 images [N, ...] and int64 labels [N]
    as numpy arrays. WHO names the calling script in the error for an empty directory."""
    paths = sorted(glob.glob(os.path.join(directory, "shard-*.h5")))
    if not paths:
        raise SystemExit(f"{who}: no shard-*.h5 files in {directory}")
    images, labels = [], []
    for path in paths:
        with h5py.File(path, "r") as f:
            images.append(np.asarray(f["images"], dtype=np.uint8))
            labels.append(np.asarray(f["labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)
