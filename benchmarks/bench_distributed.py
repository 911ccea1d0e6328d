"""Speed-up of a grid sharded over several ranks (torch.distributed) versus one process.

    .venv/bin/python benchmarks/bench_distributed.py [--steps 41] [--ranks 2] [--repeats 3]

The grid: the digits CNN on all 1,797 samples (the forward pass dominates, ~7 ms per point on
one thread), two random directions, steps² points. The same grid, with the same chunking
(measured once, then fixed so the arrays can be compared bit for bit), runs in fresh processes
as
  (a) 1 rank × 1 thread,
  (b) 1 rank × R threads (intra-op parallelism: the fair single-process competitor),
  (c) R ranks × 1 thread, started by ``torchrun`` and meeting over gloo on loopback,
and the grid's wall time (from a barrier before `sample_grid` until every rank holds the full
array; process start-up and imports excluded) is reported with the speed-ups of (c).
(a) and (c) must agree bit for bit; (b) may differ in the last bits (threads split the
reductions differently).

On a multi-GPU node the same worker runs one rank per GPU with NCCL (each rank uses
``cuda:LOCAL_RANK``, chosen by `landscaper.distributed.init_from_env`):

    torchrun --nproc_per_node 8 benchmarks/bench_distributed.py --worker --device cuda
    python benchmarks/bench_distributed.py --worker --device cuda      # one GPU, to compare

Each prints one JSON line (rank 0) with the grid's seconds and points per second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import time


def build(device: str):
    """The digits CNN objective, its directions and the axes (identical in every process)."""
    import torch

    from landscaper import Objective, random_directions
    from landscaper.examples import digits_cnn, digits_data

    x, y = digits_data()
    model = digits_cnn(seed=0).eval().to(device)
    objective = Objective(model, (x, y), torch.nn.functional.cross_entropy)
    return objective, random_directions(objective, k=2, seed=0).vectors


def worker(args: argparse.Namespace) -> int:
    """One rank (or the only process): time the grid, print a JSON line on rank 0."""
    import torch
    import torch.distributed as dist

    from landscaper import distributed
    from landscaper.sampling import grid_axes, sample_grid

    torch.set_num_threads(args.threads)
    joined = distributed.init_from_env(args.device)
    try:
        objective, directions = build(str(distributed.local_device(args.device)))
        axes = grid_axes(args.steps, 0.5, 2)
        if joined:
            dist.barrier()
        start = time.perf_counter()
        loss = sample_grid(objective, directions, axes, chunk_size=args.chunk_size,
                           points_per_chunk=args.points_per_chunk, progress=False,
                           distributed=None)
        seconds = time.perf_counter() - start
        if distributed.rank() == 0:
            print(json.dumps({
                "ranks": distributed.world_size(), "threads": torch.get_num_threads(),
                "device": str(objective.device), "points": int(loss.size),
                "seconds": seconds, "points_per_s": loss.size / seconds,
                "sha256": hashlib.sha256(loss.tobytes()).hexdigest()}), flush=True)
    finally:
        if joined:
            dist.destroy_process_group()
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(ranks: int, threads: int, args: argparse.Namespace, chunk: int, points: int) -> dict:
    """One configuration in fresh processes; rank 0's JSON line."""
    worker_args = [__file__, "--worker", "--threads", str(threads), "--steps", str(args.steps),
                   "--chunk-size", str(chunk), "--points-per-chunk", str(points)]
    if ranks == 1:
        command = [sys.executable, *worker_args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                   str(ranks), "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                   *worker_args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{ranks} rank(s) × {threads} thread(s) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=41, help="points per axis (2-D grid)")
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the sharded run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    parser.add_argument("--worker", action="store_true",
                        help="run one rank (under torchrun) or one process, print JSON")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda with --worker")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (--worker)")
    parser.add_argument("--chunk-size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--points-per-chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import numpy as np
    import torch

    from landscaper.sampling import balanced_points_per_chunk, estimate_grid

    torch.set_num_threads(1)
    n_points = args.steps**2
    estimate = estimate_grid(build("cpu")[0], n_points)  # measured once, then fixed
    chunk = estimate.chunk_size
    points = balanced_points_per_chunk(estimate.points_per_chunk, n_points, chunk, args.ranks)
    load_before = os.getloadavg()[0]
    configs = [(1, 1), (1, args.ranks), (args.ranks, 1)]
    results: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
    for _ in range(args.repeats):  # interleaved, so load from elsewhere hits all alike
        for ranks, threads in configs:
            results[(ranks, threads)].append(run(ranks, threads, args, chunk, points))
    seconds = {c: float(np.median([r["seconds"] for r in rs])) for c, rs in results.items()}
    digests = {c: {r["sha256"] for r in rs} for c, rs in results.items()}
    single, threaded, sharded = configs
    print(f"digits CNN, 1,797 samples, {args.steps}x{args.steps} = {n_points} points, "
          f"{chunk} per vmapped call, {points} per chunk "
          f"({-(-n_points // points)} chunks); {os.cpu_count()} CPU cores")
    print(f"{'configuration':<24} {'grid s':>8} {'points/s':>9} {'speed-up of sharded':>20}")
    for ranks, threads in configs:
        s = seconds[(ranks, threads)]
        print(f"{f'{ranks} rank(s) x {threads} thread(s)':<24} {s:>8.2f} {n_points / s:>9.0f} "
              f"{s / seconds[sharded]:>19.2f}x")
    identical = digests[sharded] == digests[single] and len(digests[single]) == 1
    print(f"\nmedians of {args.repeats} runs each (grid only: start-up excluded); sharded == "
          f"1 rank x 1 thread bit for bit: {identical}; 1 rank x {args.ranks} threads "
          f"bit-identical too: {digests[threaded] == digests[single]}; 1-min load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other work on the machine "
          "slows the multi-core configurations most)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
