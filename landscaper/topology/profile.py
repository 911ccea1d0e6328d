"""Data for the topological landscape profile (after Geniesse et al.).

The merge tree is drawn as a 1-D terrain: every basin is a valley whose width is proportional to
its *cumulative* volume (its own points plus those of every basin merged into it below its top)
and whose depth runs from its minimum up to the saddle where it merges (for the root's child: up
to the highest value). Children of a saddle sit side by side inside the parent's interval,
ordered by their lowest value, so the total width is N (the number of points).

For drawing, every region also gets an *outline*: its left and right edges at levels from its
bottom to its top, centred in the interval above. Given the values, the outline's width at
level ``y`` is the volume of the sublevel component ``{f <= y}`` that the region is at that
level (Geniesse et al.'s nested basins): a basin widens as it fills, its children at the
saddle where they merge fill its floor side by side. From the tree alone those volumes are
unknown between nodes, so a minimum's region is modelled as a wedge from a point at the minimum
to its cumulative volume at its top, and a saddle's region keeps its cumulative volume.
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
        outlines: (R,) arrays, one per region, of rows ``(level, left, right)``: the region's
            horizontal extent at levels from its bottom to its top (see the module docstring).
        measured: True when the outline widths are sublevel-component volumes counted from the
            values, False when they are modelled from the tree (no values given).
    """

    x: np.ndarray
    y: np.ndarray
    regions: np.ndarray
    region_nodes: np.ndarray
    region_kinds: np.ndarray
    volumes: np.ndarray
    outlines: tuple[np.ndarray, ...] = ()
    measured: bool = False


def _display_values(tree: MergeTree) -> np.ndarray:
    lo, hi = tree.value_range
    v = tree.node_value.copy()
    if np.isfinite(hi):
        v = np.where(np.isnan(v) | (v > hi), hi, v)
        v = np.where(v < lo, lo, v)
    return v


def _modelled_outlines(tree: MergeTree, regions: np.ndarray,
                       nodes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Outlines from the tree alone: a wedge per minimum, a constant width per saddle."""
    out = []
    for (x0, x1, bottom, top), node in zip(regions.tolist(), nodes.tolist(), strict=True):
        if tree.node_kind[node] == KIND_LEAF:
            centre = 0.5 * (x0 + x1)
            out.append(np.array([[bottom, centre, centre], [top, x0, x1]]))
        else:
            out.append(np.array([[bottom, x0, x1], [top, x0, x1]]))
    return tuple(out)


def _arc_of_points(tree: MergeTree, g: np.ndarray, gv: np.ndarray) -> np.ndarray:
    """The tree node whose region holds each point: the highest ancestor of its basin's minimum
    (below the root) whose value is at most the point's (``g``, ``gv``: point and node values,
    ordered so that parents are higher). Binary lifting: O(N log depth)."""
    parent = tree.node_parent
    ids = np.arange(tree.n_nodes)
    under_root = (parent >= 0) & (tree.node_kind[np.maximum(parent, 0)] != KIND_ROOT)
    jumps = [np.where(under_root, parent, ids)]
    while True:
        longer = jumps[-1][jumps[-1]]
        if np.array_equal(longer, jumps[-1]):
            break
        jumps.append(longer)
    node = tree.labels.reshape(-1).astype(np.int64)
    for jump in reversed(jumps):
        candidate = jump[node]
        node = np.where(gv[candidate] <= g, candidate, node)
    return node


def _measured_outlines(tree: MergeTree, values: np.ndarray, regions: np.ndarray,
                       nodes: np.ndarray, n_levels: int) -> tuple[np.ndarray, ...]:
    """Outlines whose widths are the sublevel-component volumes counted from ``values``."""
    flat = np.asarray(values, dtype=float).reshape(-1)
    if flat.size != tree.n_points:
        raise ValueError(f"values have {flat.size} points, the tree {tree.n_points}")
    lo, hi = tree.value_range
    flat = np.clip(np.where(np.isnan(flat), hi, flat), lo, hi)
    sign = 1.0 if tree.kind == "sublevel" else -1.0
    g, gv = sign * flat, sign * _display_values(tree)
    arc = _arc_of_points(tree, g, gv)
    n, k = flat.size, tree.n_nodes
    # Points of each region below a level: integer keys node * (n + 1) + (values <= the point).
    ordered = np.sort(g)
    keys = np.sort(arc * (n + 1) + np.searchsorted(ordered, g, side="right"))
    own = np.bincount(arc, minlength=k)
    below = np.zeros(k, dtype=np.int64)  # points in the regions under each node
    for node in range(k):  # parents have larger ids than their children
        p = tree.node_parent[node]
        if p >= 0:
            below[p] += below[node] + own[node]
    # Levels: even steps and quantiles of the region's own points, bottom to top (fewer per
    # region when there are very many regions, to bound the memory).
    starts = np.searchsorted(keys, nodes * (n + 1), side="left")
    steps = np.linspace(0.0, 1.0, max(4, min(n_levels, 1_000_000 // max(nodes.size, 1))))
    bottom, top = gv[nodes][:, None], gv[tree.node_parent[nodes]][:, None]
    count = own[nodes][:, None]
    pick = np.minimum(starts[:, None] + np.round(steps * np.maximum(count - 1, 0)).astype(
        np.int64), keys.size - 1)
    quantiles = np.where(count > 0, ordered[np.maximum(keys[pick] % (n + 1) - 1, 0)], bottom)
    level = np.sort(np.clip(np.concatenate([bottom + steps * (top - bottom), quantiles], 1),
                            bottom, top), axis=1)
    query = nodes[:, None] * (n + 1) + np.searchsorted(ordered, level, side="right")
    width = (below[nodes][:, None] - starts[:, None]
             + np.searchsorted(keys, query.ravel(), side="right").reshape(query.shape))
    levels, widths = list(level), list(width.astype(float))
    # Centres, top-down (regions are listed parents first): a root's child keeps its interval's
    # centre; children sit side by side, in the profile's order, across their parent's floor.
    centre: dict[int, float] = {}
    order = np.argsort(regions[:, 0], kind="stable")
    children: dict[int, list[int]] = {}
    for i in order.tolist():
        children.setdefault(int(tree.node_parent[nodes[i]]), []).append(i)
    out = []
    for i, node in enumerate(nodes.tolist()):
        if node not in centre:
            centre[node] = 0.5 * (regions[i, 0] + regions[i, 1])
        left = centre[node] - 0.5 * below[node]
        for j in children.get(node, []):
            child = int(nodes[j])
            top_width = below[child] + own[child]
            centre[child] = left + 0.5 * top_width
            left += top_width
        half = 0.5 * widths[i]
        out.append(np.stack([sign * levels[i] + 0.0, centre[node] - half,
                             centre[node] + half], 1))
    return tuple(out)


def landscape_profile(tree_or_values, *, values: np.ndarray | None = None,
                      n_levels: int = 33, **kwargs) -> LandscapeProfile:
    """Topological landscape profile data from a merge tree (or values).

    Non-finite node values are clipped to the finite value range for display. When the values
    are known (given instead of a tree, or as ``values=`` with one) the region outlines are
    measured sublevel-component volumes; from a tree alone they are modelled (see the module
    docstring and `LandscapeProfile.measured`).

    Args:
        tree_or_values (MergeTree | numpy.ndarray): A `MergeTree`, or values passed
            to `merge_tree`.
        values: The values the tree was computed from (same points), to measure the outlines.
        n_levels: Levels sampled per region for measured outlines, plus as many quantiles of
            the region's own values (fewer when there are over 1e6 / n_levels regions).
        **kwargs (Any): Passed to `merge_tree` when values are given.

    Returns:
        A `LandscapeProfile`.
    """
    if isinstance(tree_or_values, MergeTree):
        tree = tree_or_values
    else:
        tree = merge_tree(tree_or_values, **kwargs)
        values = tree_or_values if values is None else values
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
    if values is None:
        outlines = _modelled_outlines(tree, reg, rnodes_a)
    else:
        outlines = _measured_outlines(tree, values, reg, rnodes_a, max(int(n_levels), 2))
    return LandscapeProfile(
        x=np.asarray(xs, dtype=float),
        y=np.asarray(ys, dtype=float),
        regions=reg,
        region_nodes=rnodes_a,
        region_kinds=kinds,
        volumes=reg[:, 1] - reg[:, 0],
        outlines=outlines,
        measured=values is not None,
    )
