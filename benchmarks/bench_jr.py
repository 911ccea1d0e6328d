"""Jump & retrain analysis cost: PHATE + kNN-graph persistence, and the out-of-core path.

    .venv/bin/python benchmarks/bench_jr.py [--quick] [--big-params 10_500_000 --big-samples 160]

Part 1: a 64-H-10 digits MLP with ≥ 100k parameters, real jump & retrain (4 seeds × 4 step
sizes × 39 epochs + jump points = 640 samples); we time the embedding (cosine PHATE) and the
kNN-graph persistence separately from retraining. Target (issue 5): < 30 s excluding retraining.

Part 2: the out-of-core path. Parameter vectors of a ≥ 10M-parameter model are written to a
memory-mapped file (synthetic random-walk trajectories: retraining such a model on 2 CPU cores
is not what is measured here) and embedded from the streamed Gram matrix; we report the peak
resident memory of that process against the size of the samples on disk.
Results go to benchmarks/results/bench_jr.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def status_gib(field: str) -> float:
    """A memory field of /proc/self/status (e.g. VmHWM, RssAnon) in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def vm_hwm_gib() -> float:
    return status_gib("VmHWM")


class AnonPeak:
    """Samples RssAnon every 20 ms: the process's own memory, without the mapped file pages
    that VmHWM also counts (those are page cache, reclaimable at any time)."""

    def __enter__(self) -> AnonPeak:
        import threading

        self.peak, self._stop = status_gib("RssAnon"), threading.Event()

        def watch() -> None:
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, status_gib("RssAnon"))

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def part_one(epochs: int, hidden: int) -> dict:
    from landscaper import JumpRetrain
    from landscaper.examples import digits_data, digits_mlp, train_classifier

    x, y = digits_data()
    model = train_classifier(digits_mlp(hidden=hidden), x, y, epochs=10)
    n_params = sum(p.numel() for p in model.parameters())
    batches = [(x[i : i + 128], y[i : i + 128]) for i in range(0, len(y), 128)]
    jr = JumpRetrain(model, batches, torch.nn.functional.cross_entropy,
                     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), epochs=epochs,
                     k=20, progress=False)
    jr.fit()
    return {"params": n_params, "samples": len(jr.samples_), **jr.timings,
            "embed_plus_topology_s": jr.timings["embed_s"] + jr.timings["topology_s"],
            "total_persistence": jr.total_persistence(),
            "essential": {d: jr.persistence_.n_essential(d) for d in (0, 1)}}


def part_two(n_params: int, n_samples: int, folder: Path) -> dict:
    """Runs in its own process: write a memmap of trajectories, embed it, measure VmHWM."""
    from landscaper.embedding import phate_embedding
    from landscaper.topology import total_persistence_of

    path = folder / "samples.npy"
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                      shape=(n_samples, n_params))
    rng = np.random.default_rng(0)
    start_vec = rng.standard_normal(n_params, dtype=np.float32)
    per_traj = 40
    start = time.perf_counter()
    for row in range(n_samples):
        if row % per_traj == 0:
            current = start_vec + rng.standard_normal(n_params, dtype=np.float32)
        else:
            current = current + 0.05 * rng.standard_normal(n_params, dtype=np.float32)
        store[row] = current
    store.flush()
    del store, current, start_vec
    write_s = time.perf_counter() - start
    samples = np.load(path, mmap_mode="r", allow_pickle=False)
    loss = np.linspace(1.0, 0.1, n_samples) + 0.01 * rng.standard_normal(n_samples)
    before = vm_hwm_gib()
    start = time.perf_counter()
    with AnonPeak() as anon:
        result = phate_embedding(samples, knn=5, seed=0)
    embed_s = time.perf_counter() - start
    totals = total_persistence_of(loss, result.potential_distances, k=20)
    return {"params": n_params, "samples": n_samples,
            "bytes_on_disk_gib": n_samples * n_params * 4 / 2**30, "write_s": write_s,
            "embed_s": embed_s, "peak_rss_gib": vm_hwm_gib(),
            "peak_anonymous_gib_during_embedding": anon.peak,
            "peak_rss_before_embedding_gib": before,
            "total_persistence": {int(k): float(v) for k, v in totals.total.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hidden", type=int, default=1500, help="MLP width (1500: 112k params)")
    parser.add_argument("--big-params", type=int, default=10_500_000)
    parser.add_argument("--big-samples", type=int, default=160)
    parser.add_argument("--part-two", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part_two:
        print(json.dumps(part_two(int(args.part_two[0]), int(args.part_two[1]),
                                  Path(args.part_two[2]))))
        return 0
    epochs = 9 if args.quick else 39
    one = part_one(epochs, args.hidden)
    print(f"part 1: {one['samples']} J&R samples of a {one['params']}-parameter MLP: "
          f"retraining {one['sample_s']:.1f} s, PHATE {one['embed_s']:.2f} s, graph persistence "
          f"{one['topology_s']:.2f} s -> {one['embed_plus_topology_s']:.2f} s excluding "
          f"retraining (target < 30 s); total persistence {one['total_persistence']}")
    big_params = 1_000_000 if args.quick else args.big_params
    big_samples = 80 if args.quick else args.big_samples
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        proc = subprocess.run([sys.executable, __file__, "--part-two", str(big_params),
                               str(big_samples), tmp], capture_output=True, text=True,
                              check=True)
    two = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"part 2: {two['samples']} x {two['params']} parameters out of core "
          f"({two['bytes_on_disk_gib']:.1f} GiB on disk): PHATE from the memmap in "
          f"{two['embed_s']:.1f} s; peak anonymous memory while embedding "
          f"{two['peak_anonymous_gib_during_embedding']:.2f} GiB (VmHWM "
          f"{two['peak_rss_gib']:.2f} GiB counts the mapped file pages too)")
    RESULTS.mkdir(exist_ok=True)
    name = "bench_jr_quick.json" if args.quick else "bench_jr.json"
    (RESULTS / name).write_text(json.dumps({"part_one": one, "part_two": two}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
