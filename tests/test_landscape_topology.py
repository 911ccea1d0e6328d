"""Topology on the Landscape object: analytic landscapes, gudhi, and the per-argument cache."""

from __future__ import annotations

import gudhi
import matplotlib
import numpy as np
import pytest

from landscaper import Landscape


def rastrigin_landscape(n=51, d=2):
    a = np.linspace(-2.5, 2.5, n)
    grid = np.meshgrid(*([a] * d), indexing="ij")
    values = 10 * d + sum(g**2 - 10 * np.cos(2 * np.pi * g) for g in grid)
    return Landscape.from_arrays(values, [a] * d)


def test_rastrigin_minima_on_the_object():
    land = rastrigin_landscape()
    minima = land.minima()
    assert minima.shape == (25, 2)
    coords = np.stack([land.axes[i][minima[:, i]] for i in range(2)], axis=1)
    # the 25 local minima of Rastrigin on [-2.5, 2.5]^2 sit near the integer points
    assert np.allclose(coords, np.round(coords), atol=0.05)
    assert set(map(tuple, np.round(coords).astype(int))) == {
        (i, j) for i in range(-2, 3) for j in range(-2, 3)}
    assert tuple(minima[0]) == (25, 25)  # global minimum first, at the origin


def test_persistence_matches_gudhi_and_smad_zero_for_bowl():
    rng = np.random.default_rng(0)
    values = rng.random((17, 13))
    land = Landscape.from_arrays(values, [np.arange(17.0), np.arange(13.0)])
    for connectivity, option in (("full", "top_dimensional_cells"), ("axis", "vertices")):
        cc = gudhi.CubicalComplex(**{option: values})
        cc.compute_persistence()
        ref = np.array(sorted(cc.persistence_intervals_in_dimension(0).tolist()))
        ours = land.persistence(connectivity)
        ours = np.array(sorted(ours[ours[:, 1] > ours[:, 0]].tolist()))
        ref = ref[ref[:, 1] > ref[:, 0]]
        np.testing.assert_array_equal(ours, ref)
    a = np.linspace(-1, 1, 31)
    x, y = np.meshgrid(a, a, indexing="ij")
    bowl = Landscape.from_arrays(x**2 + 2 * y**2, [a, a])
    assert bowl.smad() == 0.0 and len(bowl.minima()) == 1
    assert np.isinf(bowl.persistence()[:, 1]).sum() == 1


def test_cache_never_returns_a_tree_for_other_arguments():
    # a diagonal valley: axis neighbours cut it into several minima, full neighbours do not
    a = np.arange(7.0)
    x, y = np.meshgrid(a, a, indexing="ij")
    values = np.abs(x - y) * 10 + (x + y) * 0.1
    values = values + np.where((x + y) % 4 == 2, 0.05, 0.0)
    land = Landscape.from_arrays(values, [a, a])
    axis_min = len(land.minima("axis"))
    full_min = len(land.minima("full"))
    assert axis_min > full_min
    assert len(land.minima("axis")) == axis_min and len(land.minima("full")) == full_min
    assert land.merge_tree(kind="superlevel") is not land.merge_tree()
    simplified = land.basins("axis", threshold=1e9)
    assert simplified.n_basins == 1 and land.basins("axis").n_basins == axis_min
    with pytest.raises(ValueError):
        land.loss[0, 0] = 1.0  # read-only: cached topology cannot go stale


def test_smad_options_on_object_match_topology_functions():
    from landscaper import topology

    land = rastrigin_landscape(41)
    assert land.smad() == pytest.approx(topology.smad(land.loss))
    assert land.smad(normalize=True, weighted=True) == pytest.approx(
        topology.smad(land.loss, normalize=True, weighted=True))
    assert land.smad(pairing="persistence", connectivity="axis") == pytest.approx(
        topology.smad(land.loss, pairing="persistence", connectivity="axis"))
    assert land.basins().volumes.sum() == land.loss.size


def test_topology_plots_take_and_return_axes():
    land = rastrigin_landscape(21)
    for ax in (land.show_profile(), land.show_merge_tree(), land.show_persistence(),
               land.show_persistence(barcode=True)):
        assert isinstance(ax, matplotlib.axes.Axes)
