"""The curvature algorithms on any symmetric operator: dense matrices, SciPy operators, objects
with a product, and the Hessian operator itself. References: NumPy's eigh and exact traces."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import nn

from landscaper import HessianOperator, Objective, spectral_density, top_eigenpairs, trace
from landscaper.hessian import as_operator
from landscaper.operators import DenseOperator, WrappedOperator


def symmetric(n: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    values = np.concatenate([[9.0, 7.0, 5.5, 4.0], rng.uniform(-1.0, 1.0, n - 4)])
    return (q * values) @ q.T


class TorchProduct:
    """A user's operator: a shape and a torch matvec, nothing else."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.m = torch.as_tensor(matrix)
        self.shape = self.m.shape

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.m @ v


def sources(matrix: np.ndarray):
    return {"tensor": torch.as_tensor(matrix), "ndarray": matrix,
            "scipy": scipy.sparse.linalg.aslinearoperator(matrix),
            "object": TorchProduct(matrix), "dense": DenseOperator(matrix)}


@pytest.mark.parametrize("kind", ["tensor", "ndarray", "scipy", "object", "dense"])
def test_top_eigenpairs_of_any_operator_equal_eigh(kind):
    matrix = symmetric()
    expected = np.linalg.eigvalsh(matrix)[::-1][:3]
    result = top_eigenpairs(sources(matrix)[kind], k=3)
    np.testing.assert_allclose(result.eigenvalues, expected, rtol=1e-9)
    assert result.converged and result.layout is None
    residual = matrix @ result.eigenvectors.T.numpy() - result.eigenvectors.T.numpy() * expected
    assert np.abs(residual).max() < 1e-6


@pytest.mark.parametrize("kind", ["tensor", "scipy", "object"])
def test_trace_of_a_diagonal_operator_is_exact(kind):
    """Rademacher probes: zᵀ D z equals tr(D) for every probe of a diagonal D."""
    diagonal = np.diag(np.linspace(-2.0, 5.0, 25))
    result = trace(sources(diagonal)[kind], n_probes=4)
    assert result.estimate == pytest.approx(np.trace(diagonal), rel=1e-12)
    assert result.std_error == pytest.approx(0.0, abs=1e-12) and result.n_hvp == 4


def test_spectral_density_nodes_are_the_eigenvalues_of_a_small_spectrum():
    values = np.repeat([1.0, 2.0, 4.0], 10)
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((30, 30)))
    density = spectral_density((q * values) @ q.T, n_probes=3, n_steps=10)
    carried = density.nodes[density.weights > 1e-10]
    assert np.allclose(np.sort(np.unique(np.round(carried, 8))), [1.0, 2.0, 4.0])
    np.testing.assert_allclose(density.weights.sum(axis=1), 1.0, rtol=1e-10)


def test_hessian_operator_given_directly_equals_the_objective():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    data = (torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 3, (20,)))
    objective = Objective(model, data, F.cross_entropy)
    from_objective = top_eigenpairs(objective, k=2)
    op = HessianOperator(objective)
    direct = top_eigenpairs(op, k=2)
    np.testing.assert_allclose(direct.eigenvalues, from_objective.eigenvalues, rtol=1e-12)
    assert direct.layout is objective.layout and op.n_hvp == direct.n_hvp
    np.testing.assert_allclose(from_objective.eigenvalues,
                               np.linalg.eigvalsh(op.to_dense().numpy())[::-1][:2], rtol=1e-8)


def test_bad_operators_are_refused_before_any_product():
    matrix = symmetric(8)
    with pytest.raises(ValueError, match="not symmetric"):
        top_eigenpairs(matrix + np.triu(np.ones((8, 8)), 1), k=1)
    with pytest.raises(ValueError, match="square"):
        top_eigenpairs(np.ones((3, 4)), k=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        trace(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="theta= picks the point"):
        top_eigenpairs(matrix, k=1, theta=torch.zeros(8))
    with pytest.raises(TypeError, match="shape and a matvec"):
        top_eigenpairs(object(), k=1)
    with pytest.raises(ValueError, match="too coarse"):
        top_eigenpairs(torch.eye(4, dtype=torch.float16), k=1)
    with pytest.raises(ValueError, match="length 5"):
        WrappedOperator(TorchProduct(matrix)).matvec(torch.zeros(5))
    assert as_operator(DenseOperator(matrix)).n_hvp == 0
