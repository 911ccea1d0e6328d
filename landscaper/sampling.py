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
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._utils import format_bytes, parse_bytes, progress_bar
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


def grid_axes(
    steps: int | Sequence[int],
    extent: float | Sequence[float] | Sequence[tuple[float, float]],
    dims: int,
    *,
    unit: str | ExtentUnit = "absolute",
    theta0_norm: float = 1.0,
    direction_norms: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """The coordinate axes of a ``dims``-dimensional grid (multipliers of each direction).

    ``steps`` and ``extent`` may be one value for every axis or one per axis; an extent is a
    half-width ``e`` (the axis runs over [−e, e]) or a pair ``(low, high)``.
    """
    unit = ExtentUnit(unit)
    steps_list = [int(steps)] * dims if np.isscalar(steps) else [int(s) for s in steps]
    if isinstance(extent, (int, float, np.floating, np.integer)):
        extents: list[Any] = [float(extent)] * dims
    else:
        extents = list(extent)
        if len(extents) == 2 and dims != 2 and all(np.isscalar(e) for e in extents):
            extents = [tuple(extents)] * dims
    if len(steps_list) != dims or len(extents) != dims:
        raise ValueError(f"got {len(steps_list)} step counts and {len(extents)} extents for a "
                         f"{dims}-dimensional grid; give one value or one per direction")
    if any(s < 1 for s in steps_list):
        raise ValueError(f"steps must be >= 1 on every axis, got {steps_list}")
    norms = [1.0] * dims if direction_norms is None else list(direction_norms)
    axes = []
    for i, (n_steps, ext) in enumerate(zip(steps_list, extents, strict=True)):
        low, high = (-float(ext), float(ext)) if np.isscalar(ext) else map(float, ext)
        if not (np.isfinite(low) and np.isfinite(high)) or high <= low and n_steps > 1:
            raise ValueError(f"axis {i}: the extent must be finite and positive, got {ext!r}; "
                             "pass e.g. extent=0.5 or extent=(-0.5, 1.0)")
        scale = theta0_norm / norms[i] if unit is ExtentUnit.RELATIVE else 1.0
        axes.append(np.linspace(low, high, n_steps) * scale)
    return axes


def grid_coordinates(axes: Sequence[np.ndarray], start: int = 0, stop: int | None = None
                     ) -> np.ndarray:
    """Coordinates of flat grid points ``start:stop`` in C order (``indexing="ij"``)."""
    shape = tuple(len(a) for a in axes)
    stop = math.prod(shape) if stop is None else stop
    index = np.unravel_index(np.arange(start, stop), shape)
    return np.stack([axis[i] for axis, i in zip(axes, index, strict=True)], axis=1)


#: Grid points built and written per chunk are at least this many (vmap chunks are grouped).
MIN_POINTS_PER_CHUNK = 256


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
                          f"the memory budget {format_bytes(budget)}; use fewer steps or dims")
    most = max(1, min(objective.chunk_size(budget - result_bytes), n_points))
    if chunk_size is None:
        chunk, per_point = objective.tune_chunk_size(most, max_points=max(8, n_points // 16))
    else:
        chunk = max(1, min(chunk_size, n_points))
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


def _digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for item in arrays:
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().contiguous().numpy()
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


class GridCheckpoint:
    """A folder of finished chunks: ``meta.json`` plus one ``.npy`` per chunk, written atomically.

    The fingerprint covers θ₀, the directions, the axes, the data and the model description, so a
    checkpoint written for another grid, model or direction set is refused.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: str, chunk_size: int,
                 points_per_chunk: int, n_points: int) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        meta_file = self.path / "meta.json"
        meta = {"version": CHECKPOINT_VERSION, "fingerprint": fingerprint,
                "chunk_size": chunk_size, "points_per_chunk": points_per_chunk,
                "n_points": n_points}
        if meta_file.exists():
            try:
                stored = json.loads(meta_file.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{meta_file} is not a landscaper checkpoint (unreadable JSON); "
                                 "delete the folder or choose another checkpoint path") from err
            if stored.get("fingerprint") != fingerprint or stored.get("n_points") != n_points:
                raise ValueError(
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
) -> np.ndarray:
    """Loss at every point θ₀ + Σᵢ axes[i][jᵢ]·directions[i] of the grid.

    Args:
        objective: the loss over flat parameters.
        directions: (k, P) tensor, one row per axis.
        axes: k coordinate arrays.
        chunk_size: parameter vectors per vmapped call (default: the fastest that fits
            ``memory_budget``, measured).
        points_per_chunk: points built by one matrix product and written to the checkpoint
            together (default: vmap calls grouped to at least 256 points, within the budget).
        memory_budget: bytes for the loss array plus one chunk (objective's budget by default).
        checkpoint: folder for resumable runs.
        progress: show a tqdm bar.

    Returns:
        float64 array of shape ``tuple(len(a) for a in axes)``, indexed ``"ij"``. NaN and inf
        losses are kept as they are and reported in the log.
    """
    directions = torch.as_tensor(directions).to(device=objective.device, dtype=objective.dtype)
    if directions.ndim != 2 or directions.shape[0] != len(axes):
        raise ValueError(f"need one direction per axis: {len(axes)} axes, directions of shape "
                         f"{tuple(directions.shape)}")
    if directions.shape[1] != objective.num_params:
        raise ValueError(f"directions have {directions.shape[1]} entries, the objective has "
                         f"{objective.num_params} parameters")
    shape = tuple(len(a) for a in axes)
    n_points = math.prod(shape)
    estimate = estimate_grid(objective, n_points, memory_budget, chunk_size, points_per_chunk)
    logger.info("grid %s: %d points, %d per vmapped call, %d per chunk (~%s), estimated %.1f s",
                "x".join(map(str, shape)), n_points, estimate.chunk_size,
                estimate.points_per_chunk, format_bytes(estimate.bytes_per_chunk),
                estimate.seconds)
    vmap_chunk, chunk = estimate.chunk_size, estimate.points_per_chunk
    store = None
    if checkpoint is not None:
        fingerprint = _digest(objective.theta0, directions, *[np.asarray(a) for a in axes],
                              objective.describe(), _data_digest(objective))
        store = GridCheckpoint(checkpoint, fingerprint, vmap_chunk, chunk, n_points)
        vmap_chunk, chunk = store.chunk_size, store.points_per_chunk
    loss = np.empty(n_points, dtype=np.float64)
    axes_t = [torch.as_tensor(np.asarray(a), dtype=objective.dtype) for a in axes]
    theta0 = objective.theta0[None, :]
    resumed = 0
    with progress_bar(n_points, "grid", progress) as bar:
        for start in range(0, n_points, chunk):
            stop = min(start + chunk, n_points)
            done = store.load(start, stop) if store is not None else None
            if done is None:
                index = np.unravel_index(np.arange(start, stop), shape)
                coeffs = torch.stack([a[torch.as_tensor(i)] for a, i in zip(axes_t, index,
                                                                            strict=True)], 1)
                coeffs = coeffs.to(objective.device)
                done = np.empty(stop - start)
                for sub in range(0, stop - start, vmap_chunk):
                    # build only the parameter vectors of one vmapped call: θ₀ + A·D
                    thetas = torch.addmm(theta0, coeffs[sub : sub + vmap_chunk], directions)
                    done[sub : sub + thetas.shape[0]] = objective.batch(
                        thetas, chunk_size=vmap_chunk).double().cpu().numpy()
                if store is not None:
                    store.save(start, stop, done)
            else:
                resumed += stop - start
            loss[start:stop] = done
            bar.update(stop - start)
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
