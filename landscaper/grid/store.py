"""Checkpoints of a grid: a folder of finished chunks, so an interrupted run resumes.

``meta.json`` records the fingerprint of everything the grid depends on (θ₀, directions,
axes, data, model description) and the chunking; each finished chunk is one ``.npy`` file
written atomically. A checkpoint of another grid is refused, early where possible
(`check_checkpoint`, before any direction exists).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_write, write_json
from .._utils import to_numpy
from ..objective import Objective
from .spec import GridSpec

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


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


def _sorted_tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor of a batch, dict entries in key order (so that the digest does not depend
    on the order a dict was built in; `landscaper.batches.all_tensors` keeps that order)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for key in sorted(obj) for t in _sorted_tensors(obj[key])]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _sorted_tensors(item)]
    return []


def _data_digest(objective: Objective) -> str:
    return _digest(*_sorted_tensors(objective.batches))


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
            write_json(meta_file, meta, indent=None)
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
        atomic_write(self._file(start, stop), lambda handle: np.save(handle, values,
                                                                      allow_pickle=False))


def _describe_for_digest(objective: Objective) -> dict[str, Any]:
    describe = objective.describe()
    describe["device"] = objective.device.type  # cuda:0 and cuda:1 agree
    return describe


def objective_fingerprint(objective: Objective) -> str:
    """Digest of θ₀, the data and the model description: what a checkpoint can be checked
    against before any direction exists."""
    return _digest(objective.theta0, _describe_for_digest(objective), _data_digest(objective))


def grid_fingerprint(objective: Objective, spec: GridSpec, vectors: torch.Tensor) -> str:
    """Digest of everything a grid depends on (``vectors``: the directions as evaluated)."""
    return _digest(objective.theta0, vectors, *[np.asarray(a) for a in spec.axes],
                   _describe_for_digest(objective), _data_digest(objective))
