#!/usr/bin/python3
"""Plain PyTorch peer of `configs/fashion-mlp.cfg` for the time-to-accuracy benchmark.

One process, 2 threads (the machine's 2 cores: LibTorch's and OpenBLAS's pools, idle OpenMP
workers passive; see below), the same MLP (784-256-128-100-10:
nn.Sequential(Flatten, Linear, ReLU, Linear, ReLU, Linear, ReLU, Linear)), batch 128, the same
number of epochs, Adam with a cosine learning rate (stepped every batch, to zero at the end), the
same Fashion-MNIST shards read with h5py (images / 255). The test set is evaluated after every
epoch; each evaluation is recorded with its Unix time, so the harness (time_to_accuracy.sh) can
tell when the run first reached a test accuracy.

    /usr/bin/python3 benchmarks/quality/pytorch_peer.py --data /tmp/fm --out /tmp/peer.json

Writes JSON: {"evals": [{"epoch", "test_accuracy", "test_loss", "unix_time"}], "start_unix_time",
configuration}. Run with Debian's /usr/bin/python3 (python3-torch, python3-h5py).
"""
import argparse
import json
import os
import sys
import time

START = time.time()


def _threads_from_argv(argv, default=2):
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return str(default)


# Both of the process's thread pools get --threads: LibTorch's OpenMP pool and OpenBLAS's own
# pthreads (Debian's LibTorch calls OpenBLAS, which does not follow torch.set_num_threads). With
# OpenMP's default wait policy its idle workers spin while OpenBLAS computes, and the two pools
# fight over the cores: this peer then ran 5x slower (7.7 s an epoch instead of 1.6 s on the 2-core
# benchmark machine). Set before torch is imported; values in the environment win.
os.environ.setdefault("OMP_NUM_THREADS", _threads_from_argv(sys.argv))
os.environ.setdefault("OPENBLAS_NUM_THREADS", _threads_from_argv(sys.argv))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import shards  # noqa: E402  (benchmarks/shards.py)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/tmp/fm", help="directory with train/ and test/ shards (default /tmp/fm)")
    p.add_argument("--epochs", type=int, default=20, help="epochs (default 20, as configs/fashion-mlp.cfg)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128: fashion-mlp.cfg's global batch at 2 ranks)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    p.add_argument("--out", required=True, help="JSON file for the results")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def load_shards(directory):
    images, labels = shards.load_shards(directory, "pytorch_peer")
    x = torch.from_numpy(images).float().div_(255.0)
    return x.reshape(x.shape[0], -1), torch.from_numpy(labels)


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y = load_shards(os.path.join(args.data, "train"))
    test_x, test_y = load_shards(os.path.join(args.data, "test"))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 100), nn.ReLU(), nn.Linear(100, 10))
    steps_per_epoch = train_x.shape[0] // args.batch_size
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)
    evals = []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(train_x.shape[0])
        for s in range(steps_per_epoch):
            idx = order[s * args.batch_size:(s + 1) * args.batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            logits = model(test_x)
            acc = (logits.argmax(1) == test_y).float().mean().item()
            test_loss = F.cross_entropy(logits, test_y).item()
        evals.append({"epoch": epoch + 1, "test_accuracy": acc, "test_loss": test_loss, "unix_time": time.time()})
        print(f"epoch {epoch + 1}: test accuracy {acc:.4f}, test loss {test_loss:.4f}, "
              f"{time.time() - START:.1f} s", flush=True)
    result = {"system": "pytorch", "torch_version": torch.__version__, "threads": torch.get_num_threads(),
              "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "adam", "lr": args.lr,
              "schedule": "cosine", "start_unix_time": START, "evals": evals}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
