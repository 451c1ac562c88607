#!/usr/bin/python3
"""PyTorch DistributedDataParallel peer of `perennial train` for the throughput benchmark.

Trains the same MLP (784-256-10) as `perennial train --model.arch mlp --model.hidden 256` with
the same batch per rank, optimiser and data, on the gloo backend over localhost, and times the
training loop the way Perennial's metrics.jsonl does: one record per window of --log-every steps,
each closed by a small all-reduce of the window's loss (as Perennial does), so every window ends
on a synchronised step.

    /usr/bin/python3 benchmarks/throughput/ddp_peer.py --data /tmp/fm --ranks 2 --steps 3000 \
        --out /tmp/ddp2.json

Writes JSON (rank 0): the windows as {first_step, last_step, seconds, samples_per_second,
crosses_epoch}, and the configuration. Run it with Debian's /usr/bin/python3 (python3-torch and
python3-h5py); OMP_NUM_THREADS=1 is set here before torch is imported in each worker.

Why the data is preloaded: the fair peer is DDP at its best. Indexing an in-memory uint8 tensor
per batch (--loader tensor, the default) costs microseconds; a torch DataLoader over a
TensorDataset (--loader dataloader) collates sample by sample in Python and is shown only for
reference, as the way DDP is usually written.
"""
import argparse
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import shards  # noqa: E402  (benchmarks/shards.py)

# One intra-op thread per rank, as `perennial train --train.threads 1`; must precede the import
# of torch (here and in every spawned worker, which re-imports this module).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/tmp/fm", help="directory with train/ shards (default /tmp/fm)")
    p.add_argument("--ranks", type=int, default=2, help="number of processes (default 2)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per rank per step (default 64)")
    p.add_argument("--hidden", type=int, default=256, help="hidden layer width (default 256)")
    p.add_argument("--log-every", type=int, default=100, help="steps per timing window (default 100)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (Perennial's default 0.05)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (Perennial's default 0.9)")
    p.add_argument("--seed", type=int, default=42, help="seed of initialisation and sampling (default 42)")
    p.add_argument("--loader", choices=("tensor", "dataloader"), default="tensor",
                   help="batch by indexing a preloaded tensor (default) or through torch DataLoader")
    p.add_argument("--bucket-view", type=int, choices=(0, 1), default=1,
                   help="DDP gradient_as_bucket_view (default 1: no copies, as Perennial's reducer)")
    p.add_argument("--bind", type=int, choices=(0, 1), default=1,
                   help="pin rank r to CPU r mod ncpu (default 1: as mpirun's --bind-to core)")
    p.add_argument("--out", required=True, help="JSON file for the results (written by rank 0)")
    args = p.parse_args(argv)
    for name in ("ranks", "steps", "batch_size", "hidden", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def load_shards(directory):
    """All samples of a Perennial shard directory, in shard order: uint8 [N,28,28], int64 [N]."""
    images, labels = shards.load_shards(directory, "ddp_peer")
    return torch.from_numpy(images), torch.from_numpy(labels)


def loaded_blas():
    """The BLAS library mapped into this process (after a matmul has run)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
    except OSError:
        return "unknown"
    openblas = sorted(lib for lib in libs if "openblas" in lib)
    return (openblas or sorted(libs) or ["none"])[0]


def worker(rank, args, port):
    if args.bind and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[rank % len(cpus)]})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=args.ranks)
    world = dist.get_world_size()

    images, labels = load_shards(os.path.join(args.data, "train"))
    n = images.shape[0]
    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    # DDP broadcasts rank 0's parameters here, as Perennial's reducer does at start-up.
    ddp = DistributedDataParallel(model, gradient_as_bucket_view=bool(args.bucket_view))
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)

    dataset = TensorDataset(images, labels)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    # As Perennial: whole steps only; the epoch's remainder is dropped.
    steps_per_epoch = len(sampler) // args.batch_size
    if steps_per_epoch == 0:
        raise SystemExit("ddp_peer: batch size x ranks exceeds the training set")
    if args.loader == "dataloader":
        float_set = TensorDataset(images.float().div_(255.0), labels)
        loader = DataLoader(float_set, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                            num_workers=0)

    def batches(epoch):
        sampler.set_epoch(epoch)
        if args.loader == "dataloader":
            yield from loader
            return
        order = torch.tensor(list(sampler), dtype=torch.int64)
        for s in range(steps_per_epoch):
            idx = order[s * args.batch_size:(s + 1) * args.batch_size]
            yield images[idx].float().div_(255.0), labels[idx]

    global_batch = args.batch_size * world
    windows = []
    step = 0
    epoch = 0
    window_loss, window_steps, crosses_epoch = 0.0, 0, False
    dist.barrier()
    window_start = time.perf_counter()
    while step < args.steps:
        if step > 0:
            crosses_epoch = crosses_epoch or window_steps > 0
        for x, y in batches(epoch):
            if step >= args.steps:
                break
            opt.zero_grad()
            loss = F.cross_entropy(ddp(x), y)
            loss.backward()
            opt.step()
            window_loss += loss.item()
            window_steps += 1
            step += 1
            if step % args.log_every == 0 or step == args.steps:
                # The window's mean loss across ranks, one small all-reduce per window (the same
                # synchronisation point Perennial's trainer has).
                agg = torch.tensor([window_loss, float(window_steps)], dtype=torch.float64)
                dist.all_reduce(agg)
                seconds = time.perf_counter() - window_start
                windows.append({"first_step": step - window_steps + 1, "last_step": step,
                                "seconds": seconds,
                                "samples_per_second": window_steps * global_batch / seconds,
                                "loss": float(agg[0] / agg[1]), "crosses_epoch": crosses_epoch})
                window_loss, window_steps, crosses_epoch = 0.0, 0, False
                window_start = time.perf_counter()
        epoch += 1
    blas = loaded_blas()

    if rank == 0:
        result = {"system": "pytorch-ddp", "torch_version": torch.__version__, "backend": "gloo",
                  "ranks": world, "steps": step, "epochs_started": epoch,
                  "batch_size": args.batch_size, "global_batch": global_batch,
                  "hidden": args.hidden, "log_every": args.log_every, "lr": args.lr,
                  "momentum": args.momentum, "loader": args.loader,
                  "gradient_as_bucket_view": bool(args.bucket_view), "bind": bool(args.bind),
                  "torch_threads": torch.get_num_threads(), "blas": blas,
                  "train_samples": n, "windows": windows}
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.out)
    dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv):
    args = parse_args(argv)
    mp.spawn(worker, args=(args, free_port()), nprocs=args.ranks, join=True)
    with open(args.out) as f:
        result = json.load(f)
    if "openblas" not in result["blas"]:
        print(f"ddp_peer: warning: BLAS is {result['blas']}, not OpenBLAS", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
