#!/usr/bin/env python3
"""PyTorch eager peer of `perennial train --config configs/fashion-cnn.cfg` on one device.

The same network as model.arch = cnn with conv_channels 32,64, kernel_size 5, fc_hidden 256,
dropout 0.3 (trainer/models/model_factory.cpp: Unflatten, [Conv2d(pad k/2), ReLU, MaxPool2d(2)]
x2, Flatten, Dropout, Linear(3136, 256), ReLU, Dropout, Linear(256, 10)), the same batch (64),
optimiser (SGD lr 0.05, momentum 0.9, weight decay 1e-4), schedule (200 warm-up steps, then
cosine over the epoch), pixels scaled to [0, 1], whole batches only. Timed the way Perennial's
result.json is: the training loop alone, with one loss.item() per step (the trainer reads each
step's loss too), summed over windows of --log-every steps.

Two loaders, each for --epochs epochs:
  host      each batch indexed from a uint8 tensor in host memory, scaled and copied to the device
            per step (what Perennial does: batches come from HDF5 on the host);
  resident  the whole training set on the device, batches indexed there (eager at its best).

    python3 benchmarks/gpu/eager_peer.py --idx .gpu-carry/fashion-mnist --device cuda --out peer.json

Reads the four IDX files (plain or .gz) or, with --shards DIR, Perennial's shard-*.h5 files.
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(directory, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    raise SystemExit(f"eager_peer: {stem}(.gz) not found in {directory}")


def load_idx(directory):
    x = read_idx(find(directory, "train-images-idx3-ubyte"))
    y = read_idx(find(directory, "train-labels-idx1-ubyte")).astype(np.int64)
    tx = read_idx(find(directory, "t10k-images-idx3-ubyte"))
    ty = read_idx(find(directory, "t10k-labels-idx1-ubyte")).astype(np.int64)
    return x, y, tx, ty


def load_shards(directory):
    """train/ and test/ of a Perennial data directory, with the throughput peer's reader."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "throughput"))
    from ddp_peer import load_shards as load  # noqa: E402 (h5py, only for --shards)
    return tuple(t.numpy() for t in load(os.path.join(directory, "train")) + load(os.path.join(directory, "test")))


def make_cnn(h=28, w=28, channels=(32, 64), k=5, fc=256, dropout=0.3, classes=10):
    layers = [nn.Unflatten(1, (1, h))]
    c = 1
    for out in channels:
        layers += [nn.Conv2d(c, out, k, padding=k // 2), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, fc), nn.ReLU(), nn.Dropout(dropout),
               nn.Linear(fc, classes)]
    return nn.Sequential(*layers)


def lr_at(step, base, warmup, total, min_lr=0.0):
    """trainer/optim/lr_schedule.cpp, schedule = cosine."""
    if step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(mode, args, device, x, y, tx, ty):
    torch.manual_seed(args.seed)
    model = make_cnn().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    n = x.shape[0]
    steps_per_epoch = n // args.batch_size
    total = steps_per_epoch * args.epochs
    if args.max_steps > 0:
        total_run = min(total, args.max_steps)
    else:
        total_run = total
    host_x = torch.from_numpy(x)
    host_y = torch.from_numpy(y)
    if mode == "resident":
        dev_x = host_x.to(device)
        dev_y = host_y.to(device)
    gen = torch.Generator().manual_seed(args.seed)
    windows, step = [], 0
    train_seconds = 0.0
    model.train()
    sync(device)
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=gen)
        window_start, window_steps = time.perf_counter(), 0
        for s in range(steps_per_epoch):
            if step >= total_run:
                break
            idx = order[s * args.batch_size:(s + 1) * args.batch_size]
            if mode == "resident":
                idx_d = idx.to(device, non_blocking=True)
                xb = dev_x.index_select(0, idx_d).float().div_(255.0)
                yb = dev_y.index_select(0, idx_d)
            else:
                xb = host_x.index_select(0, idx).float().div_(255.0).to(device, non_blocking=False)
                yb = host_y.index_select(0, idx).to(device, non_blocking=False)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, args.warmup, total)
            opt.zero_grad(set_to_none=False)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            loss_value = loss.item()  # one host sync per step, as the trainer's loss.item<double>()
            step += 1
            window_steps += 1
            if step % args.log_every == 0 or step == total_run or s + 1 == steps_per_epoch:
                secs = time.perf_counter() - window_start
                windows.append({"last_step": step, "steps": window_steps, "seconds": secs,
                                "samples_per_second": window_steps * args.batch_size / secs, "loss": loss_value})
                train_seconds += secs
                window_start, window_steps = time.perf_counter(), 0
    sync(device)
    # test accuracy (not timed), eval mode, batches of 1000
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, tx.shape[0], 1000):
            xb = torch.from_numpy(tx[b:b + 1000]).to(device).float().div_(255.0)
            yb = torch.from_numpy(ty[b:b + 1000]).to(device)
            correct += int((model(xb).argmax(1) == yb).sum().item())
    steady = [w["samples_per_second"] for w in windows[1:]] or [w["samples_per_second"] for w in windows]
    return {"loader": mode, "steps": step, "samples": step * args.batch_size, "train_seconds": train_seconds,
            "samples_per_second": step * args.batch_size / train_seconds if train_seconds > 0 else 0.0,
            "median_window_samples_per_second": float(np.median(steady)) if steady else 0.0,
            "test_accuracy": correct / tx.shape[0], "windows": windows}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--idx", help="directory with the four Fashion-MNIST IDX files (plain or .gz)")
    src.add_argument("--shards", help="a Perennial data directory (train/ and test/ shard-*.h5)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--loaders", default="host,resident", help="comma-separated: host, resident (default both)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: whole epochs)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the trainer's default is 1)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("eager_peer: CUDA is not available to this PyTorch")
    x, y, tx, ty = load_idx(args.idx) if args.idx else load_shards(args.shards)
    result = {"system": "pytorch-eager", "torch_version": torch.__version__,
              "cuda": torch.version.cuda, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
              "batch_size": args.batch_size, "epochs": args.epochs, "threads": args.threads,
              "train_samples": int(x.shape[0]), "runs": []}
    for mode in [m for m in args.loaders.split(",") if m]:
        if mode not in ("host", "resident"):
            raise SystemExit(f"eager_peer: unknown loader {mode}")
        r = run(mode, args, device, x, y, tx, ty)
        print(f"eager_peer: {mode:8s} {r['steps']} steps, {r['samples_per_second']:.0f} samples/s "
              f"(median window {r['median_window_samples_per_second']:.0f}), test accuracy {r['test_accuracy']:.4f}",
              flush=True)
        result["runs"].append(r)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
