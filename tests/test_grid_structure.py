"""The grid's seams: a Landscape plans with its objective's memory budget, and the core never
asks which kind of objective it has."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch.nn.functional as F

from landscaper import Landscape, Objective
from landscaper.grid import execute

PACKAGE = Path(__file__).resolve().parents[1] / "landscaper"


def test_compute_plans_with_the_objectives_memory_budget(mlp_case, monkeypatch):
    """An 8 GiB objective is planned at 8 GiB (it was planned at compute's own 2 GiB)."""
    model, x, y, _ = mlp_case
    objective = Objective(model, (x, y), F.cross_entropy, memory_budget="8GiB")
    budgets = []
    plan = execute.plan_grid
    monkeypatch.setattr(execute, "plan_grid", lambda *a, **kw: budgets.append(
        kw["memory_budget"]) or plan(*a, **kw))
    Landscape.compute(objective=objective, directions="random", steps=3, progress=False)
    assert budgets == [8 * 2**30]
    # an explicit budget still wins over the objective's
    Landscape.compute(objective=objective, directions="random", steps=3, progress=False,
                      memory_budget="1GiB")
    assert budgets[-1] == "1GiB"


def test_a_grid_the_objectives_budget_cannot_hold_is_refused(mlp_case):
    """101 x 101 losses (80 KiB) do not fit a 64 KiB objective: refused before any work."""
    model, x, y, _ = mlp_case
    objective = Objective(model, (x, y), F.cross_entropy, memory_budget="64KiB")
    with pytest.raises(MemoryError, match="memory budget 64.0 KiB"):
        Landscape.compute(objective=objective, directions="random", steps=101, progress=False)


def _names_in(path: Path) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Name)} | {
        node.attr for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)}


@pytest.mark.parametrize("path", ["hessian.py", *[f"grid/{p.name}" for p in
                                                  sorted((PACKAGE / "grid").glob("*.py"))]])
def test_core_never_checks_for_the_distributed_objective(path):
    """Hessian and grid code use the objective's reduction hooks, never its class."""
    assert "DistributedObjective" not in _names_in(PACKAGE / path)


def test_a_new_named_direction_type_is_one_registry_entry(mlp_case, monkeypatch):
    """A direction set added to NAMED_DIRECTIONS alone is computed, recorded and labelled."""
    import torch

    from landscaper.directions import NAMED_DIRECTIONS, Directions, NamedDirections

    def coordinate_axes(objective, k, which, seed):
        vectors = torch.eye(objective.num_params, dtype=objective.dtype)[:k]
        return Directions(vectors, "coordinate", "unit", True, None, {"seed": seed})

    monkeypatch.setitem(NAMED_DIRECTIONS, "coordinate",
                        NamedDirections("coordinate", coordinate_axes))
    model, x, y, reference = mlp_case
    land = Landscape.compute(model, (x, y), F.cross_entropy, directions="coordinate", steps=3,
                             extent=0.5, extent_unit="absolute", progress=False)
    assert land.direction_kind == "coordinate" == land.metadata["directions"]["kind"]
    assert land.axis_label(1) == "direction 1"
    theta0 = Objective(model, (x, y), F.cross_entropy).theta0
    for i, j in ((0, 0), (2, 1), (1, 2)):
        point = theta0.clone()
        point[0] += land.axes[0][i]
        point[1] += land.axes[1][j]
        assert abs(land.loss[i, j] - float(reference(point))) < 1e-12


def test_unstored_directions_are_not_kept_and_whole_float_dims_work(mlp_case):
    """store_directions=False frees the (k, P) vectors (the spec would hold them), and
    dims=2.0 means 2, as every other count."""
    model, x, y, _ = mlp_case
    land = Landscape.compute(model, (x, y), F.cross_entropy, directions="random", dims=2.0,
                             steps=3, progress=False, store_directions=False)
    assert land.shape == (3, 3) and land.directions is None and land.spec is None
    assert land.direction_kind == "random"  # the facts stay in the metadata


def test_nonfinite_numbers_round_trip_and_free_text_stays_text(tmp_path):
    import numpy as np

    meta = {"description": "nan", "theta0": {"loss": float("nan")}, "bounds": [float("-inf")]}
    Landscape.from_arrays(np.zeros((3, 3)), [np.arange(3.0) - 1] * 2, meta).save(
        tmp_path / "f.npz")
    loaded = Landscape.load(tmp_path / "f.npz").metadata
    assert loaded["description"] == "nan"
    assert np.isnan(loaded["theta0"]["loss"]) and loaded["bounds"] == [float("-inf")]
    from landscaper._files import dumps

    assert "NaN" not in dumps(meta) and '"-inf"' in dumps(meta)


def test_chunk_tuning_times_every_affordable_chunk_before_repeating_any(monkeypatch):
    """A small budget first buys one timing of each chunk size (a repeated timing of chunk 1
    must not crowd out chunk 4), then repeats the fastest."""
    import torch
    from torch import nn

    from landscaper.grid import plan as grid_plan

    calls: list[int] = []

    def fake_timed_rows(objective, subspace):
        def evaluate(n, chunk):
            calls.append(chunk)
        return evaluate

    monkeypatch.setattr(grid_plan, "_timed_rows", fake_timed_rows)
    torch.manual_seed(0)
    obj = Objective(nn.Linear(3, 2), (torch.randn(8, 3), torch.randn(8, 2)), F.mse_loss)
    grid_plan.tune_chunk_size(obj, max_chunk=64, max_points=27)
    assert 4 in calls and 16 not in calls  # 8 (chunk 1) + 4 warm-up + 8 (chunk 4) = 20 ≤ 27
