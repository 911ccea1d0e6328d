"""Small, offline example models and data (the digits set that ships with scikit-learn).

Used by the demo, the tests, the benchmarks and the notebooks; nothing here is needed by the
core library.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from types import ModuleType

import torch
from torch import nn

logger = logging.getLogger(__name__)


def digits_data(
    dtype: torch.dtype = torch.float32, test_fraction: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """The 1,797 8×8 digit images as (X, y) scaled to [0, 1], optionally split into train/test.

    Returns ``(X, y)`` or, with ``test_fraction > 0``, ``(X_train, y_train, X_test, y_test)``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data needs scikit-learn: pip install 'landscaper[demo]'"
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


def docstring_sentences(
    sources: Mapping[str, ModuleType | tuple[ModuleType, ...]],
    per_class: int,
    seed: int = 0,
    min_chars: int = 25,
    max_chars: int = 200,
) -> tuple[list[str], list[int]]:
    """A labelled text set from installed code: first docstring lines of public names.

    Every label's sentences are the distinct first lines (``min_chars``–``max_chars`` long)
    of the docstrings of the public attributes of its module(s); ``per_class`` of them are
    drawn per label with ``seed`` and the result is shuffled. Offline and real, it gives a
    text-classification task ("which library documents this?") for models without a head.

    Returns:
        ``(texts, labels)``, labels being indices into ``list(sources)``.
    """
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[int] = []
    for label, modules in enumerate(sources.values()):
        modules = modules if isinstance(modules, tuple) else (modules,)
        lines = set()
        for module in modules:
            for name in dir(module):
                if name.startswith("_"):
                    continue
                doc = getattr(getattr(module, name), "__doc__", None)
                if not isinstance(doc, str):
                    continue
                line = doc.strip().split("\n")[0].strip()
                if min_chars < len(line) < max_chars:
                    lines.add(line)
        if len(lines) < per_class:
            raise ValueError(f"label {label} has only {len(lines)} sentences; lower per_class")
        picked = rng.sample(sorted(lines), per_class)
        texts += picked
        labels += [label] * per_class
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]
