"""extent="auto": each axis' range from 1-D scans, against analytic crossings."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from landscaper import AutoExtent, Landscape
from landscaper.pipeline import AnalysisConfig


class Point(nn.Module):
    """Its output is its parameter vector, so the loss is any function of θ we write."""

    def __init__(self, theta0: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(theta0, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w


DATA = [(torch.zeros(1), torch.zeros(1))]
CURVATURES = torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64)


def quadratic(out: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (CURVATURES * out ** 2).sum() + 0.1


def compute(loss, theta0, extent, unit="absolute", dims=3, steps=5):
    return Landscape.compute(Point(theta0), DATA, loss,
                             directions=torch.eye(len(theta0), dtype=torch.float64)[:dims],
                             extent=extent, extent_unit=unit, steps=steps, progress=False)


def test_quadratic_half_widths_reach_the_stated_rise_and_the_far_axis_stops(caplog):
    # target = min(10 * 0.1, 0.1 + 1) = 1.0: 0.5 c a^2 = 0.9, a = sqrt(1.8 / c)
    with caplog.at_level(logging.WARNING, logger="landscaper"):
        land = compute(quadratic, [0.0, 0.0, 0.0], "auto")
    expected = np.sqrt(1.8 / CURVATURES.numpy())
    record = land.metadata["extent_auto"]
    assert record["target"] == pytest.approx(1.0) and record["loss0"] == pytest.approx(0.1)
    assert record["extent"][:2] == pytest.approx(expected[:2], rel=1e-3)
    assert record["axes"][2]["reached"] == [False, False] and record["extent"][2] == 2.0
    assert "stays below the target" in caplog.text and "[2]" in caplog.text
    for axis, half in zip(land.axes, record["extent"], strict=True):
        assert axis[0] == pytest.approx(-half) and axis[-1] == pytest.approx(half)
    assert land.theta0_index == (2, 2, 2)
    assert land.metadata["extent_ranges"][0] == pytest.approx([-expected[0], expected[0]],
                                                              rel=1e-3)
    assert "extent_scan_s" in land.metadata["timings"]


def test_rise_or_factor_alone_and_the_relative_unit():
    # only the rise: 0.5 c a^2 = 0.5 -> a = 1/sqrt(c); theta0 = (3, 4): |theta0| = 5
    def shifted(out, _y):
        return 0.5 * (CURVATURES[:2] * (out - torch.tensor([3.0, 4.0],
                                                           dtype=torch.float64)) ** 2).sum()

    land = compute(shifted, [3.0, 4.0], AutoExtent(factor=None, rise=0.5), unit="relative",
                   dims=2)
    displacement = 1 / np.sqrt(CURVATURES.numpy()[:2])
    assert land.metadata["extent_auto"]["extent"] == pytest.approx(displacement / 5, rel=1e-3)
    assert land.axes[1][-1] == pytest.approx(displacement[1], rel=1e-3)  # |d| = 1
    # only the factor: L = 0.1 + 0.5 c a^2 reaches 3 * 0.1 at a = sqrt(0.4 / c)
    land = compute(quadratic, [0.0, 0.0, 0.0], AutoExtent(factor=3.0, rise=None), dims=1)
    assert land.metadata["extent_auto"]["extent"] == pytest.approx([np.sqrt(0.4 / 4)], rel=1e-3)


def test_asymmetric_sides_and_the_symmetric_rule():
    # L(a) = 0.1 + a^2 for a > 0, 0.1 + 4 a^2 for a < 0 (target 1): sides 0.9^.5 and 0.9^.5/2
    def lopsided(out, _y):
        a = out[0]
        return 0.1 + torch.where(a > 0, a ** 2, 4 * a ** 2)

    pos, neg = np.sqrt(0.9), np.sqrt(0.9) / 2
    land = compute(lopsided, [0.0], "auto", dims=1)
    assert land.metadata["extent_auto"]["extent"] == pytest.approx([pos], rel=1e-3)
    sides = land.metadata["extent_auto"]["axes"][0]
    assert (sides["negative"], sides["positive"]) == pytest.approx((neg, pos), rel=1e-3)
    land = compute(lopsided, [0.0], AutoExtent(symmetric=False), dims=1, steps=4)
    assert land.metadata["extent_auto"]["extent"][0] == pytest.approx((-neg, pos), rel=1e-3)
    assert land.axes[0][0] == pytest.approx(-neg, rel=1e-3)


def test_the_scan_stops_where_the_loss_stops_being_finite():
    # finite and flat (never reaching the target) up to |a| = 0.3, NaN beyond
    def cliff(out, _y):
        a = out[0]
        return torch.where(a.abs() < 0.3, 0.1 + 0.0 * a, torch.full_like(a, float("nan")))

    land = compute(cliff, [0.0], "auto", dims=1)
    half = land.metadata["extent_auto"]["extent"][0]
    assert 0.3 <= half <= 0.3 * (1 + 1 / 8)  # the first non-finite refined point
    assert np.isnan(land.loss[0]) and np.isnan(land.loss[-1])  # kept visible on the grid


def _no_hessian_work(*args, **kwargs):
    raise AssertionError("Hessian directions were computed before the extent rule was checked")


def test_bad_rules_are_refused_before_any_work(monkeypatch):
    with pytest.raises(ValueError, match="only be 'auto'"):
        compute(quadratic, [0.0, 0.0, 0.0], "automatic")
    with pytest.raises(ValueError, match="needs a target"):
        AutoExtent(factor=None, rise=None)
    with pytest.raises(ValueError, match="factor must be a finite number above 1"):
        AutoExtent(factor=0.5)
    with pytest.raises(ValueError, match="rise must be positive"):
        AutoExtent(rise=-1.0)
    with pytest.raises(ValueError, match="give AutoExtent\\(rise=...\\)"):
        compute(lambda out, _y: -1.0 + 0.0 * out.sum(), [0.0], AutoExtent(rise=None), dims=1)
    # a loss with no value at θ₀ is refused before the Hessian directions are computed
    monkeypatch.setattr("landscaper.directions.hessian_directions", _no_hessian_work)
    for loss in (lambda out, _y: out.sum() * float("nan"), lambda out, _y: -(out ** 2).sum()):
        with pytest.raises(ValueError, match="θ₀'s loss"):
            Landscape.compute(Point([1.0, 1.0]), DATA, loss, extent=AutoExtent(rise=None),
                              progress=False)
    with pytest.raises(ValueError, match="factor must be a finite number above 1"):
        AnalysisConfig(extent_factor=1.0)


def test_hessian_directions_on_an_mlp_reach_the_target_at_the_axis_ends():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    land = Landscape.compute(model, [(x, y)], nn.functional.cross_entropy, dims=2, steps=9,
                             extent="auto", progress=False)
    record = land.metadata["extent_auto"]
    assert record["unit"] == "relative" and all(all(a["reached"]) for a in record["axes"])
    centre = land.theta0_index
    assert centre == (4, 4)
    for axis in range(2):
        line = np.moveaxis(land.loss, axis, 0)[:, centre[1 - axis]]
        # the farther side crosses at its end, the nearer one inside the grid
        far = line[4:] if line[-1] < line[0] else line[4::-1]
        assert far[-1] == pytest.approx(record["target"], rel=2e-2)
        assert max(line[0], line[-1]) >= record["target"] * 0.98
        assert np.all(far[:-1] < record["target"])  # the first crossing, not a later one


def test_the_scan_evaluates_both_sides_in_two_calls_per_direction():
    from landscaper.directions import Directions
    from landscaper.grid import scan_extent
    from landscaper.grid.axes import ExtentUnit

    calls = []

    def evaluate(direction, axis):  # L(a·d) = 0.1 + a² for a > 0, 0.1 + 4a² below
        calls.append(axis.copy())
        assert np.all(np.diff(axis) > 0)
        return 0.1 + np.where(axis > 0, axis ** 2, 4 * axis ** 2)

    dirs = Directions(torch.eye(2, dtype=torch.float64), "user")
    extent, record = scan_extent(evaluate, dirs, AutoExtent(symmetric=False), 0.1,
                                 ExtentUnit.ABSOLUTE, 1.0)
    assert len(calls) == 4 and record["evaluations"] == 2 * (2 * 24 + 2 * 8)
    assert extent[0] == pytest.approx((-np.sqrt(0.9) / 2, np.sqrt(0.9)), rel=1e-3)
