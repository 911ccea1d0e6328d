"""The loss on a subspace θ₀ + a·D: first layers answered from k + 1 products, records streamed
when they do not fit. References: the same objective without reuse at the same points, and
losses written out by hand."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, snapshot
from test_frozen import CASES, Counted
from torch import nn

from landscaper import Landscape, Objective
from landscaper.subspace import SubspaceLoss


class CountingLinear(nn.Linear):
    """A Linear that counts how often its forward really runs."""

    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return super().forward(x)


class TiedLM(nn.Module):
    """Embedding tied to the output layer: θ reaches the embedding (an entry) and the output
    layer (not one: its input depends on θ) through one parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.mix = nn.Linear(6, 6)
        self.out = nn.Linear(6, 11, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids):
        return self.out(torch.tanh(self.mix(self.embed(ids)))).flatten(0, 1)


def full_cnn():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(3 * 6 * 6, 4)).double().eval()
    x = torch.randn(9, 1, 6, 6, dtype=torch.float64)
    return model, [(x[:5], torch.randint(0, 4, (5,))), (x[5:], torch.randint(0, 4, (4,)))], \
        F.cross_entropy, None


def tied_lm():
    torch.manual_seed(7)
    model = TiedLM().double().eval()
    ids = torch.randint(0, 11, (4, 5))
    return model, (ids, torch.randint(0, 11, (20,))), F.cross_entropy, None


SUBSPACE_CASES = {**CASES, "full-cnn": full_cnn, "tied-lm": tied_lm}


def subspace_of(objective: Objective, k: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    directions = 0.2 * torch.randn(k, objective.num_params, generator=gen, dtype=torch.float64)
    coefficients = torch.randn(11, k, generator=gen, dtype=torch.float64)
    return SubspaceLoss(objective, objective.theta0, directions), coefficients


@pytest.mark.parametrize("name", SUBSPACE_CASES)
def test_subspace_losses_equal_full_evaluation(name):
    """Vmapped and one by one, the subspace gives the losses of full evaluation at the same
    points; each case has an entry layer answered from products; the model is untouched."""
    model, data, loss_fn, params = SUBSPACE_CASES[name]()
    before = snapshot(model)
    objective = Objective(model, data, loss_fn, params)
    full = Objective(model, data, loss_fn, params, reuse_frozen=False)
    subspace, coefficients = subspace_of(objective)
    expected = full.batch(subspace.points(coefficients), chunk_size=1)
    for chunk in (1, 4):
        np.testing.assert_allclose(subspace.batch(coefficients, chunk_size=chunk), expected,
                                   rtol=1e-11, atol=1e-13)
    assert subspace.nbytes > 0, "no layer was answered from products"
    assert all(r is None or r.deviated is None for r in objective._frozen)
    assert_unchanged(model, before)


def test_the_entry_layer_runs_once_per_direction_not_per_point():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), CountingLinear(5, 3)).double().eval()
    x = torch.randn(12, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    objective = Objective(model, (x, y), F.cross_entropy, params="2.*")
    subspace, coefficients = subspace_of(objective, k=2)
    start = CountingLinear.calls
    losses = subspace.batch(coefficients, chunk_size=4)
    # one call at the origin to capture its input; the products are direct functional calls
    assert CountingLinear.calls - start <= 1 + 2
    start = CountingLinear.calls
    subspace.batch(coefficients, chunk_size=1)
    assert CountingLinear.calls == start  # no point runs it
    with torch.no_grad():
        hidden = torch.tanh(model[0](x))
        by_hand = [F.cross_entropy(F.linear(hidden, w["2.weight"], w["2.bias"]), y)
                   for w in map(objective.unflatten, subspace.points(coefficients))]
    np.testing.assert_allclose(losses, torch.stack(by_hand), rtol=1e-12)


def test_records_that_do_not_fit_are_streamed_per_batch(caplog):
    """A budget too small to keep the records: none is held, a grid records each batch once
    per chunk of points, and the values equal full evaluation."""
    model, data, loss_fn, params = CASES["mlp"]()
    counted = model[0]
    with caplog.at_level(logging.INFO, logger="landscaper"):
        objective = Objective(model, data, loss_fn, params, memory_budget=4096)
        objective.record_frozen()
    assert objective.streams_frozen and all(r is None for r in objective._frozen)
    assert "none are kept" in caplog.text
    full = Objective(model, data, loss_fn, params, reuse_frozen=False)
    subspace, coefficients = subspace_of(objective)
    expected = full.batch(subspace.points(coefficients), chunk_size=1)
    start = counted.calls
    np.testing.assert_allclose(subspace.batch(coefficients, chunk_size=4), expected,
                               rtol=1e-12, atol=1e-14)
    assert counted.calls == start + len(data)  # one record per batch for all 11 points
    theta = objective.theta0 + 0.1
    assert float(objective(theta)) == pytest.approx(float(full(theta)), rel=1e-13)


def test_grid_through_the_subspace_equals_points_built_by_hand():
    model, data, loss_fn, params = full_cnn()
    objective = Objective(model, data, loss_fn, params)
    land = Landscape.compute(objective=objective, directions="random", steps=(4, 3),
                             extent=0.4, progress=False)
    full = Objective(model, data, loss_fn, params, reuse_frozen=False)
    vectors = torch.as_tensor(land.spec.directions.vectors)
    coefficients = torch.as_tensor(land.spec.coefficients(0, 12))
    expected = full.batch(objective.theta0 + coefficients @ vectors, chunk_size=1)
    np.testing.assert_allclose(land.loss.ravel(), expected, rtol=1e-11, atol=1e-13)


def test_forward_mode_input_derivatives_are_never_answered():
    """A PINN-style loss taking input derivatives with torch.func.jvp: the first layer's
    input carries a tangent, so neither it nor anything after it is reused or answered."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), Counted(nn.Linear(8, 8)), nn.Tanh(),
                          nn.Linear(8, 1)).double().eval()

    def residual(call_model, batch):
        (x,) = batch
        u, du = torch.func.jvp(call_model, (x,), (torch.ones_like(x),))
        return (du + u).square().mean()

    data = [(torch.rand(20, 2, dtype=torch.float64),)]
    for params in (None, "4.*"):
        objective = Objective(model, data, batch_loss=residual, params=params)
        full = Objective(model, data, batch_loss=residual, params=params, reuse_frozen=False)
        subspace, coefficients = subspace_of(objective, k=2)
        np.testing.assert_allclose(subspace.batch(coefficients, chunk_size=4),
                                   full.batch(subspace.points(coefficients), chunk_size=1),
                                   rtol=1e-12, atol=1e-14)
        assert subspace.nbytes == 0
        assert all(r is None or not r.entries for r in objective._frozen)


def test_embedding_with_max_norm_is_not_an_entry():
    torch.manual_seed(10)
    model = nn.Sequential(nn.Embedding(7, 3, max_norm=0.5), nn.Flatten(),
                          nn.Linear(6, 2)).double().eval()
    data = (torch.randint(0, 7, (5, 2)), torch.randint(0, 2, (5,)))
    objective = Objective(model, data, F.cross_entropy, params="0.*")
    objective.record_frozen()
    assert all(r is None or not r.entries for r in objective._frozen)
    # the forward renormalises its weight in place: gradients still flow to θ (slice views),
    # equal to those of a copy of the model, which renormalises its own weight the same way
    twin = copy.deepcopy(model)
    F.cross_entropy(twin(data[0]), data[1]).backward()
    assert torch.allclose(objective.gradient(), twin[0].weight.grad.reshape(-1), rtol=1e-12)
    assert any(r is not None and r.entries for r in
               Objective(nn.Sequential(nn.Embedding(7, 3), nn.Flatten(), nn.Linear(6, 2))
                         .double().eval(), data, F.cross_entropy)._frozen)
