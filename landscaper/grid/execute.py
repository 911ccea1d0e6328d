"""Evaluating a grid in this process, chunk by chunk, resumable from a checkpoint.

An executor takes an objective, a `GridSpec` and the `Execution` options and returns the
flat loss array. `LocalExecutor` evaluates every chunk here; `landscaper.grid.sharded` splits
the chunks across the ranks of a process group. Both evaluate each chunk's points θ₀ + A·D
one vmapped call at a time through `landscaper.subspace.SubspaceLoss` (`evaluate_chunk`) and
keep NaN/inf losses as they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from .._heap import keeps_heap
from .._utils import check_count, format_bytes, progress_bar
from ..directions import Directions
from ..objective import Objective
from ..subspace import SubspaceLoss
from .plan import GridPlan, plan_grid
from .spec import GridSpec
from .store import GridCheckpoint, check_checkpoint_path, grid_fingerprint, objective_fingerprint

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Execution:
    """How a grid is run: memory, chunking, checkpoint, progress and processes.

    Attributes:
        memory_budget: bytes for the loss array plus one chunk (None: the objective's).
        chunk_size: parameter vectors per vmapped call (None: the fastest within budget).
        points_per_chunk: points built by one matrix product and checkpointed together
            (None: vmap calls grouped to at least 256 points, fewer across several ranks).
        checkpoint: folder making the run resumable (shared by all ranks when distributed).
        progress: show a tqdm bar (rank 0 only when distributed).
        distributed: True shards the grid across an initialised process group, None does so
            when a group with several ranks exists, False works alone.
    """

    memory_budget: int | str | None = None
    chunk_size: int | None = None
    points_per_chunk: int | None = None
    checkpoint: str | os.PathLike[str] | None = None
    progress: bool = True
    distributed: bool | None = False

    def check(self) -> None:
        """Refuse malformed chunk sizes or a checkpoint path naming a file (before any work)."""
        for name in ("chunk_size", "points_per_chunk"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name))
        if self.checkpoint is not None:
            check_checkpoint_path(self.checkpoint)

    def budget(self, objective: Objective) -> int | str:
        """The memory budget of this run: its own, else the objective's."""
        return objective.memory_budget if self.memory_budget is None else self.memory_budget


def require_all_data(objective: Objective) -> None:
    """A grid needs the full data in every process: refuse an objective over one shard."""
    if not objective.holds_all_data:
        raise ValueError("sample_grid shards grid points across ranks and needs the full data on "
                         "every rank, but this is a DistributedObjective over one shard; build a "
                         "plain Objective over the full data for the grid")


def grid_vectors(objective: Objective, spec: GridSpec) -> torch.Tensor:
    """The spec's direction vectors on the objective's device and dtype, checked against it."""
    vectors = torch.as_tensor(spec.directions.vectors).to(device=objective.device,
                                                          dtype=objective.dtype)
    if vectors.ndim != 2 or vectors.shape[0] != spec.k:
        raise ValueError(f"need one direction per axis: {spec.k} axes, directions of shape "
                         f"{tuple(vectors.shape)}")
    if vectors.shape[1] != objective.num_params:
        raise ValueError(f"directions have {vectors.shape[1]} entries, the objective has "
                         f"{objective.num_params} parameters")
    return vectors


def grid_subspace(objective: Objective, vectors: torch.Tensor) -> SubspaceLoss:
    """The loss on the grid's subspace θ₀ + A·D (first layers answered from k + 1 products)."""
    return SubspaceLoss(objective, objective.theta0, vectors)


def evaluate_chunk(objective: Objective, spec: GridSpec, subspace: SubspaceLoss, start: int,
                   stop: int, vmap_chunk: int) -> np.ndarray:
    """Losses at flat grid points ``start:stop`` of the subspace θ₀ + A·D, one vmapped call of
    ``vmap_chunk`` coefficient rows at a time."""
    coeffs = torch.as_tensor(spec.coefficients(start, stop), dtype=objective.dtype)
    return subspace.batch(coeffs, chunk_size=vmap_chunk).double().cpu().numpy()


def open_store(execution: Execution, objective: Objective, fingerprint: str | None,
               plan: GridPlan) -> tuple[GridPlan, GridCheckpoint | None]:
    """The checkpoint of this grid (created or resumed) and the plan with its chunking."""
    if execution.checkpoint is None:
        return plan, None
    store = GridCheckpoint(execution.checkpoint, fingerprint, plan.chunk_size,
                           plan.points_per_chunk, plan.n_points,
                           objective=objective_fingerprint(objective))
    return plan.with_chunking(store.chunk_size, store.points_per_chunk), store


def restore_finished(store: GridCheckpoint | None, bounds: Sequence[tuple[int, int]],
                     loss: np.ndarray) -> list[int]:
    """Copy the checkpoint's finished chunks into ``loss``; the indices of the missing ones."""
    missing = []
    for i, (start, stop) in enumerate(bounds):
        done = store.load(start, stop) if store is not None else None
        if done is None:
            missing.append(i)
        else:
            loss[start:stop] = done
    return missing


def count_points(bounds: Sequence[tuple[int, int]], chunks: Sequence[int]) -> int:
    """Grid points in the chunks ``chunks``."""
    return sum(bounds[i][1] - bounds[i][0] for i in chunks)


def evaluate_chunks(objective: Objective, spec: GridSpec, subspace: SubspaceLoss,
                    plan: GridPlan, store: GridCheckpoint | None, chunks: Sequence[int],
                    loss: np.ndarray, bar: Any) -> None:
    """Evaluate ``chunks`` into ``loss``, each written to ``store`` as soon as it is done."""
    bounds = plan.bounds
    for i in chunks:
        start, stop = bounds[i]
        done = evaluate_chunk(objective, spec, subspace, start, stop, plan.chunk_size)
        if store is not None:
            store.save(start, stop, done)
        loss[start:stop] = done
        bar.update(stop - start)


def log_plan(spec: GridSpec, plan: GridPlan, world_size: int) -> None:
    """One log line with the grid's chunking and estimated time."""
    logger.info("grid %s: %d points, %d per vmapped call, %d per chunk (~%s), estimated "
                "%.1f s", "x".join(map(str, spec.shape)), plan.n_points, plan.chunk_size,
                plan.points_per_chunk, format_bytes(plan.bytes_per_chunk),
                plan.seconds / world_size)


def report_nonfinite(loss: np.ndarray) -> dict[str, int]:
    """Count NaN/±inf losses and log a warning when there are any (they are never replaced)."""
    counts = {"nan": int(np.isnan(loss).sum()), "posinf": int(np.isposinf(loss).sum()),
              "neginf": int(np.isneginf(loss).sum())}
    if any(counts.values()):
        logger.warning("the grid holds non-finite losses (%s); they are kept as they are",
                       ", ".join(f"{k}={v}" for k, v in counts.items() if v))
    return counts


class LocalExecutor:
    """Evaluates a whole grid in this process (code calling it on one rank never waits)."""

    world_size = 1

    def share_directions(self, compute: Callable[[], Directions]) -> Directions:
        """The directions ``compute()`` gives (one process: nothing to share)."""
        return compute()

    def on_leader(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (this process is the only one)."""
        return fn()

    def describe(self) -> dict[str, Any]:
        """Metadata entries of this way of running (none for one process)."""
        return {}

    @keeps_heap
    def run(self, objective: Objective, spec: GridSpec, execution: Execution) -> np.ndarray:
        """The flat loss array of ``spec`` (C order), resumed from the checkpoint if any."""
        require_all_data(objective)
        vectors = grid_vectors(objective, spec)
        fingerprint = (grid_fingerprint(objective, spec, vectors)
                       if execution.checkpoint is not None else None)
        subspace = grid_subspace(objective, vectors)
        plan = plan_grid(objective, spec.n_points, memory_budget=execution.budget(objective),
                         chunk_size=execution.chunk_size,
                         points_per_chunk=execution.points_per_chunk, subspace=subspace)
        log_plan(spec, plan, 1)
        plan, store = open_store(execution, objective, fingerprint, plan)
        loss = np.empty(spec.n_points, dtype=np.float64)
        missing = restore_finished(store, plan.bounds, loss)
        resumed = spec.n_points - count_points(plan.bounds, missing)
        with progress_bar(spec.n_points, "grid", execution.progress) as bar:
            bar.update(resumed)
            evaluate_chunks(objective, spec, subspace, plan, store, missing, loss, bar)
        if resumed:
            logger.info("resumed %d of %d points from %s", resumed, spec.n_points,
                        execution.checkpoint)
        return loss
