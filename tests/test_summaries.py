"""The summary registry: one registration reaches the report, compare and the callback record,
and the built-in summaries equal independent references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from landscaper import Landscape, summaries
from landscaper.cli import main
from landscaper.integrations import huggingface as hf
from landscaper.report import landscape_metrics


def two_wells(n: int = 41) -> Landscape:
    """(x² - 1)² + y²: exactly two minima, at (±1, 0), of depth 0 below the saddle at 1."""
    x = np.linspace(-2, 2, n)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    return Landscape.from_arrays((xx ** 2 - 1) ** 2 + yy ** 2, [x, x])


@pytest.fixture
def loss_range():
    """A summary registered everywhere for the duration of a test."""

    @summaries.register("loss_range_test", compare=True, history=True)
    def value(land):
        return float(np.nanmax(land.loss) - np.nanmin(land.loss))

    yield value
    summaries.unregister("loss_range_test")


class DictModel(nn.Module):
    """A module called as model(**batch) returning {"loss"}, as HuggingFace models do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.classifier = nn.Linear(3, 2)

    def forward(self, x, labels):
        return {"loss": nn.functional.cross_entropy(self.classifier(x), labels)}


def test_a_summary_registered_once_appears_everywhere(tmp_path, capsys, loss_range):
    land = two_wells()
    expected = loss_range(land)
    assert landscape_metrics(land)["loss_range_test"] == expected

    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    land.save(a)
    Landscape.from_arrays(land.loss * 2, land.axes).save(b)
    assert main(["compare", str(a), str(b), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["metrics"]
    assert rows["loss_range_test"] == pytest.approx([expected, 2 * expected])
    assert list(rows)[-1] == "loss_range_test"  # registration order is row order

    assert summaries.summarize(land, "history")["loss_range_test"] == expected
    gen = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(8, 3, generator=gen), "labels": torch.randint(0, 2, (8,),
                                                                           generator=gen)}
    callback = hf._LandscapeCallbackImpl(batch, steps=[0], params=None, grid_steps=5,
                                         keep_landscapes=True)
    record = callback.measure(DictModel(), step=0)
    assert record["loss_range_test"] == loss_range(callback.landscapes[0])


def test_the_targets_keep_their_rows():
    assert summaries.names("compare") == ["shape", "loss_min", "loss_max", "minima",
                                          "saddle_radius", "smad", "smad_normalized",
                                          "total_persistence_d0", "eigenvalues_of_axes"]
    assert summaries.names("history") == ["extent", "minima", "minima_by_radius",
                                          "saddle_radius", "smad", "smad_normalized"]
    assert list(landscape_metrics(two_wells())) == summaries.names("report")


def test_built_in_values_equal_independent_references():
    land = two_wells()
    values = summaries.summarize(land)
    assert values["minima"] == 2 and len(land.minima()) == 2
    # θ₀ = (0, 0) is the saddle: every box around it falls off towards x = ±r up to the wells
    # at x = ±1 (10 steps), so each holds two minima that merge on the ridge through θ₀
    history = summaries.summarize(land, "history")
    assert history["minima_by_radius"] == [2] * 20 and history["saddle_radius"] == 1
    assert values["shape"] == [41, 41] and values["loss_min"] == pytest.approx(0.0)
    assert values["loss_max"] == pytest.approx(9 + 4)
    # D0 diagram by hand: the two wells are born at 0, one dies at the saddle (0, 0) of
    # loss 1, the other is essential and left out: total persistence (1 - 0)² = 1
    assert values["total_persistence_d0"] == pytest.approx(1.0)
    gudhi = pytest.importorskip("gudhi")
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=land.loss)
    pairs = np.array([p for dim, p in complex_.persistence() if dim == 0])
    finite = pairs[np.isfinite(pairs[:, 1])]
    assert values["total_persistence_d0"] == pytest.approx(((finite[:, 1] - finite[:, 0]) ** 2)
                                                           .sum())


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered already"):
        summaries.register("smad")
    with pytest.raises(ValueError, match="target must be one of"):
        summaries.summarize(two_wells(), "table")
