"""Samples of the loss landscape around a minimum: jump & retrain, grid and naive sampling.

Jump & retrain (Horoi et al., 2022): for every seed and step size, jump from θ₀ along a random
filter-normalised direction to θ₀ + step·v̄, then retrain a *copy* of the model with the
original optimiser for N epochs, recording the parameters and the train loss/accuracy after
every epoch. The grid and naive samplers are the paper's baselines with the same number of
points. All three return `Samples`; parameter vectors larger than the memory budget are
stored out of core in a memory-mapped file.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._utils import format_bytes, parse_bytes, progress_bar, seeded_cuda_devices
from .directions import random_directions
from .grid import grid_axes, grid_coordinates, subspace_points
from .objective import Objective, ParameterLayout

logger = logging.getLogger(__name__)

#: ``train_epoch(model, optimizer, epoch)`` runs one epoch of the user's training loop.
TrainEpoch = Callable[[nn.Module, torch.optim.Optimizer, int], Any]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

#: Horoi et al.'s jump & retrain settings: 4 seeds × 4 step sizes (with 40 epochs, 640 samples).
PAPER_SEEDS: tuple[int, ...] = (0, 1, 2, 3)
PAPER_STEP_SIZES: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
#: Above this many bytes of parameter vectors, the samplers store them in a memmap.
DEFAULT_MEMORY_BUDGET = "2GiB"


@dataclass(frozen=True)
class Samples:
    """Sampled parameter vectors with their loss, accuracy and labels (one row per sample).

    Attributes:
        params: (n, P) float32 array of the selected parameters, or a read-only memmap.
        loss: (n,) train loss at each sample.
        accuracy: (n,) train accuracy (NaN when no accuracy objective was given).
        seed: (n,) seed of the random direction.
        step_size: (n,) jump length (grid: distance from θ₀ in direction units).
        epoch: (n,) retraining epoch, 0 for the jump point (−1 for grid/naive samples).
        sampler: ``"jump_retrain"``, ``"grid"`` or ``"naive"``.
        info: JSON-friendly settings.
    """

    params: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    seed: np.ndarray
    step_size: np.ndarray
    epoch: np.ndarray
    sampler: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    def features(self) -> np.ndarray:
        """(n, 2) loss and accuracy per sample (the classifier features of Table 1)."""
        return np.stack([self.loss, self.accuracy], axis=1)


class _ParameterStore:
    """Rows of parameter vectors, in memory or in a memmap when over the budget."""

    def __init__(self, n: int, p: int, budget: int, path: str | os.PathLike[str] | None):
        size = n * p * 4
        if size > budget:
            if path is None:
                raise MemoryError(
                    f"{n} parameter vectors of {p} floats need {format_bytes(size)}, more than the "
                    f"memory budget {format_bytes(budget)}: pass memmap_path=... to store them "
                    "on disk, or select fewer parameters with params=[...]")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                                  shape=(n, p))
            logger.info("storing %d x %d parameters out of core in %s", n, p, path)
        else:
            self.rows = np.empty((n, p), dtype=np.float32)
        self.path = path if size > budget else None

    def finish(self) -> np.ndarray:
        if self.path is None:
            return self.rows
        self.rows.flush()
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


def _flat_selected(model: nn.Module, layout: ParameterLayout) -> torch.Tensor:
    """The model's current values of θ's parameters, as one flat vector."""
    return layout.flatten({name: p.detach() for name, p in model.named_parameters()})


def _set_selected(model: nn.Module, layout: ParameterLayout, theta: torch.Tensor) -> None:
    """Write θ into the model's parameters that form it, in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in layout.unflatten(theta).items():
            params[name].copy_(value)


def _evaluate(objective: Objective, accuracy: Objective | None, theta: torch.Tensor
              ) -> tuple[float, float]:
    with torch.no_grad():
        loss = float(objective(theta))
        acc = float(accuracy(theta)) if accuracy is not None else math.nan
    return loss, acc


def standard_epoch(loader: Iterable[Any], loss_fn: Callable[..., torch.Tensor]) -> TrainEpoch:
    """A plain training epoch over ``(inputs..., targets)`` batches, for `jump_and_retrain`
    (tensors are moved to the model's device, so CPU data train a model on a GPU)."""

    def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        device = next(model.parameters()).device
        for batch in loader:
            *inputs, targets = (t.to(device) if isinstance(t, torch.Tensor) else t
                                for t in batch)
            optimizer.zero_grad()
            loss_fn(model(*inputs), targets).backward()
            optimizer.step()

    return train_epoch


def batch_loss_epoch(loader: Iterable[Any], batch_loss: Callable[..., torch.Tensor]
                     ) -> TrainEpoch:
    """A training epoch for a ``batch_loss(model, batch)`` objective (a PINN's residual
    loss, say), for `jump_and_retrain`: one optimiser step per batch, its tensors moved to the
    model's device."""

    def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        device = next(model.parameters()).device
        for batch in loader:
            optimizer.zero_grad()
            batch_loss(model, _on_device(batch, device)).backward()
            optimizer.step()

    return train_epoch


def _on_device(batch: Any, device: torch.device) -> Any:
    """A batch (tensor, tuple/list or dict of tensors) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _on_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_on_device(v, device) for v in batch)
    return batch


def jump_and_retrain(
    model: nn.Module,
    objective: Objective,
    optimizer_factory: OptimizerFactory,
    train_epoch: TrainEpoch,
    *,
    accuracy: Objective | None = None,
    seeds: Sequence[int] = PAPER_SEEDS,
    step_sizes: Sequence[float] = PAPER_STEP_SIZES,
    epochs: int = 40,
    normalization: str = "filter",
    memory_budget: int | str = DEFAULT_MEMORY_BUDGET,
    memmap_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Samples:
    """Jump from θ₀ along random filter-normalised directions and retrain (Horoi et al.).

    Args:
        model: the trained model; it is never modified (a copy is retrained for each jump).
        objective: train loss over the parameters to record (its ``params`` selection decides
            which parameters are stored; all trainable parameters are retrained).
        optimizer_factory: builds the *original* optimiser from parameters, e.g.
            ``lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)``.
        train_epoch: runs one epoch, ``train_epoch(model, optimizer, epoch)``; see
            `standard_epoch`.
        accuracy: optional objective whose "loss" is the train accuracy.
        seeds: retraining seeds (default: the paper's 4).
        step_sizes: jump lengths, in units of the normalised direction (default: the paper's 4).
        epochs: retraining epochs after each jump (default: the paper's 40).
        normalization: direction normalisation (`landscaper.directions.Normalization`).
        memory_budget: above it, parameter vectors go to ``memmap_path``.
        progress: show a progress bar.

    Returns:
        `Samples` with ``len(seeds)·len(step_sizes)·(epochs+1)`` rows; epoch 0 is the jump point.
        Retraining seeds torch's global RNG with each seed first, so runs are reproducible; the
        generator is forked, so the caller's random stream is unchanged afterwards.
    """
    layout = objective.layout
    n = len(seeds) * len(step_sizes) * (epochs + 1)
    store = _ParameterStore(n, objective.num_params, parse_bytes(memory_budget), memmap_path)
    loss, acc = np.empty(n), np.empty(n)
    seed_col, step_col, epoch_col = np.empty(n, int), np.empty(n), np.empty(n, int)
    row = 0
    devices = seeded_cuda_devices(objective.device)
    # retraining seeds the global generator per seed (reproducible runs): on a fork of it,
    # so the caller's random stream is left as it was
    with torch.random.fork_rng(devices=devices), progress_bar(n, "jump & retrain",
                                                                progress) as bar:
        for seed in seeds:
            direction = random_directions(objective, 1, seed=seed,
                                          normalization=normalization).vectors[0]
            for step in step_sizes:
                jumped = copy.deepcopy(model)
                _set_selected(jumped, layout, objective.theta0 + step * direction)
                torch.manual_seed(seed)
                optimizer = optimizer_factory(jumped.parameters())
                for epoch in range(epochs + 1):
                    if epoch > 0:
                        jumped.train()
                        train_epoch(jumped, optimizer, epoch)
                        jumped.eval()
                    theta = _flat_selected(jumped, layout)
                    store.rows[row] = theta.float().cpu().numpy()
                    loss[row], acc[row] = _evaluate(objective, accuracy, theta)
                    seed_col[row], step_col[row], epoch_col[row] = seed, step, epoch
                    row += 1
                    bar.update(1)
    info = {"seeds": list(seeds), "step_sizes": list(step_sizes), "epochs": epochs,
            "normalization": normalization, "params": list(layout.names)}
    return Samples(store.finish(), loss, acc, seed_col, step_col, epoch_col, "jump_retrain",
                   info)


#: Parameter vectors built and evaluated together by the grid and naive baselines.
_BLOCK_ROWS = 256


def _evaluate_rows(objective: Objective, accuracy: Objective | None, thetas: torch.Tensor
                   ) -> tuple[np.ndarray, np.ndarray]:
    loss = objective.batch(thetas).double().cpu().numpy()
    acc = (accuracy.batch(thetas).double().cpu().numpy() if accuracy is not None
           else np.full(len(loss), math.nan))
    return loss, acc


def grid_samples(
    objective: Objective,
    n_points: int,
    *,
    accuracy: Objective | None = None,
    extent: float = 1.0,
    seed: int = 0,
    normalization: str = "filter",
    memory_budget: int | str = DEFAULT_MEMORY_BUDGET,
    memmap_path: str | os.PathLike[str] | None = None,
) -> Samples:
    """The grid baseline: a 3-D grid of ~``n_points`` along 3 random normalised directions."""
    per_axis = max(2, round(n_points ** (1 / 3)))
    dirs = random_directions(objective, 3, seed=seed, normalization=normalization).vectors
    coords = grid_coordinates(grid_axes(per_axis, extent, 3))
    coeffs = torch.as_tensor(coords, dtype=objective.dtype, device=objective.device)
    blocks = (subspace_points(objective.theta0, coeffs[i : i + _BLOCK_ROWS], dirs)
              for i in range(0, len(coords), _BLOCK_ROWS))
    return _samples_from_blocks(objective, accuracy, len(coords), blocks, "grid", memory_budget,
                                memmap_path, seed=np.full(len(coords), seed),
                                step=np.linalg.norm(coords, axis=1),
                                info={"normalization": normalization, "per_axis": per_axis,
                                      "extent": extent, "seed": seed})


def naive_samples(
    objective: Objective,
    *,
    accuracy: Objective | None = None,
    seeds: Sequence[int] = PAPER_SEEDS,
    step_sizes: Sequence[float] = PAPER_STEP_SIZES,
    per_step: int = 41,
    normalization: str = "filter",
    memory_budget: int | str = DEFAULT_MEMORY_BUDGET,
    memmap_path: str | os.PathLike[str] | None = None,
) -> Samples:
    """The naive baseline: θ₀ + step·v̄ for fresh random directions v̄ at each step size."""
    def blocks() -> Iterable[torch.Tensor]:
        for seed in seeds:  # one seed's directions at a time
            dirs = random_directions(objective, per_step, seed=10_000 + seed,
                                     normalization=normalization).vectors
            for step in step_sizes:
                yield objective.theta0 + step * dirs

    n = len(seeds) * len(step_sizes) * per_step
    return _samples_from_blocks(objective, accuracy, n, blocks(), "naive", memory_budget,
                                memmap_path,
                                seed=np.repeat(np.asarray(seeds), len(step_sizes) * per_step),
                                step=np.tile(np.repeat(np.asarray(step_sizes, dtype=float),
                                                       per_step), len(seeds)),
                                info={"normalization": normalization, "seeds": list(seeds),
                                      "step_sizes": list(step_sizes), "per_step": per_step})


def _samples_from_blocks(objective: Objective, accuracy: Objective | None, n: int,
                         blocks: Iterable[torch.Tensor], sampler: str, memory_budget: int | str,
                         memmap_path: str | os.PathLike[str] | None, *, seed: np.ndarray,
                         step: np.ndarray, info: dict[str, Any]) -> Samples:
    """Store and evaluate parameter vectors that arrive in blocks of rows, so only one block is
    ever held besides the (possibly out-of-core) store."""
    store = _ParameterStore(n, objective.num_params, parse_bytes(memory_budget), memmap_path)
    loss, acc = np.empty(n), np.empty(n)
    start = 0
    for block in blocks:
        stop = start + block.shape[0]
        store.rows[start:stop] = block.float().cpu().numpy()
        loss[start:stop], acc[start:stop] = _evaluate_rows(objective, accuracy, block)
        start = stop
    if start != n:
        raise RuntimeError(f"{sampler} sampler produced {start} rows, expected {n}")
    return Samples(store.finish(), loss, acc, seed.astype(int), step.astype(float),
                   np.full(n, -1), sampler, info)
