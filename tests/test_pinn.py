"""The convection PINN loss against closed forms, finite differences and a dense Hessian."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from conftest import assert_unchanged, snapshot
from torch import nn

from landscaper import HessianOperator, Objective, top_eigenpairs
from landscaper.integrations.pinn import (
    ConvectionProblem,
    convection_loss,
    make_mlp,
    relative_l2_error,
    train_pinn,
)

BETA = 3.0


class ScaledWave(nn.Module):
    """u = a·sin(x − b·t) + c·x with θ = (a, b, c): the exact solution at (1, β, 0)."""

    def __init__(self, a: float, b: float, c: float) -> None:
        super().__init__()
        self.abc = nn.Parameter(torch.tensor([a, b, c], dtype=torch.float64))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        a, b, c = self.abc
        x, t = inputs[:, 0], inputs[:, 1]
        return a * torch.sin(x - b * t) + c * x


def closed_form_terms(problem: ConvectionProblem, a: float, b: float, c: float, beta: float):
    """Residual, initial and boundary terms of ScaledWave by hand, in NumPy float64."""
    residual = a * (beta - b) * np.cos(problem.x_f - b * problem.t_f) + beta * c
    initial = (a - 1.0) * np.sin(problem.x_0) + c * problem.x_0
    tb = problem.t_b
    boundary = a * np.sin(-b * tb) - a * np.sin(2 * np.pi - b * tb) - 2 * np.pi * c
    return np.mean(residual**2), np.mean(initial**2), np.mean(boundary**2)


@pytest.fixture(scope="module")
def small_problem():
    return ConvectionProblem(BETA, n_collocation=64, n_initial=16, n_boundary=16, seed=1)


@pytest.fixture
def small_mlp():
    return make_mlp(width=8, depth=2, seed=2, dtype=torch.float64).eval()


def reference_loss(problem: ConvectionProblem, beta: float):
    """The PINN loss of the width-8 depth-2 MLP from flat θ, written without landscaper."""
    as_t = {k: torch.tensor(getattr(problem, k), dtype=torch.float64)[:, None]
            for k in ("x_f", "t_f", "x_0", "t_b")}

    def net(theta: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w1, b1 = theta[:16].view(8, 2), theta[16:24]
        w2, b2 = theta[24:88].view(8, 8), theta[88:96]
        w3, b3 = theta[96:104].view(1, 8), theta[104:105]
        h = torch.tanh(x * w1[:, 0] + t * w1[:, 1] + b1)
        h = torch.tanh(h @ w2.T + b2)
        return h @ w3.T + b3

    def loss(theta: torch.Tensor) -> torch.Tensor:
        x = as_t["x_f"].clone().requires_grad_(True)
        t = as_t["t_f"].clone().requires_grad_(True)
        u = net(theta, x, t)
        u_x = torch.autograd.grad(u, x, torch.ones_like(u), create_graph=True)[0]
        u_t = torch.autograd.grad(u, t, torch.ones_like(u), create_graph=True)[0]
        pde = torch.mean((u_t + beta * u_x) ** 2)
        x0 = as_t["x_0"]
        ic = torch.mean((net(theta, x0, torch.zeros_like(x0)) - torch.sin(x0)) ** 2)
        tb = as_t["t_b"]
        bc = torch.mean((net(theta, torch.zeros_like(tb), tb)
                         - net(theta, torch.full_like(tb, 2 * math.pi), tb)) ** 2)
        return pde + ic + bc

    return loss


# ---------------------------------------------------------------------------- the problem
def test_problem_points_and_batch():
    p = ConvectionProblem(2.0, n_collocation=50, n_initial=10, n_boundary=7, seed=3)
    assert np.all((p.x_f >= 0) & (p.x_f < 2 * np.pi)) and np.all((p.t_f >= 0) & (p.t_f <= 1))
    assert np.array_equal(p.x_f, ConvectionProblem(2.0, 50, 10, 7, seed=3).x_f)
    assert not np.array_equal(p.x_f, ConvectionProblem(2.0, 50, 10, 7, seed=4).x_f)
    batch = p.batch()
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "x_f": (50, 1), "t_f": (50, 1), "x_0": (10, 1), "u_0": (10, 1), "t_b": (7, 1)}
    assert all(v.dtype == torch.float32 and not v.requires_grad for v in batch.values())
    assert p.batch(dtype=torch.float64)["u_0"].dtype == torch.float64
    assert np.allclose(batch["u_0"].numpy()[:, 0], np.sin(p.x_0), atol=1e-7)
    assert np.allclose(p.exact(np.array([0.5]), np.array([0.25])), np.sin(0.5 - 2.0 * 0.25))
    with pytest.raises(ValueError):
        ConvectionProblem(1.0, n_collocation=0)


# ---------------------------------------------------------------------------- the definition
def test_exact_solution_has_zero_loss(small_problem):
    model = ScaledWave(1.0, BETA, 0.0)
    obj = Objective(model, small_problem.batch(torch.float64), batch_loss=convection_loss(BETA))
    assert abs(obj().item()) < 1e-10
    # the same solution travelling the wrong way (u_t − β u_x = 0) must not fit
    assert obj(torch.tensor([1.0, -BETA, 0.0], dtype=torch.float64)).item() > 1.0


@pytest.mark.parametrize("abc", [(1.0, BETA, 0.0), (0.7, -1.0, 0.0), (1.3, 2.0, 0.2)])
@pytest.mark.parametrize("weights", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
                                     (2.0, 0.5, 3.0)])
def test_each_term_matches_closed_form(small_problem, abc, weights):
    terms = closed_form_terms(small_problem, *abc, beta=BETA)
    expected = float(np.dot(weights, terms))
    obj = Objective(ScaledWave(*abc), small_problem.batch(torch.float64),
                    batch_loss=convection_loss(BETA, weights=weights))
    assert obj().item() == pytest.approx(expected, rel=1e-12, abs=1e-13)


# ---------------------------------------------------------------------------- curvature
def test_hvp_equals_central_differences(small_problem, small_mlp):
    obj = Objective(small_mlp, small_problem.batch(torch.float64),
                    batch_loss=convection_loss(BETA))
    op = HessianOperator(obj)
    gen = torch.Generator().manual_seed(0)
    eps = 1e-5
    for _ in range(2):
        v = torch.randn(obj.num_params, generator=gen, dtype=torch.float64)
        fd = (obj.gradient(obj.theta0 + eps * v) - obj.gradient(obj.theta0 - eps * v)) / (2 * eps)
        hv = op @ v
        assert torch.linalg.norm(hv - fd) < 1e-6 * torch.linalg.norm(fd)


def test_hessian_equals_independent_dense_reference(small_problem, small_mlp):
    obj = Objective(small_mlp, small_problem.batch(torch.float64),
                    batch_loss=convection_loss(BETA))
    reference = reference_loss(small_problem, BETA)
    theta0 = obj.theta0
    assert obj.num_params == 105
    assert obj().item() == pytest.approx(reference(theta0).item(), rel=1e-13)
    th = theta0.clone().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(reference(th), th)
    assert torch.allclose(obj.gradient(), ref_grad, rtol=1e-11, atol=1e-14)
    dense = torch.autograd.functional.hessian(reference, theta0)
    ours = HessianOperator(obj).to_dense()
    assert torch.max(torch.abs(ours - dense)) <= 1e-8 * torch.max(torch.abs(dense))
    assert torch.allclose(ours, ours.T, rtol=0, atol=1e-10 * torch.max(torch.abs(ours)).item())


# ---------------------------------------------------------------------------- side effects
def test_model_and_batch_untouched(small_problem, small_mlp):
    batch = small_problem.batch(torch.float64)
    copies = {k: v.clone() for k, v in batch.items()}
    before = snapshot(small_mlp)
    obj = Objective(small_mlp, batch, batch_loss=convection_loss(BETA))
    obj()
    obj.gradient(obj.theta0 + 0.01)
    HessianOperator(obj) @ torch.ones(obj.num_params, dtype=torch.float64)
    obj.batch(obj.theta0 + torch.zeros(3, obj.num_params, dtype=torch.float64))
    top_eigenpairs(obj, k=1, max_iter=10, tol=1e-3)
    assert_unchanged(small_mlp, before)
    for key, value in batch.items():
        assert torch.equal(value, copies[key]), key
        assert not value.requires_grad and value.grad is None and value.is_leaf, key


def test_no_grad_evaluation_is_detached_and_equal(small_problem, small_mlp):
    loss = convection_loss(BETA)
    batch = small_problem.batch(torch.float64)
    with_grad = loss(small_mlp, batch)
    with torch.no_grad():
        without = loss(small_mlp, batch)
    assert with_grad.requires_grad and not without.requires_grad
    assert without.item() == pytest.approx(with_grad.item(), rel=1e-14)


def test_batch_equals_one_at_a_time(small_problem, small_mlp, caplog):
    obj = Objective(small_mlp, small_problem.batch(torch.float64),
                    batch_loss=convection_loss(BETA))
    gen = torch.Generator().manual_seed(5)
    thetas = obj.theta0 + 0.3 * torch.randn(5, obj.num_params, generator=gen,
                                            dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="landscaper.objective"):
        batched = obj.batch(thetas, chunk_size=4)
    # forward-mode input derivatives batch under vmap: no sequential fallback
    assert obj.vectorizes and "vmap cannot batch" not in caplog.text
    one_by_one = torch.stack([obj(th).detach() for th in thetas])
    assert not batched.requires_grad
    assert torch.allclose(batched, one_by_one, rtol=1e-13, atol=0)
    assert torch.allclose(obj.batch(thetas, vectorize=False), one_by_one, rtol=1e-13, atol=0)
    assert torch.allclose(obj.batch(thetas), one_by_one, rtol=1e-13, atol=0)  # default chunk


def test_loss_inside_vmap_equals_one_at_a_time(small_problem, small_mlp):
    obj = Objective(small_mlp, small_problem.batch(torch.float64),
                    batch_loss=convection_loss(BETA))
    thetas = obj.theta0 + torch.linspace(-0.2, 0.2, 3, dtype=torch.float64)[:, None]
    reference = reference_loss(small_problem, BETA)
    with torch.no_grad():
        vmapped = torch.func.vmap(obj)(thetas)
    expected = torch.stack([reference(th) for th in thetas]).detach()
    assert torch.allclose(vmapped, expected, rtol=1e-12, atol=0)


def test_missing_batch_key(small_mlp):
    with pytest.raises(KeyError, match="x_f"):
        convection_loss(1.0)(small_mlp, {"t_f": torch.zeros(2, 1)})


# ---------------------------------------------------------------------------- training
def test_train_pinn_fits_beta_one():
    problem = ConvectionProblem(1.0, n_collocation=256, n_initial=64, n_boundary=64, seed=0)
    model = make_mlp(width=20, depth=3, seed=0)
    untrained = relative_l2_error(model, problem)
    rng_state = torch.random.get_rng_state()
    trained, info = train_pinn(model, problem, epochs=400, lr=5e-3, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert trained is model and not model.training
    assert all(p.grad is None for p in model.parameters())
    # measured: untrained ≈ 1.55, trained ≈ 0.09 (0.02–0.09 over seeds 0–3)
    assert untrained > 1.0
    assert info["relative_l2"] < 0.2
    assert info["relative_l2"] == pytest.approx(relative_l2_error(model, problem), rel=1e-12)
    assert 0 < info["loss"] < 0.02
    assert set(info) >= {"loss", "relative_l2", "epochs", "seconds", "optimizer", "beta"}


def test_train_pinn_lbfgs_and_bad_optimizer():
    problem = ConvectionProblem(1.0, n_collocation=128, n_initial=32, n_boundary=32, seed=0)
    model = make_mlp(width=20, depth=3, seed=1)
    _, info = train_pinn(model, problem, epochs=5, lr=1.0, optimizer="lbfgs")
    assert info["relative_l2"] < 0.2
    with pytest.raises(ValueError, match="optimizer"):
        train_pinn(model, problem, epochs=1, optimizer="sgd")  # type: ignore[arg-type]


def test_retraining_epoch_takes_its_steps_on_the_full_batch(small_problem, small_mlp):
    from landscaper.examples.pinn import retraining_epoch

    batch, loss = small_problem.batch(torch.float64), convection_loss(BETA)
    model = small_mlp.train()
    steps = []
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt.register_step_post_hook(lambda *_: steps.append(1))
    before = float(loss(model, batch))
    retraining_epoch(loss, batch, steps=7)(model, opt, 0)
    assert len(steps) == 7 and float(loss(model, batch)) < before
