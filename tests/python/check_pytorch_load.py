"""A checkpoint loads into the equivalent PyTorch module and reproduces the trainer's logits.

usage: check_pytorch_load.py CHECKPOINT TEST_SHARD_DIR EVAL_JSON
EVAL_JSON is `perennial eval --model CHECKPOINT --data TEST_SHARD_DIR --logits N --json FILE`.
"""
import glob
import json
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import perennial_load as pl  # noqa: E402

ckpt, test_dir, eval_json = sys.argv[1:4]
expected = json.load(open(eval_json))
n = len(expected["logits"])

images, labels = [], []
for shard in sorted(glob.glob(os.path.join(test_dir, "*.h5"))):
    with h5py.File(shard, "r") as f:
        images.append(np.array(f["images"]))
        labels.append(np.array(f["labels"]))
images = torch.from_numpy(np.concatenate(images)).float() / 255
labels = torch.from_numpy(np.concatenate(labels))

torch.set_num_threads(1)
model = pl.load_model(ckpt)
with torch.no_grad():
    logits = model(images)
got = logits[:n]
want = torch.tensor(expected["logits"])
diff = (got - want).abs().max().item()
assert diff < 1e-4, f"logits differ from the trainer's by {diff}"
accuracy = (logits.argmax(1) == labels).sum().item() / len(labels)
loss = torch.nn.functional.cross_entropy(logits, labels).item()
assert abs(accuracy - expected["accuracy"]) < 1e-9, f"accuracy {accuracy} vs trainer's {expected['accuracy']}"
assert abs(loss - expected["loss"]) < 1e-4, f"loss {loss} vs trainer's {expected['loss']}"
print(f"pytorch load ok: max |logit diff| {diff:.2e}, accuracy {accuracy:.4f}, loss {loss:.5f}")
