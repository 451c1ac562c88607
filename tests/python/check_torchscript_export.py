"""A model.pt that Perennial exported (NOTE [TorchScript export]) loads in PyTorch with
torch.jit.load alone, holds the weights of its model.h5 under the same names, and reproduces the
trainer's logits.

usage: check_torchscript_export.py MODEL_PT MODEL_H5 SHARD_DIR EVAL_JSON
EVAL_JSON is `perennial eval --model MODEL_H5 --data SHARD_DIR --logits N --json FILE`. The logits
agree to 1e-4 (as check_pytorch_load.py asks): PyTorch's own build of the operators may sum in
another order than the trainer's LibTorch.
"""
import glob
import json
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread, as the trainer: fewer orders of sums

import h5py
import numpy as np
import torch

model_pt, model_h5, shard_dir, eval_json = sys.argv[1:5]
expected = torch.tensor(json.load(open(eval_json))["logits"])
n = expected.shape[0]

torch.set_num_threads(1)
model = torch.jit.load(model_pt)
assert not model.training, "model.pt should be saved in eval mode"

with h5py.File(model_h5, "r") as f:
    g = f["state_dict"]
    order = g.attrs["order"]
    order = order.decode() if isinstance(order, bytes) else order
    weights = {name: torch.from_numpy(np.array(g[name])) for name in order.split("\n") if name}
params = dict(model.named_parameters())
assert list(params) == [k for k in weights if k in params] and set(params) == set(weights), (list(params), list(weights))
for name, w in weights.items():
    assert torch.equal(params[name].detach(), w), f"{name} differs from model.h5"
    assert params[name].requires_grad, f"{name} is not trainable"

images = []
for shard in sorted(glob.glob(os.path.join(shard_dir, "*.h5"))):
    with h5py.File(shard, "r") as f:
        images.append(np.array(f["images"]))
x = torch.from_numpy(np.concatenate(images)[:n]).float() / 255
with torch.no_grad():
    got = model(x)
diff = (got - expected).abs().max().item()
assert diff <= 1e-4, f"logits differ from the trainer's by {diff}"
print(f"{model_pt}: loads in PyTorch {torch.__version__}, {len(params)} parameters as in model.h5, "
      f"max |logit - trainer's| {diff:.2e} over {n} rows")
