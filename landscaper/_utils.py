"""Small helpers shared by several modules (byte sizes, timing, progress bars, arrays).

Byte sizes are defined in `landscaper.topology._bytes` (topology imports nothing above it).
Files and JSON: `landscaper._files`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .topology._bytes import format_bytes, parse_bytes

__all__ = ["Stopwatch", "check_count", "format_bytes", "parse_bytes", "progress_bar", "timed",
           "seeded_cuda_devices", "to_numpy"]


class Stopwatch:
    """Wall time since construction (the one timer of the package)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds elapsed so far."""
        return time.perf_counter() - self._start


@contextmanager
def timed(logger: logging.Logger, what: str) -> Iterator[dict[str, float]]:
    """Log how long a stage took; yields a dict that receives ``seconds`` at the end."""
    record: dict[str, float] = {}
    watch = Stopwatch()
    logger.info("%s ...", what)
    try:
        yield record
    finally:
        record["seconds"] = watch.seconds
        logger.info("%s done in %.3f s", what, record["seconds"])


def nested_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` and in the lists, tuples and mappings it holds."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


@contextmanager
def serial_numpy_blas() -> Iterator[None]:
    """NumPy's and SciPy's BLAS on one thread inside the block (torch's own threads untouched).

    For loops that interleave small NumPy linear algebra (a Lanczos step's eigh of a projected
    matrix) with torch products: OpenBLAS's threads keep spinning after each small call and
    take the cores from torch's next product. On 2 cores, top-20 Lanczos on a 4,810-parameter
    MLP took 0.60 s with them and 0.12 s without (same products, same result).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar, or a silent stand-in when ``enabled`` is False."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def seeded_cuda_devices(device: torch.device) -> list[int]:
    """The CUDA devices a ``torch.manual_seed`` on ``device`` changes (all of them, since it
    seeds every device), for ``torch.random.fork_rng(devices=...)``; none off CUDA."""
    return list(range(torch.cuda.device_count())) if device.type == "cuda" else []


def to_numpy(tensor: torch.Tensor, *, exact_bits: bool = False) -> np.ndarray:
    """A NumPy copy of ``tensor``; bfloat16, which NumPy lacks, becomes float32 (exact), or its
    raw 16-bit patterns with ``exact_bits`` (for digests)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16) if exact_bits else tensor.float()
    return tensor.numpy()


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``; integral floats are accepted, anything else refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float,
                                                                     np.floating)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not float(value).is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}; pass e.g. "
                         f"{name}={max(minimum, round(float(value)))}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


E = TypeVar("E", bound=Enum)


def parse_choice(choices: type[E], value: Any, name: str) -> E:
    """The member of the string enum ``choices`` named by ``value``, or an error listing the
    valid names (``"which must be 'LA', 'LM' or 'SA', got 'XX'"``)."""
    try:
        return choices(value)
    except ValueError:
        names = [repr(str(member.value)) for member in choices]
        listed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise ValueError(f"{name} must be {listed}, got {value!r}") from None
