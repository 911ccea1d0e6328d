"""GGN and empirical Fisher operators against dense float64 references built here from
torch.func.jacrev (Σₙ Jₙᵀ Hₙ Jₙ / N and Σₙ gₙ gₙᵀ / N), and the algorithms on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, snapshot
from torch import nn
from torch.func import functional_call, jacrev

from landscaper import HessianOperator, Objective, top_eigenpairs, trace
from landscaper.curvature import FisherOperator, GGNOperator


def classifier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    x = torch.randn(18, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (18,))
    return model, [(x[:10], y[:10]), (x[10:], y[10:])], F.cross_entropy


def regressor():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double().eval()
    x = torch.randn(12, 3, dtype=torch.float64)
    return model, [(x, torch.randn(12, 2, dtype=torch.float64))], F.mse_loss


CASES = {"cross-entropy": classifier, "mse": regressor}


def flat_call(model, objective):
    names = objective.param_names

    def outputs(theta, x):
        params = objective.unflatten(theta)
        return functional_call(model, {n: params[n] for n in names}, (x,))

    return outputs


def dense_ggn(model, batches, loss_fn, objective):
    """Σ_b w_b Jᵀ ∇²ℓ_b J with J from jacrev and ∇²ℓ_b the loss's Hessian in output space."""
    outputs, theta = flat_call(model, objective), objective.theta0
    total = torch.zeros(objective.num_params, objective.num_params, dtype=torch.float64)
    for weight, (x, y) in zip(objective.weights, batches, strict=True):
        out = outputs(theta, x)
        jac = jacrev(outputs)(theta, x).reshape(out.numel(), -1)
        h_out = torch.autograd.functional.hessian(
            lambda o, out=out, y=y: loss_fn(o.view_as(out), y), out.detach().reshape(-1))
        total += weight * jac.T @ h_out @ jac
    return total


def dense_fisher(model, batches, loss_fn, objective):
    outputs, theta = flat_call(model, objective), objective.theta0
    total = torch.zeros(objective.num_params, objective.num_params, dtype=torch.float64)
    for weight, (x, y) in zip(objective.weights, batches, strict=True):
        def sample_loss(t, i, x=x, y=y):
            return loss_fn(outputs(t, x[i:i + 1]), y[i:i + 1])

        grads = torch.stack([jacrev(sample_loss)(theta, i) for i in range(len(y))])
        total += weight * grads.T @ grads / len(y)
    return total


@pytest.mark.parametrize("name", CASES)
def test_ggn_equals_the_dense_reference(name):
    model, batches, loss_fn = CASES[name]()
    before = snapshot(model)
    objective = Objective(model, batches, loss_fn)
    reference = dense_ggn(model, batches, loss_fn, objective)
    ours = GGNOperator(objective).to_dense()
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    expected = np.linalg.eigvalsh(reference.numpy())[::-1][:3]
    eig = top_eigenpairs(objective, k=3, curvature="ggn")
    np.testing.assert_allclose(eig.eigenvalues, expected, rtol=1e-8)
    assert np.linalg.eigvalsh(reference.numpy()).min() > -1e-10  # PSD for a convex loss
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", CASES)
def test_empirical_fisher_equals_the_dense_reference(name):
    model, batches, loss_fn = CASES[name]()
    objective = Objective(model, batches, loss_fn)
    reference = dense_fisher(model, batches, loss_fn, objective)
    torch.testing.assert_close(FisherOperator(objective).to_dense(), reference, rtol=1e-10,
                               atol=1e-12)
    eig = top_eigenpairs(objective, k=2, curvature="fisher")
    np.testing.assert_allclose(eig.eigenvalues, np.linalg.eigvalsh(reference.numpy())[::-1][:2],
                               rtol=1e-8)
    estimate = trace(objective, n_probes=400, curvature="fisher")
    assert abs(estimate.estimate - float(reference.trace())) < 5 * estimate.std_error


def test_ggn_of_a_model_linear_in_theta_is_its_hessian():
    torch.manual_seed(2)
    model = nn.Linear(4, 2).double()
    data = (torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64))
    objective = Objective(model, data, F.mse_loss)
    torch.testing.assert_close(GGNOperator(objective).to_dense(),
                               HessianOperator(objective).to_dense(), rtol=1e-12, atol=1e-14)


def test_ggn_and_fisher_refuse_losses_they_cannot_split():
    model, batches, loss_fn = classifier()
    with_batch_loss = Objective(model, batches,
                                batch_loss=lambda call, b: loss_fn(call(b[0]), b[1]))
    for curvature in ("ggn", "fisher"):
        with pytest.raises(ValueError, match="loss of the model's outputs"):
            top_eigenpairs(with_batch_loss, k=1, curvature=curvature)
    dict_data = {"x": batches[0][0], "labels": batches[0][1]}

    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x, labels):
            return self.inner(x)

    with_dicts = Objective(DictModel(), dict_data, lambda out, b: loss_fn(out, b["labels"]))
    with pytest.raises(ValueError, match="dict batches"):
        trace(with_dicts, curvature="ggn")
    with pytest.raises(ValueError, match="curvature must be 'hessian', 'ggn' or 'fisher'"):
        top_eigenpairs(Objective(model, batches, loss_fn), k=1, curvature="gauss-newton")
    with pytest.raises(ValueError, match="already an operator"):
        top_eigenpairs(np.eye(3), k=1, curvature="ggn")


def test_a_landscape_along_ggn_and_fisher_eigenvectors():
    from landscaper import Landscape

    model, batches, loss_fn = classifier()
    objective = Objective(model, batches, loss_fn)
    for kind in ("ggn", "fisher"):
        land = Landscape.compute(objective=objective, directions=kind, steps=3, progress=False)
        expected = top_eigenpairs(objective, k=2, curvature=kind).eigenvalues
        assert land.direction_kind == kind
        np.testing.assert_allclose(land.eigenvalues, expected, rtol=1e-9)
        assert land.axis_label(1) == f"direction 1 (λ={expected[1]:.3g})"
