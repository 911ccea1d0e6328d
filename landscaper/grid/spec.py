"""What a grid is: its directions, its axes and how its extent was asked for.

A `GridRequest` is what the caller asks for before any direction exists (dimension, steps,
extent and its unit); a `GridSpec` is the frozen grid itself once the directions are known.
Neither evaluates anything: planning is `landscaper.grid.plan`, evaluation
`landscaper.grid.execute`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._utils import check_count
from ..directions import Directions
from .axes import (
    ExtentUnit,
    axis_steps,
    check_grid_size,
    extent_ranges,
    grid_axes,
    grid_coordinates,
    parse_extent_unit,
)
from .extent_scan import AutoExtent, parse_auto_extent


def subspace_points(theta0: torch.Tensor, coefficients: torch.Tensor,
                    directions: torch.Tensor) -> torch.Tensor:
    """The parameter vectors θ₀ + A·D for coefficient rows A (n, k) and directions D (k, P),
    built with one matrix product."""
    return torch.addmm(theta0[None, :], coefficients, directions)


def _jsonable_extent(extent: Any) -> Any:
    if isinstance(extent, np.ndarray):
        extent = extent.tolist()
    if np.isscalar(extent):
        return float(extent)
    return [float(e) if np.isscalar(e) else [float(v) for v in e] for e in extent]


@dataclass(frozen=True)
class GridRequest:
    """The grid a caller asks for, checked before any direction is computed.

    Attributes:
        dims: grid dimension k (None: 2, or the number of given directions).
        steps: points per axis (one value or one per axis).
        extent: half-width per axis (or ``(low, high)`` pairs), in ``extent_unit``; or
            ``"auto"`` / an `AutoExtent`, chosen by 1-D scans once the directions exist.
        extent_unit: ``"relative"`` (displacement up to extent·‖θ₀‖) or ``"absolute"``.
    """

    dims: int | None = None
    steps: int | Sequence[int] = 41
    extent: float | Sequence[Any] | str | AutoExtent = 0.01
    extent_unit: str | ExtentUnit = "relative"

    def __post_init__(self) -> None:
        if self.dims is not None:  # a whole-number float such as 2.0 is the integer 2
            object.__setattr__(self, "dims", check_count("dims", self.dims))

    @property
    def unit(self) -> ExtentUnit:
        """The parsed extent unit."""
        return parse_extent_unit(self.extent_unit)

    @property
    def auto(self) -> AutoExtent | None:
        """The rule of an automatic extent (``extent="auto"`` or an `AutoExtent`), else None."""
        return parse_auto_extent(self.extent)

    def check_forms(self, k: int | None) -> None:
        """Refuse a malformed unit, steps or extent (the latter two once k is known; dims is
        checked when the request is made)."""
        self.unit  # noqa: B018 - parsing is the check
        auto = self.auto
        if k is not None:
            axis_steps(self.steps, k)
            if auto is None:
                extent_ranges(self.extent, k)

    def check_size(self, k: int, memory_budget: int | str) -> int:
        """Check steps and extent for a k-dimensional grid and its size against the budget, by
        arithmetic before anything proportional to the grid; returns the number of points."""
        n_points = check_grid_size(axis_steps(self.steps, k), memory_budget)
        if self.auto is None:  # an automatic extent is only known after its scan
            grid_axes(self.steps, self.extent, k)  # the axes themselves (one step on a range)
        return n_points


@dataclass(frozen=True, eq=False)
class GridSpec:
    """A grid in a subspace: the points ``θ₀ + Σᵢ axes[i][jᵢ]·dᵢ``, indexed ``"ij"``.

    Attributes:
        directions: the `Directions` (vectors, kind, eigenvalues, ...).
        axes: k coordinate arrays (multipliers of each direction vector).
        extent: the extent as asked for (JSON form), None when the axes were given directly.
        extent_unit: the unit of ``extent``.
        theta0_norm: ‖θ₀‖ a relative extent was scaled with (None when not used).
    """

    directions: Directions
    axes: tuple[np.ndarray, ...]
    extent: Any = None
    extent_unit: ExtentUnit = ExtentUnit.ABSOLUTE
    theta0_norm: float | None = None

    @classmethod
    def build(cls, directions: Directions, request: GridRequest,
              theta0_norm: float) -> GridSpec:
        """The grid of ``request`` along ``directions`` (a relative extent scales each axis by
        ‖θ₀‖/‖dᵢ‖)."""
        axes = grid_axes(request.steps, request.extent, directions.k, unit=request.unit,
                         theta0_norm=theta0_norm,
                         direction_norms=directions.vectors.norm(dim=1).tolist())
        return cls(directions, tuple(axes), _jsonable_extent(request.extent), request.unit,
                   theta0_norm)

    @classmethod
    def from_axes(cls, vectors: torch.Tensor | Directions, axes: Sequence[np.ndarray]
                  ) -> GridSpec:
        """A grid from direction vectors (k, P) and k coordinate arrays given directly."""
        dirs = vectors if isinstance(vectors, Directions) else Directions(
            torch.as_tensor(vectors), "user")
        return cls(dirs, tuple(np.asarray(a) for a in axes))

    @property
    def k(self) -> int:
        """Grid dimension."""
        return len(self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Points per axis."""
        return tuple(len(a) for a in self.axes)

    @property
    def n_points(self) -> int:
        """Number of grid points."""
        return math.prod(self.shape)

    def coefficients(self, start: int, stop: int) -> np.ndarray:
        """(stop − start, k) coordinates of flat grid points ``start:stop`` (C order)."""
        return grid_coordinates(self.axes, start, stop)

    def describe(self) -> dict[str, Any]:
        """The metadata entries of this grid (JSON-friendly; no vectors)."""
        record: dict[str, Any] = {"directions": self.directions.describe()}
        if self.extent is not None:
            record.update(extent=self.extent, extent_unit=self.extent_unit.value,
                          extent_ranges=[list(r) for r in extent_ranges(self.extent, self.k)])
        if self.theta0_norm is not None:
            record["theta0_norm"] = self.theta0_norm
        return record
