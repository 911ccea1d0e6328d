"""Landscapes of a parameter subset: reuse of the frozen computation against full evaluation.

    python benchmarks/bench_subset.py [--steps 21] [--skip-peer] [--only CASE ...]

Each case runs in one process with ``Objective(..., reuse_frozen=True)`` (the default: calls θ
does not change computed once per batch, the first layers θ reaches answered from k + 1
products) and with ``reuse_frozen=False`` (every layer at every point), on the same model,
data and directions, and reports the ratio (the two CNN cases, under 2 s each, run 7 and 3
pairs in turn and report the median of the paired ratios: this machine's speed drifts):

* all-MiniLM-L6-v2 (real weights) + a fitted 3-class head, θ = layer 5's output dense + head
  (591,363 parameters): 21×21 grid along the top-2 Hessian eigenvectors, and Lanczos top-3
  (timed with and without building the Objective, which records the frozen encoder);
* the same model, θ = the classifier head only (1,155 parameters): 21×21 grid;
* the digits CNN (``landscaper.examples.digits_cnn`` layers, 1,797 digits), θ = its last
  Linear (650 parameters): 41×41 grid, beside Landscaper 1.3.1's ``compute_loss_landscape``
  on the same model, whose convolutions are buffers so that it perturbs the head alone
  (``bench_models.digits_cnn_head``), in its own environment;
* the 1.15M-parameter wide CNN (``bench_models.wide_cnn``), θ = its last Linear: 21×21 grid.

Targets (issue 15): grid ≥ 10× (MiniLM subset), ≥ 100× (MiniLM head), ≥ 5× (digits CNN head);
Lanczos ≥ 3×. Writes ``benchmarks/results/bench_subset.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_hf  # noqa: E402
import bench_models  # noqa: E402
from peers.envs import run_peer  # noqa: E402

from landscaper import Landscape, Objective, top_eigenpairs  # noqa: E402
from landscaper.directions import random_directions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MINILM_SUBSET = ["encoder.encoder.layer.5.output.dense.*", "head.*"]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def grid_pair(make_objective, directions: torch.Tensor, steps: int, extent: float,
              repeats: int = 1) -> dict:
    """The same grid with reuse on and off, ``repeats`` times in turn (a fresh objective each
    time, so planning is timed too): median seconds, points/s, the median of the paired
    ratios and the largest gap between the two grids."""
    times: dict[str, list[float]] = {"reuse": [], "full": []}
    losses = {}
    for _ in range(repeats):
        for reuse in (True, False):
            objective = make_objective(reuse)
            land, seconds = timed(lambda objective=objective: Landscape.compute(
                objective=objective, directions=directions, steps=steps, extent=extent,
                progress=False))
            key = "reuse" if reuse else "full"
            times[key].append(seconds)
            losses[key] = land.loss
    row = {}
    for key, values in times.items():
        row[f"{key}_grid_s"] = float(np.median(values))
        row[f"{key}_points_per_s"] = losses[key].size / row[f"{key}_grid_s"]
        if repeats > 1:
            row[f"{key}_grid_s_runs"] = values
    row["speedup"] = float(np.median(np.array(times["full"]) / np.array(times["reuse"])))
    row["max_abs_gap"] = float(np.max(np.abs(losses["reuse"] - losses["full"])))
    row["max_rel_gap"] = float(np.max(np.abs(losses["reuse"] - losses["full"])
                                      / np.abs(losses["full"])))
    return row


def minilm_cases(steps: int) -> dict:
    model, batch, info = bench_hf.load_minilm()
    out: dict = {"model": "all-MiniLM-L6-v2 + head", **info}

    def objective(params, reuse):
        return Objective(model, batch, params=params, reuse_frozen=reuse)

    # Lanczos top-3 on the subset, with and without building the objective
    lanczos = {}
    for reuse in (True, False):
        built, build_s = timed(lambda reuse=reuse: objective(MINILM_SUBSET, reuse))
        eig, eig_s = timed(lambda built=built: top_eigenpairs(built, k=3))
        lanczos[reuse] = (eig, build_s, eig_s)
    on, off = lanczos[True], lanczos[False]
    out["lanczos_top3"] = {
        "params": on[0].eigenvectors.shape[1], "n_hvp": on[0].n_hvp,
        "eigenvalues": on[0].eigenvalues.tolist(),
        "eigenvalues_full": off[0].eigenvalues.tolist(),
        "reuse_s": on[1] + on[2], "full_s": off[1] + off[2],
        "speedup": (off[1] + off[2]) / (on[1] + on[2]),
        "reuse_lanczos_only_s": on[2], "full_lanczos_only_s": off[2],
        "speedup_lanczos_only": off[2] / on[2],
        "objective_build_s": {"reuse": on[1], "full": off[1]}}
    print(f"MiniLM subset Lanczos top-3: {out['lanczos_top3']['reuse_s']:.2f} s against "
          f"{out['lanczos_top3']['full_s']:.2f} s ({out['lanczos_top3']['speedup']:.1f}x; "
          f"Lanczos alone {out['lanczos_top3']['speedup_lanczos_only']:.1f}x)")
    out["subset_grid"] = {"params": MINILM_SUBSET, "steps": steps, **grid_pair(
        lambda reuse: objective(MINILM_SUBSET, reuse), on[0].eigenvectors[:2], steps, 0.05)}
    print(f"MiniLM subset {steps}x{steps} grid: {out['subset_grid']['speedup']:.1f}x "
          f"({out['subset_grid']['reuse_grid_s']:.2f} s against "
          f"{out['subset_grid']['full_grid_s']:.1f} s)")
    head = objective(["head.*"], True)
    head_dirs = random_directions(head, 2, seed=0).vectors
    out["head_grid"] = {"params": ["head.*"], "steps": steps, **grid_pair(
        lambda reuse: objective(["head.*"], reuse), torch.as_tensor(head_dirs), steps, 0.5)}
    print(f"MiniLM head {steps}x{steps} grid: {out['head_grid']['speedup']:.1f}x "
          f"({out['head_grid']['reuse_grid_s']:.2f} s against "
          f"{out['head_grid']['full_grid_s']:.1f} s)")
    return out


def digits_cnn_case(steps: int, skip_peer: bool) -> dict:
    model = bench_models.make_model("digits_cnn_head").eval()
    x, y = bench_models.digits_data()
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def objective(reuse):
        return Objective(model, (x, y), F.cross_entropy, reuse_frozen=reuse)

    directions = torch.as_tensor(random_directions(objective(True), 2, seed=0).vectors)
    row = {"model": "digits CNN (examples.digits_cnn layers), last Linear",
           "params": bench_models.n_params(model), "samples": len(y), "steps": steps,
           **grid_pair(objective, directions, steps, 0.5, repeats=7)}
    print(f"digits CNN head {steps}x{steps} grid: {row['speedup']:.1f}x, median of 7 pairs "
          f"({row['reuse_grid_s']:.2f} s against {row['full_grid_s']:.2f} s)")
    if not skip_peer:
        with tempfile.TemporaryDirectory() as tmp:
            case = bench_models.save_case(Path(tmp) / "case.npz", "digits_cnn_head", model,
                                          x, y, {"dirs": directions.double().numpy()})
            peer = run_peer("landscaper131", "landscaper_grid.py",
                            [case, "--out", Path(tmp) / "peer.npz", "--steps", steps,
                             "--dim", 2, "--threads", torch.get_num_threads(), "--no-check"],
                            timeout_s=1800)
        row["peer_landscaper131_s"] = peer.get("wall_seconds")
        row["peer_over_reuse"] = (row["peer_landscaper131_s"] / row["reuse_grid_s"]
                                  if row["peer_landscaper131_s"] else None)
        print(f"Landscaper 1.3.1 on the same head: {row['peer_landscaper131_s']:.2f} s "
              f"({row['peer_over_reuse']:.1f}x our time with reuse)")
    return row


def wide_cnn_case(steps: int) -> dict:
    """The 1.15M-parameter wide CNN, θ = its last Linear (5,130 parameters): a forward pass
    that dominates the loss, as in the CNNs people take landscapes of."""
    model = bench_models.make_model("wide_cnn").eval()
    x, y = bench_models.digits_data()
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def objective(reuse):
        return Objective(model, (x, y), F.cross_entropy, params="11.*", reuse_frozen=reuse)

    directions = torch.as_tensor(random_directions(objective(True), 2, seed=0).vectors)
    row = {"model": "wide CNN (bench_models.wide_cnn, 1,146,890 params), last Linear",
           "params": int(directions.shape[1]), "samples": len(y), "steps": steps,
           **grid_pair(objective, directions, steps, 0.5, repeats=3)}
    print(f"wide CNN head {steps}x{steps} grid: {row['speedup']:.1f}x, median of 3 pairs "
          f"({row['reuse_grid_s']:.2f} s against {row['full_grid_s']:.2f} s)")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=21, help="MiniLM grid points per axis")
    parser.add_argument("--cnn-steps", type=int, default=41, help="digits CNN points per axis")
    parser.add_argument("--wide-steps", type=int, default=21, help="wide CNN points per axis")
    parser.add_argument("--skip-peer", action="store_true", help="do not run Landscaper 1.3.1")
    parser.add_argument("--only", choices=sorted(CASES), action="append",
                        help="run these cases and update them in the results file")
    args = parser.parse_args()
    path = RESULTS / "bench_subset.json"
    result = json.loads(path.read_text()) if args.only and path.exists() else {}
    result["torch_threads"] = torch.get_num_threads()
    for name in args.only or CASES:
        result[name] = CASES[name](args)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


CASES = {
    "digits_cnn_head": lambda args: digits_cnn_case(args.cnn_steps, args.skip_peer),
    "wide_cnn_head": lambda args: wide_cnn_case(args.wide_steps),
    "minilm": lambda args: minilm_cases(args.steps),
}


if __name__ == "__main__":
    main()
