"""The class-outer cross-entropy against PyTorch's own, and every case it must leave alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from landscaper import Landscape, Objective
from landscaper.losses import MAX_CLASSES, class_outer_cross_entropy, fast_loss


def _logits(n: int, c: int, dtype: torch.dtype, scale: float = 3.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, c, generator=gen, dtype=dtype)
    targets = torch.randint(0, c, (n,), generator=gen)
    return logits, targets


@pytest.mark.parametrize("n_classes", [2, 3, 7, 10, MAX_CLASSES])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
def test_equals_torch_cross_entropy_under_vmap(n_classes, dtype, rtol):
    logits, targets = _logits(257, n_classes, dtype)
    batched = logits + torch.linspace(-2, 2, 9, dtype=dtype)[:, None, None] * logits.flip(0)
    with torch.no_grad():
        ours = vmap(lambda z: class_outer_cross_entropy(z, targets))(batched)
        theirs = vmap(lambda z: F.cross_entropy(z, targets))(batched)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=0)


def test_large_infinite_and_nan_logits_give_torch_values():
    logits, targets = _logits(64, 10, torch.float64, scale=1e4)
    with torch.no_grad():
        torch.testing.assert_close(class_outer_cross_entropy(logits, targets),
                                   F.cross_entropy(logits, targets), rtol=1e-13, atol=0)
        other = (targets + 1) % 10
        minus_inf = logits.clone()
        minus_inf[torch.arange(64), other] = -math.inf  # a class that can never be chosen
        torch.testing.assert_close(class_outer_cross_entropy(minus_inf, targets),
                                   F.cross_entropy(minus_inf, targets), rtol=1e-13, atol=0)
        minus_inf[0, targets[0]] = -math.inf  # the right class impossible: infinite loss
        assert class_outer_cross_entropy(minus_inf, targets).item() == math.inf
        assert F.cross_entropy(minus_inf, targets).item() == math.inf
        nan = logits.clone()
        nan[3, 4] = math.nan
        assert math.isnan(class_outer_cross_entropy(nan, targets).item())
        assert math.isnan(F.cross_entropy(nan, targets).item())


@pytest.mark.parametrize("case", [
    "grad", "16 classes", "one class", "float16", "three axes", "probabilities",
    "ignored -100", "out of range", "int32 targets", "targets per point"])
def test_leaves_every_other_case_to_the_callers_loss(case):
    logits, targets = _logits(32, 10, torch.float32)
    if case == "16 classes":
        logits, targets = _logits(32, MAX_CLASSES + 1, torch.float32)
    elif case == "one class":
        logits, targets = logits[:, :1], torch.zeros_like(targets)
    elif case == "float16":
        logits = logits.half()
    elif case == "three axes":
        logits, targets = logits[:, :, None].expand(32, 10, 4), targets[:, None].expand(32, 4)
    elif case == "probabilities":
        targets = logits.softmax(1)
    elif case == "ignored -100":
        targets = targets.clone()
        targets[5] = -100
    elif case == "out of range":
        targets = targets.clone()
        targets[5] = 10
    elif case == "int32 targets":
        targets = targets.int()
    if case == "grad":
        assert class_outer_cross_entropy(logits.requires_grad_(), targets) is None
    elif case == "targets per point":
        seen = []

        def record(z, t):
            seen.append(class_outer_cross_entropy(z, t))
            return z.sum()

        with torch.no_grad():
            vmap(record, in_dims=(None, 0))(logits, targets.expand(3, -1))
        assert seen == [None]
    else:
        with torch.no_grad():
            assert class_outer_cross_entropy(logits, targets) is None


def test_recognises_only_default_cross_entropy():
    assert fast_loss(F.cross_entropy) is class_outer_cross_entropy
    assert fast_loss(nn.CrossEntropyLoss()) is not None
    for other in (nn.CrossEntropyLoss(weight=torch.ones(10)),
                  nn.CrossEntropyLoss(label_smoothing=0.1),
                  nn.CrossEntropyLoss(reduction="sum"),
                  type("Mine", (nn.CrossEntropyLoss,), {})(),
                  lambda out, y: F.cross_entropy(out, y),
                  F.nll_loss, nn.MSELoss(), None):
        assert fast_loss(other) is None, other
    hooked = nn.CrossEntropyLoss()
    hooked.register_forward_hook(lambda *_: None)
    assert fast_loss(hooked) is None


def test_module_ignore_index_inside_the_classes_goes_to_the_module():
    loss = nn.CrossEntropyLoss(ignore_index=3)
    fast = fast_loss(loss)
    logits, targets = _logits(40, 10, torch.float64)
    targets[targets == 3] = 4
    with torch.no_grad():
        torch.testing.assert_close(fast(logits, targets), loss(logits, targets),
                                   rtol=1e-13, atol=0)
        targets[0] = 3
        assert fast(logits, targets) is None


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_objective_grid_with_the_fast_form_equals_the_users_loss(dtype, rtol):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 10)).to(dtype).eval()
    x, y = torch.randn(300, 6, dtype=dtype), torch.randint(0, 10, (300,))
    fast = Objective(model, (x, y), F.cross_entropy)
    plain = Objective(model, (x, y), lambda out, t: F.cross_entropy(out, t))
    assert fast._fast_loss is not None and plain._fast_loss is None
    with torch.no_grad():
        assert class_outer_cross_entropy(model(x), y) is not None  # the fast form is taken
    dirs = torch.randn(2, fast.num_params, dtype=dtype)
    grids = [Landscape.compute(objective=o, directions=dirs, steps=7, extent=0.5,
                               progress=False).loss for o in (fast, plain)]
    np.testing.assert_allclose(grids[0], grids[1], rtol=rtol, atol=0)
    # gradients still come from the user's loss
    torch.testing.assert_close(fast.gradient(), plain.gradient(), rtol=1e-12, atol=0)
