"""Grid axes: steps and extents per direction, and where θ₀ lies on them.

A grid's coordinates are multipliers of its direction vectors, θ = θ₀ + Σᵢ aᵢ·dᵢ; these
functions turn the user's ``steps`` and ``extent`` into coordinate arrays, refusing an
ambiguous or impossible request by arithmetic, before anything is evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np

from .._utils import check_count, format_bytes, parse_bytes, parse_choice


class ExtentUnit(str, Enum):
    """How a grid's extent is measured.

    Members:
        relative: the displacement along each direction reaches ±extent·‖θ₀‖ (Landscaper's
            ``distance``), i.e. aᵢ runs over ±extent·‖θ₀‖/‖dᵢ‖.
        absolute: the axis coordinates aᵢ run over ±extent (θ = θ₀ + Σ aᵢ dᵢ).
    """

    RELATIVE = "relative"
    ABSOLUTE = "absolute"


def parse_extent_unit(unit: str | ExtentUnit) -> ExtentUnit:
    """The `ExtentUnit` named by ``unit``, or an error listing the valid names."""
    return parse_choice(ExtentUnit, unit, "extent_unit")


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
