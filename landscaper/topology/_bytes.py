"""Byte sizes read from and written for people (``"2GiB"`` and ``1.9 GiB``).

Pure Python, so `topology` (the lowest layer) can check its memory budget without importing
anything above it; `landscaper._utils` re-exports both functions for the rest of the package.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}


def parse_bytes(size: int | float | str) -> int:
    """Return a byte count from an int or a string such as ``"2GiB"`` or ``"500 MB"``."""
    if isinstance(size, (int, float)):
        if size <= 0:
            raise ValueError(f"a memory budget must be positive, got {size!r}")
        return int(size)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", size)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {size!r} as a size; write e.g. 2_000_000_000 or '2GiB'")
    return parse_bytes(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_bytes(n: float) -> str:
    """Human-readable binary size."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
