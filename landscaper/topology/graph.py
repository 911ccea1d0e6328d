"""Loss-filtered persistence on kNN graphs (the TDA step of jump & retrain + PHATE).

Horoi et al. (2022, sections 2.2, 3.3 and 4.4) build a k-nearest-neighbour graph (``k = 20``) on
the PHATE diffusion-potential distances between sampled parameter vectors, give every vertex its
loss, filter the graph by loss (a vertex enters at its loss, an edge at the larger loss of its two
ends: a *lower-star* filtration) and summarise the persistence diagrams ``D0`` and ``D1`` by their
total persistence ``pers(D) = sum |d - c| ** 2``.

What this module does differently, on purpose:

* **Cycles can die.** On a bare graph nothing ever fills a cycle, so every independent cycle is an
  essential class of ``D1`` (the authors' behaviour, kept as ``fill_triangles=False``). By default
  the graph is completed to its clique (flag) complex up to dimension 2: every triangle of the
  graph is added at the largest loss of its three vertices, and a cycle dies when triangles fill
  it. ``D1`` then measures loops that are *really* there, with finite persistence.
* **Essential classes are explicit.** Diagrams use the convention of
  `landscaper.topology.persistence` (``(n, 2)`` float ``(birth, death)`` rows, essential
  death ``inf``) and each diagram comes with a boolean mask of its essential rows, so a class that
  is killed at a vertex of loss ``+inf`` is never confused with a class that never dies.
* **Ties are exact.** The filtration is computed on the strict total order of the values (stable
  argsort: ties broken by vertex index, the rule of `landscaper.topology.order`) and mapped
  back to values; zero-length pairs are dropped. The result depends on the values only, not on
  the tie-breaking, and ``D0`` equals the diagram of `landscaper.topology.merge_tree` on
  the same graph (without its zero-length pairs).

Homology is computed with ``gudhi.SimplexTree`` over the field Z/2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .neighbours import validate_edges
from .persistence import _import_gudhi, total_persistence

logger = logging.getLogger(__name__)

__all__ = [
    "GraphPersistence",
    "TotalPersistence",
    "graph_persistence",
    "knn_graph_from_distances",
    "total_persistence_of",
]

_ESSENTIAL_CHOICES = ("exclude", "cap")
_HOMOLOGY_FIELD = 2


# --------------------------------------------------------------------------- kNN graph
def _real_floats(array: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """``array`` as floats and its number of NaNs; a TypeError for non-real dtypes."""
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be real numbers, got dtype {array.dtype}")
    array = array.astype(float, copy=False)
    return array, int(np.count_nonzero(np.isnan(array)))


def _check_distances(distances: np.ndarray) -> np.ndarray:
    d = np.asarray(distances)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square (n, n) matrix, got shape {d.shape}")
    d, n_nan = _real_floats(d, "distances")
    if n_nan:
        raise ValueError(f"distances contain {n_nan} NaN entr{'y' if n_nan == 1 else 'ies'}")
    return d


def knn_graph_from_distances(
    distances: np.ndarray, k: int = 20, *, mutual: bool = False
) -> np.ndarray:
    """Undirected k-nearest-neighbour graph from a precomputed distance matrix.

    Every point ``i`` is joined to the ``k`` *nearest* other points, i.e. the ``k`` smallest
    entries of row ``i`` excluding the diagonal. Ties are broken by the lower column index (a
    stable sort), so the graph is deterministic. The directed choices are then symmetrised.

    The paper (Horoi et al. 2022, section 3.3) builds this graph with ``k = 20`` on PHATE
    diffusion-potential distances. The authors' research code instead sorts each row of the
    diffusion *potential* and keeps the *largest* entries, which looks inverted: for a distance
    it keeps the farthest points. Here the nearest points are taken, as the paper's text says.

    Args:
        distances: ``(n, n)`` distance matrix. Row ``i`` gives the distances from point ``i``; it
            need not be symmetric (row ``i`` alone decides the neighbours of ``i``). The diagonal
            is ignored. ``+inf`` is allowed and sorts last; NaN raises ``ValueError``.
        k: Neighbours per point (>= 1); clipped to ``n - 1``.
        mutual: ``False`` (default) keeps an edge if either end chose the other (union);
            ``True`` only if both did (mutual kNN graph, intersection).

    Returns:
        ``(E, 2)`` int64 array of undirected edges ``(i, j)`` with ``i < j``, deduplicated and
        sorted lexicographically.
    """
    d = _check_distances(distances)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    n = d.shape[0]
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    kk = min(int(k), n - 1)
    # Rows are processed in chunks so the (rows, n) argsort stays a few tens of MB.
    chunk = max(1, (1 << 22) // n)
    nbrs = np.empty((n, kk), dtype=np.int64)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        order = np.argsort(d[rows], axis=1, kind="stable")
        # Every row holds its own index exactly once: removing it leaves n - 1 per row.
        keep = order != rows[:, None]
        nbrs[rows] = order[keep].reshape(rows.size, n - 1)[:, :kk]
    src = np.repeat(np.arange(n, dtype=np.int64), kk)
    dst = nbrs.ravel()
    codes = np.minimum(src, dst) * n + np.maximum(src, dst)
    uniq, counts = np.unique(codes, return_counts=True)
    if mutual:
        # Each directed choice occurs once, so an undirected pair is chosen twice iff mutual.
        uniq = uniq[counts == 2]
    return np.stack([uniq // n, uniq % n], axis=1).astype(np.int64, copy=False)


# --------------------------------------------------------------------------- persistence
@dataclass(frozen=True, eq=False)
class GraphPersistence:
    """Persistence diagrams of a lower-star (loss) filtration of a graph.

    Attributes:
        diagrams: ``dim -> (m, 2)`` float array of ``(birth, death)`` rows, sorted by birth then
            death; zero-length pairs removed; essential classes have death ``inf``.
        essential: ``dim -> (m,)`` bool mask of the essential rows of ``diagrams[dim]`` (classes
            that never die). A non-essential row may still have death ``inf`` when it is killed
            by a simplex whose value is ``+inf``.
        max_dim: Highest homology dimension computed (0 or 1).
        fill_triangles: Whether the triangles of the clique complex were added.
        filtration: Human-readable description of the filtration.
        n_vertices: Number of vertices.
        n_edges: Number of distinct edges (self-loops dropped).
        n_triangles: Number of triangles added (0 unless ``fill_triangles``).
        value_max: Largest finite vertex value (NaN if none); the cap used by
            ``total_persistence(..., essential="cap")``.
        homology_coeff_field: The coefficient field Z/p used (2).
    """

    diagrams: dict[int, np.ndarray]
    essential: dict[int, np.ndarray]
    max_dim: int
    fill_triangles: bool
    filtration: str
    n_vertices: int
    n_edges: int
    n_triangles: int
    value_max: float
    homology_coeff_field: int = _HOMOLOGY_FIELD

    def n_essential(self, dim: int) -> int:
        """Number of essential classes in dimension ``dim`` (the Betti number of the graph or
        complex: connected components for 0, independent unfilled cycles for 1)."""
        return int(np.count_nonzero(self._mask(dim)))

    def _mask(self, dim: int) -> np.ndarray:
        if dim not in self.diagrams:
            raise ValueError(f"dimension {dim} was not computed (max_dim={self.max_dim})")
        return self.essential[dim]

    def total_persistence(self, dim: int, p: float = 2.0, essential: str = "exclude") -> float:
        """Total persistence ``sum |death - birth| ** p`` of the diagram in dimension ``dim``.

        Args:
            dim: Homology dimension (<= ``max_dim``).
            p: Exponent (> 0); the paper uses 2.
            essential: ``"exclude"`` (default) sums over pairs with finite birth and death only:
                essential classes (and classes killed at value ``+inf``) are left out, count them
                with `n_essential`. ``"cap"`` truncates the filtration at ``value_max``:
                every death ``inf`` is replaced by ``value_max`` before summing (pairs with a
                non-finite birth are still left out).

        Returns:
            The total persistence as a float (0.0 for an empty diagram).
        """
        if essential not in _ESSENTIAL_CHOICES:
            raise ValueError(f"essential must be one of {_ESSENTIAL_CHOICES}, got {essential!r}")
        if not p > 0:
            raise ValueError(f"p must be > 0, got {p}")
        self._mask(dim)
        d = self.diagrams[dim]
        if essential == "cap" and d.size:
            d = d.copy()
            d[d[:, 1] == np.inf, 1] = self.value_max
        return total_persistence(d, p)


def _clean_edges(edges: np.ndarray, n: int) -> np.ndarray:
    e = validate_edges(edges, n)
    if e.size == 0:
        return e
    a, b = np.minimum(e[:, 0], e[:, 1]), np.maximum(e[:, 0], e[:, 1])
    codes = np.unique((a * n + b)[a != b])
    return np.stack([codes // n, codes % n], axis=1)


def _checked_values(values: np.ndarray, max_dim: int) -> np.ndarray:
    """The vertex values as a 1-D float array; NaN and a bad ``max_dim`` refused."""
    vals = np.asarray(values)
    if vals.ndim != 1 or vals.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {vals.shape}")
    vals, n_nan = _real_floats(vals, "values")
    if n_nan:
        raise ValueError(
            f"{n_nan} of {vals.size} value(s) are NaN; replace them (e.g. by +inf to let those "
            "vertices enter last) or drop them before computing persistence"
        )
    if max_dim not in (0, 1):
        raise ValueError(f"max_dim must be 0 or 1, got {max_dim}")
    return vals


def _rank_filtration(gudhi: Any, vals: np.ndarray, e: np.ndarray, fill: bool
                     ) -> tuple[Any, np.ndarray]:
    """The lower-star filtration on the ranks of the values (a strict total order: stable
    argsort, ties by vertex index, as `landscaper.topology.order`), and the sorted values that
    turn ranks back into values."""
    n = vals.size
    order = np.argsort(vals, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    rank_f = rank.astype(float)
    st = gudhi.SimplexTree()
    st.insert_batch(np.arange(n, dtype=np.int64)[None, :], rank_f)
    if e.size:
        st.insert_batch(e.T.copy(), np.maximum(rank_f[e[:, 0]], rank_f[e[:, 1]]))
    if fill:
        # A new simplex gets the largest filtration value of its faces: max over its vertices.
        st.expansion(2)
    return st, vals[order]


def _diagram_in_values(st: Any, sorted_vals: np.ndarray, dim: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Dimension ``dim``'s (birth, death) pairs in values, zero-length pairs dropped, sorted;
    and which of them are essential."""
    iv = np.asarray(st.persistence_intervals_in_dimension(dim), dtype=float).reshape(-1, 2)
    ess = np.isinf(iv[:, 1])
    birth = sorted_vals[iv[:, 0].astype(np.int64)]
    death = np.full(birth.shape, np.inf)
    death[~ess] = sorted_vals[iv[~ess, 1].astype(np.int64)]
    keep = ess | (death != birth)
    birth, death, ess = birth[keep], death[keep], ess[keep]
    idx = np.lexsort((death, birth))
    return np.stack([birth[idx], death[idx]], axis=1).reshape(-1, 2), ess[idx]


def graph_persistence(
    values: np.ndarray,
    edges: np.ndarray,
    *,
    max_dim: int = 1,
    fill_triangles: bool = True,
) -> GraphPersistence:
    """Persistence diagrams of the sublevel (lower-star) filtration of a graph by vertex values.

    A vertex enters at its value, an edge at the larger value of its two ends and, with
    ``fill_triangles``, every triangle of the graph (3-clique) at the largest value of its three
    vertices: the clique (flag) complex up to dimension 2. Triangles kill cycles, so ``D1`` holds
    the loops of the landscape with their lifetimes. With ``fill_triangles=False`` (the
    behaviour of the authors' code) nothing kills a cycle: every independent cycle of the graph is
    an essential class of ``D1``, born at the edge that closes it, and ``n_essential(1)`` is the
    cycle rank ``E - V + C``.

    The computation runs on the ranks of the values (ties broken by vertex index), a refinement
    of the value filtration, so births and deaths are always vertex values and zero-length pairs
    (including ties) are dropped; the resulting diagrams do not depend on the tie-breaking.

    Args:
        values: ``(n,)`` vertex values (e.g. losses). ``+inf`` and ``-inf`` are allowed
            (``+inf`` vertices enter last); NaN raises ``ValueError`` -- decide first what a
            diverged loss should mean (e.g. replace it by ``+inf``).
        edges: ``(E, 2)`` integer edges; duplicates, both orientations and self-loops are fine.
        max_dim: Highest homology dimension, 0 or 1.
        fill_triangles: Add the triangles of the clique complex (default ``True``).

    Returns:
        A `GraphPersistence`. ``D0`` has one essential class per connected component.
    """
    vals = _checked_values(values, max_dim)
    n = vals.size
    e = _clean_edges(edges, n)
    gudhi = _import_gudhi("graph persistence diagrams")
    fill = bool(fill_triangles) and max_dim >= 1
    st, sorted_vals = _rank_filtration(gudhi, vals, e, fill)
    n_triangles = int(st.num_simplices()) - n - int(e.shape[0])
    # persistence_dim_max: H1 of a 1-dimensional complex (a bare graph) is only computed on demand.
    st.persistence(
        homology_coeff_field=_HOMOLOGY_FIELD, min_persistence=0.0, persistence_dim_max=max_dim >= 1
    )
    diagrams: dict[int, np.ndarray] = {}
    essential: dict[int, np.ndarray] = {}
    for dim in range(max_dim + 1):
        diagrams[dim], essential[dim] = _diagram_in_values(st, sorted_vals, dim)

    finite = vals[np.isfinite(vals)]
    kind = "clique complex up to dimension 2" if fill else "graph"
    result = GraphPersistence(
        diagrams=diagrams,
        essential=essential,
        max_dim=int(max_dim),
        fill_triangles=fill,
        filtration=f"lower-star (sublevel) filtration of the {kind} by vertex values",
        n_vertices=n,
        n_edges=int(e.shape[0]),
        n_triangles=n_triangles,
        value_max=float(finite.max()) if finite.size else float("nan"),
    )
    logger.debug(
        "graph persistence: %d vertices, %d edges, %d triangles, %s pairs",
        n,
        e.shape[0],
        n_triangles,
        {d: int(v.shape[0]) for d, v in diagrams.items()},
    )
    return result


# --------------------------------------------------------------------------- convenience
@dataclass(frozen=True, eq=False)
class TotalPersistence:
    """Total persistence per dimension, with the essential classes counted separately.

    ``result[dim]`` is ``total[dim]``. Attributes:
        total: ``{0: pers(D0), 1: pers(D1)}`` over the finite pairs only.
        n_essential: ``{0: components, 1: unfilled independent cycles}`` (left out of ``total``).
        p: The exponent used.
        k: Neighbours per point of the kNN graph.
        edges: The ``(E, 2)`` kNN edges.
        persistence: The full `GraphPersistence`.
    """

    total: dict[int, float]
    n_essential: dict[int, int]
    p: float
    k: int
    edges: np.ndarray
    persistence: GraphPersistence

    def __getitem__(self, dim: int) -> float:
        return self.total[dim]


def total_persistence_of(
    values: np.ndarray,
    distances: np.ndarray,
    k: int = 20,
    p: float = 2.0,
    *,
    mutual: bool = False,
    fill_triangles: bool = True,
) -> TotalPersistence:
    """The paper's topological summary: kNN graph, loss filtration, total persistence.

    Runs `knn_graph_from_distances` then `graph_persistence` (dimensions 0 and 1)
    and sums ``|death - birth| ** p`` over each diagram. Only finite pairs enter the sums:
    essential classes (one per connected component in ``D0``; cycles never filled in ``D1``) have
    no finite lifetime and are reported separately, as counts, in ``n_essential``. Both numbers
    depend on the distances only through the kNN graph, so they are invariant to any isometry
    of the embedding (e.g. rotations).

    Args:
        values: ``(n,)`` vertex values (losses); NaN raises.
        distances: ``(n, n)`` distance matrix (e.g. PHATE diffusion-potential distances).
        k: Neighbours per point (the paper uses 20).
        p: Exponent of the total persistence (the paper uses 2).
        mutual: Mutual kNN graph instead of the union.
        fill_triangles: Fill triangles of the clique complex (``False``: the authors' choice,
            every cycle essential, ``D1`` total persistence then 0).

    Returns:
        A `TotalPersistence`; ``result[0]`` and ``result[1]`` are the two totals.
    """
    vals = np.asarray(values)
    d = np.asarray(distances)
    if d.ndim != 2 or vals.ndim != 1 or d.shape[0] != vals.size:
        raise ValueError(
            f"values (shape {vals.shape}) and distances (shape {d.shape}) must describe the "
            "same n points"
        )
    edges = knn_graph_from_distances(d, k, mutual=mutual)
    gp = graph_persistence(vals, edges, max_dim=1, fill_triangles=fill_triangles)
    return TotalPersistence(
        total={dim: gp.total_persistence(dim, p=p) for dim in (0, 1)},
        n_essential={dim: gp.n_essential(dim) for dim in (0, 1)},
        p=float(p),
        k=int(k),
        edges=edges,
        persistence=gp,
    )
