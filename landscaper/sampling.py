"""The former home of the grid code, kept so that existing imports keep working.

Everything here now lives in `landscaper.grid` (spec, plan, store, executors); import from
there in new code.
"""

from __future__ import annotations

from .grid import (  # noqa: F401 - re-exported names
    CHECKPOINT_VERSION,
    MIN_CHUNKS_PER_RANK,
    MIN_POINTS_PER_CHUNK,
    CheckpointMismatchError,
    ExtentUnit,
    GridCheckpoint,
    GridEstimate,
    GridPlan,
    axis_steps,
    balanced_points_per_chunk,
    check_checkpoint,
    check_checkpoint_path,
    check_grid_size,
    estimate_grid,
    extent_ranges,
    grid_axes,
    grid_coordinates,
    nearest_origin_index,
    objective_fingerprint,
    origin_index,
    parse_extent_unit,
    report_nonfinite,
    require_all_data,
    sample_grid,
)
from .grid.store import META_WAIT_S  # noqa: F401

#: The former name of `landscaper.grid.require_all_data`.
refuse_sharded_data = require_all_data
