"""Tests of landscaper.topology against independent references (gudhi, a plain union-find,
analytic landscapes and hand computations)."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

from landscaper.topology import (
    basin_metric,
    basins,
    bottleneck_distance,
    knn_edges,
    landscape_profile,
    merge_tree,
    persistence_diagram,
    rank_values,
    simplify,
    smad,
    total_persistence,
    wasserstein_distance,
)

gudhi = pytest.importorskip("gudhi")

GUDHI_KW = {"axis": "vertices", "full": "top_dimensional_cells"}


def _sorted(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=float).reshape(-1, 2)
    return d[np.lexsort((d[:, 1], d[:, 0]))]


def _nonzero(d: np.ndarray) -> np.ndarray:
    return _sorted(d[d[:, 1] != d[:, 0]])


def _gudhi_h0(f: np.ndarray, connectivity: str) -> np.ndarray:
    cc = gudhi.CubicalComplex(**{GUDHI_KW[connectivity]: f})
    cc.compute_persistence()
    return np.asarray(cc.persistence_intervals_in_dimension(0)).reshape(-1, 2)


# --------------------------------------------------------------------------- references
def _neighbours(shape, connectivity):
    d = len(shape)
    if connectivity == "axis":
        offs = [tuple(s if i == ax else 0 for i in range(d)) for ax in range(d) for s in (1, -1)]
    else:
        offs = [o for o in itertools.product((-1, 0, 1), repeat=d) if any(o)]
    for idx in itertools.product(*[range(s) for s in shape]):
        for o in offs:
            j = tuple(a + b for a, b in zip(idx, o, strict=True))
            if all(0 <= a < s for a, s in zip(j, shape, strict=True)):
                yield np.ravel_multi_index(idx, shape), int(np.ravel_multi_index(j, shape))


def _reference_union_find(f: np.ndarray, connectivity: str):
    """Plain union-find over all grid edges in filtration order (value, then flat index).

    Returns the set of merge events ``(saddle, frozenset(births of merged components))`` and
    the persistence pairs ``{dying minimum: saddle}`` with flat indices.
    """
    flat = f.ravel().tolist()
    n = len(flat)
    key = {i: (flat[i], i) for i in range(n)}
    # Each edge enters the filtration at its higher endpoint.
    edges = sorted(
        {(min(u, v), max(u, v)) for u, v in _neighbours(f.shape, connectivity)},
        key=lambda e: max(key[e[0]], key[e[1]]),
    )
    parent = list(range(n))
    birth = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    events: dict[int, set] = {}
    pairs: dict[int, int] = {}
    for u, v in edges:
        w = u if key[u] > key[v] else v
        a, b = find(u), find(v)
        if a == b:
            continue
        # Vertex w on its own (not yet joined below) is not a component with a minimum.
        ba, bb = birth[a], birth[b]
        young, old = (a, b) if key[ba] > key[bb] else (b, a)
        if birth[young] != w:  # w itself was not a minimum: this is a real merge
            pairs[birth[young]] = w
            events.setdefault(w, set()).update({birth[young], birth[old]})
        parent[young] = old
    minima = {birth[find(i)] for i in range(n)} | set(pairs)
    return {(w, frozenset(s)) for w, s in events.items()}, pairs, minima


def _tree_events(tree):
    """Merge events of our tree as (saddle flat index, frozenset(oldest minima of children))."""
    low = {}
    for node in range(tree.n_nodes):  # children have smaller ids than parents
        if node < tree.n_minima:
            low[node] = node
        p = int(tree.node_parent[node])
        if p >= 0:
            low[p] = min(low.get(p, 1 << 62), low[node])
    out = set()
    for s in tree.saddle_nodes.tolist():
        ch = np.flatnonzero(tree.node_parent == s)
        out.add((int(tree.node_index[s]), frozenset(int(tree.minima[low[c]]) for c in ch)))
    return out


# --------------------------------------------------------------------------- gudhi
@pytest.mark.parametrize("connectivity", ["axis", "full"])
@pytest.mark.parametrize("shape", [(37, 29), (11, 9, 12)])
@pytest.mark.parametrize("quantised", [False, True])
def test_matches_gudhi_cubical(connectivity, shape, quantised):
    rng = np.random.default_rng(hash((connectivity, shape, quantised)) % 2**32)
    for _ in range(3):
        f = rng.standard_normal(shape)
        if quantised:
            f = np.round(f * 2) / 2  # many ties and plateaus
        ours = merge_tree(f, connectivity=connectivity).persistence()
        ref = _gudhi_h0(f, connectivity)
        assert np.array_equal(_nonzero(ours), _nonzero(ref))
        assert np.isinf(ours[:, 1]).sum() == np.isinf(ref[:, 1]).sum() == 1


def test_gudhi_option_pairing_is_not_interchangeable():
    # On a diagonal valley the two adjacencies genuinely differ, so the pairing above matters.
    f = np.full((5, 5), 5.0)
    f[0, 0], f[1, 1], f[2, 2] = 0.0, 0.5, 1.0
    axis = merge_tree(f, connectivity="axis")
    full = merge_tree(f, connectivity="full")
    assert full.n_minima == 1 and axis.n_minima == 3
    assert np.array_equal(_nonzero(axis.persistence()), _nonzero(_gudhi_h0(f, "axis")))
    assert np.array_equal(_nonzero(full.persistence()), _nonzero(_gudhi_h0(f, "full")))


@pytest.mark.parametrize("connectivity", ["axis", "full"])
def test_superlevel_matches_gudhi_on_negated(connectivity):
    rng = np.random.default_rng(5)
    f = np.round(rng.standard_normal((23, 19)), 1)
    ours = merge_tree(f, connectivity=connectivity, kind="superlevel").persistence()
    ref = -_gudhi_h0(-f, connectivity)
    assert np.array_equal(_nonzero(ours), _nonzero(ref))
    assert ours[0, 0] == f.max() and ours[0, 1] == -np.inf


def test_superlevel_equals_sublevel_of_negation_without_ties():
    f = np.random.default_rng(1).standard_normal((15, 16))
    sup = merge_tree(f, kind="superlevel")
    sub = merge_tree(-f)
    assert np.array_equal(sup.node_index, sub.node_index)
    assert np.array_equal(sup.node_parent, sub.node_parent)
    assert np.allclose(sup.node_value, -sub.node_value)
    assert set(sup.kinds) == {"maximum", "saddle", "root"}


# --------------------------------------------------------------------------- union-find
@pytest.mark.parametrize("connectivity", ["axis", "full"])
@pytest.mark.parametrize("shape", [(13, 11), (6, 7, 5), (40,)])
def test_matches_plain_union_find(connectivity, shape):
    rng = np.random.default_rng(sum(shape))
    for quantised in (False, True):
        f = rng.standard_normal(shape)
        if quantised:
            f = np.round(f)
        tree = merge_tree(f, connectivity=connectivity)
        events, pairs, minima = _reference_union_find(f, connectivity)
        assert set(tree.minima.tolist()) == minima
        ours_pairs = {
            int(tree.minima[i]): int(tree.node_index[tree.death[i]])
            for i in range(tree.n_minima)
            if tree.death[i] >= 0
        }
        assert ours_pairs == pairs
        assert _tree_events(tree) == events


# --------------------------------------------------------------------------- analytic
def test_himmelblau_four_minima():
    x = np.linspace(-5, 5, 401)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    f = (xx**2 + yy - 11) ** 2 + (xx + yy**2 - 7) ** 2
    for connectivity in ("full", "axis"):
        tree = merge_tree(f, connectivity=connectivity, coords=(x, x))
        assert tree.n_minima == 4
        found = tree.point_coords(tree.minima)
        expected = np.array(
            [[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]]
        )
        for e in expected:
            assert np.min(np.abs(found - e).max(axis=1)) <= 0.025
        g = tree.to_networkx()
        assert all(len(g.nodes[int(k)]["coords"]) == 2 for k in range(tree.n_nodes))


def _rastrigin(n, d):
    x = np.linspace(-2.5, 2.5, n)
    grids = np.meshgrid(*([x] * d), indexing="ij")
    return sum(g**2 - 10 * np.cos(2 * np.pi * g) + 10 for g in grids), x


@pytest.mark.parametrize("d,n", [(2, 51), (3, 51), (4, 21)])
def test_rastrigin_minima_count(d, n):
    f, x = _rastrigin(n, d)
    for connectivity in ("full", "axis"):
        tree = merge_tree(f, connectivity=connectivity)
        assert tree.n_minima == 5**d
        mi = tree.minima_multi_index()
        assert mi.shape == (5**d, d)
        assert np.allclose(x[mi], np.round(x[mi]), atol=1e-9)  # at integer points
        assert tuple(x[mi[0]]) == pytest.approx((0.0,) * d, abs=1e-12)
        b = basins(f, connectivity=connectivity)
        assert b.volumes.sum() == f.size
        assert (tree.death >= 0).sum() == 5**d - 1


def test_gaussian_wells_at_known_centres():
    x = np.linspace(-4, 4, 81)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    centres = [(-2.0, -2.0), (2.0, -1.0), (-1.0, 2.5), (2.5, 2.5)]
    depths = [1.0, 0.8, 0.6, 0.9]
    f = 1e-4 * (xx**2 + yy**2)
    for (cx, cy), a in zip(centres, depths, strict=True):
        f = f - a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.5**2))
    tree = merge_tree(f)
    assert tree.n_minima == 4
    found = {tuple(np.round(x[m], 6)) for m in tree.minima_multi_index()}
    assert found == set(centres)
    # Deepest well is the global minimum (node 0).
    assert tuple(x[tree.minima_multi_index()[0]]) == (-2.0, -2.0)


def test_single_bowl():
    x = np.linspace(-1, 1, 31)
    xx, yy, zz = np.meshgrid(x, x, x, indexing="ij")
    f = xx**2 + 2 * yy**2 + 3 * zz**2
    tree = merge_tree(f)
    assert tree.n_minima == 1
    assert smad(tree) == 0.0 and smad(f, pairing="persistence") == 0.0
    d = persistence_diagram(f)
    assert d.shape == (1, 2) and d[0, 0] == 0.0 and np.isinf(d[0, 1])
    assert list(tree.kinds) == ["minimum", "root"]
    assert tree.node_value[1] == f.max()


# --------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("connectivity", ["axis", "full"])
def test_invariants_random(connectivity):
    rng = np.random.default_rng(11)
    for shape in [(50, 60), (12, 13, 14), (7, 6, 5, 4)]:
        f = rng.standard_normal(shape)
        tree = merge_tree(f, connectivity=connectivity)
        m = tree.n_minima
        # every minimum but the global one dies at exactly one saddle
        assert tree.death[0] == -1 and np.all(tree.death[1:] >= 0)
        assert np.all(tree.node_kind[tree.death[1:]] == 1)
        assert np.all(tree.minima_values[1:] <= tree.node_value[tree.death[1:]])
        assert tree.volumes.sum() == f.size
        assert np.array_equal(np.bincount(tree.labels.ravel(), minlength=m), tree.volumes)
        d = tree.persistence()
        assert np.isfinite(d[:, 1]).sum() == m - 1
        assert len(tree.roots) == 1 and tree.node_index[tree.roots[0]] == np.argmax(f)
        # labels: every point's minimum is the lowest point of its basin
        lab = tree.labels.ravel()
        assert np.array_equal(lab[tree.minima], np.arange(m))
        for i in range(min(m, 20)):
            assert f.ravel()[lab == i].min() == tree.minima_values[i]
        g = tree.to_networkx()
        assert g.number_of_nodes() == tree.n_nodes
        assert g.number_of_edges() == tree.n_nodes - 1
        assert all(g.nodes[int(c)]["value"] <= g.nodes[int(p)]["value"] for c, p in g.edges)
        assert all(g.out_degree(k) == (0 if k in tree.roots else 1) for k in g.nodes)


def test_smad_hand_example():
    f = np.array([3.0, 1, 4, 0, 5, 2, 6])
    # minima 0 (idx3), 1 (idx1), 2 (idx5); saddles 4 (idx2) and 5 (idx4)
    # tree pairs: (1,4), (0,4), (2,5) -> gaps 3, 4, 3
    assert smad(f) == pytest.approx(10 / 3)
    assert smad(f, normalize=True) == pytest.approx(10 / 3 / 6)
    # volumes: basin(0) = {2,3,4}, basin(1) = {0,1}, basin(2) = {5,6}
    assert smad(f, weighted=True) == pytest.approx((4 * 3 / 7 + 3 * 2 / 7 + 3 * 2 / 7) / 3)
    # persistence pairs: (1,4), (2,5)
    assert smad(f, pairing="persistence") == pytest.approx(3.0)
    assert smad(f, threshold=3.5) == 0.0
    assert smad(f, threshold=2.0) == pytest.approx(10 / 3)
    b = basins(f)
    assert b.labels.tolist() == [1, 1, 0, 0, 0, 2, 2]
    assert b.merges_into.tolist() == [-1, 0, 0]
    assert b.merge_value.tolist() == [np.inf, 4.0, 5.0]
    assert _sorted(persistence_diagram(f)).tolist() == [[0, np.inf], [1, 4], [2, 5]]


def test_smad_tree_vs_persistence_pairing_differs():
    # minimum 2 merges with 1 at saddle 4 (both tree-paired with 4); 1 then dies at 6 with 0
    f = np.array([0.0, 6, 1, 4, 2, 9])
    assert smad(f, pairing="persistence") == pytest.approx(((6 - 1) + (4 - 2)) / 2)
    assert smad(f, pairing="tree") == pytest.approx(((6 - 0) + (4 - 1) + (4 - 2)) / 3)


def test_degenerate_saddle_star_graph():
    values = np.array([10.0, 1.0, 2.0, 3.0, 11.0])
    edges = np.array([[0, 1], [0, 2], [0, 3], [0, 4]])
    tree = merge_tree(values, edges=edges)
    assert tree.n_minima == 3 and tree.saddle_nodes.size == 1
    s = tree.saddle_nodes[0]
    assert np.count_nonzero(tree.node_parent == s) == 3
    assert _sorted(tree.persistence()).tolist() == [[1, np.inf], [2, 10], [3, 10]]
    assert np.array_equal(_nonzero(tree.persistence()), _nonzero(_star_reference()))


def _star_reference():
    return np.array([[1, np.inf], [2, 10], [3, 10]])


# --------------------------------------------------------------------------- ties
def test_plateau_index_rule():
    tree = merge_tree(np.array([0.0, 0, 1, 0, 0]))
    assert tree.minima.tolist() == [0, 3]
    assert tree.labels.tolist() == [0, 0, 0, 1, 1]
    assert tree.saddles.tolist() == [2]
    const = merge_tree(np.zeros((4, 5)))
    assert const.minima.tolist() == [0] and const.node_index[-1] == 19
    assert rank_values(np.array([2.0, 1, 2, 1])).tolist() == [2, 0, 3, 1]


def test_ties_deterministic_and_edge_order_free():
    rng = np.random.default_rng(3)
    f = rng.integers(0, 4, size=(20, 21)).astype(float)  # heavy plateaus
    a, b = merge_tree(f), merge_tree(f.copy())
    for attr in ("node_index", "node_parent", "death", "labels"):
        assert np.array_equal(getattr(a, attr), getattr(b, attr))
    # the same grid as a shuffled explicit edge list (columns randomly swapped)
    for conn in ("full", "axis"):
        e = np.array(sorted({(u, v) for u, v in _neighbours(f.shape, conn)}))
        e = e[rng.permutation(len(e))]
        swap = rng.random(len(e)) < 0.5
        e[swap] = e[swap][:, ::-1]
        g = merge_tree(f.ravel(), edges=e)
        t = merge_tree(f, connectivity=conn)
        for attr in ("node_index", "node_parent", "death", "node_value"):
            assert np.array_equal(getattr(g, attr), getattr(t, attr))
        assert np.array_equal(g.labels, t.labels.ravel())


# --------------------------------------------------------------------------- non-finite
def test_nonfinite_rank_and_raise(caplog):
    v = np.array([np.nan, 1.0, np.inf, -np.inf, 1.0, np.nan])
    with caplog.at_level(logging.WARNING):
        r = rank_values(v)
    assert r.tolist() == [4, 1, 3, 0, 2, 5]
    assert "3 value(s)" in caplog.text
    with pytest.raises(ValueError, match='nonfinite="highest"'):
        rank_values(v, nonfinite="raise")
    with pytest.raises(ValueError, match="first at flat index 0"):
        merge_tree(v, nonfinite="raise")
    f = np.add.outer(np.arange(7.0) ** 2, np.arange(7.0) ** 2)
    f[3, 3] = np.nan
    f[5, 2] = np.inf
    tree = merge_tree(f)
    assert tree.minima.tolist() == [0]
    assert np.isnan(tree.node_value[tree.roots[0]])
    assert tree.value_range == (0.0, 72.0)
    assert np.isfinite(f).all() == False  # noqa: E712 - inputs untouched


# --------------------------------------------------------------------------- graphs
def test_graph_hand_diagram_and_components():
    values = np.array([0.0, 3, 1, 4, 2, 5, -1, 7])
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [6, 7]])
    tree = merge_tree(values, edges=edges)
    d = persistence_diagram(tree)
    assert d.tolist() == [[-1, np.inf], [0, np.inf], [1, 3], [2, 4]]
    assert len(tree.roots) == 2
    assert sorted(tree.node_index[tree.roots].tolist()) == [5, 7]
    assert smad(tree) == pytest.approx(((3 - 0) + (3 - 1) + (4 - 2)) / 3)
    assert tree.shape is None
    prof = landscape_profile(tree)  # a forest: the two components side by side
    assert prof.x.max() == 8 and prof.y.min() == -1
    assert simplify(basins(values, edges=edges), 2.5).n_basins == 2  # both pairs have pers 2
    assert simplify(basins(values, edges=edges), 1.5).n_basins == 4
    with pytest.raises(ValueError):
        tree.minima_multi_index()
    # isolated vertex: its own minimum, root and essential class
    t2 = merge_tree(np.array([1.0, 0.0, 2.0]), edges=np.array([[0, 2]]))
    assert t2.persistence().tolist() == [[0, np.inf], [1, np.inf]]


def test_knn_edges():
    pts = np.random.default_rng(0).random((200, 3))
    e = knn_edges(pts, 5)
    assert e.dtype == np.int64 and np.all(e[:, 0] < e[:, 1])
    assert len(np.unique(e, axis=0)) == len(e)
    from scipy.spatial import cKDTree

    _, idx = cKDTree(pts).query(pts, k=6)
    want = {(min(i, j), max(i, j)) for i in range(200) for j in idx[i, 1:]}
    assert {tuple(x) for x in e.tolist()} == want
    f = np.sin(4 * pts).sum(axis=1)
    tree = merge_tree(f, edges=e, coords=pts)
    assert tree.volumes.sum() == 200
    assert tree.point_coords(tree.minima).shape == (tree.n_minima, 3)


# --------------------------------------------------------------------------- simplify etc.
def test_simplify_removes_low_persistence_pairs():
    rng = np.random.default_rng(7)
    x = np.linspace(-2.5, 2.5, 41)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    f = xx**2 + yy**2 + 0.5 * rng.standard_normal(xx.shape)
    tree = merge_tree(f)
    d = tree.persistence()
    for thr in (0.3, 1.0, 2.0):
        s = simplify(tree, thr)
        pers = d[:, 1] - d[:, 0]
        assert np.array_equal(_sorted(s.tree.persistence()), _sorted(d[pers >= thr]))
        assert s.volumes.sum() == f.size
        assert s.labels.shape == f.shape
        assert np.array_equal(np.bincount(s.labels.ravel()), s.volumes)
        # merged labels are unions of old basins
        pairs = np.unique(np.stack([tree.labels.ravel(), s.labels.ravel()], 1), axis=0)
        assert len(np.unique(pairs[:, 0])) == len(pairs)
        assert s.n_basins == len(s.minima) == int((pers >= thr).sum())
    assert simplify(tree, 0).n_basins == tree.n_minima


def test_basin_metric():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((20, 20))
    acc = rng.random((20, 20))
    b = basins(f)
    for red, fn in [
        ("mean", np.mean),
        ("min", np.min),
        ("max", np.max),
        ("median", np.median),
        ("sum", np.sum),
        (np.std, np.std),
    ]:
        got = basin_metric(acc, b, reduce=red)
        want = [fn(acc[b.labels == i]) for i in range(b.n_basins)]
        assert np.allclose(got, want)
    with pytest.raises(ValueError):
        basin_metric(acc, b, reduce="mode")


def test_profile_and_plots():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from landscaper.topology import (
        plot_barcode,
        plot_merge_tree,
        plot_persistence_diagram,
        plot_profile,
    )

    f, _ = _rastrigin(31, 2)
    tree = merge_tree(f)
    prof = landscape_profile(tree)
    assert prof.x.min() == 0 and prof.x.max() == f.size
    assert prof.y.min() == f.min() and prof.y.max() == f.max()
    leaf = prof.region_kinds == "minimum"
    assert np.array_equal(np.sort(prof.volumes[leaf]), np.sort(tree.volumes))
    assert prof.regions[:, 1].max() == f.size
    assert np.all(prof.regions[:, 2] <= prof.regions[:, 3])
    for fn, arg in [
        (plot_profile, prof),
        (plot_profile, tree),
        (plot_merge_tree, tree),
        (plot_persistence_diagram, tree.persistence()),
        (plot_barcode, tree),
    ]:
        ax = fn(arg)
        assert ax.figure is not None
        assert fn(arg, ax=ax) is ax
    plot_profile(tree, log=True)
    # several labelled diagrams share one axes: one colour each, essential classes on the inf line
    d0 = np.array([[0.0, np.inf], [1.0, 3.0]])
    d1 = np.array([[2.0, 2.5]])
    ax = plot_persistence_diagram({"D0": d0, "D1": d1})
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["D0", "D1"]
    points = [(line.get_xdata(), line.get_ydata(), line.get_color()) for line in ax.lines
              if line.get_marker() == "o" and len(line.get_xdata())]
    inf_y = 3.0 + 2 * 0.05 * 3.0
    assert [(list(x), list(y)) for x, y, _ in points] == [([1.0], [3.0]), ([0.0], [inf_y]),
                                                          ([2.0], [2.5])]
    assert points[0][2] == points[1][2] != points[2][2]


def test_distances_and_total_persistence():
    d1 = np.array([[0.0, np.inf], [1.0, 3.0], [2.0, 2.5]])
    d2 = np.array([[0.0, np.inf], [1.0, 4.0]])
    assert total_persistence(d1) == pytest.approx(4 + 0.25)
    assert total_persistence(d1, p=1) == pytest.approx(2.5)
    assert bottleneck_distance(d1, d1) == pytest.approx(0.0, abs=1e-12)
    assert bottleneck_distance(d1, d2) == pytest.approx(1.0)
    # W1 (internal L-inf): match (1,3)-(1,4) cost 1, (2,2.5) to diagonal cost 0.25
    assert wasserstein_distance(d1, d2, order=1.0) == pytest.approx(1.25, rel=0.02)
    f = np.random.default_rng(0).standard_normal((10, 10))
    assert bottleneck_distance(merge_tree(f), persistence_diagram(f)) == pytest.approx(0, abs=1e-12)


def test_speed_smoke_5d():
    x = np.linspace(-1, 1, 21)
    grids = np.meshgrid(*([x] * 5), indexing="ij")
    f = sum(np.cos(3 * g) * (i + 1) for i, g in enumerate(grids)) + sum(g**2 for g in grids)
    tree = merge_tree(f)
    assert tree.volumes.sum() == 21**5
    assert smad(tree) >= 0.0
