"""Loss on an n-dimensional grid in a subspace: θ = θ₀ + Σᵢ aᵢ·dᵢ.

The grid code is four small pieces, each replaceable on its own:

- **spec** (`landscaper.grid.spec`, `landscaper.grid.axes`): what the grid is — a
  `GridRequest` (dims, steps, extent and its unit) and, once the directions exist, the frozen
  `GridSpec` (directions and axes);
- **plan** (`landscaper.grid.plan`): how it is chunked and what it costs (`GridPlan`),
  measured on the objective;
- **store** (`landscaper.grid.store`): the optional checkpoint folder that makes a run
  resumable (`GridCheckpoint`);
- **executors** (`landscaper.grid.execute`, `landscaper.grid.sharded`): evaluation in this
  process (`LocalExecutor`) or across a process group (`ShardedExecutor`), chosen by
  `executor_for`.

`sample_grid` composes them for direction vectors and axes given directly;
`landscaper.Landscape.compute` composes them from a model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from .. import distributed as dist_utils
from ..objective import Objective
from .axes import (
    ExtentUnit,
    axis_steps,
    check_grid_size,
    extent_ranges,
    grid_axes,
    grid_coordinates,
    nearest_origin_index,
    origin_index,
    parse_extent_unit,
)
from .execute import Execution, LocalExecutor, evaluate_chunk, report_nonfinite, require_all_data
from .extent_scan import AutoExtent, scan_extent
from .plan import (
    MIN_CHUNKS_PER_RANK,
    MIN_POINTS_PER_CHUNK,
    GridEstimate,
    GridPlan,
    balanced_points_per_chunk,
    bytes_per_point,
    estimate_grid,
    max_chunk_size,
    plan_grid,
    tune_chunk_size,
)
from .sharded import ShardedExecutor
from .spec import GridRequest, GridSpec, subspace_points
from .store import (
    CHECKPOINT_VERSION,
    CheckpointMismatchError,
    GridCheckpoint,
    check_checkpoint,
    check_checkpoint_path,
    grid_fingerprint,
    objective_fingerprint,
)

__all__ = [
    "AutoExtent",
    "CHECKPOINT_VERSION",
    "MIN_CHUNKS_PER_RANK",
    "MIN_POINTS_PER_CHUNK",
    "CheckpointMismatchError",
    "Execution",
    "ExtentUnit",
    "GridCheckpoint",
    "GridEstimate",
    "GridPlan",
    "GridRequest",
    "GridSpec",
    "LocalExecutor",
    "ShardedExecutor",
    "axis_steps",
    "balanced_points_per_chunk",
    "bytes_per_point",
    "check_checkpoint",
    "check_checkpoint_path",
    "check_grid_size",
    "estimate_grid",
    "evaluate_chunk",
    "executor_for",
    "extent_ranges",
    "grid_axes",
    "grid_coordinates",
    "grid_fingerprint",
    "max_chunk_size",
    "nearest_origin_index",
    "objective_fingerprint",
    "origin_index",
    "parse_extent_unit",
    "plan_grid",
    "report_nonfinite",
    "require_all_data",
    "sample_grid",
    "scan_extent",
    "subspace_points",
    "tune_chunk_size",
]


def executor_for(distributed: bool | None) -> LocalExecutor | ShardedExecutor:
    """The executor a ``distributed=`` option asks for: `ShardedExecutor` for True (or for
    None when a process group with several ranks exists), else `LocalExecutor`."""
    return ShardedExecutor() if dist_utils.use_distributed(distributed) else LocalExecutor()


def sample_grid(
    objective: Objective,
    directions: torch.Tensor,
    axes: Sequence[np.ndarray],
    *,
    chunk_size: int | None = None,
    points_per_chunk: int | None = None,
    memory_budget: int | str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = True,
    distributed: bool | None = False,
) -> np.ndarray:
    """Loss at every point ``θ₀ + Σᵢ axes[i][jᵢ]·directions[i]`` of the grid.

    Args:
        objective: the loss over flat parameters.
        directions: (k, P) tensor, one row per axis.
        axes: k coordinate arrays.
        chunk_size: see `Execution`.
        points_per_chunk: see `Execution`.
        memory_budget: see `Execution`.
        checkpoint: see `Execution`.
        progress: see `Execution`.
        distributed: see `Execution`.

    Returns:
        float64 array of shape ``tuple(len(a) for a in axes)``, indexed ``"ij"``. NaN and inf
        losses are kept as they are and reported in the log.

    Distributed runs (`ShardedExecutor`): every rank calls this with the same model, data,
    directions and axes (checked with a digest) and returns the full array, identical to one
    process with the same chunking and threads; a checkpoint resumes with any number of ranks.
    """
    spec = GridSpec.from_axes(torch.as_tensor(directions), axes)
    execution = Execution(memory_budget, chunk_size, points_per_chunk, checkpoint, progress,
                          distributed)
    require_all_data(objective)
    loss = executor_for(distributed).run(objective, spec, execution)
    report_nonfinite(loss)
    return loss.reshape(spec.shape)
