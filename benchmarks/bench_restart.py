"""Lanczos beyond memory: top-k Hessian eigenpairs of a 100M-parameter model within a few GiB.

    .venv/bin/python benchmarks/bench_restart.py [--budget 6GiB] [--k 3] [--quick]

The model is an MLP 8,192 → 12,288 (tanh) → 10 with 100.8M parameters on 32 random samples
(cross-entropy, float32). The unrestarted Lanczos basis of this run would hold every product
(400 MB each); with the budget it is thick-restarted instead. Reported: products, restarts,
wall time, peak resident memory, the eigenvalues and their residuals ‖Hv − λv‖/|λ| measured
with one more product each (not the bounds Lanczos reports). ``--quick`` uses a 1M-parameter
twin and also runs it without a budget, to show both give the same eigenvalues. Results go to
benchmarks/results/bench_restart.json (bench_restart_quick.json with --quick,
bench_restart_<budget>.json for another budget).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from landscaper import Objective, top_eigenpairs
from landscaper._utils import parse_bytes
from landscaper.hessian import HessianOperator

RESULTS = Path(__file__).resolve().parent / "results"
START = time.perf_counter()


def case(width_in: int, width_hidden: int) -> Objective:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width_in, width_hidden), nn.Tanh(),
                          nn.Linear(width_hidden, 10)).eval()
    x, y = torch.randn(32, width_in), torch.randint(0, 10, (32,))
    return Objective(model, (x, y), nn.functional.cross_entropy, memory_budget="8GiB")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(obj: Objective, k: int, budget: str | None, restarts: list[int]) -> dict:
    start = time.perf_counter()
    result = top_eigenpairs(obj, k=k, memory_budget=budget)
    seconds = time.perf_counter() - start
    op = HessianOperator(obj)
    measured = [float((op.matvec(v) - lam * v).norm() / abs(lam))
                for lam, v in zip(result.eigenvalues, result.eigenvectors, strict=True)]
    return {"budget": budget, "eigenvalues": result.eigenvalues.tolist(),
            "n_hvp": result.n_hvp, "restarts": restarts.pop() if restarts else 0,
            "converged": result.converged, "seconds": seconds,
            "relative_residuals_measured": measured, "peak_rss_gib": peak_gib()}


class RestartCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "thick restart" in record.getMessage():
            self.count += 1
            if self.count % 5 == 0:  # a long run shows that it is moving
                print(f"  {self.count} restarts, {time.perf_counter() - START:.0f} s",
                      flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="6GiB")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    counter = RestartCounter()
    hessian_log = logging.getLogger("landscaper.hessian")
    hessian_log.setLevel(logging.DEBUG)
    hessian_log.addHandler(counter)
    widths = (512, 2000) if args.quick else (8192, 12288)
    obj = case(*widths)
    p = obj.num_params
    vector = p * 4
    budget = args.budget if not args.quick else str(12 * vector)
    print(f"MLP {widths[0]} -> {widths[1]} -> 10: {p:,} parameters, one vector "
          f"{vector / 2**20:.0f} MiB; budget {budget} holds "
          f"{parse_bytes(budget) // vector} vectors")
    rows = []
    for b in ([budget, None] if args.quick else [budget]):
        counter.count = 0
        row = run(obj, args.k, b, [])
        row["restarts"] = counter.count
        rows.append(row)
        values = np.array2string(np.array(row["eigenvalues"]), precision=6)
        residuals = ", ".join(f"{r:.1e}" for r in row["relative_residuals_measured"])
        print(f"budget {b}: {row['n_hvp']} products, {row['restarts']} restarts, "
              f"{row['seconds']:.1f} s, peak RSS {row['peak_rss_gib']:.2f} GiB, eigenvalues "
              f"{values}, measured relative residuals [{residuals}]")
    unrestarted = rows[0]["n_hvp"] * vector
    print(f"an unrestarted basis of the same run would take {unrestarted / 2**30:.1f} GiB")
    RESULTS.mkdir(exist_ok=True)
    name = ("bench_restart_quick.json" if args.quick else "bench_restart.json"
            if args.budget == parser.get_default("budget") else
            f"bench_restart_{args.budget}.json")
    (RESULTS / name).write_text(json.dumps(
        {"parameters": p, "k": args.k, "unrestarted_basis_gib": unrestarted / 2**30,
         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
