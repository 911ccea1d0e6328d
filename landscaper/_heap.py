"""Keeping freed memory in the process while a grid is evaluated (glibc's malloc only).

A grid allocates and frees the same activation tensors thousands of times. glibc serves an
allocation above its mmap threshold (dynamic, from 128 KiB) with a fresh mapping and gives
the top of its heap back to the system above its trim threshold, so the same pages are
faulted in again at every chunk. Measured here on the convection PINN grid (chunks of 16
points, 1,000 collocation points): 30–70k minor page faults per 256 points and 1.4–2.0 ms
per point, against no new faults and 1.0–1.3 ms per point with both thresholds raised.

`retained_heap` raises them while its block runs and afterwards trims the heap, leaving
the thresholds where glibc's own dynamic rule ends for large blocks (mmap above 32 MiB, trim
above 64 MiB): later code in the process sees the allocator as after any large workload.
Where the user has set the thresholds themselves (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or their ``GLIBC_TUNABLES`` names, e.g. to measure memory in use)
their settings stand and it does nothing; elsewhere (macOS, Windows, musl) likewise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The largest mmap threshold glibc accepts on 64-bit systems (its dynamic rule's ceiling).
_MMAP_THRESHOLD = 32 * 2**20
#: Nothing is trimmed inside the block (mallopt takes a C int).
_TRIM_WHILE_RUNNING = 2**31 - 1
#: After the block: twice the mmap threshold, as glibc's dynamic rule sets it.
_TRIM_AFTER = 2 * _MMAP_THRESHOLD

#: Environment settings by which a user fixes the thresholds; glibc honours them and so do we.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")

_lock = threading.Lock()
_depth = 0
_libc: Any = None


def _glibc() -> Any:
    """glibc's handle with ``mallopt`` and ``malloc_trim``, or None on other C libraries."""
    global _libc
    if _libc is None:
        _libc = False
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6")
            if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") and hasattr(
                    libc, "gnu_get_libc_version"):
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = libc
        except OSError:
            pass
    return _libc or None


def _user_set_thresholds() -> bool:
    """Whether the environment fixes glibc's mmap or trim threshold."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(name in os.environ for name in _USER_SETTINGS) or any(
        name in tunables for name in _USER_TUNABLES)


@contextmanager
def retained_heap() -> Iterator[None]:
    """Freed memory stays in the process while the block runs (see the module docstring);
    re-entrant and thread-safe, a no-op where the C library is not glibc or the user has set
    the thresholds."""
    global _depth
    libc = _glibc()
    if libc is None or _user_set_thresholds():
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_WHILE_RUNNING)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER)
                libc.malloc_trim(0)


def keeps_heap(fn: F) -> F:
    """``fn`` run inside `retained_heap` (for the grid executors' ``run``)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with retained_heap():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]
