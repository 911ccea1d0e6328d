"""Saving and loading landscapes without pickle.

Format (version 1): one ``.npz`` archive holding

- ``format``: the bytes ``landscaper-landscape`` (uint8), identifying the file;
- ``metadata``: UTF-8 JSON (uint8) with ``format_version`` and every metadata field;
- ``loss``: float64 array of shape (steps_1, …, steps_k), indexed ``"ij"``;
- ``axis_0`` … ``axis_{k-1}``: float64 coordinate arrays;
- ``directions`` (optional): (k, P) array of the direction vectors.

Files are loaded with ``allow_pickle=False`` and written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"landscaper-landscape"
FORMAT_VERSION = 1


class LandscapeFileError(ValueError):
    """A file is not a readable landscaper landscape."""


def _text_array(text: str | bytes) -> np.ndarray:
    data = text.encode() if isinstance(text, str) else text
    return np.frombuffer(data, dtype=np.uint8)


def write_arrays_atomic(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """Write an ``.npz`` archive atomically (no partial file is ever visible at ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        np.savez_compressed(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
    return path


def save_landscape(
    path: str | os.PathLike[str],
    loss: np.ndarray,
    axes: list[np.ndarray],
    metadata: dict[str, Any],
    directions: np.ndarray | None = None,
) -> Path:
    """Write a landscape in format version 1 (see the module docstring)."""
    meta = {"format_version": FORMAT_VERSION, **metadata}
    arrays = {
        "format": _text_array(MAGIC),
        "metadata": _text_array(json.dumps(meta, allow_nan=True, default=str)),
        "loss": np.asarray(loss, dtype=np.float64),
    }
    for i, axis in enumerate(axes):
        arrays[f"axis_{i}"] = np.asarray(axis, dtype=np.float64)
    if directions is not None:
        arrays["directions"] = np.asarray(directions)
    return write_arrays_atomic(path, arrays)


def load_landscape(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, list[np.ndarray], dict[str, Any], np.ndarray | None]:
    """Read ``(loss, axes, metadata, directions_or_None)``; raises `LandscapeFileError`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no landscape file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "format" not in archive.files or archive["format"].tobytes() != MAGIC:
                raise LandscapeFileError(f"{path} is not a landscaper landscape file")
            meta = json.loads(archive["metadata"].tobytes().decode())
            version = meta.get("format_version")
            if version != FORMAT_VERSION:
                raise LandscapeFileError(
                    f"{path} has format version {version}; this landscaper reads version "
                    f"{FORMAT_VERSION}: upgrade landscaper to read it")
            loss = archive["loss"]
            n_axes = sum(1 for name in archive.files if name.startswith("axis_"))
            axes = [archive[f"axis_{i}"] for i in range(n_axes)]
            directions = archive["directions"] if "directions" in archive.files else None
    except LandscapeFileError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError,
            json.JSONDecodeError) as err:
        raise LandscapeFileError(
            f"{path} is not a readable landscaper landscape (corrupted, truncated or a foreign "
            f"format: {err}); recompute it or load the original file") from err
    if loss.shape != tuple(len(a) for a in axes):
        raise LandscapeFileError(f"{path} is inconsistent: loss shape {loss.shape} does not match "
                                 f"axes of lengths {[len(a) for a in axes]}")
    return loss, axes, meta, directions
