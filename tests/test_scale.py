"""Tests of landscaper.topology.scale (topology over nested boxes) against analytic landscapes.

The analytic landscapes are piecewise-linear 1-D profiles, strictly monotone between known
knots (alternating minima and maxima, all values distinct), and sums of such profiles along the
axes of 2-D and 3-D grids. Everything a box should hold -- its minima, its saddles, the basin of
the centre -- then follows from the knots alone:

* In a 1-D box ``[lo, hi]`` the minima are the known minima strictly inside it, plus ``lo`` when
  the last knot at or before ``lo`` is a minimum (the profile rises from ``lo`` into the box),
  plus ``hi`` when the first knot at or after ``hi`` is a minimum. A box edge that cuts a well
  therefore holds a boundary minimum.
* Consecutive minima of a box are separated by exactly one known maximum; a leaf's parent saddle
  (its first merge) is the lower of its adjacent separating maxima.
* For ``f(x) = g(x) + h(y) (+ k(z))`` on a full-connectivity grid, a point is a minimum of a box
  iff each coordinate is a minimum of the 1-D profile's box; when the centre is the zero global
  minimum of every profile, the centre's first merge is at the lowest of the per-axis first
  merges (every path to another minimum crosses a barrier column, and the axis path attains it).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from landscaper.topology import (
    ScaleSummary,
    merge_tree,
    plot_scale_summary,
    scale_summary,
    smad,
)
from landscaper.topology import scale as scale_module

# Knots (index, value) of 1-D profiles; minima and maxima alternate, values are distinct.
G_KNOTS = [(0, 4.0), (4, 0.8), (9, 5.0), (13, 1.5), (17, 2.0), (20, 0.0), (24, 3.0), (28, 1.0),
           (33, 4.5), (38, 0.5), (40, 2.5)]  # 41 points, centre 20 (min 0.0)
H_KNOTS = [(0, 3.0), (5, 0.7), (11, 2.6), (15, 0.0), (20, 1.7), (25, 0.4), (30, 2.2)]  # 31, c=15
K_KNOTS = [(0, 1.1), (3, 0.3), (5, 1.9), (8, 0.0), (10, 0.9), (13, 0.2), (16, 1.3)]  # 17, c=8


class Profile:
    """A piecewise-linear profile given by its knots, and what any box of it must hold."""

    def __init__(self, knots: list[tuple[int, float]]):
        self.idx = np.array([k for k, _ in knots])
        self.val = np.array([v for _, v in knots], dtype=float)
        self.n = int(self.idx[-1]) + 1
        padded = np.concatenate([[np.inf], self.val, [np.inf]])
        self.is_min = (self.val < padded[:-2]) & (self.val < padded[2:])
        assert np.all(self.is_min[:-1] != self.is_min[1:]), "knots must alternate"

    def f(self, i):
        return np.interp(i, self.idx, self.val)

    @property
    def values(self) -> np.ndarray:
        return self.f(np.arange(self.n))

    def box(self, c: int, r: int) -> tuple[int, int]:
        return max(c - r, 0), min(c + r, self.n - 1)

    def box_minima(self, lo: int, hi: int) -> list[int]:
        inner = [int(k) for k, m in zip(self.idx, self.is_min, strict=True) if m and lo < k < hi]
        last_at_or_before = self.is_min[np.flatnonzero(self.idx <= lo)[-1]]
        first_at_or_after = self.is_min[np.flatnonzero(self.idx >= hi)[0]]
        return sorted(set(inner + [lo] * bool(last_at_or_before) + [hi] * bool(first_at_or_after)))

    def separating_max(self, p: int, q: int) -> int:
        between = [int(k) for k, m in zip(self.idx, self.is_min, strict=True)
                   if not m and p < k < q]
        assert len(between) == 1
        return between[0]

    def parent_saddle(self, minima: list[int], i: int) -> float:
        """Value of the first merge of box minimum ``minima[i]`` (inf if it is alone)."""
        sides = []
        if i > 0:
            sides.append(self.f(self.separating_max(minima[i - 1], minima[i])))
        if i + 1 < len(minima):
            sides.append(self.f(self.separating_max(minima[i], minima[i + 1])))
        return min(sides, default=math.inf)

    def expected(self, c: int, r: int) -> dict:
        lo, hi = self.box(c, r)
        mins = self.box_minima(lo, hi)
        gaps = [self.parent_saddle(mins, i) - self.f(m) for i, m in enumerate(mins)]
        ci = mins.index(c)
        # Centre basin: between the separating maxima next to c (or the box edges); a maximum
        # descends to its lower neighbour.
        left = self.separating_max(mins[ci - 1], c) if ci > 0 else None
        right = self.separating_max(c, mins[ci + 1]) if ci + 1 < len(mins) else None
        a = lo if left is None else left + bool(self.f(left - 1) < self.f(left + 1))
        b = hi if right is None else right - bool(self.f(right + 1) < self.f(right - 1))
        return {"n_minima": len(mins), "smad": sum(gaps) / len(mins) if len(mins) > 1 else 0.0,
                "first_merge": self.parent_saddle(mins, ci), "volume": b - a + 1,
                "box_size": hi - lo + 1, "n": len(mins)}


G, H, K = Profile(G_KNOTS), Profile(H_KNOTS), Profile(K_KNOTS)


# --------------------------------------------------------------------------------- 1-D analytic
@pytest.mark.parametrize("connectivity", ["full", "axis"])
def test_1d_piecewise_linear_matches_the_knots(connectivity):
    s = scale_summary(G.values, connectivity=connectivity)
    assert s.center == (20,)
    np.testing.assert_array_equal(s.radius, np.arange(1, 21))
    exp = [G.expected(20, r) for r in range(1, 21)]
    np.testing.assert_array_equal(s.n_minima, [e["n_minima"] for e in exp])
    np.testing.assert_allclose(s.smad, [e["smad"] for e in exp], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(s.center_basin_volume, [e["volume"] for e in exp])
    np.testing.assert_array_equal(s.box_size, [e["box_size"] for e in exp])
    np.testing.assert_allclose(s.center_basin_fraction,
                               [e["volume"] / e["box_size"] for e in exp])
    np.testing.assert_array_equal(s.center_min_value, 0.0)
    # The nearest barrier is the maximum at 17, 3 steps away. At radius 3 it is the box's edge
    # and nothing lies beyond; at radius 4 the box holds 16, on the far slope and lower than the
    # barrier: a second (boundary) minimum, joined to θ₀'s basin at 17.
    assert s.n_minima[2] == 1 and s.n_minima[3] == 2
    assert s.saddle_radius == abs(17 - 20) + 1 == 4
    assert s.saddle_value == pytest.approx(2.0)
    assert s.extent is None


def test_1d_off_centre_boxes_clip_at_the_edge():
    c = 28  # the minimum at 28 (value 1.0); barriers at 24 (3.0, 4 steps) and 33 (4.5, 5 steps)
    s = scale_summary(G.values, center=[c])
    max_r = max(c, G.n - 1 - c)
    np.testing.assert_array_equal(s.radius, np.arange(1, max_r + 1))
    exp = [G.expected(c, r) for r in range(1, max_r + 1)]
    np.testing.assert_array_equal(s.n_minima, [e["n_minima"] for e in exp])
    np.testing.assert_allclose(s.smad, [e["smad"] for e in exp], atol=1e-12)
    np.testing.assert_array_equal(s.center_basin_volume, [e["volume"] for e in exp])
    # Past radius 12 the box is clipped at index 40 on the right and grows only to the left.
    np.testing.assert_array_equal(s.box_size[11:], np.arange(12, max_r + 1) + 12 + 1)
    assert s.box_size[-1] == G.n
    assert s.saddle_radius == abs(24 - c) + 1
    assert s.saddle_value == pytest.approx(3.0)
    np.testing.assert_array_equal(s.center_min_value, 1.0)


def test_explicit_radii_report_the_first_given_radius_that_meets_a_saddle():
    s = scale_summary(G.values, radii=[2, 3, 6, 10])
    np.testing.assert_array_equal(s.radius, [2, 3, 6, 10])
    np.testing.assert_array_equal(s.n_minima, [G.expected(20, r)["n_minima"] for r in s.radius])
    assert s.saddle_radius == 6 and s.saddle_value == pytest.approx(2.0)


def test_1d_coordinates_give_the_extent():
    x = np.linspace(-2.0, 2.0, G.n)  # step 0.1
    s = scale_summary(G.values, coords=[x], center=(35,))
    # Box half-width in coordinate units: the larger side; clipped at index 40 from radius 6.
    expected = [max(min(r, 35) * 0.1, min(r, 40 - 35) * 0.1) for r in s.radius]
    np.testing.assert_allclose(s.extent[:, 0], expected, atol=1e-12)
    assert s.extent.shape == (s.radius.size, 1)


# --------------------------------------------------------------------------------- n-D analytic
def _separable(*profiles: Profile) -> np.ndarray:
    grids = np.meshgrid(*[p.values for p in profiles], indexing="ij")
    return sum(grids)


def _expected_nd(profiles, center, r):
    per_axis = [p.expected(c, r) for p, c in zip(profiles, center, strict=True)]
    return (math.prod(e["n_minima"] for e in per_axis),
            min(e["first_merge"] for e in per_axis))


@pytest.mark.parametrize("profiles,center", [((G, H), (20, 15)), ((H, G, K), (15, 20, 8))])
def test_separable_nd_minima_are_products_of_the_axis_minima(profiles, center):
    values = _separable(*profiles)
    s = scale_summary(values)
    assert s.center == center
    radii = np.arange(1, max(max(c, p.n - 1 - c) for p, c in zip(profiles, center,
                                                                  strict=True)) + 1)
    np.testing.assert_array_equal(s.radius, radii)
    exp = [_expected_nd(profiles, center, int(r)) for r in radii]
    np.testing.assert_array_equal(s.n_minima, [n for n, _ in exp])
    np.testing.assert_array_equal(s.center_min_value, 0.0)
    first = next(i for i, (n, _) in enumerate(exp) if n > 1)
    assert s.saddle_radius == radii[first]
    assert s.saddle_value == pytest.approx(exp[first][1])
    # Before the first saddle the box is one basin.
    np.testing.assert_array_equal(s.center_basin_fraction[:first], 1.0)
    np.testing.assert_array_equal(s.smad[:first], 0.0)
    assert np.all(s.smad[first:] > 0)


def test_separable_2d_saddle_is_the_nearest_barrier():
    # G's barrier 3 steps left of θ₀ (value 2.0) comes before H's (4 steps, value 2.6).
    s = scale_summary(_separable(G, H))
    assert s.saddle_radius == 4 and s.saddle_value == pytest.approx(2.0)
    s = scale_summary(_separable(H, G))  # the same landscape transposed
    assert s.saddle_radius == 4 and s.saddle_value == pytest.approx(2.0)


@pytest.mark.parametrize("shape", [(15,), (13, 9), (7, 9, 5), (5, 5, 5, 5)])
def test_quadratic_bowl_has_one_minimum_at_every_scale(shape):
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    values = sum(0.5 * g.astype(float) ** 2 for g in grids)
    for center in (None, tuple(0 for _ in shape)):  # θ₀ at the bottom, and at a corner
        s = scale_summary(values, center=center)
        np.testing.assert_array_equal(s.n_minima, 1)
        np.testing.assert_array_equal(s.smad, 0.0)
        np.testing.assert_array_equal(s.center_basin_volume, s.box_size)
        np.testing.assert_array_equal(s.center_basin_fraction, 1.0)
        assert s.saddle_radius is None and s.saddle_value is None
    s = scale_summary(values)
    np.testing.assert_array_equal(s.center_min_value, 0.0)
    np.testing.assert_array_equal(
        s.box_size, [math.prod(min(2 * r + 1, n) for n in shape) for r in s.radius])


# --------------------------------------------------------------------- consistency with the crop
@pytest.mark.parametrize("shape,center,connectivity", [
    ((23, 19), (5, 12), "full"), ((23, 19), None, "axis"), ((7, 6, 7, 5), (1, 4, 3, 2), "full")])
def test_each_radius_matches_merge_tree_on_the_cropped_box(shape, center, connectivity):
    rng = np.random.default_rng(3)
    values = rng.standard_normal(shape)
    s = scale_summary(values, center=center, connectivity=connectivity)
    sn = scale_summary(values, center=center, connectivity=connectivity, smad_normalize=True)
    c = s.center
    for i, r in enumerate(s.radius.tolist()):
        box = tuple(slice(max(ci - r, 0), min(ci + r + 1, n)) for ci, n in zip(c, shape,
                                                                             strict=True))
        crop = values[box]
        tree = merge_tree(crop, connectivity=connectivity)
        assert s.n_minima[i] == tree.n_minima
        assert s.smad[i] == smad(crop, connectivity=connectivity)
        assert sn.smad[i] == smad(tree, normalize=True)
        local = tuple(ci - b.start for ci, b in zip(c, box, strict=True))
        assert s.center_basin_volume[i] == tree.volumes[tree.labels[local]]
        assert s.box_size[i] == crop.size
    assert s.box_size[-1] == values.size


# ------------------------------------------------------------------------------------ NaN values
def test_nan_wall_is_a_saddle_whose_nan_shows(caplog):
    values = (np.arange(21) - 10.0) ** 2
    values[12] = np.nan
    with caplog.at_level(logging.WARNING):
        s = scale_summary(values)
    assert "NaN" in caplog.text
    # Radius 3 reaches 13: its only neighbours are the NaN wall and the edge, so it is a
    # minimum; the NaN point joins it to θ₀'s basin.
    np.testing.assert_array_equal(s.n_minima, [1, 1] + [2] * 8)
    assert s.saddle_radius == 3 and math.isnan(s.saddle_value)
    np.testing.assert_array_equal(s.smad[:2], 0.0)
    assert np.isnan(s.smad[2:]).all()
    assert s.center_basin_volume[2] == 6  # 7..11 and the NaN point, which descends to 11
    d = s.to_dict()
    assert math.isnan(d["saddle_value"]) and math.isnan(d["smad"][5])
    back = json.loads(json.dumps(d))
    assert math.isnan(back["smad"][5])


def test_nan_at_the_centre_splits_it_into_two_basins():
    values = (np.arange(21) - 10.0) ** 2
    values[10] = np.nan
    s = scale_summary(values)
    np.testing.assert_array_equal(s.n_minima, 2)
    np.testing.assert_array_equal(s.center_min_value, 1.0)
    assert s.saddle_radius == 1 and math.isnan(s.saddle_value)
    assert np.isnan(s.smad).all()


# ------------------------------------------------------------------------------ result object
def test_summary_is_frozen_and_json_friendly():
    x = np.linspace(0, 1, G.n)
    s = scale_summary(G.values, coords=[x], radii=range(1, 6))
    assert isinstance(s, ScaleSummary)
    with pytest.raises(FrozenInstanceError):
        s.saddle_radius = 2
    with pytest.raises(ValueError):
        s.n_minima[0] = 7
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["radius"] == [1, 2, 3, 4, 5] and d["saddle_radius"] == 4
    assert isinstance(d["n_minima"][0], int) and isinstance(d["smad"][0], float)
    assert len(d["extent"]) == 5 and len(d["extent"][0]) == 1
    assert scale_summary(G.values, radii=[1]).to_dict()["extent"] is None


def test_plot_returns_the_given_axes():
    from matplotlib.figure import Figure

    s = scale_summary(G.values)
    ax = Figure().add_subplot()
    assert s.plot(ax) is ax
    vlines = [ln for ln in ax.lines if np.allclose(ln.get_xdata(), s.saddle_radius)]
    assert len(vlines) == 1 and "saddle" in vlines[0].get_label()
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), s.n_minima)
    twin = [a for a in ax.figure.axes if a is not ax]
    assert len(twin) == 1
    np.testing.assert_array_equal(twin[0].lines[0].get_ydata(), s.smad)
    texts = [t.get_text() for t in twin[0].get_legend().get_texts()]
    assert texts[0] == "minima" and "SMAD" in texts and any("saddle" in t for t in texts)
    # In coordinate units, and on a fresh Figure when no Axes is given.
    x = np.linspace(-2.0, 2.0, G.n)
    s = scale_summary(G.values, coords=[x])
    new = plot_scale_summary(s)
    assert new.figure is not None and new is not ax
    np.testing.assert_allclose(new.lines[0].get_xdata(), s.extent[:, 0])
    assert any(np.allclose(ln.get_xdata(), 0.4) for ln in new.lines[1:])  # r = 4 steps of 0.1
    # No saddle: no vertical line.
    flat = plot_scale_summary(scale_summary((np.arange(9) - 4.0) ** 2))
    assert len(flat.lines) == 1


# ---------------------------------------------------------------------------------- bad inputs
@pytest.fixture
def no_work(monkeypatch):
    """Fail if a merge tree is ever computed: validation must come before any work."""
    def boom(*args, **kwargs):
        raise AssertionError("merge_tree was called before the inputs were validated")

    monkeypatch.setattr(scale_module, "merge_tree", boom)


BOWL = (np.arange(21) - 10.0) ** 2


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"values": 3.0}, ValueError, "at least one axis"),
    ({"values": np.array([])}, ValueError, "empty"),
    ({"values": np.ones((1, 1))}, ValueError, "single point"),
    ({"values": [["a", "b"]]}, TypeError, "numeric"),
    ({"values": np.ones(5, dtype=complex)}, TypeError, "numeric"),
    ({"values": [[1.0, 2.0], [3.0]]}, TypeError, "n-D array"),
    ({"values": np.r_[np.full(9, np.nan), 1.0]}, ValueError, "only 1 of 10 values are finite"),
    ({"center": (21,)}, ValueError, r"center\[0\]=21 is outside axis 0 of length 21"),
    ({"center": (-1,)}, ValueError, r"0\.\.20"),
    ({"center": (3, 4)}, ValueError, "one index per axis"),
    ({"center": (2.5,)}, TypeError, "not coordinates"),
    ({"center": (True,)}, TypeError, "int grid index"),
    ({"center": 3}, TypeError, "one int per axis"),
    ({"radii": [0, 1]}, ValueError, "positive"),
    ({"radii": [-2]}, ValueError, "positive"),
    ({"radii": [5, 11]}, ValueError, "radius 11 is beyond the grid.*1..10"),
    ({"radii": 5}, TypeError, r"range\(1, R \+ 1\)"),
    ({"radii": []}, ValueError, "empty"),
    ({"radii": [1.5]}, TypeError, "ints"),
    ({"radii": [3, 2]}, ValueError, "strictly increasing"),
    ({"radii": [[1]]}, ValueError, "1-D"),
    ({"connectivity": "diagonal"}, ValueError, "connectivity"),
    ({"coords": [np.arange(21), np.arange(21)]}, ValueError, "one 1-D array per axis"),
    ({"coords": [np.arange(20)]}, ValueError, r"coords\[0\] must be a 1-D array of 21"),
    ({"coords": [np.r_[np.arange(20.0), np.inf]]}, ValueError, "finite"),
    ({"coords": np.arange(21.0)}, ValueError, "one 1-D array per axis"),
])
def test_bad_inputs_raise_before_any_work(no_work, kwargs, exc, match):
    kwargs = {"values": BOWL, **kwargs}
    with pytest.raises(exc, match=match):
        scale_summary(kwargs.pop("values"), **kwargs)


def test_a_box_without_finite_values_names_the_first_radius_that_has_them(no_work):
    values = np.full(21, np.nan)
    values[[3, 16]] = [1.0, 2.0]
    with pytest.raises(ValueError, match="radius 1 .* only 0 finite value.*start radii at 7"):
        scale_summary(values)
    with pytest.raises(ValueError, match="radius 6 .* only 1 finite"):
        scale_summary(values, radii=[6, 7])
