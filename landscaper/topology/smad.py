"""SMAD: Saddle-Minimum Average Distance."""

from __future__ import annotations

import logging

import numpy as np

from .basins import simplify
from .merge_tree import KIND_SADDLE, MergeTree, merge_tree

logger = logging.getLogger(__name__)

__all__ = ["smad", "smad_pairs"]


def smad_pairs(tree: MergeTree, pairing: str = "tree") -> tuple[np.ndarray, np.ndarray]:
    """Leaf ids and saddle node ids of the (minimum, saddle) pairs used by `smad`.

    Args:
        tree: A merge tree.
        pairing: ``"tree"`` (each leaf with its parent saddle) or ``"persistence"`` (each
            non-essential leaf with the saddle where it dies by the elder rule).

    Returns:
        ``(leaves, saddles)`` int64 arrays of equal length.
    """
    m = tree.n_minima
    leaves = np.arange(m)
    if pairing == "tree":
        par = tree.node_parent[:m]
        ok = (par >= 0) & (tree.node_kind[np.maximum(par, 0)] == KIND_SADDLE)
        return leaves[ok], par[ok]
    if pairing == "persistence":
        ok = tree.death >= 0
        return leaves[ok], tree.death[ok]
    raise ValueError(f"pairing must be 'tree' or 'persistence', got {pairing!r}")


def smad(
    values_or_tree,
    *,
    normalize: bool = False,
    weighted: bool = False,
    pairing: str = "tree",
    threshold: float = 0.0,
    connectivity: str = "full",
    edges: np.ndarray | None = None,
) -> float:
    """Saddle-Minimum Average Distance of a landscape.

    With ``pairing="tree"`` (default) every leaf of the sublevel merge tree -- the global
    minimum included -- is paired with its *parent* saddle, the saddle where its component first
    merges with another one; SMAD is the mean of ``|L(saddle) - L(minimum)|`` over these pairs.
    With ``pairing="persistence"`` the elder-rule persistence pairs are used instead: only the
    younger minimum dies at a saddle, so each leaf is paired with the saddle where it *dies*
    (which can lie above its parent saddle) and the global minimum (essential) is excluded.

    Args:
        values_or_tree: Grid/graph values (see `merge_tree`) or a `MergeTree`.
        normalize: Divide each gap by the landscape's finite value range (max - min).
        weighted: Multiply each gap by its minimum's basin volume fraction (volume / N); the
            sum is still divided by the number of pairs.
        pairing: ``"tree"`` or ``"persistence"``.
        threshold: If > 0, first apply persistence simplification (`simplify`) and
            compute SMAD on the simplified tree (merged basins' volumes are summed).
        connectivity: Grid connectivity when values are given.
        edges: Graph edges when values are given.

    Returns:
        SMAD as a float; 0.0 when there are no pairs (a single minimum).
    """
    if isinstance(values_or_tree, MergeTree):
        tree = values_or_tree
    else:
        tree = merge_tree(values_or_tree, connectivity=connectivity, edges=edges)
    if threshold > 0:
        tree = simplify(tree, threshold).tree
    leaves, sads = smad_pairs(tree, pairing)
    if leaves.size == 0:
        return 0.0
    gaps = np.abs(tree.node_value[sads] - tree.node_value[leaves])
    if normalize:
        lo, hi = tree.value_range
        rng = hi - lo
        if not np.isfinite(rng) or rng <= 0:
            logger.warning("cannot normalize SMAD: finite value range is %r", rng)
        else:
            gaps = gaps / rng
    if weighted:
        gaps = gaps * (tree.volumes[leaves] / tree.n_points)
    return float(np.sum(gaps) / leaves.size)
