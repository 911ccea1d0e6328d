"""Writing files atomically, and the one JSON form of every file landscaper writes.

Every file is written to a temporary file in the same folder, flushed to disk and renamed
over the target, so a crash never leaves a partial file at the path.

JSON is strict (no ``NaN``/``Infinity`` tokens, which many readers refuse). A non-finite float
is written as the string ``"nan"``, ``"inf"`` or ``"-inf"``, so that it stays visible and
distinguishable (``float("inf")`` reads it back); `loads` restores these three strings to floats
(outside free-text fields such as ``description``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

#: How a non-finite float is written in JSON, and read back.
NONFINITE_TOKENS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it and rename it over
    ``path`` (creating the folder), so ``path`` holds either the old or the whole new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays as Python numbers and lists, tuples as lists,
    keys as strings and non-finite floats as ``"nan"``/``"inf"``/``"-inf"``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON of ``value`` (see `jsonable`); anything else JSON lacks is written as str."""
    return json.dumps(jsonable(value), allow_nan=False, default=str, **kwargs)


def _restore(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, str) and value in NONFINITE_TOKENS:
        return NONFINITE_TOKENS[value]
    return value


def loads(text: str | bytes, *, verbatim: tuple[str, ...] = ("description",)) -> Any:
    """Parse JSON written by `dumps`, non-finite tokens back to floats, except under the
    top-level keys ``verbatim`` (free text, where ``"nan"`` is a word); files of earlier releases
    with bare ``NaN``/``Infinity`` tokens read too."""
    value = json.loads(text)
    if not isinstance(value, dict):
        return _restore(value)
    return {k: v if k in verbatim else _restore(v) for k, v in value.items()}


def write_json(path: str | os.PathLike[str], value: Any, *, indent: int | None = 2) -> Path:
    """Write ``value`` as strict JSON (see `dumps`), atomically."""
    return write_text(path, dumps(value, indent=indent))
