"""Loss grid with landscaper 1.3.1's compute_loss_landscape (run in the ``landscaper131`` env).

usage: landscaper_grid.py CASE.npz --out GRID.npz [--dirs-key dirs] [--dirs DIRS.npz]
                          [--steps 41] [--distance 0.01] [--dim 2] [--threads N] [--no-check]

Directions: a (k, P) float array of flat vectors in ``model.parameters()`` order, read from
``extra/<dirs-key>`` of the case (or key ``dirs`` of ``--dirs``); they are split into the
per-parameter tensor lists landscaper expects.  The loss is the case's mean criterion on all
of X (one forward pass per grid point).

Writes GRID.npz: ``loss`` (as returned by the peer, after its NaN/inf replacement and noise),
``raw_loss`` (the values its scalar_fn produced, same layout), ``coordinates`` (k, steps) as
returned, ``step_dirs`` (k, P): the vector the peer adds per grid step along each axis
(recomputed here with its formula and checked against its losses).
Prints one JSON line last: timings, points/s, the scaling and axis conventions.
"""

from __future__ import annotations

import argparse
import time

import _common as C  # fixes sys.path: the peer's packages, never our checkout
import numpy as np
import torch


def peer_step_dirs(flat_dirs: np.ndarray, params: list[torch.Tensor], steps: int, distance: float):
    """Per-step vectors as landscaper 1.3.1 builds them (float64 re-derivation).

    1. per parameter tensor (layer) l: d_l <- d_l * sqrt(numel_l) / (||d_l|| + 1e-10)
       (every layer gets RMS entry 1, independent of the weights' own scale);
    2. whole direction rescaled to norm ||theta|| * distance / (steps / 2).
    Grid index i along an axis is reached with (i - steps // 2) repeated in-place adds.
    """
    theta_norm = float(np.sqrt(sum(float((p.double() ** 2).sum()) for p in params)))
    out = []
    for d in flat_dirs:
        parts, i = [], 0
        for p in params:
            n = p.numel()
            seg = np.asarray(d[i : i + n], dtype=np.float64)
            parts.append(seg * np.sqrt(n) / (np.linalg.norm(seg) + 1e-10))
            i += n
        v = np.concatenate(parts)
        out.append(v * (theta_norm * distance / (steps / 2)) / np.linalg.norm(v))
    return np.stack(out), theta_norm


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dirs", default=None, help="npz holding key 'dirs' (k, P)")
    ap.add_argument("--dirs-key", default="dirs", help="key under extra/ in the case")
    ap.add_argument("--steps", type=int, default=41)
    ap.add_argument("--distance", type=float, default=0.01)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip re-evaluating probe points")
    a = ap.parse_args(argv)

    threads = C.set_threads(a.threads)
    with C.Timer() as t_imp:
        from landscaper.compute import compute_loss_landscape

        import landscaper
    C.check_peer_module(landscaper)

    bm = C.bench_models()
    case = bm.load_case(a.case)
    model, crit = case["model"], case["criterion"]
    X, y = case["X"], case["y"]
    model.eval()
    if a.dirs:
        with np.load(a.dirs, allow_pickle=False) as z:
            flat = np.asarray(z["dirs"], dtype=np.float64)
    else:
        flat = np.asarray(case["extra"][a.dirs_key], dtype=np.float64)
    flat = flat.reshape(flat.shape[0], -1)
    if flat.shape[0] < a.dim:
        raise SystemExit(f"need {a.dim} directions, got {flat.shape[0]}")
    # landscaper wants a list (one per direction) of lists of tensors shaped like the params.
    # A 2-D array/tensor of flat vectors would be silently mis-zipped against the parameters.
    dirs = [bm.split_flat(model, flat[i]) for i in range(a.dim)]
    params0 = [p.detach().clone() for p in model.parameters()]

    stats = {"calls": 0, "seconds": 0.0}
    raw: list[float] = []

    def scalar_fn(m, data):
        t0 = time.perf_counter()
        xb, yb = data
        val = float(crit(m(xb), yb))
        stats["seconds"] += time.perf_counter() - t0
        stats["calls"] += 1
        raw.append(val)
        return val

    with C.Timer() as t_grid:
        loss, coords = compute_loss_landscape(
            model,
            (X, y),
            dirs,
            scalar_fn,
            steps=a.steps,
            distance=a.distance,
            dim=a.dim,
            device="cpu",
        )
    loss = np.asarray(loss)
    raw_loss = np.asarray(raw, dtype=np.float64).reshape(loss.shape)  # itertools.product order
    coords = np.asarray(coords)
    restored = all(torch.equal(p, q) for p, q in zip(model.parameters(), params0, strict=True))

    step_dirs, theta_norm = peer_step_dirs(flat[: a.dim], params0, a.steps, a.distance)
    center = a.steps // 2
    check = None
    if not a.no_check:
        # re-evaluate a few grid points at theta + sum_k (i_k - center) * step_dirs[k]
        probes = [tuple([0] * a.dim), tuple([a.steps - 1] + [center] * (a.dim - 1))]
        probes.append(tuple([center] * (a.dim - 1) + [0]))
        theta = np.concatenate([p.double().reshape(-1).numpy() for p in params0])
        diffs = []
        with torch.no_grad():
            for gp in probes:
                off = sum((i - center) * step_dirs[k] for k, i in enumerate(gp))
                for p, t in zip(model.parameters(), bm.split_flat(model, theta + off), strict=True):
                    p.copy_(t)
                mine = float(crit(model(X), y))
                diffs.append({"index": list(gp), "peer": float(raw_loss[gp]), "recomputed": mine})
            for p, t in zip(model.parameters(), params0, strict=True):
                p.copy_(t)
        check = {
            "probes": diffs,
            "max_rel_diff": max(
                abs(d["peer"] - d["recomputed"]) / max(abs(d["recomputed"]), 1e-12) for d in diffs
            ),
        }

    n_points = int(loss.size)
    modified = ~np.isclose(loss, raw_loss, rtol=0, atol=0, equal_nan=False)
    C.save_npz(
        a.out,
        loss=loss,
        raw_loss=raw_loss,
        coordinates=coords,
        step_dirs=step_dirs,
    )
    C.emit(
        {
            "peer": "landscaper",
            "peer_version": C.dist_version("landscaper"),
            "torch_threads": threads,
            "model": case["model_name"],
            "n_params": int(flat.shape[1]),
            "n_samples": int(X.shape[0]),
            "steps": a.steps,
            "distance": a.distance,
            "dim": a.dim,
            "n_points": n_points,
            "import_seconds": t_imp.seconds,
            "wall_seconds": t_grid.seconds,
            "points_per_second": n_points / t_grid.seconds,
            "scalar_fn_calls": stats["calls"],
            "scalar_fn_seconds": stats["seconds"],
            "overhead_seconds": t_grid.seconds - stats["seconds"],
            "params_restored": bool(restored),
            "theta_norm": theta_norm,
            "step_norm": theta_norm * a.distance / (a.steps / 2),
            "edge_offset_norm": theta_norm * a.distance * center / (a.steps / 2),
            "n_nonfinite_raw": int((~np.isfinite(raw_loss)).sum()),
            "n_modified_by_peer": int(modified.sum()),
            "modified_indices": [list(map(int, ix)) for ix in np.argwhere(modified)[:10]],
            "loss_min": float(loss.min()),
            "loss_max": float(loss.max()),
            "center_loss": float(raw_loss[tuple([center] * a.dim)]),
            "scaling_check": check,
            "direction_scaling": (
                "per parameter tensor d_l *= sqrt(numel_l)/(||d_l||+1e-10); then the whole "
                "direction is scaled to norm ||theta||*distance/(steps/2) = one grid step; "
                "index i is reached by (i - steps//2) repeated in-place float32 adds from a "
                "fresh clone of theta; directions are not orthogonalised"
            ),
            "coordinate_convention": (
                "loss[i0, i1, ...] is the point theta + sum_k (i_k - steps//2) * step_dirs[k] "
                "('ij': axis k = direction k); returned coordinates are "
                "linspace(-distance, distance, steps) per axis, nominal: true offset along axis "
                "k is coordinate * ||theta|| * (steps-1)/steps (odd steps). LossLandscape then "
                "builds its point cloud with np.meshgrid(*ranges) ('xy'), which swaps the first "
                "two axes relative to loss.flatten()"
            ),
            "postprocessing": (
                "NaN -> mean of finite values, +inf -> max, -inf -> min (raises if none "
                "finite); every entry equal to the global max gets N(0, 0.01*std(rest)) noise "
                "from the unseeded np.random global state (always at least one entry)"
            ),
            "out": a.out,
        }
    )


if __name__ == "__main__":
    main()
