"""Finite-difference Hessian products against exact ones and dense float64 Hessians, on a model
whose custom operation has no second derivative."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscaper import Objective, top_eigenpairs, trace
from landscaper.finite_difference import FiniteDifferenceHessian
from landscaper.hessian import DoubleBackwardError, HessianOperator


class OnceTanh(torch.autograd.Function):
    """tanh with a hand-written backward that has no derivative of its own (a custom kernel's
    situation): first derivatives work, second derivatives are refused."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class Net(nn.Module):
    def __init__(self, custom: bool) -> None:
        super().__init__()
        self.a, self.b, self.custom = nn.Linear(4, 8), nn.Linear(8, 3), custom

    def forward(self, x):
        h = self.a(x)
        return self.b(OnceTanh.apply(h) if self.custom else torch.tanh(h))


def case(custom: bool, dtype=torch.float64):
    torch.manual_seed(0)
    model = Net(custom).to(dtype)
    x, y = torch.randn(60, 4, dtype=dtype), torch.randint(0, 3, (60,))
    return Objective(model, (x, y), F.cross_entropy)


def test_a_custom_kernel_gets_eigenvalues_from_differences():
    exact = case(custom=False)
    dense = torch.autograd.functional.hessian(exact, exact.theta0.clone())
    reference = np.linalg.eigvalsh(dense.numpy())[::-1][:3]
    custom = case(custom=True)
    with pytest.raises(DoubleBackwardError, match="FiniteDifferenceHessian"):
        top_eigenpairs(custom, k=3)
    op = FiniteDifferenceHessian(custom)
    result = top_eigenpairs(op, k=3, tol=1e-7)
    np.testing.assert_allclose(result.eigenvalues, reference, rtol=1e-8)
    assert op.relative_error < 1e-8 and op.n_gradients == 2 * op.n_hvp + 2
    estimate = trace(op, n_probes=40, method="hutch++")
    assert abs(estimate.estimate - float(torch.trace(dense))) < 4 * estimate.std_error + 1e-8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_error_estimate_tracks_the_true_error(dtype):
    obj = case(custom=False, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(obj.num_params, generator=gen, dtype=torch.float64).to(dtype)
    exact = HessianOperator(obj).matvec(v)
    op = FiniteDifferenceHessian(obj)
    error = float((op.matvec(v) - exact).norm() / exact.norm())
    assert error < (1e-3 if dtype == torch.float32 else 1e-8)
    assert 0.1 < op.relative_error / error < 10


def test_kinks_are_reported_not_hidden(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    obj = Objective(model, (torch.randn(200, 4), torch.randint(0, 3, (200,))), F.cross_entropy)
    op = FiniteDifferenceHessian(obj, step=0.5)
    with caplog.at_level(logging.WARNING, logger="landscaper.finite_difference"):
        op.matvec(torch.ones(obj.num_params))
    assert op.relative_error > 1e-2
    assert "estimated relative error" in caplog.text


def test_bad_steps_and_dtypes_are_refused():
    obj = case(custom=False)
    with pytest.raises(ValueError, match="step must be a positive number"):
        FiniteDifferenceHessian(obj, step=0.0)
    assert float(FiniteDifferenceHessian(obj).matvec(torch.zeros(obj.num_params)).abs().sum()) == 0


def test_a_compiled_module_gets_its_eigenvalues_without_uncompiling():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    data = (torch.randn(60, 4, dtype=torch.float64), torch.randint(0, 3, (60,)))
    reference = top_eigenpairs(Objective(model, data, F.cross_entropy), k=2).eigenvalues
    compiled = Objective(torch.compile(model, backend="aot_eager"), data, F.cross_entropy)
    with pytest.raises(DoubleBackwardError, match="torch.compile"):
        top_eigenpairs(compiled, k=2)
    result = top_eigenpairs(FiniteDifferenceHessian(compiled), k=2, tol=1e-7)
    np.testing.assert_allclose(result.eigenvalues, reference, rtol=1e-8)
