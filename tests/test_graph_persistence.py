"""Loss-filtered graph persistence: hand-computed diagrams and independent references."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from landscaper.topology import (
    graph_persistence,
    knn_graph_from_distances,
    persistence_diagram,
    total_persistence_of,
)

INF = np.inf
SQUARE = np.array([[0, 1], [1, 2], [2, 3], [3, 0]])


def rows(a) -> list[tuple[float, float]]:
    return sorted(map(tuple, np.asarray(a, dtype=float).reshape(-1, 2).tolist()))


# --------------------------------------------------------------------------- hand computations
def test_square_cycle_without_triangles():
    # Values [0, 2, 1, 3] on the chordless square 0-1-2-3-0. Edge values (max of the ends):
    # 01 -> 2, 12 -> 2, 23 -> 3, 30 -> 3.
    # t=0: vertex 0 is born. t=1: vertex 2 is born (second component).
    # t=2: vertex 1 and edges 01, 12 join {0} and {2}: the younger (born 1) dies -> (1, 2).
    # t=3: vertex 3 is born and dies at once (zero length, dropped); the second of its edges
    #      closes the cycle -> D1 gets (3, inf), never filled: there are no triangles at all.
    values = np.array([0.0, 2.0, 1.0, 3.0])
    for fill in (False, True):  # a chordless square has no triangle to fill it
        gp = graph_persistence(values, SQUARE, fill_triangles=fill)
        assert rows(gp.diagrams[0]) == [(0.0, INF), (1.0, 2.0)]
        assert gp.essential[0].tolist() == [True, False]
        assert rows(gp.diagrams[1]) == [(3.0, INF)]
        assert gp.essential[1].tolist() == [True]
        assert gp.n_essential(0) == 1 and gp.n_essential(1) == 1
        assert gp.n_triangles == 0
        assert gp.total_persistence(0) == 1.0  # (2 - 1)^2
        assert gp.total_persistence(1) == 0.0  # essential only
        assert gp.total_persistence(1, essential="cap") == 0.0  # capped at value_max = 3
        assert gp.total_persistence(0, essential="cap") == 1.0 + 9.0  # (3 - 0)^2 added


def test_square_with_diagonal_is_filled():
    # Add the chord 0-2 (value max(0, 1) = 1): triangles 012 (value 2) and 023 (value 3).
    # t=1: edge 02 joins {2} to {0} at the moment 2 is born -> zero length, dropped. D0 = (0, inf).
    # t=2: vertex 1, edges 01, 12 close the cycle 0-1-2 and triangle 012 fills it at once.
    # t=3: likewise for 0-2-3 and triangle 023. With triangles D1 is empty; without, both
    #      cycles are essential, born at 2 and 3.
    values = np.array([0.0, 2.0, 1.0, 3.0])
    edges = np.vstack([SQUARE, [[0, 2]]])
    filled = graph_persistence(values, edges)
    assert rows(filled.diagrams[0]) == [(0.0, INF)]
    assert filled.diagrams[1].shape == (0, 2)
    assert filled.n_triangles == 2 and filled.fill_triangles
    bare = graph_persistence(values, edges, fill_triangles=False)
    assert rows(bare.diagrams[1]) == [(2.0, INF), (3.0, INF)]
    assert bare.essential[1].all() and bare.n_triangles == 0
    assert bare.total_persistence(1, essential="cap") == 1.0  # (3 - 2)^2 + (3 - 3)^2


def test_coned_square_has_a_finite_loop():
    # Square 0-1-2-3-0 with values [0, 5, 1, 4], plus a cone vertex 4 (value 10) joined to all
    # four: triangles 014, 124, 234, 304 (all value 10); the square itself has no chord.
    # Edges: 01 -> 5, 12 -> 5, 23 -> 4, 30 -> 4, i4 -> 10.
    # t=0: {0}. t=1: {2}. t=4: vertex 3 with edges 23, 30 joins {0}, {2} -> D0 (1, 4).
    # t=5: vertex 1, edges 01, 12 close the square -> a loop born at 5.
    # t=10: the cone's triangles fill it -> D1 (5, 10); the cone's own new cycles die at once.
    values = np.array([0.0, 5.0, 1.0, 4.0, 10.0])
    edges = np.vstack([SQUARE, [[0, 4], [1, 4], [2, 4], [3, 4]]])
    gp = graph_persistence(values, edges)
    assert rows(gp.diagrams[0]) == [(0.0, INF), (1.0, 4.0)]
    assert rows(gp.diagrams[1]) == [(5.0, 10.0)]
    assert gp.n_essential(1) == 0 and gp.n_triangles == 4
    assert gp.total_persistence(0) == 9.0 and gp.total_persistence(1) == 25.0
    assert gp.total_persistence(1, p=1) == 5.0
    # Without triangles: the square's cycle (5, inf) and three cone cycles born at 10.
    bare = graph_persistence(values, edges, fill_triangles=False)
    assert rows(bare.diagrams[1]) == [(5.0, INF), (10.0, INF), (10.0, INF), (10.0, INF)]
    assert bare.total_persistence(1) == 0.0
    # max_dim=0 computes D0 only.
    d0 = graph_persistence(values, edges, max_dim=0)
    assert list(d0.diagrams) == [0] and rows(d0.diagrams[0]) == rows(gp.diagrams[0])
    with pytest.raises(ValueError, match="not computed"):
        d0.total_persistence(1)


def test_infinite_values_and_essential_classes_are_explicit():
    # Vertices 0 (value 0) and 1 (value 1) only meet through vertex 2 (value +inf): the younger
    # class dies at inf but is NOT essential; vertex 3 (value 2) is isolated: essential.
    values = np.array([0.0, 1.0, INF, 2.0])
    gp = graph_persistence(values, np.array([[0, 2], [2, 1], [1, 2], [3, 3]]))
    assert rows(gp.diagrams[0]) == [(0.0, INF), (1.0, INF), (2.0, INF)]
    assert gp.essential[0].tolist() == [True, False, True]
    assert gp.n_essential(0) == 2 and gp.n_edges == 2
    assert gp.total_persistence(0) == 0.0
    assert gp.total_persistence(0, essential="cap") == 4.0 + 1.0 + 0.0  # cap = value_max = 2


def test_nan_values_raise_with_count():
    values = np.array([0.0, np.nan, 1.0, np.nan])
    with pytest.raises(ValueError, match="2 of 4"):
        graph_persistence(values, SQUARE)
    with pytest.raises(ValueError, match="NaN"):
        knn_graph_from_distances(np.array([[0.0, np.nan], [1.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="max_dim"):
        graph_persistence(np.zeros(4), SQUARE, max_dim=2)
    with pytest.raises(ValueError, match="essential"):
        graph_persistence(np.zeros(4), SQUARE).total_persistence(0, essential="keep")


# --------------------------------------------------------------------------- references
def _random_case(seed: int, n: int = 30, k: int = 4):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 2))
    values = rng.integers(0, 6, size=n).astype(float)  # many ties
    return values, knn_graph_from_distances(cdist(pts, pts), k)


@pytest.mark.parametrize("seed", range(6))
def test_d0_matches_merge_tree(seed):
    values, edges = _random_case(seed)
    if seed % 2:  # also a sparser, possibly disconnected graph
        edges = edges[::3]
    ref = persistence_diagram(values, edges=edges)
    ref = ref[ref[:, 0] != ref[:, 1]]
    for fill in (True, False):
        gp = graph_persistence(values, edges, fill_triangles=fill)
        assert rows(gp.diagrams[0]) == rows(ref)
        n_comp = nx.number_connected_components(_nx_graph(values.size, edges))
        assert gp.n_essential(0) == n_comp


def _nx_graph(n: int, edges: np.ndarray) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(map(tuple, edges.tolist()))
    return g


def _reference_diagrams(values, edges, fill):
    """Textbook Z/2 column reduction over the clique complex (networkx cliques), no gudhi."""
    g = _nx_graph(values.size, edges)
    simplices = [(v,) for v in range(values.size)] + [tuple(sorted(e)) for e in g.edges]
    if fill:
        simplices += [tuple(sorted(c)) for c in nx.enumerate_all_cliques(g) if len(c) == 3]
    simplices.sort(key=lambda s: (max(values[list(s)]), len(s), s))
    index = {s: i for i, s in enumerate(simplices)}
    value = [max(values[list(s)]) for s in simplices]
    low_of: dict[int, int] = {}
    paired = set()
    diagrams = {0: [], 1: []}
    for j, s in enumerate(simplices):
        col = {index[f] for f in itertools.combinations(s, len(s) - 1)} if len(s) > 1 else set()
        while col and max(col) in low_of:
            col ^= low_of[max(col)]
        if col:
            i = max(col)
            low_of[i] = col
            paired.update((i, j))
            if value[i] != value[j]:
                diagrams[len(simplices[i]) - 1].append((value[i], value[j]))
    for j, s in enumerate(simplices):
        if j not in paired and len(s) <= 2:
            diagrams[len(s) - 1].append((value[j], INF))
    return {d: sorted(v) for d, v in diagrams.items()}


def _random_graph(seed: int, n: int = 14, density: float = 0.4):
    """Erdos-Renyi graph with tied integer values: many triangles and some lasting loops."""
    rng = np.random.default_rng(seed)
    iu = np.triu_indices(n, 1)
    keep = rng.random(iu[0].size) < density
    return rng.integers(0, 10, size=n).astype(float), np.stack([iu[0][keep], iu[1][keep]], 1)


@pytest.mark.parametrize("fill", [True, False])
def test_d0_d1_match_textbook_reduction(fill):
    cases = [_random_graph(seed) for seed in range(4)] + [_random_case(101, n=25, k=4)]
    n_finite_loops = 0
    for values, edges in cases:
        ref = _reference_diagrams(values, edges, fill)
        gp = graph_persistence(values, edges, fill_triangles=fill)
        assert rows(gp.diagrams[0]) == ref[0]
        assert rows(gp.diagrams[1]) == ref[1]
        n_finite_loops += int(np.count_nonzero(~gp.essential[1]))
        if not fill:  # every independent cycle is essential: the cycle rank E - V + C
            g = _nx_graph(values.size, edges)
            rank = g.number_of_edges() - g.number_of_nodes() + nx.number_connected_components(g)
            assert gp.n_essential(1) == rank == gp.diagrams[1].shape[0]
    # The cases do contain loops that are born and later filled (and none without triangles).
    assert (n_finite_loops > 0) == fill


def test_total_persistence_invariant_to_rotation():
    rng = np.random.default_rng(7)
    pts = rng.normal(size=(60, 5))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    values = rng.random(60)
    a = total_persistence_of(values, cdist(pts, pts), k=6)
    b = total_persistence_of(values, cdist(pts @ q, pts @ q), k=6)
    np.testing.assert_array_equal(a.edges, b.edges)
    assert a.total == b.total and a.n_essential == b.n_essential
    assert a[0] == a.total[0] > 0 and a[1] == a.persistence.total_persistence(1)
    assert a.n_essential[0] == nx.number_connected_components(_nx_graph(60, a.edges))
    # The authors' variant: nothing fills a cycle, so D1 has no finite pair.
    c = total_persistence_of(values, cdist(pts, pts), k=6, fill_triangles=False)
    assert c[0] == a[0] and c[1] == 0.0 and c.n_essential[1] >= a.n_essential[1]


# --------------------------------------------------------------------------- kNN graph
def _brute_knn(d, k, mutual):
    n = d.shape[0]
    chosen = set()
    for i in range(n):
        cand = sorted((d[i, j], j) for j in range(n) if j != i)  # ties: lower index first
        chosen |= {(i, j) for _, j in cand[:k]}
    if mutual:
        pairs = {(min(i, j), max(i, j)) for i, j in chosen if (j, i) in chosen}
    else:
        pairs = {(min(i, j), max(i, j)) for i, j in chosen}
    return sorted(pairs)


@pytest.mark.parametrize("mutual", [False, True])
def test_knn_matches_brute_force(mutual):
    rng = np.random.default_rng(3)
    for d in (rng.random((15, 15)), rng.integers(0, 4, size=(15, 15)).astype(float)):
        for k in (1, 3, 14, 40):
            got = knn_graph_from_distances(d, k, mutual=mutual)
            assert got.dtype == np.int64 and (got[:, 0] < got[:, 1]).all()
            assert [tuple(r) for r in got.tolist()] == _brute_knn(d, k, mutual)


def test_knn_takes_nearest_points_and_breaks_ties_by_index():
    x = np.array([0.0, 1.0, 2.0, 10.0, 11.0])  # points on a line
    d = np.abs(x[:, None] - x[None, :])
    assert knn_graph_from_distances(d, 1).tolist() == [[0, 1], [1, 2], [3, 4]]
    assert knn_graph_from_distances(d, 1, mutual=True).tolist() == [[0, 1], [3, 4]]
    # Point 0 is equidistant from 1 and 2 (which prefer each other): the lower index wins.
    tie = np.array([[0.0, 1.0, 1.0], [5.0, 0.0, 0.5], [5.0, 0.5, 0.0]])
    assert knn_graph_from_distances(tie, 1).tolist() == [[0, 1], [1, 2]]
    assert knn_graph_from_distances(tie[[0, 2, 1]][:, [0, 2, 1]], 1).tolist() == [[0, 1], [1, 2]]
    # All distances equal: each point picks the lowest other indices.
    flat = np.ones((4, 4))
    assert knn_graph_from_distances(flat, 1).tolist() == [[0, 1], [0, 2], [0, 3]]
    assert knn_graph_from_distances(np.zeros((1, 1)), 5).shape == (0, 2)
    with pytest.raises(ValueError, match="square"):
        knn_graph_from_distances(np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="k must"):
        knn_graph_from_distances(flat, 0)
