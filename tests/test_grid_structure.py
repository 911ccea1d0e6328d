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
