"""Strict total order on sampled values (simulation of simplicity).

Every topological computation in `landscaper.topology` works on *ranks* rather than on raw
values. One stable argsort by value, with ties broken by the flat (C-order) index, gives a strict
total order, so plateaus and repeated values never need noise or special cases.

Non-finite values follow one fixed rule: ``-inf`` is a legitimate (lowest) value; ``+inf`` is
ranked above every finite value and ``NaN`` above ``+inf``; within each group ties are broken by
flat index. Values are never replaced or perturbed.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["rank_values", "index_dtype"]

_NONFINITE_CHOICES = ("highest", "raise")


def index_dtype(n: int) -> type:
    """Smallest signed integer dtype (int32 or int64) that holds indices ``0..n``."""
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def _check_nonfinite(flat: np.ndarray, nonfinite: str) -> None:
    if nonfinite not in _NONFINITE_CHOICES:
        raise ValueError(f"nonfinite must be one of {_NONFINITE_CHOICES}, got {nonfinite!r}")
    if not np.issubdtype(flat.dtype, np.floating):
        return
    bad = np.isnan(flat) | (flat == np.inf)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return
    first = int(np.argmax(bad))
    if nonfinite == "raise":
        raise ValueError(
            f"{n_bad} value(s) are NaN or +inf (first at flat index {first}); pass "
            'nonfinite="highest" to rank them above every finite value'
        )
    logger.warning(
        "%d value(s) are NaN or +inf (first at flat index %d); they are ranked above every "
        "finite value (+inf before NaN, ties by index)",
        n_bad,
        first,
    )


def total_order(
    values: np.ndarray, *, nonfinite: str = "highest", kind: str = "sublevel"
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(order, rank)`` of the flattened values in the index dtype.

    ``order[r]`` is the flat index of the point with rank ``r`` and ``rank[i]`` its inverse.
    For ``kind="superlevel"`` the order of all non-NaN points is reversed (so ties are broken
    by *decreasing* flat index and ``+inf`` comes first) while NaN points stay last.

    Args:
        values: Array of any shape; flattened in C order.
        nonfinite: ``"highest"`` (rank NaN/+inf last, with a logged warning) or ``"raise"``.
        kind: ``"sublevel"`` or ``"superlevel"``.

    Returns:
        Tuple of the order and rank arrays (int32 when the size allows, else int64).
    """
    flat = np.ravel(np.asarray(values))
    if flat.dtype.kind not in "biuf":
        raise TypeError(f"values must be real numbers, got dtype {flat.dtype}")
    if kind not in ("sublevel", "superlevel"):
        raise ValueError(f"kind must be 'sublevel' or 'superlevel', got {kind!r}")
    _check_nonfinite(flat, nonfinite)
    n = flat.size
    dt = index_dtype(n)
    # numpy sorts NaN after +inf; a stable sort breaks ties by flat index.
    order = np.argsort(flat, kind="stable").astype(dt, copy=False)
    if kind == "superlevel":
        n_nan = int(np.count_nonzero(np.isnan(flat))) if flat.dtype.kind == "f" else 0
        order[: n - n_nan] = order[: n - n_nan][::-1].copy()
    rank = np.empty(n, dtype=dt)
    rank[order] = np.arange(n, dtype=dt)
    return order, rank


def rank_values(values: np.ndarray, nonfinite: str = "highest") -> np.ndarray:
    """Rank every flattened value in a strict total order (simulation of simplicity).

    One stable argsort by value; ties are broken by flat C-order index. ``-inf`` ranks below
    all finite values, ``+inf`` above them and ``NaN`` above ``+inf`` (ties by index).

    Args:
        values: Array of any shape.
        nonfinite: ``"highest"`` ranks NaN/+inf last and logs a warning with their count;
            ``"raise"`` raises ``ValueError`` if any are present.

    Returns:
        int64 array of ranks ``0..N-1``, one per flattened point.
    """
    _, rank = total_order(values, nonfinite=nonfinite)
    return rank.astype(np.int64, copy=False)
