#!/usr/bin/env bash
# Bring your own model (issue acceptance): a model defined and scripted in PyTorch (with batch
# norm, dropout and a parameter of its own) is trained data-parallel with 2 ranks by the
# scheduler, validated by the gate and registered; PyTorch then loads the registered weights
# (h5py state_dict into the Python module, and the registered model.pt) and reproduces the
# trainer's evaluation metrics on the holdout.
# usage: torchscript_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
scratch

"$bin" data import-fashion-mnist --out "$t/fm" --shard-size 2000 >/dev/null
mkdir -p "$t/holdout" "$t/root/incoming"
cp "$t/fm/test/shard-00000.h5" "$t/holdout/"

cat >"$t/net.py" <<'PY'
import torch
from torch import nn

class Net(nn.Module):
    """A module of the user's own: not an nn.Sequential, named submodules, batch norm's
    buffers, dropout, and a parameter outside any layer."""
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(64, 10)
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) / self.temperature
PY
$py - "$t" <<'PY'
import sys, torch
sys.path.insert(0, sys.argv[1])
from net import Net
torch.manual_seed(0)
torch.jit.script(Net()).save(sys.argv[1] + "/net.pt")
PY

cat >"$t/train.cfg" <<CFG
[model]
arch = torchscript
path = net.pt
[train]
epochs = 2
batch_size = 50
[optim]
lr = 0.05
[log]
progress = none
CFG
cat >"$t/sched.cfg" <<CFG
[train]
config = train.cfg
holdout = holdout
ranks = 2
[triggers]
new_data_rows = 4000
[executor]
mpirun_args = --oversubscribe
[gate]
min_accuracy = 0.6
CFG
cp "$t/fm/train/shard-00000.h5" "$t/fm/train/shard-00001.h5" "$t/root/incoming/"
sched_until_promoted "$bin" "$t/root" "$t/sched.cfg" "$t/sched.log" "the TorchScript run"
v="$t/root/registry/fashion-mnist/versions/v1"
[ -f "$v/model.pt" ] || fail "the registry version has no model.pt"
"$bin" registry verify --root "$t/root" fashion-mnist:v1 >/dev/null || fail "registry verify"
# The trainer's own evaluation of the registered model on the holdout.
"$bin" eval --model "$v/model.h5" --data "$t/holdout" --json "$t/eval.json" >"$t/eval.log" 2>&1 || { cat "$t/eval.log"; fail "eval"; }

$py - "$t" "$v" <<'PY'
import glob, json, sys
import h5py, numpy as np, torch
t, v = sys.argv[1], sys.argv[2]
sys.path.insert(0, t)
from net import Net

def state_dict(path):
    with h5py.File(path, "r") as f:
        g = f["state_dict"]
        order = g.attrs["order"]
        order = order.decode() if isinstance(order, bytes) else order
        return {n: torch.from_numpy(np.array(g[n])) for n in order.split("\n") if n}

sd = state_dict(v + "/model.h5")
model = Net()
model.load_state_dict(sd, strict=True)
model.eval()
x, y = [], []
for f in sorted(glob.glob(t + "/holdout/*.h5")):
    with h5py.File(f, "r") as h:
        x.append(torch.from_numpy(h["images"][()]).float() / 255)
        y.append(torch.from_numpy(h["labels"][()]))
x, y = torch.cat(x), torch.cat(y)
with torch.no_grad():
    logits = model(x)
    scripted = torch.jit.load(v + "/model.pt")
    scripted.eval()
    logits_pt = scripted(x)
acc = (logits.argmax(1) == y).double().mean().item()
loss = torch.nn.functional.cross_entropy(logits.double(), y).item()
ev = json.load(open(t + "/eval.json"))
print("python: accuracy %.6f loss %.6f; perennial eval: accuracy %.6f loss %.6f" % (acc, loss, ev["accuracy"], ev["loss"]))
assert abs(acc - ev["accuracy"]) < 1e-9, "accuracy differs"
assert abs(loss - ev["loss"]) < 1e-4, "loss differs"
assert torch.allclose(logits, logits_pt, atol=1e-5), "model.pt disagrees with the h5 weights"
res = json.load(open(glob.glob(t + "/root/runs/*/train/result.json")[0]))
assert res["world_size"] == 2, res
assert res["arch"] == "torchscript", res
# The registered weights are the trained ones, not the scripted module's initial ones.
init = torch.jit.load(t + "/net.pt").state_dict()
assert not torch.equal(init["head.weight"], sd["head.weight"]), "weights did not change"
assert sd["body.2.num_batches_tracked"].item() > 0, "batch norm statistics were not trained"
print("PASS")
PY
echo "PASS: a scripted PyTorch model trained with 2 ranks, gated, registered and reloaded in PyTorch"
