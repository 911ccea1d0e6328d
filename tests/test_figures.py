"""Figures a person can read: colour-bar ticks, merge-tree labels, nested-basin profiles."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from landscaper.landscape import Landscape  # noqa: E402
from landscaper.topology import (  # noqa: E402
    landscape_profile,
    merge_tree,
    plot_merge_tree,
    plot_profile,
)


def _drawn(ax):
    """Render the Axes' figure on an Agg canvas (so tick labels are final)."""
    FigureCanvasAgg(ax.figure).draw()
    return ax


# --------------------------------------------------------------------------- colour bars
def _bowl(low: float, high: float, log: bool) -> Landscape:
    a = np.linspace(-1, 1, 21)
    xx, yy = np.meshgrid(a, a, indexing="ij")
    r = (xx**2 + yy**2) / 2  # 0 at the centre, 1 in the corners
    loss = low * (high / low) ** r if log else low + (high - low) * r
    return Landscape.from_arrays(loss, [a, a])


@pytest.mark.parametrize("log", [True, False])
@pytest.mark.parametrize("low, high", [
    (0.0051, 0.0054),  # tiny range: a log bar used to show one labelled tick
    (1e-4, 10.0),  # five decades
    (1.0, 1.001),
    (0.5, 3.0),
    (1.2, 1.9),
    (3e-7, 4e-7),
    (1e-12, 1e12),
    (2.0, 2.0 * (1 + 1e-12)),  # constant up to float noise
    (2.0, 2.0),  # exactly constant
])
def test_colour_bar_has_three_readable_labels(low, high, log):
    import matplotlib.pyplot as plt

    rc_before = dict(matplotlib.rcParams)
    ax = _drawn(_bowl(low, high, log).plot(log=log))
    colour_bar = ax.figure.axes[-1]
    assert colour_bar is not ax
    labels = [t.get_text() for t in colour_bar.get_yticklabels()]
    labels = [t for t in labels if t]
    assert len(set(labels)) >= 3, labels
    assert all(len(t) <= 8 for t in labels), labels
    values = np.array([float(t) for t in labels])
    vmin, vmax = colour_bar.get_ylim()
    tol = 1e-9 * (vmax - vmin)
    assert np.all((values >= vmin - tol) & (values <= vmax + tol))
    # the ticks span most of the bar, in the bar's own scale
    scale = np.log10 if log else (lambda v: v)
    spread = (scale(values.max()) - scale(values.min())) / (scale(vmax) - scale(vmin))
    assert spread >= 0.5, (labels, vmin, vmax)
    if low == high:  # a constant grid sits mid-scale, its value labelled
        assert vmin < low < vmax and "2" in labels
    assert plt.get_fignums() == [] and dict(matplotlib.rcParams) == rc_before


def test_colour_bar_labels_are_round_values():
    ax = _drawn(_bowl(1e-4, 10.0, log=True).plot(log=True))
    labels = [t.get_text() for t in ax.figure.axes[-1].get_yticklabels()]
    assert labels == ["0.0001", "0.001", "0.01", "0.1", "1", "10"]
    ax = _drawn(_bowl(0.0051, 0.0054, log=True).plot(log=True))
    labels = [t.get_text() for t in ax.figure.axes[-1].get_yticklabels()]
    assert labels == ["0.0051", "0.0052", "0.0053", "0.0054"]
    ax = _drawn(_bowl(1e-12, 1e12, log=True).plot(log=True, filled=False))
    labels = [t.get_text() for t in ax.figure.axes[-1].get_yticklabels()]
    assert labels == ["1e-12", "1e-8", "1e-4", "1", "1e4", "1e8", "1e12"]


# --------------------------------------------------------------------------- merge tree
def _two_wells_2d() -> np.ndarray:
    """Wells at (-1, 0) (value 0) and (1, 0) (value 0.5) on a 41 x 21 grid of step 0.1.

    The wells' formulas cross at x = 0.125: every path between the minima passes the column
    x = 0.1, whose lowest point is (0.1, 0) with value 1.1**2 = 1.21, the saddle. Steepest
    descent sends the 22 columns x <= 0.1 to the left well: 22 * 21 = 462 points, and the 19
    others to the right one: 399 points.
    """
    x = np.arange(-20, 21) / 10
    y = np.arange(-10, 11) / 10
    xx, yy = np.meshgrid(x, y, indexing="ij")
    return np.minimum((xx + 1) ** 2 + yy**2, (xx - 1) ** 2 + yy**2 + 0.5)


def test_merge_tree_labels_minima_and_saddle():
    tree = merge_tree(_two_wells_2d())
    ax = _drawn(plot_merge_tree(tree))
    texts = [t.get_text() for t in ax.texts]
    first_lines = [t.split("\n")[0] for t in texts]
    assert "0" in first_lines and "0.5" in first_lines  # the minima
    assert "1.21" in first_lines  # the saddle
    assert "0\n462 pts (54%)" in texts and "0.5\n399 pts (46%)" in texts
    assert len(texts) == 3
    # labels fit: the minima's labels lie inside the axes
    low, _ = ax.get_ylim()
    assert low < 0
    assert plot_merge_tree(tree, ax=ax) is ax
    assert not plot_merge_tree(tree, n_labels=0).texts


def test_merge_tree_on_a_log_scale_keeps_the_values_in_its_labels():
    values = 10.0 ** _two_wells_2d()  # minima 1 and 10**0.5, saddle 10**1.21
    ax = _drawn(plot_merge_tree(merge_tree(values), log=True))
    first_lines = sorted(t.get_text().split("\n")[0] for t in ax.texts)
    assert first_lines == ["1", "16.2", "3.16"]
    heights = sorted(t.xy[1] for t in ax.texts)  # drawn at log10 of the values
    assert heights == pytest.approx([0.0, 0.5, 1.21])
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and all(float(t) > 0 and np.log10(float(t)).is_integer() for t in ticks)
    # a value <= 0 keeps the linear scale
    linear = _drawn(plot_merge_tree(merge_tree(_two_wells_2d()), log=True))
    assert linear.get_ylabel() == "value"


def test_merge_tree_labels_only_the_most_persistent():
    rng = np.random.default_rng(3)
    f = _two_wells_2d() + 0.05 * rng.standard_normal((41, 21))
    tree = merge_tree(f)
    assert tree.n_minima > 10
    ax = _drawn(plot_merge_tree(tree, n_labels=4))
    minima = [t for t in ax.texts if " pt" in t.get_text()]
    assert 1 <= len(minima) <= 4
    # the two wells (the most persistent classes) are among them, by value
    shown = {float(t.get_text().split("\n")[0]) for t in minima}
    pers = tree.death_values - tree.minima_values
    top2 = tree.minima_values[np.argsort(-pers)[:2]]
    for value in top2:
        assert min(abs(value - s) for s in shown) < 1e-2
    # no two label boxes overlap
    renderer = ax.figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)


def test_merge_tree_superlevel_labels_above():
    tree = merge_tree(-_two_wells_2d(), kind="superlevel")  # maxima 0 and -0.5
    ax = _drawn(plot_merge_tree(tree))
    assert {t.get_text().split("\n")[0] for t in ax.texts} == {"0", "-0.5", "-1.21"}
    # maxima at the top: their labels are above them
    for t in ax.texts:
        if " pt" in t.get_text():
            assert t.get_position()[1] > 0 and t.get_va() == "bottom"


# --------------------------------------------------------------------------- profile
#: A 1-D function with two wells on 100 points (integers, so nothing is a rounding matter):
#: the left well |i - 30| on 0..49 (minimum 0 at i = 30), the right well 5 + |i - 70| on
#: 50..99 (minimum 5 at i = 70). Point 50 (value 25) descends to 49 (19), so the left basin is
#: 0..50 (51 points) and the right one 51..99 (49 points); they merge at point 50, value 25.
#: Below 25 the left well holds i = 6..49 (44 points), the right one 51..89 (39 points);
#: three points (5, 50, 90) sit exactly at 25. The top is 34 (i = 99).
_I = np.arange(100)
WELLS = np.where(_I < 50, np.abs(_I - 30), 5 + np.abs(_I - 70)).astype(float)


def _polygons(ax) -> list[np.ndarray]:
    (coll,) = [c for c in ax.collections if c.get_gid() == "profile-basins"]
    assert isinstance(coll, PolyCollection)
    return [p.vertices for p in coll.get_paths()]


def _extent_at(vertices: np.ndarray, level: float) -> tuple[float, float]:
    at = vertices[np.isclose(vertices[:, 1], level)]
    return float(at[:, 0].min()), float(at[:, 0].max())


@pytest.mark.parametrize("measured", [False, True])
def test_profile_nested_basins_widths(measured):
    tree = merge_tree(WELLS)
    assert tree.volumes.tolist() == [51, 49]
    ax = plot_profile(tree, values=WELLS if measured else None)
    prof = landscape_profile(tree, values=WELLS if measured else None)
    assert prof.measured == measured
    polygons = dict(zip(prof.region_nodes.tolist(), _polygons(ax), strict=True))
    saddle = int(tree.saddle_nodes[0])
    assert set(polygons) == {0, 1, saddle}
    tops = {leaf: _extent_at(polygons[leaf], 25.0) for leaf in (0, 1)}
    widths = {leaf: right - left for leaf, (left, right) in tops.items()}
    # at the top of each child basin (the saddle), its width is its volume
    expected = {0: 44, 1: 39} if measured else {0: 51, 1: 49}
    assert widths == pytest.approx(expected)
    # children side by side, the deeper one left, inside their parent's floor
    floor = _extent_at(polygons[saddle], 25.0)
    assert floor[0] <= tops[0][0] and tops[0][1] == pytest.approx(tops[1][0])
    assert tops[1][1] <= floor[1]
    assert floor[1] - floor[0] == pytest.approx(86 if measured else 100)
    assert _extent_at(polygons[saddle], 34.0) == pytest.approx((0, 100))
    # each basin narrows to its minimum, marked with a dot
    for leaf, bottom in ((0, 0.0), (1, 5.0)):
        left, right = _extent_at(polygons[leaf], bottom)
        assert right - left <= (1 if measured else 0)
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert sorted(dots[0].get_ydata().tolist()) == [0.0, 5.0]
    assert plot_profile(tree, ax=ax) is ax


def test_profile_measured_widths_are_sublevel_volumes():
    prof = landscape_profile(WELLS)  # values given: measured
    assert prof.measured
    leaf = dict(zip(prof.region_nodes.tolist(), prof.outlines, strict=True))[0]
    for level, left, right in leaf.tolist():
        # the left basin's points up to the level, but those at 25 (5, 50) are the parent's
        left_basin = WELLS[:51]
        assert right - left == np.count_nonzero((left_basin <= level) & (left_basin < 25))


def test_profile_single_basin_simple_look():
    a = np.linspace(-1, 1, 21)
    bowl = np.add.outer(a**2, a**2)
    ax = plot_profile(merge_tree(bowl))
    (vertices,) = _polygons(ax)
    (coll,) = ax.collections
    assert np.allclose(coll.get_facecolor()[0][:3], 0.85)  # one grey valley
    assert _extent_at(vertices, bowl.max()) == pytest.approx((0, bowl.size))
    assert plot_profile(merge_tree(bowl), ax=ax, log=True) is ax
    assert ax.get_yscale() == "symlog"  # the minimum is 0


def test_profile_forest_and_superlevel():
    values = np.array([0.0, 3, 1, 4, 2, 5, -1, 7])
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [6, 7]])
    prof = landscape_profile(values, edges=edges)
    tops = [o for o, r in zip(prof.outlines, prof.regions, strict=True) if r[3] in (5.0, 7.0)]
    assert sorted(o[-1, 2] - o[-1, 1] for o in tops) == [2, 6]  # the two components
    ax = plot_profile(prof)
    assert len(_polygons(ax)) == len(prof.region_nodes)
    tree = merge_tree(WELLS, kind="superlevel")
    ax = _drawn(plot_profile(tree, values=WELLS))
    assert ax.collections
    with pytest.raises(ValueError, match="points"):
        landscape_profile(tree, values=WELLS[:10])
