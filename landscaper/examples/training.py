"""Seeded minibatch training of the example models: classifiers and regressors, in place."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from .._utils import Stopwatch

logger = logging.getLogger(__name__)


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> nn.Module:
    """Train with SGD + momentum on cross-entropy (in place); returns the model in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    return fit_minibatches(model, opt, (x, y), nn.functional.cross_entropy, epochs=epochs,
                           batch_size=batch_size, seed=seed)


def fit_minibatches(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, ...],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
) -> nn.Module:
    """Train on ``(*inputs, targets)`` in shuffled minibatches (in place), seeded; returns the
    model in eval mode."""
    *inputs, targets = batch
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(targets), generator=gen)
        for start in range(0, len(targets), batch_size):
            idx = perm[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(*(t[idx] for t in inputs)), targets[idx])
            loss.backward()
            optimizer.step()
        logger.debug("epoch %d loss %.4f", epoch, loss.item())
    return model.eval()


def train_regressor(
    model: nn.Module,
    batch: tuple[torch.Tensor, ...],
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, float]]:
    """Train a regressor on ``(*inputs, y)`` with Adam on the mean squared error (in place).

    Weight decay is decoupled (AdamW). Returns the model in eval mode and
    ``{"loss": final full-batch MSE, "seconds": training time}``.
    """
    *inputs, y = batch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    watch = Stopwatch()
    fit_minibatches(model, opt, batch, nn.functional.mse_loss, epochs=epochs,
                    batch_size=batch_size, seed=seed)
    with torch.no_grad():
        final = float(nn.functional.mse_loss(model(*inputs), y))
    return model, {"loss": final, "seconds": watch.seconds}


def regression_errors(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Root-mean-square and mean absolute error of ``model`` on ``(*inputs, y)``."""
    *inputs, y = batch
    with torch.no_grad():
        residual = (model(*inputs) - y).double()
    return {"rmse": float(residual.pow(2).mean().sqrt()), "mae": float(residual.abs().mean())}
