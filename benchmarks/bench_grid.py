"""Grid evaluation throughput: ours, the batched-forward roofline, and Landscaper 1.3.1.

    .venv/bin/python benchmarks/bench_grid.py [--quick] [--memory-budget 1GiB]

For each model, in one run and on the same model, data, directions and number of points:
  (a) ours: `landscaper.sampling.sample_grid` (points built as θ₀ + A·D per chunk, vmapped);
  (b) the roofline: the same vmapped batched forward pass on prebuilt parameter vectors, i.e.
      points/s if every point cost exactly one batched forward of the same loss;
  (c) Landscaper 1.3.1 `compute_loss_landscape` in its own virtual environment.
Cases: the digits MLP (4,810 params, 1,797 samples; the forward pass is the limit), a wide CNN
(1.15M params; the forward pass dominates), and a PINN-sized 2-50-50-1 MLP on 1,000 and on
100 collocation points (cheap forward: per-point overhead dominates, more so with 100 points).
Our side runs in a fresh subprocess per case so its peak memory (VmHWM) is reported against
the memory budget.

Targets (issue 3): ≥ 0.9× roofline everywhere, ≥ 1.4× Landscaper on the digits MLP, ≥ 5×
Landscaper in the cheap-forward regime, memory within the budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_models
import numpy as np
import torch
from peers.envs import run_peer

RESULTS = Path(__file__).resolve().parent / "results"
# name, model, samples, steps per axis, dims
CASES = [
    ("digits MLP", "digits_mlp", 1797, 41, 2),
    ("wide CNN (1.15M)", "wide_cnn", 256, 11, 2),
    ("PINN MLP, 1000 points", "pinn_mlp", 1000, 41, 2),
    ("PINN MLP, 100 points", "pinn_mlp", 100, 41, 2),
]
QUICK_CASES = [
    ("digits MLP", "digits_mlp", 1797, 21, 2),
    ("PINN MLP, 100 points", "pinn_mlp", 100, 21, 2),
]


def vm_hwm_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def make_case(path: Path, model_name: str, n_samples: int) -> Path:
    if model_name == "pinn_mlp":
        x, y = bench_models.random_data(model_name, n=n_samples, seed=0)
    else:
        x, y = bench_models.digits_data(n_samples)
    model = bench_models.make_model(model_name, seed=0)
    from landscaper import Objective, random_directions

    loss = torch.nn.functional.mse_loss if model_name == "pinn_mlp" else (
        torch.nn.functional.cross_entropy)
    obj = Objective(model.eval(), (torch.from_numpy(x), torch.from_numpy(y)), loss)
    dirs = random_directions(obj, k=2, seed=0).vectors.numpy()
    return bench_models.save_case(path, model_name, model, x, y, {"dirs": dirs})


def run_ours(case_path: str, steps: int, dims: int, budget: str, repeats: int) -> dict:
    """Our grid and the roofline on the case, median of ``repeats`` runs each."""
    from landscaper import Objective
    from landscaper.sampling import estimate_grid, grid_axes, sample_grid

    case = bench_models.load_case(case_path)
    model = case["model"].eval()
    loss = torch.nn.functional.mse_loss if case["model_name"] == "pinn_mlp" else (
        torch.nn.functional.cross_entropy)
    obj = Objective(model, (case["X"], case["y"]), loss, memory_budget=budget)
    dirs = torch.from_numpy(case["extra"]["dirs"][:dims]).to(obj.dtype)
    axes = grid_axes(steps, 0.5, dims)
    n_points = steps**dims
    baseline = vm_hwm_gib()
    chunk = estimate_grid(obj, n_points).chunk_size  # the tuned vmap chunk sample_grid uses
    ours, roof = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        sample_grid(obj, dirs, axes, progress=False)
        ours.append(time.perf_counter() - start)
        thetas = obj.theta0.expand(min(chunk, n_points), -1).contiguous()
        start = time.perf_counter()
        done = 0
        while done < n_points:  # same chunking, same vmapped forward, no grid machinery
            block = thetas[: min(chunk, n_points - done)]
            obj.batch(block, chunk_size=block.shape[0])
            done += block.shape[0]
        roof.append(time.perf_counter() - start)
    return {
        "points": n_points, "chunk": int(chunk), "ours_seconds": float(np.median(ours)),
        "roofline_seconds": float(np.median(roof)), "peak_rss_gib": vm_hwm_gib(),
        "baseline_rss_gib": baseline, "threads": torch.get_num_threads(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids, no CNN")
    parser.add_argument("--memory-budget", default="1GiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = run_ours(args.one[0], int(args.one[1]), int(args.one[2]), args.memory_budget,
                          args.repeats)
        print(json.dumps(result))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model_name, n_samples, steps, dims in (QUICK_CASES if args.quick else CASES):
            case = make_case(Path(tmp) / f"{model_name}.npz", model_name, n_samples)
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(case), str(steps), str(dims),
                 "--memory-budget", args.memory_budget, "--repeats", str(args.repeats)],
                capture_output=True, text=True, check=True)
            ours = json.loads(proc.stdout.strip().splitlines()[-1])
            peer_times = []
            for _ in range(args.repeats):
                peer = run_peer("landscaper131", "landscaper_grid.py",
                                [case, "--out", Path(tmp) / "peer.npz", "--steps", steps,
                                 "--dim", dims, "--threads", torch.get_num_threads(),
                                 "--no-check"], timeout_s=1200)
                peer_times.append(peer["wall_seconds"])
            n = ours["points"]
            row = {"case": label, "samples": n_samples, "grid": f"{steps}^{dims}", **ours,
                   "landscaper_seconds": float(np.median(peer_times))}
            row["ours_pps"] = n / row["ours_seconds"]
            row["roofline_pps"] = n / row["roofline_seconds"]
            row["landscaper_pps"] = n / row["landscaper_seconds"]
            rows.append(row)
    print(f"{'case':<25} {'grid':>6} {'ours pts/s':>10} {'roofline':>9} {'L131':>9} "
          f"{'ours/roof':>9} {'ours/L131':>9} {'peak GiB':>8}")
    for r in rows:
        print(f"{r['case']:<25} {r['grid']:>6} {r['ours_pps']:>10.0f} {r['roofline_pps']:>9.0f} "
              f"{r['landscaper_pps']:>9.0f} {r['ours_pps'] / r['roofline_pps']:>9.2f} "
              f"{r['ours_pps'] / r['landscaper_pps']:>9.2f} {r['peak_rss_gib']:>8.2f}")
    print(f"\nmedians of {args.repeats} runs; memory budget {args.memory_budget} for batched "
          "evaluation (peak RSS includes the interpreter, torch and the data)")
    RESULTS.mkdir(exist_ok=True)
    name = "bench_grid_quick.json" if args.quick else "bench_grid.json"
    (RESULTS / name).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
