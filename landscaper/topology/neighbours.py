"""Neighbourhoods on regular grids and general graphs.

Grids use one of two connectivities:

* ``"full"`` (default): every point touching the cell, ``3**d - 1`` neighbours. This is the
  adjacency of ``gudhi.CubicalComplex(top_dimensional_cells=f)`` and it does not create spurious
  minima along diagonal valleys (with axis adjacency a valley running diagonally is cut into a
  chain of separate minima joined only through higher points). Because every point has more
  neighbours, "full" never yields more local minima than "axis" and usually fewer.
* ``"axis"``: the ``2 * d`` face neighbours, the adjacency of
  ``gudhi.CubicalComplex(vertices=f)``.

Grid work is done with array slices, one offset at a time, so memory stays O(N) per offset.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["CONNECTIVITIES", "grid_offsets", "half_offsets", "offset_slices", "knn_edges"]

CONNECTIVITIES = ("full", "axis")


def _check_connectivity(connectivity: str) -> None:
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}")


def grid_offsets(ndim: int, connectivity: str = "full") -> list[tuple[int, ...]]:
    """All neighbour offsets of a ``ndim``-dimensional grid point.

    Args:
        ndim: Number of grid dimensions.
        connectivity: ``"full"`` (``3**ndim - 1`` offsets) or ``"axis"`` (``2 * ndim``).

    Returns:
        List of offset tuples with entries in {-1, 0, 1}.
    """
    _check_connectivity(connectivity)
    if connectivity == "axis":
        out = []
        for ax in range(ndim):
            for s in (1, -1):
                off = [0] * ndim
                off[ax] = s
                out.append(tuple(off))
        return out
    return [o for o in itertools.product((-1, 0, 1), repeat=ndim) if any(o)]


def half_offsets(ndim: int, connectivity: str = "full") -> list[tuple[int, ...]]:
    """Offsets whose first non-zero entry is +1: each undirected grid edge appears once."""
    return [
        o for o in grid_offsets(ndim, connectivity) if o[next(i for i, x in enumerate(o) if x)] > 0
    ]


def offset_slices(offset: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices ``(src, dst)`` such that ``a[dst]`` is the neighbour of ``a[src]`` at ``offset``."""
    src, dst = [], []
    for o in offset:
        if o == 1:
            src.append(slice(None, -1))
            dst.append(slice(1, None))
        elif o == -1:
            src.append(slice(1, None))
            dst.append(slice(None, -1))
        else:
            src.append(slice(None))
            dst.append(slice(None))
    return tuple(src), tuple(dst)


def validate_edges(edges: np.ndarray, n: int) -> np.ndarray:
    """Check an ``(E, 2)`` integer edge array against ``n`` vertices; return it as int64."""
    e = np.asarray(edges)
    if e.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"edges must have shape (E, 2), got {e.shape}")
    if e.dtype.kind not in "iu":
        raise TypeError(f"edges must be integers, got dtype {e.dtype}")
    e = e.astype(np.int64, copy=False)
    if e.min() < 0 or e.max() >= n:
        raise ValueError(f"edge endpoints must lie in [0, {n}), got [{e.min()}, {e.max()}]")
    return e


def knn_edges(points: np.ndarray, k: int) -> np.ndarray:
    """Symmetrised, deduplicated k-nearest-neighbour edges over scattered points.

    Args:
        points: ``(N, d)`` coordinates.
        k: Neighbours per point (excluding the point itself).

    Returns:
        ``(E, 2)`` int64 array of undirected edges ``(i, j)`` with ``i < j``, sorted.
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=float)
    if pts.ndim == 1:
        pts = pts[:, None]
    n = pts.shape[0]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    kk = min(k + 1, n)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    _, idx = cKDTree(pts).query(pts, k=kk)
    idx = np.asarray(idx).reshape(n, kk)
    src = np.repeat(np.arange(n), kk)
    dst = idx.ravel()
    keep = src != dst
    a, b = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    codes = np.unique(a.astype(np.int64) * n + b)
    return np.stack([codes // n, codes % n], axis=1)
