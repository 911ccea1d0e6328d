"""The JumpRetrain estimator end to end on the digits data."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscaper.examples import digits_data, digits_mlp, train_classifier
from landscaper.jump_retrain import JumpRetrain
from landscaper.topology import graph_persistence, knn_graph_from_distances


@pytest.fixture(scope="module")
def jr():
    x, y = digits_data()
    x, y = x[:400], y[:400]
    model = train_classifier(digits_mlp(hidden=16), x, y, epochs=5)
    batches = [(x[i : i + 100], y[i : i + 100]) for i in range(0, 400, 100)]
    return JumpRetrain(model, batches, F.cross_entropy,
                       lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                       seeds=(0, 1), step_sizes=(0.5, 1.0), epochs=6, k=8,
                       embedding="pca", progress=False)


def test_end_to_end_and_stage_cache(jr):
    jr.fit()
    samples = jr.samples_
    assert len(samples) == 2 * 2 * 7
    totals = jr.total_persistence()
    # the estimator's numbers are those of the plain functions on the same inputs
    edges = knn_graph_from_distances(jr.graph_distances(), k=8)
    direct = graph_persistence(samples.loss, edges)
    assert totals[0] == pytest.approx(direct.total_persistence(0))
    assert totals[1] == pytest.approx(direct.total_persistence(1))
    embedding = jr.embedding_
    jr.set_params(k=4)  # only the topology stage is stale
    assert jr.samples_ is samples and jr.embedding_ is embedding and jr.persistence_ is None
    jr.fit()
    jr.set_params(epochs=6)  # unchanged value: nothing is reset
    assert jr.persistence_ is not None
    jr.set_params(epochs=3)  # the first stage changes: everything downstream is reset
    assert jr.samples_ is None and jr.embedding_ is None and jr.persistence_ is None
    with pytest.raises(ValueError, match="unknown settings"):
        jr.set_params(neighbours=3)


def test_plots(jr):
    jr.set_params(epochs=6).fit()
    for ax in (jr.plot_embedding(), jr.plot_persistence()):
        assert isinstance(ax, matplotlib.axes.Axes)
    assert "pers(D0)" in jr.plot_persistence().get_title()


def test_phate_embedding_path(jr):
    pytest.importorskip("phate")
    jr.set_params(embedding="phate", epochs=6, phate_knn=3)
    jr.fit()
    potential = jr.embedding_.potential_distances
    assert potential.shape == (28, 28) and np.allclose(potential, potential.T)
    assert np.isfinite(jr.total_persistence()[0])


def test_jump_retrain_steps_on_a_batch_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    batch = {"x": torch.randn(64, 2)}
    target = batch["x"] @ torch.tensor([[1.0], [-2.0]])
    batch["y"] = target

    def batch_loss(call_model, b):
        return ((call_model(b["x"]) - b["y"]) ** 2).mean()

    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.zero_()
    jr = JumpRetrain(model, batch, None, lambda ps: torch.optim.SGD(ps, lr=0.1),
                     batch_loss=batch_loss, seeds=(0, 1), step_sizes=(0.5,), epochs=5,
                     embedding="pca", k=3, progress=False).fit()
    samples = jr.samples_
    assert len(samples) == 2 * 6
    for seed in (0, 1):  # every retraining epoch lowers the quadratic loss
        losses = samples.loss[samples.seed == seed]
        assert np.all(np.diff(losses) < 0) and losses[0] > 1e-3
    assert samples.accuracy is None or np.all(np.isnan(samples.accuracy))
    assert torch.equal(model.weight, torch.tensor([[1.0, -2.0]]))  # the model is untouched
