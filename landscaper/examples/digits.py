"""The digits set that ships with scikit-learn, and two small models for it (MLP and CNN)."""

from __future__ import annotations

import torch
from torch import nn


def digits_data(
    dtype: torch.dtype = torch.float32, test_fraction: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """The 1,797 8×8 digit images as (X, y) scaled to [0, 1], optionally split into train/test.

    Returns ``(X, y)`` or, with ``test_fraction > 0``, ``(X_train, y_train, X_test, y_test)``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data needs scikit-learn: pip install scikit-learn"
                          ) from err
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=dtype)
    y = torch.tensor(digits.target, dtype=torch.long)
    if test_fraction <= 0:
        return x, y
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def digits_mlp(hidden: int = 64, seed: int = 0) -> nn.Sequential:
    """The 64-hidden-64-10 MLP used in the anchors (4,810 parameters with hidden=64)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def digits_cnn(channels: int = 8, seed: int = 0) -> nn.Sequential:
    """A small CNN for 8×8 digits (inputs of shape (N, 64) are reshaped inside)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * channels * 4, 10),
    )
