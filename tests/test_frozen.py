"""Reusing the computation θ does not change: equal to full evaluation, used, and refused where
it cannot be shown safe. References: the same Objective with reuse_frozen=False, and dense
float64 Hessians built here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, snapshot
from torch import nn

from landscaper import Landscape, Objective, top_eigenpairs


class Counted(nn.Module):
    """Wraps a module and counts how often its forward really runs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, *args):
        self.calls += 1
        return self.inner(*args)


def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(Counted(nn.Sequential(nn.Linear(6, 16), nn.Tanh())), nn.Linear(16, 16),
                          nn.Tanh(), nn.Linear(16, 3)).double().eval()
    x = torch.randn(40, 6, dtype=torch.float64)
    return model, [(x[:25], torch.randint(0, 3, (25,))), (x[25:], torch.randint(0, 3, (15,)))], \
        F.cross_entropy, "3.*"


def bn_cnn():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5)).double()
    with torch.no_grad():  # running statistics that are not the identity
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    return model, (x, torch.randint(0, 5, (12,))), F.cross_entropy, "4.*"


class GRUClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 8, batch_first=False)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[-1])


def gru():
    torch.manual_seed(2)
    model = GRUClassifier().double().eval()
    x = torch.randn(7, 10, 3, dtype=torch.float64)  # sequence first
    return model, [(x, torch.randint(0, 2, (10,)))], F.cross_entropy, "head.*"


def tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=24,
                                     max_position_embeddings=16, num_labels=2,
                                     attn_implementation="eager")
    torch.manual_seed(3)
    model = transformers.BertForSequenceClassification(config).double().eval()
    ids = torch.randint(0, 50, (6, 9))
    mask = torch.ones_like(ids)
    mask[:2, 6:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (6,))}
    return model, batch, None, ["bert.encoder.layer.1.output.dense.*", "classifier.*"]


CASES = {"mlp": mlp, "bn-cnn": bn_cnn, "gru": gru, "tiny-bert": tiny_bert}


def dense_hessian(objective: Objective) -> np.ndarray:
    hessian = torch.autograd.functional.hessian(
        lambda t: Objective.__call__(objective, t), objective.theta0)
    return np.linalg.eigvalsh(hessian.numpy())[::-1]


@pytest.mark.parametrize("name", CASES)
def test_reuse_equals_full_evaluation(name):
    """Losses at many θ (vmapped and one by one), gradients and the top Hessian eigenvalues
    equal full evaluation; the model is untouched."""
    model, data, loss_fn, params = CASES[name]()
    before = snapshot(model)
    reused = Objective(model, data, loss_fn, params)
    full = Objective(model, data, loss_fn, params, reuse_frozen=False)
    gen = torch.Generator().manual_seed(0)
    thetas = reused.theta0 + 0.3 * torch.randn(6, reused.num_params, generator=gen,
                                               dtype=torch.float64)
    for chunk in (1, 6):
        np.testing.assert_allclose(reused.batch(thetas, chunk_size=chunk),
                                   full.batch(thetas, chunk_size=chunk), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(reused.gradient(thetas[0]), full.gradient(thetas[0]),
                               rtol=1e-10, atol=1e-13)
    eig = top_eigenpairs(reused, k=2).eigenvalues
    np.testing.assert_allclose(eig, top_eigenpairs(full, k=2).eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(eig, dense_hessian(full)[:2], rtol=1e-7, atol=1e-10)
    assert any(r is not None for r in reused._frozen), "nothing was reused"
    assert all(r is None or r.deviated is None for r in reused._frozen)
    assert_unchanged(model, before)


def test_the_frozen_prefix_runs_once_per_batch():
    model, data, loss_fn, params = mlp()
    counted = model[0]
    objective = Objective(model, data, loss_fn, params)
    land = Landscape.compute(objective=objective, directions="random", steps=5, progress=False)
    top_eigenpairs(objective, k=1)
    # the construction's first evaluation, then one record per batch (the smallest one's at
    # construction, the other's at its first evaluation); never run again
    assert counted.calls == 1 + len(data) and land.shape == (5, 5)
    full = Objective(model, data, loss_fn, params, reuse_frozen=False)
    start = counted.calls
    full.batch(objective.theta0.expand(3, -1), chunk_size=1)
    assert counted.calls == start + 3 * len(data)  # without reuse: every batch at every point


class InPlaceResidual(nn.Module):
    """Adds to the output of a frozen layer in place: a replay must notice and stop."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.body(x)
        h += 1.0
        return self.head(h)


def test_in_place_update_of_a_reused_output_falls_back(caplog):
    torch.manual_seed(4)
    model = InPlaceResidual().double().eval()
    data = (torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 2, (10,)))
    reused = Objective(model, data, F.cross_entropy, "head.*")
    full = Objective(model, data, F.cross_entropy, "head.*", reuse_frozen=False)
    thetas = reused.theta0 + torch.linspace(0, 1, 3, dtype=torch.float64)[:, None]
    for theta in thetas:  # every value right, the first replay noticed the update
        assert float(reused(theta)) == pytest.approx(float(full(theta)), rel=1e-14)
    assert "in place" in caplog.text and all(r is None for r in reused._frozen)


def test_inputs_that_require_grad_are_never_reused():
    """A PINN-style loss differentiates the output with respect to inputs that require grad:
    nothing before the selected layer is independent of them, so nothing is reused."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double().eval()

    def residual(call_model, batch):
        (x,) = batch
        with torch.enable_grad():  # input derivatives, also where the caller has no grad
            x = x.clone().requires_grad_(True)
            u = call_model(x)
            (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
            return (du[:, 0] + u[:, 0]).pow(2).mean()

    data = [(torch.rand(20, 2, dtype=torch.float64),)]
    reused = Objective(model, data, batch_loss=residual, params="2.*")
    full = Objective(model, data, batch_loss=residual, params="2.*", reuse_frozen=False)
    theta = reused.theta0 + 0.1
    assert float(reused(theta)) == float(full(theta))
    assert reused._frozen == [None] and not reused._unrecorded  # recorded: nothing to reuse
