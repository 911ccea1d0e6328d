"""Evaluating a grid across the ranks of a `torch.distributed` process group.

Every rank holds the same model and the full data. Rank 0 plans the chunking (its timing, or
the checkpoint's ``meta.json``) and decides which chunks are missing; each rank evaluates
every ``world_size``-th missing chunk, and the ranks' arrays are summed, so every rank returns
the full array, bit for bit the array one process computes with the same chunking and threads.
A rank that dies loses only the chunk it was evaluating; a resumed run may use any number of
ranks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from .. import distributed as dist_utils
from .._heap import keeps_heap
from .._utils import progress_bar
from ..directions import Directions
from ..objective import Objective
from ..subspace import SubspaceLoss
from .execute import (
    Execution,
    count_points,
    evaluate_chunks,
    grid_subspace,
    grid_vectors,
    log_plan,
    open_store,
    require_all_data,
    restore_finished,
)
from .plan import GridPlan, plan_grid
from .spec import GridSpec
from .store import GridCheckpoint, grid_fingerprint

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _broadcast_directions(dirs: Directions) -> Directions:
    """Rank 0's direction vectors (and eigenvalues) on every rank."""
    layout = [list(dirs.vectors.shape), str(dirs.vectors.dtype), dirs.eigenvalues is None]
    dist_utils.check_agree(repr(layout), "number, length or dtype of directions")
    vectors = dist_utils.broadcast_tensor(dirs.vectors)
    eigenvalues = dirs.eigenvalues
    if eigenvalues is not None:
        values = torch.as_tensor(np.asarray(eigenvalues, dtype=np.float64))
        eigenvalues = dist_utils.broadcast_tensor(values).numpy()
    return dataclasses.replace(dirs, vectors=vectors, eigenvalues=eigenvalues)


def _shared_indices(indices: list[int] | None, n: int) -> list[int]:
    """Rank 0's list of indices below ``n`` on every rank (sent as a mask)."""
    mask = torch.zeros(n, dtype=torch.uint8)
    if indices:
        mask[torch.as_tensor(indices)] = 1
    return torch.nonzero(dist_utils.broadcast_tensor(mask)).flatten().tolist()


class ShardedExecutor:
    """Splits a grid's chunks across the ranks of an initialised process group; every rank
    must call `run` together with the same model, data, directions and axes (checked)."""

    def __init__(self) -> None:
        self.rank = dist_utils.rank()
        self.world_size = dist_utils.world_size()

    def share_directions(self, compute: Callable[[], Directions]) -> Directions:
        """Rank 0's result of ``compute()``, which every rank runs; one rank's failure stops
        every rank before the broadcast."""
        error, dirs = None, None
        try:
            dirs = compute()
        except Exception as err:  # noqa: BLE001 - re-raised on every rank
            error = err
        dist_utils.raise_together(error)
        return _broadcast_directions(dirs)

    def on_leader(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` on rank 0 alone (e.g. reading a checkpoint), its error on every rank."""
        return dist_utils.on_rank0(fn)

    def describe(self) -> dict[str, Any]:
        """Metadata entries of this run: the number of ranks."""
        return {"world_size": self.world_size}

    def _plan(self, objective: Objective, spec: GridSpec, execution: Execution,
              fingerprint: str, subspace: SubspaceLoss
              ) -> tuple[GridPlan, GridCheckpoint | None]:
        """Rank 0's plan (and checkpoint) on every rank; the others open its checkpoint."""
        def plan_on_rank0() -> tuple[GridPlan, GridCheckpoint | None]:
            plan = plan_grid(objective, spec.n_points, memory_budget=execution.budget(objective),
                             chunk_size=execution.chunk_size,
                             points_per_chunk=execution.points_per_chunk,
                             world_size=self.world_size, subspace=subspace)
            log_plan(spec, plan, self.world_size)
            return open_store(execution, objective, fingerprint, plan)

        planned = dist_utils.on_rank0(plan_on_rank0)
        leader = self.rank == 0
        fields = dataclasses.astuple(planned[0]) if leader else None
        plan = GridPlan(*dist_utils.broadcast_json(fields))
        store, error = (planned[1] if leader else None), None
        if not leader and execution.checkpoint is not None:
            try:
                store = GridCheckpoint(execution.checkpoint, fingerprint, plan.chunk_size,
                                       plan.points_per_chunk, plan.n_points, create=False)
            except (OSError, ValueError) as err:
                error = err
        dist_utils.raise_together(error)
        return plan, store

    @keeps_heap
    def run(self, objective: Objective, spec: GridSpec, execution: Execution) -> np.ndarray:
        """The flat loss array of ``spec`` on every rank (see the module docstring)."""
        require_all_data(objective)
        vectors = grid_vectors(objective, spec)
        fingerprint = grid_fingerprint(objective, spec, vectors)
        dist_utils.check_agree(fingerprint, "grid fingerprint (θ₀, directions, axes, data, model)")
        subspace = grid_subspace(objective, vectors)
        plan, store = self._plan(objective, spec, execution, fingerprint, subspace)
        bounds = plan.bounds
        # entries this rank does not own hold -0.0, the identity of IEEE addition (x + -0.0 is
        # x bit for bit, signed zeros, inf and NaN included), so summing over ranks, where
        # exactly one rank owns each entry, reproduces every owned value exactly
        loss = np.full(spec.n_points, -0.0)
        found = dist_utils.on_rank0(lambda: restore_finished(store, bounds, loss))
        missing = _shared_indices(found, len(bounds))
        mine = dist_utils.chunks_for_rank(missing, self.rank, self.world_size)
        own_points = count_points(bounds, mine)
        logger.info("rank %d of %d evaluates %d of %d missing chunks (%d points)", self.rank,
                    self.world_size, len(mine), len(missing), own_points)
        error = None
        with progress_bar(own_points, "grid", execution.progress and self.rank == 0) as bar:
            try:
                evaluate_chunks(objective, spec, subspace, plan, store, mine, loss, bar)
            except Exception as err:  # noqa: BLE001 - re-raised on every rank
                error = err
        dist_utils.raise_together(error)
        loss = dist_utils.all_reduce_sum(torch.from_numpy(loss)).numpy()
        resumed = spec.n_points - count_points(bounds, missing)
        if resumed:
            logger.info("resumed %d of %d points from %s", resumed, spec.n_points,
                        execution.checkpoint)
        return loss

