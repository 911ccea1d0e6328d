"""Stochastic traces: Hutchinson and Hutch++ against exact traces of dense matrices and of a
dense float64 Hessian, with their variance at equal matrix-vector products."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscaper import Objective, trace


def decaying(n: int = 200, seed: int = 0) -> torch.Tensor:
    """A symmetric matrix whose spectrum falls off like 1/i² (as trained networks' Hessians
    do: a few large eigenvalues, a long tail), with a rotation so its diagonal is not."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    values = 10.0 / torch.arange(1, n + 1, dtype=torch.float64) ** 2
    values[-5:] = -values[-5:]  # indefinite, as Hessians away from a minimum are
    return (q * values) @ q.T


def test_hutch_plus_plus_is_exact_when_its_sketch_spans_the_space():
    a = decaying(8)
    result = trace(a, n_probes=24, method="hutch++")
    assert result.estimate == pytest.approx(float(torch.trace(a)), rel=1e-10)
    assert result.n_hvp == 24 and result.method == "hutch++"


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_estimates_are_unbiased_and_count_their_products(method):
    a = decaying()
    exact = float(torch.trace(a))
    runs = [trace(a, n_probes=30, seed=s, method=method) for s in range(40)]
    estimates = np.array([r.estimate for r in runs])
    assert all(r.n_hvp == 30 and len(r.samples) == (30 if method == "hutchinson" else 10)
               for r in runs)
    assert abs(estimates.mean() - exact) < 4 * estimates.std(ddof=1) / np.sqrt(len(runs))
    # the reported standard error describes the spread over seeds (within a factor of 2.5)
    stderr = np.median([r.std_error for r in runs])
    assert 0.4 < stderr / estimates.std(ddof=1) < 2.5


def test_hutch_plus_plus_has_far_lower_variance_at_equal_products():
    a = decaying()
    spread = {m: np.std([trace(a, n_probes=30, seed=s, method=m).estimate for s in range(40)])
              for m in ("hutchinson", "hutch++")}
    assert spread["hutch++"] < spread["hutchinson"] / 5


def test_hutch_plus_plus_matches_the_dense_hessian_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    obj = Objective(model, (x, y), F.cross_entropy)
    hess = torch.autograd.functional.hessian(obj, obj.theta0.clone())
    exact = float(torch.trace(hess))
    result = trace(obj, n_probes=60, method="hutch++", seed=1)
    assert result.n_hvp == 60
    assert abs(result.estimate - exact) < 4 * result.std_error + 1e-9
    plain = trace(obj, n_probes=60, seed=1)
    assert abs(plain.estimate - exact) < 4 * plain.std_error + 1e-9


def test_bad_trace_settings_are_refused_before_any_product():
    a = decaying(10)
    with pytest.raises(ValueError, match="method must be 'hutchinson' or 'hutch\\+\\+'"):
        trace(a, method="hutchpp")
    with pytest.raises(ValueError, match="n_probes must be at least 4 for Hutch.*'hutchinson'"):
        trace(a, n_probes=3, method="hutch++")
    assert trace(a, n_probes=3).n_hvp == 3  # Hutchinson needs only two


def test_the_analysis_refuses_too_few_hutch_plus_plus_probes_at_configuration():
    from landscaper.pipeline import AnalysisConfig

    with pytest.raises(ValueError, match="trace_probes must be at least 4.*trace_method="):
        AnalysisConfig(trace_probes=3)
    with pytest.raises(ValueError, match="trace_method must be"):
        AnalysisConfig(trace_method="exact")
    assert AnalysisConfig(trace_probes=3, trace_method="hutchinson").trace_probes == 3


def test_hutch_plus_plus_refuses_a_sketch_over_the_memory_budget():
    class Small:  # a user's operator that declares a small budget
        shape = (4096, 4096)
        memory_budget = 64 * 1024
        calls = 0

        def matvec(self, v):
            Small.calls += 1
            return v

    with pytest.raises(ValueError, match="over the operator's memory budget.*method='hutchinson'"):
        trace(Small(), n_probes=30, method="hutch++")
    assert Small.calls == 0
    assert trace(Small(), n_probes=30).estimate == pytest.approx(4096)  # blocks of probes
