"""Loss on an n-dimensional grid in a subspace: θ = θ₀ + Σᵢ aᵢ·dᵢ.

Grid points are produced chunk by chunk as θ₀ + A·D (one matrix product per chunk) and
evaluated with the objective's vmapped batch evaluation. With a checkpoint folder, each
finished chunk is written atomically, so a run interrupted by a crash or Ctrl-C continues
where it stopped and yields exactly the array an uninterrupted run yields.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed as dist_utils
from ._utils import check_count, format_bytes, parse_bytes, progress_bar, to_numpy
from .objective import Objective

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


class ExtentUnit(str, Enum):
    """How a grid's extent is measured.

    Members:
        absolute: the axis coordinates aᵢ run over ±extent (θ = θ₀ + Σ aᵢ dᵢ).
        relative: the displacement along each direction reaches ±extent·‖θ₀‖ (Landscaper's
            ``distance``), i.e. aᵢ runs over ±extent·‖θ₀‖/‖dᵢ‖.
    """

    ABSOLUTE = "absolute"
    RELATIVE = "relative"


def parse_extent_unit(unit: str | ExtentUnit) -> ExtentUnit:
    """The `ExtentUnit` named by ``unit``, or an error listing the valid names."""
    try:
        return ExtentUnit(unit)
    except ValueError:
        raise ValueError(f"extent_unit must be 'relative' or 'absolute', got {unit!r}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _scalar(value: Any) -> Any:
    """A 0-d array as the number it holds; anything else as it is."""
    return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value


def axis_steps(steps: int | Sequence[int], dims: int) -> list[int]:
    """Points per axis: one count for every axis, or one per axis (each ≥ 1)."""
    steps = _scalar(steps)
    if _is_number(steps):
        return [check_count("steps", steps)] * dims
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise TypeError(f"steps must be an integer or one integer per axis, got {steps!r}")
    if len(steps) != dims:
        raise ValueError(f"got {len(steps)} step counts for a {dims}-dimensional grid; give one "
                         "value, or one per direction")
    return [check_count("steps", s) for s in steps]


def extent_ranges(extent: float | Sequence[Any], dims: int) -> list[tuple[float, float]]:
    """Each axis' ``(low, high)`` from the three unambiguous forms of ``extent``.

    - one number ``e > 0``: every axis runs over [−e, e];
    - one entry per axis, each a number (that axis' half-width) or a pair ``(low, high)``,
      e.g. ``[0.1, 0.3]`` for a 2-D grid or ``[(-0.5, 1.0)] * 3`` for a 3-D one.

    A sequence of the wrong length is refused (two numbers never mean a shared range).
    """
    extent = _scalar(extent)
    if _is_number(extent):
        entries: list[Any] = [extent] * dims
    elif isinstance(extent, (str, bytes)) or not isinstance(extent, (Sequence, np.ndarray)):
        raise TypeError(f"extent must be a number or one entry per axis, got {extent!r}")
    else:
        entries = list(extent)
        if len(entries) != dims:
            example = f"[{tuple(entries)!r}] * {dims}" if len(entries) == 2 else "0.5"
            raise ValueError(
                f"extent={extent!r} has {len(entries)} entries for a {dims}-dimensional grid; "
                f"give one half-width (e.g. extent=0.5) or exactly {dims} entries, each a "
                f"half-width or a (low, high) pair (for this range on every axis: "
                f"extent={example})")
    ranges = []
    for i, entry in enumerate(entries):
        if _is_number(entry):
            half = float(entry)
            if not (np.isfinite(half) and half > 0):
                raise ValueError(f"axis {i}: a half-width must be positive and finite, got "
                                 f"{entry!r}; pass e.g. extent=0.5")
            ranges.append((-half, half))
            continue
        example = f"extent=[(-0.5, 1.0)] * {dims}"
        if not (isinstance(entry, (Sequence, np.ndarray)) and len(entry) == 2
                and all(_is_number(v) for v in entry)):
            raise ValueError(f"axis {i}: an extent entry is a half-width or a (low, high) pair "
                             f"of numbers, got {entry!r}; e.g. {example}")
        low, high = map(float, entry)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"axis {i}: a range (low, high) needs finite low < high, got "
                             f"{entry!r}; e.g. {example}")
        ranges.append((low, high))
    return ranges


def check_grid_size(steps: Sequence[int], memory_budget: int | str) -> int:
    """The number of grid points, refused by arithmetic when the loss array alone would not fit
    the memory budget (before anything proportional to the grid is allocated)."""
    n_points = math.prod(steps)
    budget = parse_bytes(memory_budget)
    if n_points * 8 > budget:
        shape = (f"{steps[0]}^{len(steps)} = " if len(set(steps)) == 1 and len(steps) > 1
                 else f"{' x '.join(map(str, steps))} = " if len(steps) > 1 else "")
        raise MemoryError(f"a grid of {shape}{n_points:.3g} points needs "
                          f"{format_bytes(n_points * 8)} for its loss array alone, more than the "
                          f"memory budget {format_bytes(budget)}; use fewer steps or dims, or "
                          "raise memory_budget")
    return n_points


def _axis(low: float, high: float, n_steps: int) -> np.ndarray:
    """``n_steps`` points from low to high; a symmetric axis holds exactly 0 at its centre when
    ``n_steps`` is odd (and is exactly [0] for one step), and 0 is snapped to when on the grid."""
    if n_steps == 1:
        if low != -high:
            raise ValueError(f"a (low, high) = ({low:g}, {high:g}) axis needs steps >= 2; one "
                             "step is the point θ₀ itself, written as a half-width")
        return np.zeros(1)
    if low == -high:
        middle = (n_steps - 1) / 2
        return high * ((np.arange(n_steps) - middle) / middle)
    axis = np.linspace(low, high, n_steps)
    nearest = int(np.argmin(np.abs(axis)))
    if abs(axis[nearest]) <= 1e-12 * (high - low):
        axis[nearest] = 0.0
    return axis


def grid_axes(
    steps: int | Sequence[int],
    extent: float | Sequence[Any],
    dims: int,
    *,
    unit: str | ExtentUnit = "absolute",
    theta0_norm: float = 1.0,
    direction_norms: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """The coordinate axes of a ``dims``-dimensional grid (multipliers of each direction).

    ``steps`` is one count for every axis or one per axis; ``extent`` is one half-width or one
    entry per axis (see `extent_ranges`). A symmetric axis with an odd number of steps holds
    exactly 0, i.e. θ₀ itself, at its centre; ``steps=1`` is θ₀ alone.
    """
    dims = check_count("dims", dims)
    unit = parse_extent_unit(unit)
    steps_list = axis_steps(steps, dims)
    ranges = extent_ranges(extent, dims)
    norms = [1.0] * dims if direction_norms is None else list(direction_norms)
    if unit is ExtentUnit.RELATIVE and not np.isfinite(theta0_norm):
        raise ValueError(f"a relative extent scales with the parameter norm, which is "
                         f"{theta0_norm} (the model's weights hold NaN/inf); pass "
                         "extent_unit=\"absolute\" with extents in direction units")
    axes = []
    for n_steps, (low, high), norm in zip(steps_list, ranges, norms, strict=True):
        scale = theta0_norm / norm if unit is ExtentUnit.RELATIVE else 1.0
        axes.append(_axis(low, high, n_steps) * scale)
    return axes


def origin_index(axes: Sequence[np.ndarray]) -> tuple[int, ...] | None:
    """The grid index of θ₀ (every coordinate exactly 0), or None when the grid misses it."""
    index = []
    for axis in axes:
        zeros = np.flatnonzero(np.asarray(axis) == 0)
        if zeros.size == 0:
            return None
        index.append(int(zeros[0]))
    return tuple(index)


def nearest_origin_index(axes: Sequence[np.ndarray]) -> tuple[int, ...]:
    """The grid index closest to θ₀ on every axis (θ₀'s own index when it is on the grid)."""
    return tuple(int(np.argmin(np.abs(np.asarray(axis)))) for axis in axes)


def grid_coordinates(axes: Sequence[np.ndarray], start: int = 0, stop: int | None = None
                     ) -> np.ndarray:
    """Coordinates of flat grid points ``start:stop`` in C order (``indexing="ij"``)."""
    shape = tuple(len(a) for a in axes)
    stop = math.prod(shape) if stop is None else stop
    index = np.unravel_index(np.arange(start, stop), shape)
    return np.stack([axis[i] for axis, i in zip(axes, index, strict=True)], axis=1)


#: Grid points built and written per chunk are at least this many (vmap chunks are grouped).
MIN_POINTS_PER_CHUNK = 256
#: A distributed grid gets at least this many chunks per rank by default (load balance).
MIN_CHUNKS_PER_RANK = 8


@dataclass(frozen=True)
class GridEstimate:
    """What a grid will cost, measured on the objective before the run.

    Attributes:
        n_points: grid points.
        chunk_size: parameter vectors per vmapped call (1: sequential calls).
        points_per_chunk: points built with one matrix product (and checkpointed) together.
        bytes_per_chunk: estimated memory of one chunk.
        seconds_per_point: measured evaluation time per point.
    """

    n_points: int
    chunk_size: int
    points_per_chunk: int
    bytes_per_chunk: int
    seconds_per_point: float

    @property
    def seconds(self) -> float:
        """Estimated wall time of the whole grid."""
        return self.n_points * self.seconds_per_point


def estimate_grid(objective: Objective, n_points: int, memory_budget: int | str | None = None,
                  chunk_size: int | None = None, points_per_chunk: int | None = None
                  ) -> GridEstimate:
    """Memory and time of a grid of ``n_points``; raises MemoryError if it cannot fit.

    Without ``chunk_size`` the fastest vmap chunk that fits the budget is measured
    (`Objective.tune_chunk_size`).
    """
    budget = objective.memory_budget if memory_budget is None else parse_bytes(memory_budget)
    result_bytes = n_points * 8
    if result_bytes > budget:
        raise MemoryError(f"the loss array alone needs {format_bytes(result_bytes)}, more than "
                          f"the memory budget {format_bytes(budget)}; use fewer steps or dims, or "
                          "raise memory_budget")
    most = max(1, min(objective.chunk_size(budget - result_bytes), n_points))
    if chunk_size is None:
        chunk, per_point = objective.tune_chunk_size(most, max_points=max(8, n_points // 16))
    else:
        chunk = max(1, min(chunk_size, n_points))
        if chunk > most:
            raise MemoryError(
                f"chunk_size={chunk_size} parameter vectors per call exceed the memory budget "
                f"{format_bytes(budget)} (~{format_bytes(objective.bytes_per_point())} each); "
                f"pass chunk_size<={most} or raise memory_budget")
        probe = objective.theta0.expand(min(chunk, 16), -1)  # a timing sample, not a chunk
        start = time.perf_counter()
        objective.batch(probe, chunk_size=probe.shape[0])
        per_point = (time.perf_counter() - start) / probe.shape[0]
    if points_per_chunk is None:
        group = max(1, min(most // chunk, -(-MIN_POINTS_PER_CHUNK // chunk)))
        points = min(chunk * group, n_points)
    else:
        points = max(1, min(points_per_chunk, n_points))
    return GridEstimate(n_points, chunk, points, points * objective.bytes_per_point(), per_point)


def balanced_points_per_chunk(points_per_chunk: int, n_points: int, chunk_size: int,
                              world_size: int) -> int:
    """Points per chunk lowered so each of ``world_size`` ranks gets at least
    `MIN_CHUNKS_PER_RANK` chunks (a multiple of ``chunk_size``; unchanged for one rank)."""
    if world_size <= 1:
        return points_per_chunk
    share = -(-n_points // (MIN_CHUNKS_PER_RANK * world_size))
    return max(1, min(points_per_chunk, -(-share // chunk_size) * chunk_size))


def _digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for item in arrays:
        if isinstance(item, torch.Tensor):
            item = to_numpy(item, exact_bits=True)
        if isinstance(item, np.ndarray):
            h.update(str((item.dtype, item.shape)).encode())
            h.update(np.ascontiguousarray(item).tobytes())
        else:
            h.update(json.dumps(item, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for key in sorted(obj) for t in _tensors(obj[key])]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    return []


def _data_digest(objective: Objective) -> str:
    return _digest(*_tensors(objective.batches))


#: Seconds a rank waits for rank 0's ``meta.json`` to become visible (NFS caches attributes).
META_WAIT_S = 10.0


def _appears(path: Path, seconds: float) -> bool:
    """Whether ``path`` exists now or within ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


class CheckpointMismatchError(ValueError):
    """A checkpoint folder belongs to another grid, model, data set or direction set."""


def check_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder as a Path; refused when it names an existing file."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CheckpointMismatchError(f"checkpoint {folder} is a file, not a folder; pass a "
                                      "folder path (it is created when missing)")
    return folder


def check_checkpoint(path: str | os.PathLike[str], objective: Objective, n_points: int) -> None:
    """Refuse, before any expensive work, a checkpoint that cannot belong to this grid.

    Checks what is known before the directions are: that ``path`` is a folder (or absent), and
    that an existing checkpoint has this number of points and was written for the same θ₀,
    data and model. The full fingerprint (directions and axes too) is checked when the grid
    opens it.
    """
    folder = check_checkpoint_path(path)
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return
    try:
        stored = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointMismatchError(f"{meta_file} is not a landscaper checkpoint (unreadable "
                                      "JSON); delete the folder or choose another checkpoint "
                                      "path") from err
    mine = objective_fingerprint(objective)
    if stored.get("n_points") != n_points or stored.get("objective", mine) != mine:
        raise CheckpointMismatchError(
            f"the checkpoint in {folder} was written for a different grid, model, data or "
            "direction set; delete it or choose another checkpoint path")


class GridCheckpoint:
    """A folder of finished chunks: ``meta.json`` plus one ``.npy`` per chunk, written atomically.

    The fingerprint covers θ₀, the directions, the axes, the data and the model description, so a
    checkpoint written for another grid, model or direction set is refused. The chunking is
    fixed by ``meta.json`` when it exists (not by the caller, nor by the number of ranks), so a
    resumed run evaluates exactly the chunks an uninterrupted run would.

    Args:
        path: the folder (created when missing, with ``create=True``).
        fingerprint: digest of everything the grid depends on.
        chunk_size, points_per_chunk: the chunking of a new checkpoint.
        n_points: grid points.
        create: write ``meta.json`` when it is missing; False (ranks other than 0 of a
            distributed run) requires it to exist already.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: str, chunk_size: int,
                 points_per_chunk: int, n_points: int, *, create: bool = True,
                 objective: str | None = None) -> None:
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not create and not _appears(meta_file, META_WAIT_S):
            raise FileNotFoundError(
                f"{meta_file} is still missing on this rank {META_WAIT_S:g} s after rank 0 wrote "
                "it: the checkpoint folder must be on a file system shared by all ranks (or run "
                "without checkpoint)")
        self.path.mkdir(parents=True, exist_ok=True)
        meta = {"version": CHECKPOINT_VERSION, "fingerprint": fingerprint,
                "chunk_size": chunk_size, "points_per_chunk": points_per_chunk,
                "n_points": n_points, **({"objective": objective} if objective else {})}
        if meta_file.exists():
            try:
                stored = json.loads(meta_file.read_text())
            except json.JSONDecodeError as err:
                raise CheckpointMismatchError(
                    f"{meta_file} is not a landscaper checkpoint (unreadable JSON); delete the "
                    "folder or choose another checkpoint path") from err
            if stored.get("fingerprint") != fingerprint or stored.get("n_points") != n_points:
                raise CheckpointMismatchError(
                    f"the checkpoint in {self.path} was written for a different grid, model, data "
                    "or direction set; delete it or choose another checkpoint path")
            if (stored.get("chunk_size"), stored.get("points_per_chunk")) != (
                    chunk_size, points_per_chunk):
                logger.info("resuming with the checkpoint's chunking (%s, %s points) so the "
                            "result is identical", stored.get("chunk_size"),
                            stored.get("points_per_chunk"))
            self.chunk_size = int(stored["chunk_size"])
            self.points_per_chunk = int(stored["points_per_chunk"])
        else:
            _atomic_write_bytes(meta_file, json.dumps(meta).encode())
            self.chunk_size, self.points_per_chunk = chunk_size, points_per_chunk

    def _file(self, start: int, stop: int) -> Path:
        return self.path / f"chunk_{start:012d}_{stop:012d}.npy"

    def load(self, start: int, stop: int) -> np.ndarray | None:
        """A finished chunk, or None."""
        file = self._file(start, stop)
        if not file.exists():
            return None
        try:
            values = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            logger.warning("ignoring unreadable checkpoint chunk %s", file.name)
            return None
        return values if values.shape == (stop - start,) else None

    def save(self, start: int, stop: int, values: np.ndarray) -> None:
        """Write a finished chunk atomically."""
        with tempfile.NamedTemporaryFile(dir=self.path, suffix=".tmp", delete=False) as handle:
            np.save(handle, values, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, self._file(start, stop))


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def _describe_for_digest(objective: Objective) -> dict[str, Any]:
    describe = objective.describe()
    describe["device"] = objective.device.type  # cuda:0 and cuda:1 agree
    return describe


def objective_fingerprint(objective: Objective) -> str:
    """Digest of θ₀, the data and the model description: what a checkpoint can be checked
    against before any direction exists."""
    return _digest(objective.theta0, _describe_for_digest(objective), _data_digest(objective))


def _fingerprint(objective: Objective, directions: torch.Tensor,
                 axes: Sequence[np.ndarray]) -> str:
    """Digest of everything a grid depends on."""
    return _digest(objective.theta0, directions, *[np.asarray(a) for a in axes],
                   _describe_for_digest(objective), _data_digest(objective))


def _evaluate_chunk(objective: Objective, directions: torch.Tensor, axes_t: list[torch.Tensor],
                    shape: tuple[int, ...], start: int, stop: int, vmap_chunk: int
                    ) -> np.ndarray:
    """Losses at flat grid points ``start:stop``, built as θ₀ + A·D one vmapped call at a time."""
    index = np.unravel_index(np.arange(start, stop), shape)
    coeffs = torch.stack([a[torch.as_tensor(i)] for a, i in zip(axes_t, index, strict=True)], 1)
    coeffs = coeffs.to(objective.device)
    theta0 = objective.theta0[None, :]
    done = np.empty(stop - start)
    for sub in range(0, stop - start, vmap_chunk):
        # build only the parameter vectors of one vmapped call: θ₀ + A·D
        thetas = torch.addmm(theta0, coeffs[sub : sub + vmap_chunk], directions)
        done[sub : sub + thetas.shape[0]] = objective.batch(
            thetas, chunk_size=vmap_chunk).double().cpu().numpy()
    return done


def _shared_plan(plan: Callable[[], tuple[int, int, GridCheckpoint | None]],
                 checkpoint: str | os.PathLike[str] | None, fingerprint: str | None,
                 n_points: int) -> tuple[int, int, GridCheckpoint | None]:
    """Rank 0's ``plan()`` chunking on every rank; the other ranks open its checkpoint."""
    planned = dist_utils.on_rank0(plan)
    rank0 = dist_utils.rank() == 0
    vmap_chunk, chunk = dist_utils.broadcast_json(planned[:2] if rank0 else None)
    store, error = (planned[2] if rank0 else None), None
    if not rank0 and checkpoint is not None:
        try:
            store = GridCheckpoint(checkpoint, fingerprint, vmap_chunk, chunk, n_points,
                                   create=False)
        except (OSError, ValueError) as err:
            error = err
    dist_utils.raise_together(error)
    return vmap_chunk, chunk, store


def _shared_indices(indices: list[int] | None, n: int) -> list[int]:
    """Rank 0's list of indices below ``n`` on every rank (sent as a mask)."""
    mask = torch.zeros(n, dtype=torch.uint8)
    if indices:
        mask[torch.as_tensor(indices)] = 1
    return torch.nonzero(dist_utils.broadcast_tensor(mask)).flatten().tolist()


def refuse_sharded_data(objective: Objective) -> None:
    """A grid needs the full data on every rank: refuse a `DistributedObjective`."""
    if isinstance(objective, dist_utils.DistributedObjective):
        raise ValueError("sample_grid shards grid points across ranks and needs the full data on "
                         "every rank, but this is a DistributedObjective over one shard; build a "
                         "plain Objective over the full data for the grid")


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
    """Loss at every point θ₀ + Σᵢ axes[i][jᵢ]·directions[i] of the grid.

    Args:
        objective: the loss over flat parameters.
        directions: (k, P) tensor, one row per axis.
        axes: k coordinate arrays.
        chunk_size: parameter vectors per vmapped call (default: the fastest that fits
            ``memory_budget``, measured).
        points_per_chunk: points built by one matrix product and written to the checkpoint
            together (default: vmap calls grouped to at least 256 points, within the budget;
            fewer in a distributed run, so that each rank gets `MIN_CHUNKS_PER_RANK` chunks).
        memory_budget: bytes for the loss array plus one chunk (objective's budget by default).
        checkpoint: folder for resumable runs (shared by all ranks in a distributed run).
        progress: show a tqdm bar (rank 0 only in a distributed run).
        distributed: True shards the chunks across the ranks of an initialised
            torch.distributed process group (every rank must call this together); None does
            so when a group with more than one rank exists; False (default) computes the whole
            grid in this process, so code that calls it on one rank only never waits for the
            others. See below.

    Returns:
        float64 array of shape ``tuple(len(a) for a in axes)``, indexed ``"ij"``. NaN and inf
        losses are kept as they are and reported in the log.

    Distributed runs: every rank must call this with the same model, data, directions and
    axes (checked with a digest), and each evaluates every ``world_size``-th missing chunk with
    the chunking rank 0 chose (rank 0's timing, or the checkpoint's ``meta.json``). Every rank
    returns the full array, identical to one process with the same chunking and threads. With a
    checkpoint, rank 0 decides which chunks are missing, so a run can be resumed with any number
    of ranks; a rank that dies loses only the chunk it was evaluating.
    """
    directions = torch.as_tensor(directions).to(device=objective.device, dtype=objective.dtype)
    if directions.ndim != 2 or directions.shape[0] != len(axes):
        raise ValueError(f"need one direction per axis: {len(axes)} axes, directions of shape "
                         f"{tuple(directions.shape)}")
    if directions.shape[1] != objective.num_params:
        raise ValueError(f"directions have {directions.shape[1]} entries, the objective has "
                         f"{objective.num_params} parameters")
    refuse_sharded_data(objective)
    sharded = dist_utils.use_distributed(distributed)
    rank, world = (dist_utils.rank(), dist_utils.world_size()) if sharded else (0, 1)
    shape = tuple(len(a) for a in axes)
    n_points = math.prod(shape)
    fingerprint = None
    if checkpoint is not None or sharded:
        fingerprint = _fingerprint(objective, directions, axes)
    if sharded:
        dist_utils.check_agree(fingerprint, "grid fingerprint (θ₀, directions, axes, data, model)")

    def plan() -> tuple[int, int, GridCheckpoint | None]:
        estimate = estimate_grid(objective, n_points, memory_budget, chunk_size, points_per_chunk)
        points = estimate.points_per_chunk
        if points_per_chunk is None:
            points = balanced_points_per_chunk(points, n_points, estimate.chunk_size, world)
        logger.info("grid %s: %d points, %d per vmapped call, %d per chunk (~%s), estimated "
                    "%.1f s", "x".join(map(str, shape)), n_points, estimate.chunk_size, points,
                    format_bytes(points * objective.bytes_per_point()), estimate.seconds / world)
        if checkpoint is None:
            return estimate.chunk_size, points, None
        store = GridCheckpoint(checkpoint, fingerprint, estimate.chunk_size, points, n_points,
                               objective=objective_fingerprint(objective))
        return store.chunk_size, store.points_per_chunk, store

    if not sharded:
        vmap_chunk, chunk, store = plan()
    else:  # rank 0 measures and opens the checkpoint; everyone uses its chunking
        vmap_chunk, chunk, store = _shared_plan(plan, checkpoint, fingerprint, n_points)

    bounds = [(start, min(start + chunk, n_points)) for start in range(0, n_points, chunk)]
    # sharded: entries this rank does not own hold -0.0, the identity of IEEE addition (x + -0.0
    # is x bit for bit, signed zeros, inf and NaN included), so summing over ranks, where
    # exactly one rank owns each entry, reproduces every owned value exactly
    loss = np.full(n_points, -0.0) if sharded else np.empty(n_points, dtype=np.float64)

    def scan() -> list[int]:
        missing = []
        for i, (start, stop) in enumerate(bounds):
            done = store.load(start, stop) if store is not None else None
            if done is None:
                missing.append(i)
            else:
                loss[start:stop] = done
        return missing

    if not sharded:
        missing = mine = scan()
    else:  # rank 0 alone decides what is missing, so every rank agrees on the split
        missing = _shared_indices(dist_utils.on_rank0(scan), len(bounds))
        mine = dist_utils.chunks_for_rank(missing, rank, world)

    def points(chunks: list[int]) -> int:
        return sum(bounds[i][1] - bounds[i][0] for i in chunks)

    resumed, own_points = n_points - points(missing), points(mine)
    if sharded:
        logger.info("rank %d of %d evaluates %d of %d missing chunks (%d points)", rank, world,
                    len(mine), len(missing), own_points)
    axes_t = [torch.as_tensor(np.asarray(a), dtype=objective.dtype) for a in axes]
    error = None
    with progress_bar(own_points if sharded else n_points, "grid",
                      progress and rank == 0) as bar:
        bar.update(0 if sharded else resumed)
        try:
            for i in mine:
                start, stop = bounds[i]
                done = _evaluate_chunk(objective, directions, axes_t, shape, start, stop,
                                       vmap_chunk)
                if store is not None:
                    store.save(start, stop, done)
                loss[start:stop] = done
                bar.update(stop - start)
        except Exception as err:
            if not sharded:
                raise
            error = err
    if sharded:
        dist_utils.raise_together(error)
        loss = dist_utils.all_reduce_sum(torch.from_numpy(loss)).numpy()
    if resumed:
        logger.info("resumed %d of %d points from %s", resumed, n_points, checkpoint)
    report_nonfinite(loss)
    return loss.reshape(shape)


def report_nonfinite(loss: np.ndarray) -> dict[str, int]:
    """Count NaN/±inf losses and log a warning when there are any (they are never replaced)."""
    counts = {"nan": int(np.isnan(loss).sum()), "posinf": int(np.isposinf(loss).sum()),
              "neginf": int(np.isneginf(loss).sum())}
    if any(counts.values()):
        logger.warning("the grid holds non-finite losses (%s); they are kept as they are",
                       ", ".join(f"{k}={v}" for k, v in counts.items() if v))
    return counts
