"""Hessian operator, Lanczos, trace and density against dense float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, snapshot
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscaper import HessianOperator, Objective, spectral_density, top_eigenpairs, trace


def dense_hessian(reference, theta):
    return torch.autograd.functional.hessian(reference, theta.detach())


@pytest.fixture(params=["mlp", "cnn"])
def case(request, mlp_case, cnn_case):
    model, x, y, reference = mlp_case if request.param == "mlp" else cnn_case
    # two uneven batches: the operator must accumulate them with the right weights
    obj = Objective(model, [(x[:9], y[:9]), (x[9:], y[9:])], F.cross_entropy)
    return model, obj, dense_hessian(reference, obj.theta0)


def assert_products_match(op, dense: torch.Tensor, count: int, rtol: float) -> None:
    """``count`` products with random float64 vectors equal the dense matrix's to ``rtol``
    and leave their vectors alone."""
    gen = torch.Generator().manual_seed(count)
    for _ in range(count):
        v = torch.randn(dense.shape[0], generator=gen, dtype=torch.float64)
        kept = v.clone()
        expected = dense @ v
        assert torch.linalg.norm(op @ v - expected) <= rtol * torch.linalg.norm(expected)
        assert torch.equal(v, kept)


def test_hvp_equals_dense_hessian(case):
    model, obj, dense = case
    before = snapshot(model)
    op = HessianOperator(obj)
    assert_products_match(op, dense, count=3, rtol=1e-8)
    assert op.n_hvp == 3
    assert torch.allclose(op.to_dense(), dense, rtol=1e-8, atol=1e-12)
    scipy_op = op.to_scipy()
    v = np.random.default_rng(0).standard_normal(obj.num_params)
    assert np.allclose(scipy_op @ v, dense.numpy() @ v, rtol=1e-8, atol=1e-12)
    assert_unchanged(model, before)


@pytest.mark.parametrize("method", ["lanczos", "arpack"])
def test_top5_eigenpairs_match_eigh(case, method):
    _, obj, dense = case
    evals, evecs = torch.linalg.eigh(dense)
    result = top_eigenpairs(obj, k=5, which="LA", method=method)
    expected = evals.flip(0)[:5].numpy()
    assert result.eigenvalues.dtype == np.float64
    assert np.all(np.diff(result.eigenvalues) <= 0)
    assert np.allclose(result.eigenvalues, expected, rtol=1e-6, atol=0)
    cos = torch.abs((result.eigenvectors @ evecs.flip(1)[:, :5]).diagonal())
    assert torch.all(cos > 0.9999), cos
    gram = result.eigenvectors @ result.eigenvectors.T
    assert torch.allclose(gram, torch.eye(5, dtype=gram.dtype), atol=1e-8)
    assert result.converged and result.n_hvp > 0


def test_largest_magnitude_mode(case):
    _, obj, dense = case
    evals = torch.linalg.eigvalsh(dense).numpy()
    expected = evals[np.argsort(-np.abs(evals))][:3]
    result = top_eigenpairs(obj, k=3, which="LM")
    assert np.allclose(result.eigenvalues, expected, rtol=1e-6)


def test_lanczos_uses_few_hvps_and_views(mlp_case):
    model, x, y, reference = mlp_case
    obj = Objective(model, (x, y), F.cross_entropy)
    result = top_eigenpairs(obj, k=2)
    assert result.n_hvp < obj.num_params  # far fewer products than a dense Hessian
    views = result.views(0)
    assert list(views) == list(obj.param_names)
    assert views["0.weight"].shape == (5, 6)


def test_trace_within_five_percent(case):
    _, obj, dense = case
    exact = float(torch.trace(dense))
    est = trace(obj, n_probes=400, seed=1)
    assert abs(est.estimate - exact) <= 0.05 * abs(exact)
    assert abs(est.estimate - exact) <= 5 * est.std_error
    assert est.n_hvp == 400


def test_spectral_density_quadrature_is_exact_for_moments(case):
    _, obj, dense = case
    p = obj.num_params
    evals = torch.linalg.eigvalsh(dense).numpy()
    sld = spectral_density(obj, n_probes=3, n_steps=p, seed=5)
    assert np.allclose(sld.weights.sum(axis=1), 1.0)
    # Gauss quadrature with m steps integrates polynomials of degree <= 2m-1 exactly:
    # sum_j w_j theta_j^2 = q^T H^2 q / q^T q for the unit start vector q of each probe.
    from landscaper.hessian import _start_vector

    for i in range(3):
        q = _start_vector(p, 5 + i, torch.float64, torch.device("cpu"))
        expected = float(q @ dense @ dense @ q)
        got = float((sld.weights[i] * sld.nodes[i] ** 2).sum())
        assert np.isclose(got, expected, rtol=1e-8)
    assert np.isclose(sld.nodes.max(), evals.max(), rtol=1e-6)
    grid = np.linspace(evals.min() - 1, evals.max() + 1, 4001)
    dens = sld.density(grid)
    assert np.isclose(np.trapezoid(dens, grid), 1.0, atol=1e-3)


def test_parameter_subset_hessian_is_dense_sub_block(mlp_case):
    model, x, y, reference = mlp_case
    obj = Objective(model, (x, y), F.cross_entropy, params=["2.weight", "2.bias"])
    full = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    dense = dense_hessian(reference, full)[35:, 35:]
    assert torch.allclose(HessianOperator(obj).to_dense(), dense, rtol=1e-8, atol=1e-12)


def test_model_restored_after_exception_during_hvp(mlp_case):
    model, x, y, _ = mlp_case
    before = snapshot(model)
    calls = {"n": 0}

    def loss(out, target):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyError("fails inside the user's loss")
        return F.cross_entropy(out, target)

    obj = Objective(model, [(x[:20], y[:20]), (x[20:], y[20:])], loss)
    with pytest.raises(KeyError):
        top_eigenpairs(obj, k=2)
    assert_unchanged(model, before)


class SDPAModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        q = self.proj(x).view(x.shape[0], 2, 2, 2)
        return F.scaled_dot_product_attention(q, q, q).flatten(1)


def test_fused_attention_gets_second_derivatives_from_the_math_kernel():
    """F.scaled_dot_product_attention's fused CPU kernel has no double backward; HVPs run the
    math kernel, so Lanczos works and equals a dense float64 Hessian taken with it."""
    torch.manual_seed(0)
    model = SDPAModel().double().eval()
    data = (torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64))
    obj = Objective(model, data, F.mse_loss)
    eig = top_eigenpairs(obj, k=2).eigenvalues
    with sdpa_kernel([SDPBackend.MATH]):
        dense = torch.autograd.functional.hessian(lambda t: Objective.__call__(obj, t),
                                                  obj.theta0)
    np.testing.assert_allclose(eig, np.linalg.eigvalsh(dense.numpy())[::-1][:2], rtol=1e-9)
    th = obj.theta0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(obj(th), th, create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for"):  # the kernel the fix avoids
        torch.autograd.grad(grad, th, torch.ones_like(th))


def test_linear_loss_has_zero_hessian():
    model = nn.Linear(3, 1, bias=False)
    obj = Objective(model, (torch.randn(4, 3), torch.zeros(4, 1)), lambda out, _: out.mean())
    assert torch.count_nonzero(HessianOperator(obj).to_dense()) == 0


@pytest.mark.parametrize("budget,forwards_per_batch", [("1GiB", 1), (2000, 5)])
def test_products_reuse_the_gradient_graph_only_within_the_memory_budget(
        mlp_case, budget, forwards_per_batch):
    """Five products cost one forward per batch when the gradient graphs fit a quarter of the
    budget (each product is then one backward through the kept gradient), and one forward
    per batch and product when they do not; the products are the dense Hessian's either way."""
    model, x, y, reference = mlp_case
    before = snapshot(model)
    obj = Objective(model, [(x[:9], y[:9]), (x[9:], y[9:])], F.cross_entropy,
                    memory_budget=budget)
    dense = dense_hessian(reference, obj.theta0)
    obj.record_frozen()  # the one-off recording of what θ does not change
    forwards = []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        op = HessianOperator(obj)
        assert_products_match(op, dense, count=5, rtol=1e-10)
    finally:
        handle.remove()
    assert len(forwards) == 2 * forwards_per_batch
    assert op._keep_graphs is (forwards_per_batch == 1)
    assert_unchanged(model, before)


def test_matmat_is_one_batched_backward_per_batch_and_equals_the_dense_hessian(case):
    model, obj, dense = case
    obj.record_frozen()
    forwards = []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        op = HessianOperator(obj)
        block = torch.randn(obj.num_params, 7, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
        product = op.matmat(block)
    finally:
        handle.remove()
    torch.testing.assert_close(product, dense @ block, rtol=1e-10, atol=1e-12)
    assert op.n_hvp == 7 and len(forwards) == 2  # one forward per batch for all columns
    assert op._batched_ok


def test_matmat_falls_back_to_columns_when_the_backward_cannot_be_batched(mlp_case,
                                                                          monkeypatch):
    model, x, y, reference = mlp_case
    obj = Objective(model, (x, y), F.cross_entropy)
    dense = dense_hessian(reference, obj.theta0)
    grad = torch.autograd.grad

    def unbatchable(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented for aten::made_up")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", unbatchable)
    op = HessianOperator(obj)
    block = torch.randn(obj.num_params, 3, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(block), dense @ block, rtol=1e-10, atol=1e-12)
    assert op.n_hvp == 3 and not op._batched_ok


def test_lanczos_steps_run_numpy_blas_on_one_thread(mlp_case, monkeypatch):
    """OpenBLAS threads left spinning by each step's eigh would take the cores from the next
    product (5x slower on 2 cores); inside top_eigenpairs they are limited to one."""
    from threadpoolctl import threadpool_info

    from landscaper import hessian

    model, x, y, _ = mlp_case
    seen = []
    ritz = hessian._Lanczos.ritz

    def watched(self):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return ritz(self)

    monkeypatch.setattr(hessian._Lanczos, "ritz", watched)
    top_eigenpairs(Objective(model, (x, y), F.cross_entropy), k=3)
    assert seen and all(threads == {1} for threads in seen if threads)


def test_gradient_graph_of_a_loss_running_torch_func_is_measured_and_kept(mlp_case):
    """torch.func transforms refuse saved-tensor hooks (a PINN's input gradients): the graph's
    size is then estimated from the submodule outputs, and products still equal a dense
    Hessian of the same loss."""
    model, x, _, _ = mlp_case

    def slope_loss(call_model, batch):
        out, pullback = torch.func.vjp(lambda inputs: call_model(inputs).sum(1), batch[0])
        return pullback(torch.ones_like(out))[0].square().mean() + out.square().mean()

    obj = Objective(model, (x, torch.zeros(len(x))), batch_loss=slope_loss)
    op = HessianOperator(obj)
    dense = torch.autograd.functional.hessian(lambda t: Objective.__call__(obj, t), obj.theta0)
    v = torch.randn(obj.num_params, generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    for _ in range(2):
        torch.testing.assert_close(op @ v, dense @ v, rtol=1e-10, atol=1e-12)
    assert op._keep_graphs and op._saved_bytes > 0
