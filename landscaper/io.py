"""Saving and loading landscapes without pickle.

Format (version 1): one ``.npz`` archive holding

- ``format``: the bytes ``landscaper-landscape`` (uint8), identifying the file;
- ``metadata``: UTF-8 JSON (uint8) with ``format_version``, ``format_members`` (names of the
  other arrays, so that a damaged zip directory cannot silently drop one) and every metadata
  field; strict JSON, non-finite numbers written as ``"nan"``/``"inf"``/``"-inf"`` (files of
  earlier releases hold bare ``NaN`` tokens, which read as well);
- ``loss``: float64 array of shape (steps_1, …, steps_k), indexed ``"ij"``;
- ``axis_0`` … ``axis_{k-1}``: float64 coordinate arrays;
- ``directions`` (optional): (k, P) array of the direction vectors.

Files are written atomically (temp file + rename) and read member by member with
``allow_pickle=False``, checking each member's CRC-32; a file that is not an intact landscape
raises `LandscapeFileError`.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write, dumps, loads

MAGIC = b"landscaper-landscape"
FORMAT_VERSION = 1


class LandscapeFileError(ValueError):
    """A file is not a readable landscaper landscape."""


def _text_array(text: str | bytes) -> np.ndarray:
    data = text.encode() if isinstance(text, str) else text
    return np.frombuffer(data, dtype=np.uint8)


def write_arrays_atomic(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """Write an ``.npz`` archive atomically (no partial file is ever visible at ``path``)."""
    return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))


def save_landscape(
    path: str | os.PathLike[str],
    loss: np.ndarray,
    axes: list[np.ndarray],
    metadata: dict[str, Any],
    directions: np.ndarray | None = None,
) -> Path:
    """Write a landscape in format version 1 (see the module docstring)."""
    arrays = {"loss": np.asarray(loss, dtype=np.float64)}
    for i, axis in enumerate(axes):
        arrays[f"axis_{i}"] = np.asarray(axis, dtype=np.float64)
    if directions is not None:
        if hasattr(directions, "detach"):  # a torch tensor, possibly on a GPU
            directions = directions.detach().cpu().numpy()
        arrays["directions"] = np.asarray(directions)
    meta = {"format_version": FORMAT_VERSION, **metadata, "format_members": sorted(arrays)}
    arrays["format"] = _text_array(MAGIC)
    arrays["metadata"] = _text_array(dumps(meta))
    return write_arrays_atomic(path, arrays)


def _read_members(path: Path) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of the archive, streamed and read to its end so that zip's CRC-32
    is always verified (the check runs at end of stream, which a reader stopping at the end of
    the array data could miss), without holding a second copy of the member in memory.

    Arrays holding Python objects are refused (``allow_pickle=False``): nothing is unpickled.
    """
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise LandscapeFileError(f"{path} holds an unexpected member {info.filename!r}")
            with archive.open(info) as stream:
                array = np.lib.format.read_array(stream, allow_pickle=False)
                if stream.read(1):  # also reaches the end: BadZipFile on a CRC mismatch
                    raise LandscapeFileError(f"{path}: member {info.filename!r} has trailing "
                                             "data after its array")
            arrays[info.filename[:-4]] = array
    return arrays


def _check_structure(path: Path, arrays: dict[str, np.ndarray]) -> None:
    if arrays["loss"].dtype.kind != "f":
        raise LandscapeFileError(f"{path}: loss has dtype {arrays['loss'].dtype}, not float")
    n_axes = arrays["loss"].ndim
    names = {f"axis_{i}" for i in range(n_axes)}
    found = {name for name in arrays if name.startswith("axis_")}
    if found != names:
        raise LandscapeFileError(f"{path}: a {n_axes}-D loss needs members {sorted(names)}, "
                                 f"found {sorted(found)}")
    for name in sorted(names):
        if arrays[name].ndim != 1 or arrays[name].dtype.kind != "f":
            raise LandscapeFileError(f"{path}: {name} must be a 1-D float array, got "
                                     f"{arrays[name].dtype} of shape {arrays[name].shape}")
    directions = arrays.get("directions")
    if directions is not None and (directions.ndim != 2 or directions.shape[0] != n_axes
                                   or directions.dtype.kind != "f"):
        raise LandscapeFileError(f"{path}: directions must be a ({n_axes}, P) float array, got "
                                 f"{directions.dtype} of shape {directions.shape}")


def load_landscape(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, list[np.ndarray], dict[str, Any], np.ndarray | None]:
    """Read ``(loss, axes, metadata, directions_or_None)``; raises `LandscapeFileError`.

    Any file that is not an intact landscape (truncated, bit-flipped, a foreign ``.npz``, a
    pickle) raises `LandscapeFileError`; nothing in it is ever unpickled.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no landscape file at {path}")
    try:
        arrays = _read_members(path)
        if "format" not in arrays or arrays["format"].tobytes() != MAGIC:
            raise LandscapeFileError(f"{path} is not a landscaper landscape file")
        meta = loads(arrays["metadata"].tobytes().decode())
        if not isinstance(meta, dict):
            raise LandscapeFileError(f"{path}: metadata is not a JSON object")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise LandscapeFileError(
                f"{path} has format version {version}; this landscaper reads version "
                f"{FORMAT_VERSION}: upgrade landscaper to read it")
        members = meta.pop("format_members", None)  # absent in files of earlier 1.x releases
        found = sorted(set(arrays) - {"format", "metadata"})
        if members is not None and found != sorted(members):
            raise LandscapeFileError(f"{path} is damaged: its zip directory lists arrays {found}, "
                                     f"its metadata {sorted(members)}; recompute it or load "
                                     "the original file")
        _check_structure(path, arrays)
    except LandscapeFileError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, RuntimeError, UnicodeDecodeError, struct.error) as err:
        # NotImplementedError / RuntimeError: zipfile on a damaged header (an "unsupported
        # compression method" or an "encrypted" flag); ValueError covers pickled content.
        raise LandscapeFileError(
            f"{path} is not a readable landscaper landscape (corrupted, truncated or a foreign "
            f"format: {type(err).__name__}: {err}); recompute it or load the original file"
        ) from err
    loss = arrays["loss"].astype(np.float64, copy=False)
    axes = [arrays[f"axis_{i}"].astype(np.float64, copy=False) for i in range(loss.ndim)]
    if loss.shape != tuple(len(a) for a in axes):
        raise LandscapeFileError(f"{path} is inconsistent: loss shape {loss.shape} does not match "
                                 f"axes of lengths {[len(a) for a in axes]}")
    return loss, axes, meta, arrays.get("directions")
