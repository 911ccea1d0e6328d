"""Steepest-descent basins, their hierarchy, persistence simplification and basin metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .merge_tree import MergeTree, build_tree, merge_tree

logger = logging.getLogger(__name__)

__all__ = ["Basins", "basins", "simplify", "basin_metric"]


@dataclass(frozen=True, eq=False)
class Basins:
    """Basins of attraction of the minima and how they merge.

    Attributes:
        labels: Basin label per point (grid-shaped, or (N,)), ``0..m-1`` numbered by minimum
            rank (0 = global minimum).
        minima: (m,) flat indices of the minima.
        volumes: (m,) point counts (sum = N).
        merges_into: (m,) basin each basin merges into at its saddle (elder rule), -1 if none.
        merge_value: (m,) value of that saddle (``inf`` for essential basins).
        merge_index: (m,) flat index of that saddle (-1 for essential basins).
        tree: The `MergeTree` these basins belong to.
    """

    labels: np.ndarray
    minima: np.ndarray
    volumes: np.ndarray
    merges_into: np.ndarray
    merge_value: np.ndarray
    merge_index: np.ndarray
    tree: MergeTree

    @classmethod
    def from_tree(cls, tree: MergeTree) -> Basins:
        """Basins view of a merge tree."""
        d = tree.death
        idx = np.where(d >= 0, tree.node_index[np.maximum(d, 0)], -1)
        return cls(
            labels=tree.labels,
            minima=tree.minima,
            volumes=tree.volumes,
            merges_into=tree.merges_into,
            merge_value=tree.death_values,
            merge_index=idx,
            tree=tree,
        )

    @property
    def n_basins(self) -> int:
        """Number of basins m."""
        return int(self.minima.size)

    @property
    def min_values(self) -> np.ndarray:
        """(m,) values at the minima."""
        return self.tree.minima_values

    @property
    def persistence(self) -> np.ndarray:
        """(m,) elder-rule persistence |saddle - minimum| (``inf`` for essential basins)."""
        return np.abs(self.merge_value - self.min_values)


def basins(
    values: np.ndarray,
    *,
    connectivity: str = "full",
    edges: np.ndarray | None = None,
    nonfinite: str = "highest",
) -> Basins:
    """Steepest-descent basins of a grid or graph function and their merge hierarchy.

    Args:
        values: Grid values (n-D) or 1-D point values with ``edges``.
        connectivity: ``"full"`` (default) or ``"axis"`` for grids.
        edges: Optional (E, 2) edge array of a general graph.
        nonfinite: ``"highest"`` or ``"raise"`` (see `rank_values`).

    Returns:
        A `Basins` result.
    """
    tree = merge_tree(values, connectivity=connectivity, edges=edges, nonfinite=nonfinite)
    return Basins.from_tree(tree)


def simplify(tree_or_basins: MergeTree | Basins, threshold: float) -> Basins:
    """Persistence simplification: merge every basin with persistence below ``threshold``.

    A basin whose elder-rule persistence |saddle - minimum| is ``< threshold`` is merged into
    the basin it merges into, repeatedly (chains are followed). The tree is rebuilt by running
    Kruskal again on the relabelled basin graph, so surviving minima keep their saddles.
    NaN persistences (non-finite values) never count as below the threshold.

    Args:
        tree_or_basins: A `MergeTree` or `Basins`.
        threshold: Persistence threshold (same units as the values). ``<= 0`` changes nothing.

    Returns:
        `Basins` with new labels (renumbered by minimum rank) and a simplified tree.
    """
    tree = tree_or_basins.tree if isinstance(tree_or_basins, Basins) else tree_or_basins
    if threshold <= 0:
        return Basins.from_tree(tree)
    m = tree.n_minima
    pers = np.abs(tree.death_values - tree.minima_values)
    with np.errstate(invalid="ignore"):
        drop = (tree.death >= 0) & (pers < threshold)
    target = np.where(drop, tree.merges_into, np.arange(m))
    while True:  # merges_into points to older (smaller) labels, so this terminates
        nxt = target[target]
        if np.array_equal(nxt, target):
            break
        target = nxt
    keep = np.flatnonzero(target == np.arange(m))
    new_of_old = np.full(m, -1, dtype=np.int64)
    new_of_old[keep] = np.arange(keep.size)
    lut = new_of_old[target]
    lo, hi, key, s_idx, s_val = tree.basin_edges
    nlo, nhi = lut[lo], lut[hi]
    sel = nlo != nhi
    t_rank, t_idx, t_val = tree.basin_top
    m2 = keep.size
    o = np.lexsort((t_rank, lut))
    last = np.ones(m, dtype=bool)
    last[:-1] = lut[o][1:] != lut[o][:-1]
    tb = o[last]
    labels = lut.astype(tree.labels.dtype)[tree.labels]
    new = build_tree(
        min_index=tree.minima[keep],
        min_value=tree.minima_values[keep],
        basin_edges=(nlo[sel], nhi[sel], key[sel], s_idx[sel], s_val[sel]),
        basin_top=(t_rank[tb], t_idx[tb], t_val[tb]),
        labels=labels,
        volumes=np.bincount(lut, weights=tree.volumes, minlength=m2).astype(np.int64),
        shape=tree.shape,
        kind=tree.kind,
        connectivity=tree.connectivity,
        value_range=tree.value_range,
        coords=tree.coords,
    )
    logger.debug("simplify(threshold=%g): %d -> %d basins", threshold, m, m2)
    return Basins.from_tree(new)


_REDUCERS: dict[str, Callable] = {
    "mean": np.mean,
    "min": np.min,
    "max": np.max,
    "median": np.median,
    "sum": np.sum,
}


def basin_metric(
    values: np.ndarray,
    labels: np.ndarray | Basins | MergeTree,
    reduce: str | Callable[[np.ndarray], float] = "mean",
) -> np.ndarray:
    """Reduce any per-point array over each basin.

    Args:
        values: Per-point values (same number of points as ``labels``), e.g. accuracy.
        labels: Basin labels ``0..m-1`` (or a `Basins` / `MergeTree`).
        reduce: ``"mean"``, ``"min"``, ``"max"``, ``"median"``, ``"sum"`` or a callable mapping
            a 1-D array to a number.

    Returns:
        (m,) float array, one reduced value per basin (NaN for an empty basin).
    """
    if isinstance(labels, (Basins, MergeTree)):
        m = labels.n_basins if isinstance(labels, Basins) else labels.n_minima
        labels = labels.labels
    else:
        m = None
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.size != lab.size:
        raise ValueError(f"values has {v.size} points but labels has {lab.size}")
    if m is None:
        m = int(lab.max()) + 1 if lab.size else 0
    if isinstance(reduce, str):
        if reduce not in _REDUCERS:
            raise ValueError(f"reduce must be one of {sorted(_REDUCERS)} or a callable")
        if reduce in ("mean", "sum"):
            s = np.bincount(lab, weights=v, minlength=m)
            if reduce == "sum":
                return s
            c = np.bincount(lab, minlength=m)
            with np.errstate(invalid="ignore", divide="ignore"):
                return s / c
        fn = _REDUCERS[reduce]
    else:
        fn = reduce
    o = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[o], np.arange(m + 1))
    vs = v[o]
    out = np.full(m, np.nan)
    for i in range(m):
        if bounds[i + 1] > bounds[i]:
            out[i] = float(fn(vs[bounds[i] : bounds[i + 1]]))
    return out
