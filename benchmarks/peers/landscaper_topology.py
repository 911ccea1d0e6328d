"""Topology of a loss grid with landscaper 1.3.1's LossLandscape (run in ``landscaper131``).

usage: landscaper_topology.py GRID.npz [--loss-key loss] [--distance 1.0]
                              [--ops sublevel_tree,ms_complex,smad,smad_normalized,smad_fresh]
                              [--threads N]

GRID.npz holds ``loss`` (any dimension, 'ij' indexed) and optionally ``coordinates`` (k, n) or
one range per axis; without it every axis is ``linspace(-distance, distance, n_axis)``.
Operations, in this order, on one LossLandscape object (it caches its merge tree / MSC /
contour tree between calls, exactly as a user would see):

  sublevel_tree    get_sublevel_tree()        (topopy MergeTree on an nglpy beta-skeleton)
  ms_complex       get_ms_complex()           (topopy MorseSmaleComplex, steepest gradient)
  smad             smad()                     (reuses the cached MSC; builds the contour tree)
  smad_normalized  smad(normalize=True)       (everything cached by then)
  smad_fresh       smad() on a NEW LossLandscape: end-to-end cost a user pays for one SMAD

After every operation a cumulative JSON line is printed (``"complete": false``) so that
run_peer can return partial results on a timeout; the last line has ``"complete": true``.
"""

from __future__ import annotations

import argparse

import _common as C  # fixes sys.path: the peer's packages, never our checkout
import numpy as np

ALL_OPS = ["sublevel_tree", "ms_complex", "smad", "smad_normalized", "smad_fresh"]


def _ranges(z, loss: np.ndarray, distance: float) -> list[np.ndarray]:
    if "coordinates" in z.files:
        c = z["coordinates"]
        rs = [np.asarray(r, dtype=np.float64) for r in c]
    else:
        rs = [np.linspace(-distance, distance, n) for n in loss.shape]
    if [len(r) for r in rs] != list(loss.shape):
        raise SystemExit(f"ranges {[len(r) for r in rs]} do not match loss {loss.shape}")
    return rs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid")
    ap.add_argument("--loss-key", default="loss")
    ap.add_argument("--distance", type=float, default=1.0)
    ap.add_argument("--ops", default=",".join(ALL_OPS))
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    ops = [o for o in a.ops.split(",") if o]
    unknown = set(ops) - set(ALL_OPS)
    if unknown:
        raise SystemExit(f"unknown ops {sorted(unknown)}; known {ALL_OPS}")

    threads = C.set_threads(a.threads)
    with C.Timer() as t_imp:
        import landscaper
    C.check_peer_module(landscaper)

    with np.load(a.grid, allow_pickle=False) as z:
        loss = np.array(z[a.loss_key], dtype=np.float64)
        ranges = _ranges(z, loss, a.distance)
    loss_in = loss.copy()

    res: dict = {
        "peer": "landscaper",
        "peer_version": C.dist_version("landscaper"),
        "topopy_version": C.dist_version("topopy"),
        "nglpy_version": C.dist_version("nglpy"),
        "torch_threads": threads,
        "shape": list(loss.shape),
        "n_points": int(loss.size),
        "n_nonfinite_in": int((~np.isfinite(loss)).sum()),
        "n_tied_values_in": int(loss.size - np.unique(loss).size),
        "n_tied_values_float32": int(loss.size - np.unique(loss.astype(np.float32)).size),
        "import_seconds": t_imp.seconds,
        "ops": ops,
        "complete": False,
        "notes": (
            "LossLandscape does not alter the loss itself (NaN->mean and noise on tied maxima "
            "happen only in compute_loss_landscape); topopy receives the values as float32 "
            "(vectorFloat), so values tied after rounding are broken by topopy's index order; "
            "the point cloud is np.meshgrid(*ranges) with default 'xy' indexing (first two axes "
            "swapped w.r.t. loss.flatten()); graph: nglpy EmptyRegionGraph(beta=1, p=2, "
            "relaxed=False) with every pair a candidate edge (O(N^2) memory/time and worse); "
            "smad() in 1.3.1 pairs minima with saddles on a patched topopy ContourTree"
        ),
    }
    times: dict = {}
    res["seconds"] = times
    L = landscaper.LossLandscape(loss, ranges)

    for op in ops:
        with C.Timer() as t:
            if op == "sublevel_tree":
                mt = L.get_sublevel_tree()
            elif op == "ms_complex":
                msc = L.get_ms_complex()
            elif op == "smad":
                val = L.smad()
            elif op == "smad_normalized":
                val = L.smad(normalize=True)
            elif op == "smad_fresh":
                val = landscaper.LossLandscape(loss.copy(), ranges).smad()
        times[op] = t.seconds
        if op == "sublevel_tree":
            res["sublevel_tree"] = {
                "n_nodes": len(mt.nodes),
                "n_leaves": len(mt.leaves),  # minima
                "n_branches": len(mt.branches),  # merge saddles
                "root_value": float(mt.nodes[mt.root]),
                "leaf_values": sorted(float(mt.nodes[n]) for n in mt.leaves)[:20],
            }
        elif op == "ms_complex":
            try:
                mins = sorted({int(k[0]) for k in msc.get_partitions()})
                maxs = sorted({int(k[1]) for k in msc.get_partitions()})
                res["ms_complex"] = {
                    "n_minima": len(mins),
                    "n_maxima": len(maxs),
                    "n_cells": len(msc.get_partitions()),
                    "n_persistence_levels": len(msc.persistences),
                }
            except Exception as exc:  # noqa: BLE001 - describing only
                res["ms_complex"] = {"describe_error": repr(exc)}
        else:
            res[op] = float(val)
        res["loss_modified"] = bool(not np.array_equal(loss, loss_in))
        C.emit(res)  # cumulative partial result

    res["complete"] = True
    C.emit(res)


if __name__ == "__main__":
    main()
