"""The 4-D landscape of the convection PINN, end to end, with its roofline and stage times.

    python benchmarks/bench_pinn4d.py [--steps 21] [--device cpu] [--epochs 1000]

The convection PINN (β = 20, the standard 4×50 tanh net, 1,000 collocation points, 100 initial
and 100 boundary points) is trained with Adam, then: top-4 Hessian eigenvectors (Lanczos), a
4-D grid of ``steps⁴`` points along them, the merge tree, the basins and SMAD. Printed beside
the grid: the forward-only vmapped throughput of the same net on the same 1,200 points at
its fastest chunk, measured before and after the grid (the roofline of a loss that costs one
forward pass; the physics-informed loss also takes the input slopes of the 1,000
collocation points by one vjp, about one more pass over them). The machine's speed drifts
by up to 3x over minutes here, so compare the grid with the roofline, not across runs.
Training is timed but not part of "end to end". Writes
``benchmarks/results/bench_pinn4d[_<device>].json``.

Targets (issue 15): 21⁴ end to end ≤ 4 min on a 2-core CPU; 41⁴ ≤ 2 min on one GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from torch.func import functional_call, vmap

from landscaper import Landscape, Objective, top_eigenpairs
from landscaper.examples.pinn import ConvectionProblem, convection_loss, make_mlp, train_pinn

RESULTS = Path(__file__).resolve().parent / "results"


def forward_roofline(objective: Objective, batch: dict[str, torch.Tensor],
                     chunks: tuple[int, ...] = (16, 64, 256), reps: int = 3) -> float:
    """Seconds per point of a vmapped forward pass alone over the same 1,200 points, at its
    fastest chunk (each chunk's fastest of ``reps`` timings)."""
    return min(_forward_seconds(objective, batch, chunk, reps) for chunk in chunks)


def _forward_seconds(objective: Objective, batch: dict[str, torch.Tensor], chunk: int,
                     reps: int) -> float:
    model, layout = objective.model, objective.layout
    points = torch.cat([torch.cat([batch["x_f"], batch["t_f"]], 1),
                        torch.cat([batch["x_0"], torch.zeros_like(batch["x_0"])], 1),
                        torch.cat([torch.zeros_like(batch["t_b"]), batch["t_b"]], 1),
                        torch.cat([torch.full_like(batch["t_b"], 6.283185307179586),
                                   batch["t_b"]], 1)])

    def forward(theta: torch.Tensor) -> torch.Tensor:
        return functional_call(model, layout.unflatten(theta), (points,)).square().mean()

    thetas = objective.theta0.expand(chunk, -1).clone()
    batched = vmap(forward)
    best = float("inf")
    with torch.no_grad():
        batched(thetas)
        for _ in range(reps):
            if thetas.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            batched(thetas)
            if thetas.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return best / chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=21, help="grid points per axis")
    parser.add_argument("--extent", type=float, default=0.5,
                        help="grid half-width relative to ‖θ₀‖")
    parser.add_argument("--epochs", type=int, default=1000, help="Adam steps of training")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--memory-budget", default="2GiB")
    parser.add_argument("--out", default=None, help="result file (default: "
                        "results/bench_pinn4d.json, with _<device> off the CPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    device = torch.device(args.device)
    problem = ConvectionProblem(beta=20.0, n_collocation=1000)
    model = make_mlp(width=50, depth=4, seed=0).to(device)
    model, info = train_pinn(model, problem, epochs=args.epochs, lr=1e-3)
    batch = problem.batch(device=device)
    print(f"trained {args.epochs} Adam steps in {info['seconds']:.1f} s: loss {info['loss']:.4g}, "
          f"relative L2 {info['relative_l2']:.3g}")

    times: dict[str, float] = {}
    probe = Objective(model, batch, batch_loss=convection_loss(problem.beta))
    roofline_before = forward_roofline(probe, batch)  # the machine's speed before ...
    start = time.perf_counter()
    objective = Objective(model, batch, batch_loss=convection_loss(problem.beta),
                          memory_budget=args.memory_budget)
    eig = top_eigenpairs(objective, k=4)
    times["hessian"] = time.perf_counter() - start
    print(f"top-4 eigenvalues {eig.eigenvalues} ({eig.n_hvp} HVPs, {times['hessian']:.1f} s)")

    start = time.perf_counter()
    land = Landscape.compute(objective=objective, directions=eig.eigenvectors[:4], dims=4,
                             steps=args.steps, extent=args.extent, progress=False,
                             memory_budget=args.memory_budget)
    times["grid"] = time.perf_counter() - start
    n_points = land.loss.size
    for stage, run in (("merge_tree", land.merge_tree), ("basins", land.basins),
                       ("smad", land.smad)):
        start = time.perf_counter()
        value = run()
        times[stage] = time.perf_counter() - start
        if stage == "smad":
            smad = float(value)
    total = sum(times.values())
    roofline_after = forward_roofline(objective, batch)  # ... and after the grid
    roofline = min(roofline_before, roofline_after)
    per_point = times["grid"] / n_points
    print(f"{args.steps}^4 = {n_points:,} points: grid {times['grid']:.1f} s "
          f"({1e3 * per_point:.3f} ms/point; forward-only roofline {1e3 * roofline:.3f} "
          f"ms/point, ratio {per_point / roofline:.2f}; roofline before the grid "
          f"{1e3 * roofline_before:.3f}, after {1e3 * roofline_after:.3f})")
    print("stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
          + f"; end to end {total:.1f} s; SMAD {smad:.4g}, {len(land.minima())} minima")
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    out = Path(args.out) if args.out else RESULTS / f"bench_pinn4d{suffix}.json"
    out.write_text(json.dumps({
        "device": str(device), "torch_threads": torch.get_num_threads(), "steps": args.steps,
        "n_points": n_points, "extent": args.extent, "epochs": args.epochs,
        "train_s": info["seconds"], "train_loss": info["loss"],
        "relative_l2": info["relative_l2"], "eigenvalues": eig.eigenvalues.tolist(),
        "n_hvp": eig.n_hvp, "stage_s": times, "end_to_end_s": total,
        "grid_ms_per_point": 1e3 * per_point, "forward_roofline_ms_per_point": 1e3 * roofline,
        "forward_roofline_before_after_ms": [1e3 * roofline_before, 1e3 * roofline_after],
        "smad": smad, "minima": int(len(land.minima()))}, indent=2))


if __name__ == "__main__":
    main()
