"""Data for the topological landscape profile (after Geniesse et al.).

The merge tree is drawn as a 1-D terrain: every basin is a valley whose width is proportional to
its *cumulative* volume (its own points plus those of every basin merged into it below its top)
and whose depth runs from its minimum up to the saddle where it merges (for the root's child: up
to the highest value). Children of a saddle sit side by side inside the parent's interval,
ordered by their lowest value, so the total width is N (the number of points).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .merge_tree import KIND_LEAF, KIND_ROOT, MergeTree, merge_tree

logger = logging.getLogger(__name__)

__all__ = ["LandscapeProfile", "landscape_profile"]


@dataclass(frozen=True, eq=False)
class LandscapeProfile:
    """Plottable profile data.

    Attributes:
        x: Curve abscissae (cumulative point counts, 0..N).
        y: Curve values; valleys reach down to the minima, walls rise to the saddles.
        regions: (R, 4) rows ``(x0, x1, bottom, top)``, one per non-root tree node: the interval
            its subtree occupies and the value range from the node up to its parent.
        region_nodes: (R,) tree node id of each region.
        region_kinds: (R,) ``"minimum"`` or ``"saddle"`` per region.
        volumes: (R,) cumulative volume of each region (= x1 - x0).
    """

    x: np.ndarray
    y: np.ndarray
    regions: np.ndarray
    region_nodes: np.ndarray
    region_kinds: np.ndarray
    volumes: np.ndarray


def _display_values(tree: MergeTree) -> np.ndarray:
    lo, hi = tree.value_range
    v = tree.node_value.copy()
    if np.isfinite(hi):
        v = np.where(np.isnan(v) | (v > hi), hi, v)
        v = np.where(v < lo, lo, v)
    return v


def landscape_profile(tree_or_values, **kwargs) -> LandscapeProfile:
    """Topological landscape profile data from a merge tree (or values).

    Non-finite node values are clipped to the finite value range for display.

    Args:
        tree_or_values: A :class:`MergeTree`, or values passed to :func:`merge_tree`.
        **kwargs: Passed to :func:`merge_tree` when values are given.

    Returns:
        A :class:`LandscapeProfile`.
    """
    tree = (
        tree_or_values
        if isinstance(tree_or_values, MergeTree)
        else merge_tree(tree_or_values, **kwargs)
    )
    cum = tree.cumulative_volumes()
    val = _display_values(tree)
    k = tree.n_nodes
    children: list[list[int]] = [[] for _ in range(k)]
    for c, p in tree.edges.tolist():
        children[p].append(c)
    # Lowest leaf of every subtree (leaves are numbered by rank): order children by it.
    low = np.arange(k)
    for node in range(k):
        p = tree.node_parent[node]
        if p >= 0 and (low[p] >= tree.n_minima or low[node] < low[p]):
            low[p] = low[node]
    for ch in children:
        ch.sort(key=lambda c: low[c])
    xs: list[float] = []
    ys: list[float] = []
    regions, rnodes = [], []
    x_start = 0.0
    for root in tree.roots.tolist():
        top = val[root]
        stack: list[tuple] = [("node", c, None, top) for c in reversed(children[root])]
        # First child of a root starts at x_start; positions are assigned when popped.
        cursor = [x_start]
        while stack:
            item = stack.pop()
            if item[0] == "close":
                xs.append(item[1])
                ys.append(item[2])
                continue
            _, v, x0, t = item
            if x0 is None:
                x0 = cursor[0]
                cursor[0] += cum[v]
            w = float(cum[v])
            regions.append((x0, x0 + w, val[v], t))
            rnodes.append(v)
            if tree.node_kind[v] == KIND_LEAF:
                xs += [x0, x0 + w / 2, x0 + w]
                ys += [t, val[v], t]
                continue
            xs.append(x0)
            ys.append(t)
            stack.append(("close", x0 + w, t))
            offs = x0 + np.concatenate([[0], np.cumsum(cum[children[v]])[:-1]])
            for c, xc in reversed(list(zip(children[v], offs.tolist(), strict=True))):
                stack.append(("node", c, xc, val[v]))
        x_start = cursor[0]
    rnodes_a = np.asarray(rnodes, dtype=np.int64)
    kinds = np.where(tree.node_kind[rnodes_a] == KIND_LEAF, "minimum", "saddle")
    assert not np.any(tree.node_kind[rnodes_a] == KIND_ROOT)
    reg = np.asarray(regions, dtype=float).reshape(-1, 4)
    return LandscapeProfile(
        x=np.asarray(xs, dtype=float),
        y=np.asarray(ys, dtype=float),
        regions=reg,
        region_nodes=rnodes_a,
        region_kinds=kinds,
        volumes=reg[:, 1] - reg[:, 0],
    )
