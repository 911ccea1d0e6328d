"""Exact merge trees of sampled functions on grids and graphs.

Two minima are connected in the sublevel set ``{f <= t}`` iff their steepest-descent basins are
joined by boundary edges whose max-rank is at most ``t`` (a descent path never rises). The merge
tree is therefore Kruskal's algorithm with union-find over the small *basin adjacency graph*,
whose edge between two basins carries the lowest max-rank over the grid edges joining them.

Tree representation:

* Nodes are numbered ``0..K-1``: the ``m`` minima first (node ``i`` is basin ``i``, numbered by
  rank, so node 0 is the global minimum), then the saddles in the order they occur, then one
  root per connected component.
* A *saddle* node is the vertex at which components merge (the higher endpoint of the joining
  edge). If several components merge at the same vertex (a degenerate saddle) there is a single
  saddle node with more than two children; by the elder rule all components but the one with the
  oldest (lowest-ranked) minimum die there.
* Each connected component has a separate *root* node at its highest-ranked point (for a grid:
  the global maximum, NaN/+inf included if present). The topmost saddle of the component (or its
  only minimum) is the root's single child. A disconnected graph gives a forest with one root
  and one essential persistence class per component.
* Edges point child -> parent. For ``kind="superlevel"`` the same is done on the reversed order;
  leaves are then maxima (kind ``"maximum"``), values are reported unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._bytes import format_bytes, parse_bytes
from .descent import (
    basin_edges_graph,
    basin_edges_grid,
    descent_labels,
    lowest_neighbour_graph,
    lowest_neighbour_grid,
)
from .neighbours import _check_connectivity, validate_edges
from .order import total_order

logger = logging.getLogger(__name__)

__all__ = ["BYTES_PER_BASIN_EDGE", "BYTES_PER_POINT", "MergeTree", "merge_tree"]

#: Measured working memory of merge tree + basins + SMAD + persistence beyond the input array:
#: bytes per point (33 B measured on 2M-point grids) ...
BYTES_PER_POINT = 40
#: ... plus bytes per edge of the basin adjacency graph (215-410 B measured on i.i.d. noise,
#: the worst case). See docs/bad_inputs.md and tests/test_memory.py.
BYTES_PER_BASIN_EDGE = 512


def _check_budget(budget: int | None, n_points: int, n_basin_edges: int, stage: str) -> None:
    if budget is None:
        return
    needed = BYTES_PER_POINT * n_points + BYTES_PER_BASIN_EDGE * n_basin_edges
    if needed > budget:
        raise MemoryError(
            f"the topology of {n_points} points{stage} needs about {format_bytes(needed)}, more "
            f"than memory_budget={format_bytes(budget)}; sample a coarser grid, simplify the "
            "landscape first, or raise memory_budget")

KIND_LEAF, KIND_SADDLE, KIND_ROOT = 0, 1, 2


@dataclass(frozen=True, eq=False)
class MergeTree:
    """Merge tree of a sampled function (see module docstring for the representation).

    Attributes:
        node_index: (K,) flat index of each node's vertex.
        node_value: (K,) function value at that vertex.
        node_kind: (K,) int8 code: 0 leaf (minimum/maximum), 1 saddle, 2 root.
        node_parent: (K,) parent node id, -1 for roots.
        n_minima: Number of leaves ``m`` (nodes ``0..m-1``, sorted by rank).
        death: (m,) node id of the saddle at which each leaf's class dies (elder rule), -1 for
            essential classes.
        merges_into: (m,) basin into which each basin merges at its death (the elder basin of
            the other side), -1 for essential classes.
        labels: Basin label of every point, shaped like the grid (or (N,) for graphs).
        volumes: (m,) number of points in each basin (sums to N).
        shape: Grid shape, or ``None`` for a graph.
        kind: ``"sublevel"`` or ``"superlevel"``.
        connectivity: Grid connectivity, or ``None`` for a graph.
        value_range: (min, max) of the finite values.
        coords: Optional coordinates (per-axis 1-D arrays for a grid, or an (N, d) array).
        basin_edges: Reduced basin graph ``(lo, hi, key, saddle_index, saddle_value)``, sorted
            by key (rank of the saddle vertex); used to rebuild simplified trees.
        basin_top: ``(rank, index, value)`` of the highest point of each basin where known
            (rank -1 otherwise); used to place roots.
    """

    node_index: np.ndarray
    node_value: np.ndarray
    node_kind: np.ndarray
    node_parent: np.ndarray
    n_minima: int
    death: np.ndarray
    merges_into: np.ndarray
    labels: np.ndarray
    volumes: np.ndarray
    shape: tuple[int, ...] | None
    kind: str
    connectivity: str | None
    value_range: tuple[float, float]
    coords: object = None
    basin_edges: tuple = field(default=(), repr=False)
    basin_top: tuple = field(default=(), repr=False)

    # ------------------------------------------------------------------ basic views
    @property
    def n_points(self) -> int:
        """Number of sampled points N."""
        return int(self.labels.size)

    @property
    def n_nodes(self) -> int:
        """Number of tree nodes K."""
        return int(self.node_index.size)

    @property
    def minima(self) -> np.ndarray:
        """Flat indices of the leaves (minima; maxima for superlevel trees), sorted by rank."""
        return self.node_index[: self.n_minima]

    @property
    def minima_values(self) -> np.ndarray:
        """Values at the leaves, in rank order."""
        return self.node_value[: self.n_minima]

    @property
    def saddle_nodes(self) -> np.ndarray:
        """Node ids of the saddles, in merge order."""
        return np.flatnonzero(self.node_kind == KIND_SADDLE)

    @property
    def saddles(self) -> np.ndarray:
        """Flat indices of the saddle vertices, in merge order."""
        return self.node_index[self.saddle_nodes]

    @property
    def roots(self) -> np.ndarray:
        """Node ids of the roots (one per connected component)."""
        return np.flatnonzero(self.node_kind == KIND_ROOT)

    @property
    def kinds(self) -> np.ndarray:
        """Node kinds as strings (``"minimum"``/``"maximum"``, ``"saddle"``, ``"root"``)."""
        leaf = "minimum" if self.kind == "sublevel" else "maximum"
        return np.array([leaf, "saddle", "root"])[self.node_kind]

    @property
    def edges(self) -> np.ndarray:
        """(K - roots, 2) array of ``(child, parent)`` node ids."""
        child = np.flatnonzero(self.node_parent >= 0)
        return np.stack([child, self.node_parent[child]], axis=1)

    @property
    def death_values(self) -> np.ndarray:
        """(m,) value at which each leaf's class dies (+inf / -inf for essential classes)."""
        ess = np.inf if self.kind == "sublevel" else -np.inf
        out = np.full(self.n_minima, ess)
        finite = self.death >= 0
        out[finite] = self.node_value[self.death[finite]]
        return out

    def multi_index(self, flat: np.ndarray) -> np.ndarray:
        """Grid multi-indices ``(len(flat), d)`` of flat indices (grids only)."""
        if self.shape is None:
            raise ValueError("multi-indices are only defined for grids")
        flat = np.asarray(flat, dtype=np.int64)
        return np.stack(np.unravel_index(flat, self.shape), axis=-1).reshape(flat.size, -1)

    def minima_multi_index(self) -> np.ndarray:
        """(m, d) grid multi-indices of the minima, in rank order."""
        return self.multi_index(self.minima)

    def point_coords(self, flat: np.ndarray) -> np.ndarray | None:
        """Coordinates of flat indices when ``coords`` was given, else ``None``."""
        if self.coords is None:
            return None
        flat = np.asarray(flat, dtype=np.int64)
        if isinstance(self.coords, (list, tuple)):
            mi = self.multi_index(flat)
            return np.stack([np.asarray(ax)[mi[:, i]] for i, ax in enumerate(self.coords)], 1)
        pts = np.asarray(self.coords)
        return pts.reshape(self.n_points, -1)[flat]

    def persistence(self) -> np.ndarray:
        """0-dimensional persistence diagram, (m, 2) rows ``(birth, death)``.

        Births are the leaf values, deaths the values of the saddles where they die (elder
        rule); essential classes have death ``inf`` (``-inf`` for superlevel trees). Rows are
        sorted by birth then death (decreasing for superlevel trees).
        """
        birth = self.minima_values.astype(float)
        death = self.death_values
        if self.kind == "sublevel":
            idx = np.lexsort((death, birth))
        else:
            idx = np.lexsort((-death, -birth))
        return np.stack([birth[idx], death[idx]], axis=1).reshape(-1, 2)

    def cumulative_volumes(self) -> np.ndarray:
        """(K,) number of points in the basins below each node (its subtree's leaves)."""
        cum = np.zeros(self.n_nodes, dtype=np.int64)
        cum[: self.n_minima] = self.volumes
        # Parents always have larger node ids than their children (leaves, saddles, roots).
        for node in range(self.n_nodes):
            p = self.node_parent[node]
            if p >= 0:
                cum[p] += cum[node]
        return cum

    def to_networkx(self):
        """The tree as a ``networkx.DiGraph`` with edges child -> parent.

        Nodes are the node ids; attributes ``index`` (flat index), ``value``, ``kind``, plus
        ``multi_index`` on grids and ``coords`` when coordinates were given. Edges carry
        ``persistence`` = |value(parent) - value(child)|.
        """
        import networkx as nx

        g = nx.DiGraph()
        kinds = self.kinds
        mi = self.multi_index(self.node_index) if self.shape is not None else None
        xy = self.point_coords(self.node_index)
        for k in range(self.n_nodes):
            attrs = {
                "index": int(self.node_index[k]),
                "value": float(self.node_value[k]),
                "kind": str(kinds[k]),
            }
            if mi is not None:
                attrs["multi_index"] = tuple(int(x) for x in mi[k])
            if xy is not None:
                attrs["coords"] = tuple(float(x) for x in xy[k])
            g.add_node(k, **attrs)
        for c, p in self.edges:
            g.add_edge(
                int(c), int(p), persistence=abs(float(self.node_value[p] - self.node_value[c]))
            )
        return g


# ---------------------------------------------------------------------------- construction
def _kruskal(m: int, lo: np.ndarray, hi: np.ndarray, key: np.ndarray):
    """Union-find over basin edges sorted by key; returns the merge events.

    Returns:
        ``(saddle_edge, parent, death, merges_into, top, comp)`` where ``saddle_edge`` lists,
        for each saddle in order, the position of its first edge; ``parent`` gives, for leaves
        and saddles, the parent saddle (node ids, -1 if none yet), ``top`` the top node of
        each component representative and ``comp`` the final component of every basin.
    """
    uf = list(range(m))

    def find(x: int) -> int:
        while uf[x] != x:
            uf[x] = uf[uf[x]]
            x = uf[x]
        return x

    top = list(range(m))
    parent = [-1] * m
    death = [-1] * m
    into = [-1] * m
    saddle_edge: list[int] = []
    lo_l, hi_l, key_l = lo.tolist(), hi.tolist(), key.tolist()
    n_e = len(key_l)
    i = 0
    while i < n_e:
        k = key_l[i]
        j = i + 1
        while j < n_e and key_l[j] == k:
            j += 1
        if j == i + 1:
            a, b = find(lo_l[i]), find(hi_l[i])
            comps = () if a == b else ((a, b) if a < b else (b, a))
        else:
            comps = tuple(sorted({find(x) for e in range(i, j) for x in (lo_l[e], hi_l[e])}))
            if len(comps) < 2:
                comps = ()
        if comps:
            sid = m + len(saddle_edge)
            saddle_edge.append(i)
            parent.append(-1)
            elder = comps[0]
            for c in comps:
                parent[top[c]] = sid
                if c != elder:
                    death[c] = sid
                    into[c] = elder
                    uf[c] = elder
            top[elder] = sid
        i = j
    comp = np.array([find(c) for c in range(m)], dtype=np.int64)
    return saddle_edge, parent, death, into, top, comp


def build_tree(
    *,
    min_index: np.ndarray,
    min_value: np.ndarray,
    basin_edges: tuple,
    basin_top: tuple,
    labels: np.ndarray,
    volumes: np.ndarray,
    shape: tuple[int, ...] | None,
    kind: str,
    connectivity: str | None,
    value_range: tuple[float, float],
    coords: object = None,
) -> MergeTree:
    """Assemble a `MergeTree` from basins and the reduced basin graph."""
    m = int(min_index.size)
    lo, hi, key, s_idx, s_val = basin_edges
    saddle_edge, parent, death, into, top, comp = _kruskal(m, lo, hi, key)
    n_s = len(saddle_edge)
    se = np.asarray(saddle_edge, dtype=np.int64)
    # Roots: per component, the highest known point of its basins.
    t_rank, t_idx, t_val = basin_top
    reps = np.unique(comp)
    o = np.lexsort((t_rank, comp))
    last = np.ones(o.size, dtype=bool)
    last[:-1] = comp[o][1:] != comp[o][:-1]
    top_basin = o[last]  # one per rep, in rep order
    root_ids = m + n_s + np.arange(reps.size)
    parent_arr = np.full(m + n_s + reps.size, -1, dtype=np.int64)
    parent_arr[: m + n_s] = parent
    for r, rid in zip(reps.tolist(), root_ids.tolist(), strict=True):
        parent_arr[top[r]] = rid
    node_index = np.concatenate([min_index, s_idx[se], t_idx[top_basin]]).astype(np.int64)
    node_value = np.concatenate([min_value, s_val[se], t_val[top_basin]]).astype(float)
    node_kind = np.concatenate(
        [
            np.full(m, KIND_LEAF, np.int8),
            np.full(n_s, KIND_SADDLE, np.int8),
            np.full(reps.size, KIND_ROOT, np.int8),
        ]
    )
    if reps.size > 1:
        logger.info("landscape has %d connected components (essential classes)", reps.size)
    return MergeTree(
        node_index=node_index,
        node_value=node_value,
        node_kind=node_kind,
        node_parent=parent_arr,
        n_minima=m,
        death=np.asarray(death, dtype=np.int64),
        merges_into=np.asarray(into, dtype=np.int64),
        labels=labels,
        volumes=np.asarray(volumes, dtype=np.int64),
        shape=shape,
        kind=kind,
        connectivity=connectivity,
        value_range=value_range,
        coords=coords,
        basin_edges=basin_edges,
        basin_top=basin_top,
    )


def _finite_range(flat: np.ndarray) -> tuple[float, float]:
    fin = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
    if fin.size == 0:
        return (float("nan"), float("nan"))
    return (float(fin.min()), float(fin.max()))


#: Fewer finite values than this, among non-finite ones, leave no topology to describe.
MIN_FINITE_VALUES = 2


def _check_enough_finite(flat: np.ndarray) -> None:
    """Refuse values with (almost) nothing finite: one basin and SMAD 0 would be made up."""
    finite = int(np.count_nonzero(np.isfinite(flat)))
    if finite >= MIN_FINITE_VALUES or finite == flat.size:  # one finite point is a landscape
        return
    counts = {"NaN": int(np.isnan(flat).sum()), "+inf": int(np.isposinf(flat).sum()),
              "-inf": int(np.isneginf(flat).sum())}
    detail = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    raise ValueError(
        f"only {finite} of {flat.size} values are finite ({detail}): minima, saddles, SMAD and "
        "persistence of these values would be made up. The loss is not finite here: check "
        "the model's weights and data, or sample a smaller extent around θ₀")


@dataclass(frozen=True)
class _Grid:
    """The points of an n-D grid, neighbours by ``connectivity``."""

    shape: tuple[int, ...]
    connectivity: str

    def lowest_neighbour(self, rank: np.ndarray) -> np.ndarray:
        return lowest_neighbour_grid(rank, self.shape, self.connectivity)

    def slots(self) -> int:
        """Neighbours of one point (at most one basin edge each)."""
        d = len(self.shape)
        return 3 ** d - 1 if self.connectivity == "full" else 2 * d

    def basin_edges(self, labels: np.ndarray, rank: np.ndarray, m: int) -> tuple[Any, ...]:
        return basin_edges_grid(labels, rank, self.shape, self.connectivity, m)

    def basin_top_ranks(self, labels: np.ndarray, order: np.ndarray, rank: np.ndarray,
                        m: int) -> np.ndarray:
        """Rank of each basin's highest point; a grid is connected, so only the basin holding
        the global top has one (the others are closed by saddles)."""
        top = np.full(m, -1, dtype=np.int64)
        top[labels[order[-1]]] = order.size - 1
        return top


@dataclass(frozen=True)
class _Graph:
    """The points of a general graph given by its edges."""

    edges: np.ndarray
    n_points: int
    shape: None = None
    connectivity: None = None

    def lowest_neighbour(self, rank: np.ndarray) -> np.ndarray:
        return lowest_neighbour_graph(rank, self.edges)

    def slots(self) -> int:
        """Mean degree (rounded up)."""
        return -(-2 * len(self.edges) // max(self.n_points, 1))

    def basin_edges(self, labels: np.ndarray, rank: np.ndarray, m: int) -> tuple[Any, ...]:
        return basin_edges_graph(labels, rank, self.edges, m)

    def basin_top_ranks(self, labels: np.ndarray, order: np.ndarray, rank: np.ndarray,
                        m: int) -> np.ndarray:
        """Rank of each basin's highest point (components of a graph each have a top)."""
        top = np.full(m, -1, dtype=np.int64)
        np.maximum.at(top, labels, rank.astype(np.int64))
        return top


def _domain(values: np.ndarray, connectivity: str, edges: np.ndarray | None,
            coords: object) -> tuple[np.ndarray, _Grid | _Graph]:
    """The flat float values and the domain they live on (a grid, or the graph of
    ``edges``), checked."""
    arr = np.asarray(values)
    if arr.size == 0:
        raise ValueError("values must not be empty")
    flat = arr.reshape(-1)
    if flat.dtype.kind not in "f":
        flat = flat.astype(float)
    if edges is not None:
        if arr.ndim != 1:
            raise ValueError("with edges, values must be a 1-D array of point values")
        return flat, _Graph(validate_edges(edges, flat.size), flat.size)
    if arr.ndim == 0:
        raise ValueError("a grid needs at least one dimension")
    _check_connectivity(connectivity)
    shape = tuple(int(s) for s in arr.shape)
    if coords is not None and isinstance(coords, (list, tuple)) and (
            len(coords) != len(shape)
            or any(np.asarray(c).size != s for c, s in zip(coords, shape, strict=True))):
        raise ValueError("grid coords must be one 1-D array per axis matching the shape")
    return flat, _Grid(shape, connectivity)


def merge_tree(
    values: np.ndarray,
    *,
    connectivity: str = "full",
    kind: str = "sublevel",
    edges: np.ndarray | None = None,
    coords: object = None,
    nonfinite: str = "highest",
    memory_budget: int | str | None = None,
) -> MergeTree:
    """Exact merge tree of a function sampled on a grid or on a graph.

    Args:
        values: n-D array of values on a grid (``"ij"`` indexing) when ``edges`` is None, or a
            1-D array of point values when ``edges`` is given.
        connectivity: Grid neighbourhood, ``"full"`` (3**d - 1 neighbours, default) or
            ``"axis"`` (2 d); ignored for graphs.
        kind: ``"sublevel"`` (minima merge going up) or ``"superlevel"`` (maxima merge going
            down, computed on the reversed order).
        edges: Optional (E, 2) integer edge array of a general graph.
        coords: Optional coordinates: per-axis 1-D arrays for a grid, or an (N, d) array.
        nonfinite: ``"highest"`` (NaN/+inf ranked above all finite values) or ``"raise"``.
        memory_budget: bytes (or e.g. ``"1GiB"``) the computation may use beyond ``values``.
            Checked before any work (`BYTES_PER_POINT` per point) and again once the minima are
            known, estimating one basin edge per neighbour slot of each minimum (``3**d - 1``
            or ``2 d``; the mean degree for graphs; at most one per pair of minima) at
            `BYTES_PER_BASIN_EDGE`: on i.i.d.
            noise, the worst case measured, the real count was 0.16-1.02 times that. A
            `MemoryError` says what to change.

    Returns:
        The `MergeTree`, including basin labels and volumes.
    """
    flat, domain = _domain(values, connectivity, edges, coords)
    n = flat.size
    _check_enough_finite(flat)
    budget = None if memory_budget is None else parse_bytes(memory_budget)
    _check_budget(budget, n, 0, "")
    order, rank = total_order(flat, nonfinite=nonfinite, kind=kind)
    labels, minima = descent_labels(domain.lowest_neighbour(rank), order, rank)
    m = int(minima.size)
    _check_budget(budget, n, min(m * domain.slots(), m * (m - 1) // 2), f" with {m} minima")
    lo, hi, key = domain.basin_edges(labels, rank, m)
    s_idx = order[key].astype(np.int64)
    t_rank = domain.basin_top_ranks(labels, order, rank, m)
    t_idx = np.where(t_rank >= 0, order[np.maximum(t_rank, 0)], -1).astype(np.int64)
    t_val = np.where(t_rank >= 0, flat[np.maximum(t_idx, 0)], np.nan)
    del order, rank
    tree = build_tree(
        min_index=minima,
        min_value=flat[minima],
        basin_edges=(lo, hi, key, s_idx, flat[s_idx]),
        basin_top=(t_rank, t_idx, t_val),
        labels=labels.reshape(domain.shape) if domain.shape is not None else labels,
        volumes=np.bincount(labels, minlength=m),
        shape=domain.shape,
        kind=kind,
        connectivity=domain.connectivity,
        value_range=_finite_range(flat),
        coords=coords,
    )
    logger.debug("merge tree: %d points, %d minima, %d basin edges, %d saddles", n, m,
                 key.size, tree.saddle_nodes.size)
    return tree
