"""Shared fixtures: tiny float64 models with hand-written reference losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Bit-exact copy of every parameter and buffer (and whether .grad is set)."""
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    state.update({f"{n}.grad": p.grad for n, p in model.named_parameters()})
    return state


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(model)
    assert before.keys() == after.keys()
    for key, value in before.items():
        if key.endswith(".grad"):
            assert after[key] is None and value is None, f"{key} was touched"
        else:
            assert torch.equal(value, after[key]), f"{key} changed"
            assert value.dtype == after[key].dtype


@pytest.fixture
def mlp_case():
    """A 6-5-3 MLP in float64 with its data and a hand-written loss of flat θ."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()
    x = torch.randn(40, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))

    def reference(theta: torch.Tensor) -> torch.Tensor:
        w1 = theta[:30].view(5, 6)
        b1 = theta[30:35]
        w2 = theta[35:50].view(3, 5)
        b2 = theta[50:53]
        return F.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)

    return model, x, y, reference


@pytest.fixture
def cnn_case():
    """A tiny CNN in float64 on 1×6×6 images with a hand-written loss of flat θ."""
    torch.manual_seed(1)
    model = (
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softplus(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        .double()
        .eval()
    )
    x = torch.randn(24, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (24,))

    def reference(theta: torch.Tensor) -> torch.Tensor:
        w1 = theta[:18].view(2, 1, 3, 3)
        b1 = theta[18:20]
        w2 = theta[20:116].view(3, 32)
        b2 = theta[116:119]
        h = F.softplus(F.conv2d(x, w1, b1)).flatten(1)
        return F.cross_entropy(h @ w2.T + b2, y)

    return model, x, y, reference
