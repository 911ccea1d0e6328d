"""The CUDA path against the CPU path on the same float64 model, data and directions. Skipped
on machines without CUDA (CI never has one); `benchmarks/gpu_check.py` runs the same checks
and the device timings on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_frozen import CASES

from landscaper import HessianOperator, Landscape, Objective, top_eigenpairs
from landscaper.examples.pinn import ConvectionProblem, convection_loss, make_mlp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
CUDA = torch.device("cuda")


def moved(data, device):
    if isinstance(data, dict):
        return {k: v.to(device) for k, v in data.items()}
    if isinstance(data, list):
        return [moved(b, device) for b in data]
    return tuple(t.to(device) for t in data)


def numbers(name: str, device: torch.device, directions: torch.Tensor | None):
    model, data, loss_fn, params = CASES[name]()
    objective = Objective(model.to(device), moved(data, device), loss_fn, params)
    if directions is None:
        gen = torch.Generator().manual_seed(0)
        directions = 0.1 * torch.randn(2, objective.num_params, generator=gen,
                                       dtype=torch.float64)
    v = torch.linspace(-1, 1, objective.num_params, dtype=torch.float64, device=device)
    land = Landscape.compute(objective=objective, directions=directions.to(device), steps=7,
                             extent=0.3, progress=False)
    values = {"loss": objective().detach(), "gradient": objective.gradient(),
              "hvp": HessianOperator(objective) @ v,
              "top2": torch.as_tensor(top_eigenpairs(objective, k=2).eigenvalues),
              "grid": torch.as_tensor(land.loss)}
    return {k: t.double().cpu().numpy() for k, t in values.items()}, directions


@pytest.mark.parametrize("name", CASES)
def test_cuda_equals_cpu(name):
    reference, directions = numbers(name, torch.device("cpu"), None)
    ours, _ = numbers(name, CUDA, directions)
    for key, expected in reference.items():
        np.testing.assert_allclose(ours[key], expected, rtol=1e-9, atol=1e-12, err_msg=key)


def test_pinn_on_cuda_equals_cpu():
    problem = ConvectionProblem(beta=20.0, n_collocation=200, n_initial=50, n_boundary=50)
    results = []
    for device in (torch.device("cpu"), CUDA):
        model = make_mlp(width=20, depth=2, dtype=torch.float64).to(device)
        objective = Objective(model, problem.batch(torch.float64, device),
                              batch_loss=convection_loss(problem.beta))
        v = torch.linspace(-1, 1, objective.num_params, dtype=torch.float64, device=device)
        results.append((objective().item(), (HessianOperator(objective) @ v).cpu()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-10)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-9, atol=1e-12)


def test_grid_on_cuda_with_large_chunks():
    model, data, loss_fn, params = CASES["mlp"]()
    objective = Objective(model.to(CUDA), moved(data, CUDA), loss_fn, params,
                          memory_budget="4GiB")
    assert objective.device.type == "cuda"
    land = Landscape.compute(objective=objective, directions="random", steps=41,
                             progress=False)
    cpu = Objective(*CASES["mlp"]()[:3], params)
    vectors = torch.as_tensor(land.spec.directions.vectors)
    points = cpu.theta0 + torch.as_tensor(land.spec.coefficients(0, 41 * 41)) @ vectors
    np.testing.assert_allclose(land.loss.ravel(), cpu.batch(points), rtol=1e-10)
