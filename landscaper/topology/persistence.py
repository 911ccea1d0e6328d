"""0-dimensional persistence diagrams and distances between them."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .merge_tree import MergeTree, merge_tree

logger = logging.getLogger(__name__)

__all__ = [
    "DiagramLike",
    "persistence_diagram",
    "total_persistence",
    "bottleneck_distance",
    "wasserstein_distance",
]

#: A persistence diagram as an ``(n, 2)`` array of ``(birth, death)`` rows, or the merge tree
#: it is read from.
DiagramLike = MergeTree | ArrayLike


def persistence_diagram(values_or_tree: MergeTree | ArrayLike, **kwargs: Any) -> np.ndarray:
    """0-dimensional sublevel (or superlevel) persistence diagram.

    Args:
        values_or_tree: A `MergeTree`, or values accepted by `merge_tree`.
        **kwargs: Passed to `merge_tree` when values are given (``connectivity``,
            ``kind``, ``edges``, ``nonfinite``).

    Returns:
        (n, 2) float array of ``(birth, death)`` rows sorted by birth: births are minimum
        values, deaths the saddle values where they merge into an older component (elder
        rule); essential classes (one per connected component) have death ``inf``.
    """
    tree = values_or_tree if isinstance(values_or_tree, MergeTree) else None
    if tree is None:
        tree = merge_tree(values_or_tree, **kwargs)
    elif kwargs:
        raise TypeError("keyword arguments are only used when values are given")
    return tree.persistence()


def _as_diagram(d: DiagramLike) -> np.ndarray:
    if isinstance(d, MergeTree):
        return d.persistence()
    a = np.asarray(d, dtype=float)
    if a.size == 0:
        return np.zeros((0, 2))
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"a diagram must have shape (n, 2), got {a.shape}")
    return a


def total_persistence(diagram: DiagramLike, p: float = 2.0) -> float:
    """Sum of ``|death - birth| ** p`` over the *finite* pairs (essential classes excluded).

    Args:
        diagram: (n, 2) diagram or a `MergeTree`.
        p: Exponent (> 0).

    Returns:
        The total persistence as a float (0.0 for an empty diagram).
    """
    d = _as_diagram(diagram)
    fin = np.isfinite(d).all(axis=1) if d.size else np.zeros(0, bool)
    return float(np.sum(np.abs(d[fin, 1] - d[fin, 0]) ** float(p)))


def _import_gudhi(purpose: str = "diagram distances") -> ModuleType:
    try:
        import gudhi
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{purpose} need gudhi; install it with `pip install gudhi`") from exc
    return gudhi


def bottleneck_distance(d1: DiagramLike, d2: DiagramLike) -> float:
    """Bottleneck distance between two diagrams (via ``gudhi.bottleneck_distance``).

    Essential points (infinite deaths) are matched among themselves; differing numbers of
    essential classes give ``inf``.
    """
    gudhi = _import_gudhi()
    return float(gudhi.bottleneck_distance(_as_diagram(d1), _as_diagram(d2)))


def wasserstein_distance(d1: DiagramLike, d2: DiagramLike, order: float = 1.0) -> float:
    """Wasserstein distance of the given order (via ``gudhi.hera.wasserstein_distance``).

    Uses hera's ``internal_p=inf`` ground metric and relative error ``delta=0.01``.
    """
    gudhi = _import_gudhi()
    try:
        from gudhi.hera import wasserstein_distance as _w
    except ImportError as exc:  # pragma: no cover - gudhi builds without hera
        raise ImportError(
            "this gudhi build has no gudhi.hera; install a full build (`pip install gudhi`) "
            "or POT (`pip install pot`) to use gudhi.wasserstein"
        ) from exc
    del gudhi
    return float(_w(_as_diagram(d1), _as_diagram(d2), order=float(order)))
