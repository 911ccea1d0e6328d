"""`Landscape`: a loss grid in a k-dimensional subspace, with its metadata, files and plots."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as dist_utils
from . import io, topology
from ._utils import check_count, to_numpy
from .directions import (
    Directions,
    check_direction_count,
    hessian_directions,
    random_directions,
    user_directions,
)
from .hessian import parse_which
from .objective import Objective
from .sampling import (
    ExtentUnit,
    axis_steps,
    check_checkpoint,
    check_checkpoint_path,
    check_grid_size,
    extent_ranges,
    grid_axes,
    grid_coordinates,
    nearest_origin_index,
    origin_index,
    parse_extent_unit,
    refuse_sharded_data,
    report_nonfinite,
    sample_grid,
)

logger = logging.getLogger(__name__)

#: Directions are stored in saved files by default only below this size.
STORE_DIRECTIONS_MAX_BYTES = 100 * 2**20


def _library_version() -> str:
    from . import __version__

    return __version__


def _broadcast_directions(dirs: Directions) -> Directions:
    """Rank 0's direction vectors (and eigenvalues) on every rank of a distributed run."""
    layout = [list(dirs.vectors.shape), str(dirs.vectors.dtype), dirs.eigenvalues is None]
    dist_utils.check_agree(repr(layout), "number, length or dtype of directions")
    vectors = dist_utils.broadcast_tensor(dirs.vectors)
    eigenvalues = dirs.eigenvalues
    if eigenvalues is not None:
        values = torch.as_tensor(np.asarray(eigenvalues, dtype=np.float64))
        eigenvalues = dist_utils.broadcast_tensor(values).numpy()
    return dataclasses.replace(dirs, vectors=vectors, eigenvalues=eigenvalues)


def _planned_dims(directions: Any, dims: Any) -> int | None:
    """The grid dimension when it is known before the objective exists, checking ``dims`` and
    a direction name; None for direction arrays (counted once they are checked)."""
    if dims is not None:
        dims = check_count("dims", dims)
    if isinstance(directions, str):
        if directions not in ("hessian", "random"):
            raise ValueError(f"unknown directions {directions!r}: use 'hessian', 'random', a "
                             "Directions object or a (k, P) array")
        return 2 if dims is None else dims
    if isinstance(directions, Directions):
        if dims is not None and dims > directions.k:
            raise ValueError(f"dims={dims} but only {directions.k} directions were given; pass "
                             f"dims<={directions.k} or more directions")
        return directions.k if dims is None else dims
    return None


def _check_grid_request(steps: Any, extent: Any, k: int, memory_budget: int | str) -> int:
    """Check steps and extent for a k-dimensional grid and its size against the budget, by
    arithmetic before anything proportional to the grid; returns the number of points."""
    n_points = check_grid_size(axis_steps(steps, k), memory_budget)
    grid_axes(steps, extent, k)  # the axes themselves (one step on a range is refused)
    return n_points


def _jsonable_extent(extent: Any) -> Any:
    if isinstance(extent, np.ndarray):
        extent = extent.tolist()
    if np.isscalar(extent):
        return float(extent)
    return [float(e) if np.isscalar(e) else [float(v) for v in e] for e in extent]


def _theta0_record(objective: Objective, loss: np.ndarray, axes: Sequence[np.ndarray]
                   ) -> dict[str, Any]:
    """Where θ₀ is on the grid and its loss: read from the grid when θ₀ is one of its points,
    evaluated otherwise (so a "centre" value is never a neighbour's)."""
    index = origin_index(axes)
    if index is not None:
        value = float(loss[index])
    else:
        with torch.no_grad():
            value = float(objective())
    return {"on_grid": index is not None, "index": None if index is None else list(index),
            "loss": value}


class Landscape:
    """Loss values on a grid ``loss[i, j, …]`` at ``(axes[0][i], axes[1][j], …)`` ("ij" order).

    Build one with `Landscape.compute` (from a model) or `Landscape.from_arrays` (from a
    landscape computed elsewhere); reload a saved one with `Landscape.load`.

    Attributes:
        loss: read-only float64 array of shape (steps_1, …, steps_k); NaN/inf are kept as
            computed (topology ranks them above every finite value).
        axes: k coordinate arrays (multipliers of each direction vector).
        metadata: JSON-friendly dict (directions, eigenvalues, extent and units, parameter
            subset, model/data description, library version, timings, non-finite counts).
        directions: (k, P) array of direction vectors, or None when not stored.
    """

    def __init__(self, loss: np.ndarray, axes: Sequence[np.ndarray],
                 metadata: dict[str, Any] | None = None,
                 directions: np.ndarray | torch.Tensor | None = None) -> None:
        loss = np.array(loss, dtype=np.float64)  # own copy, read-only: topology is cached
        loss.setflags(write=False)
        axes = [np.asarray(a, dtype=np.float64).reshape(-1) for a in axes]
        if loss.ndim != len(axes) or loss.shape != tuple(len(a) for a in axes):
            raise ValueError(f"loss of shape {loss.shape} needs {loss.ndim} axes of lengths "
                             f"{loss.shape}; got axes of lengths {[len(a) for a in axes]}")
        for i, axis in enumerate(axes):
            if len(axis) > 1 and not np.all(np.diff(axis) > 0):
                raise ValueError(f"axis {i} must be strictly increasing")
        self.loss = loss
        self.axes = axes
        self.metadata: dict[str, Any] = dict(metadata or {})
        if isinstance(directions, torch.Tensor):
            directions = to_numpy(directions)
        self.directions = directions
        self.metadata["nonfinite"] = report_nonfinite(loss)
        self._cache: dict[tuple[Any, ...], Any] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, loss: np.ndarray, axes: Sequence[np.ndarray],
                    metadata: dict[str, Any] | None = None) -> Landscape:
        """Wrap a loss array (indexed ``"ij"``) and its coordinate axes."""
        meta = {"source": "from_arrays", "library_version": _library_version(),
                **(metadata or {})}
        return cls(loss, axes, meta)

    @classmethod
    def compute(
        cls,
        model: nn.Module | None = None,
        data: Any = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        *,
        objective: Objective | None = None,
        dims: int | None = None,
        steps: int | Sequence[int] = 41,
        extent: float | Sequence[Any] = 0.01,
        extent_unit: str | ExtentUnit = "relative",
        directions: str | Directions | np.ndarray | torch.Tensor | Sequence[Any] = "hessian",
        params: str | Sequence[str] | None = None,
        which: str = "LA",
        seed: int = 0,
        checkpoint: str | os.PathLike[str] | None = None,
        memory_budget: int | str = "2GiB",
        chunk_size: int | None = None,
        points_per_chunk: int | None = None,
        progress: bool = True,
        description: str | dict[str, Any] | None = None,
        store_directions: bool | None = None,
        distributed: bool | None = False,
        **objective_kwargs: Any,
    ) -> Landscape:
        """Sample the loss of a model on a grid around its parameters.

        Args:
            model, data, loss_fn: as for `Objective` (or pass ``objective=`` instead).
            dims: grid dimension k (default 2, or the number of given directions).
            steps: points per axis (one value or one per axis).
            extent: half-width per axis (or ``(low, high)`` pairs), in ``extent_unit``.
            extent_unit: ``"relative"`` (displacement up to extent·‖θ₀‖, Landscaper's
                convention) or ``"absolute"`` (coordinates are direction multipliers).
            directions: ``"hessian"`` (top-k eigenvectors, default), ``"random"``
                (filter-normalised), a `Directions`, or a (k, P) array / list of dicts.
            params: parameter subset forming θ (names or shell patterns).
            which: Hessian eigenvalue selection for ``"hessian"`` directions.
            seed: seed for random directions and the Lanczos start vector.
            checkpoint: folder making the run resumable.
            memory_budget: bytes for batched evaluation (a string such as ``"4GiB"`` works).
            chunk_size: parameter vectors per vmapped call (default: fastest within budget).
            points_per_chunk: points per built-and-checkpointed chunk (default ≥ 256).
            progress: show progress bars.
            description: free text or dict describing model and data, kept in metadata.
            store_directions: keep the direction vectors in the object and saved files
                (default: when they take under 100 MiB).
            distributed: True shards the grid across the ranks of an initialised
                torch.distributed process group, all of which must call this together; None
                does so when a group with several ranks exists; False (default) works alone.
                Every rank computes the directions, then uses rank 0's (broadcast), and every
                rank returns the full landscape; see `landscaper.sampling.sample_grid`.
            **objective_kwargs: passed to `Objective` (``batch_loss``, ``allow_train_mode``).
        """
        # every argument is checked before the model is evaluated or a Hessian computed
        which = str(parse_which(which).value)
        unit = parse_extent_unit(extent_unit)
        seed = check_count("seed", seed, minimum=0)
        for name, value in (("chunk_size", chunk_size), ("points_per_chunk", points_per_chunk)):
            if value is not None:
                check_count(name, value)
        if store_directions is not None and not isinstance(store_directions, bool):
            raise TypeError(f"store_directions must be True, False or None, got "
                            f"{store_directions!r}")
        k = _planned_dims(directions, dims)
        if k is not None:  # the forms of steps and extent (the size once k <= P is known)
            axis_steps(steps, k)
            extent_ranges(extent, k)
        if checkpoint is not None:
            check_checkpoint_path(checkpoint)
        if objective is None:
            if model is None or data is None:
                raise ValueError("pass model and data (and loss_fn), or objective=Objective(...)")
            objective = Objective(model, data, loss_fn, params, memory_budget=memory_budget,
                                  **objective_kwargs)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        refuse_sharded_data(objective)  # before any Hessian work
        given = None
        if isinstance(directions, str):
            check_direction_count(k, objective, {"hessian": "Hessian"}.get(directions,
                                                                          directions))
        else:
            given = cls._given_directions(objective, directions, dims)
            k = given.k
        n_points = _check_grid_request(steps, extent, k, memory_budget)
        theta_norm = float(objective.theta0.norm())
        if unit is ExtentUnit.RELATIVE and not (np.isfinite(theta_norm) and theta_norm > 0):
            raise ValueError(
                f"a relative extent scales with ‖θ₀‖, which is {theta_norm:g} for the selected "
                f"parameters ({len(objective.param_names)} tensors"
                f"{', NaN/inf weights' if not np.isfinite(theta_norm) else ', all zero'}); pass "
                "extent_unit=\"absolute\" with extents in direction units")
        sharded = dist_utils.use_distributed(distributed)
        if checkpoint is not None:  # rank 0 reads it alone, so that all ranks agree
            check = lambda: check_checkpoint(checkpoint, objective, n_points)  # noqa: E731
            dist_utils.on_rank0(check) if sharded else check()
        if given is not None:
            dirs = given
        elif sharded:  # one rank's failure stops every rank before the broadcast
            error = None
            try:
                dirs = cls._computed_directions(objective, directions, k, which, seed)
            except Exception as err:  # noqa: BLE001 - re-raised on every rank
                error = err
            dist_utils.raise_together(error)
        else:
            dirs = cls._computed_directions(objective, directions, k, which, seed)
        if sharded:
            dirs = _broadcast_directions(dirs)
        timings["directions_s"] = time.perf_counter() - start
        vectors = dirs.vectors
        norms = vectors.norm(dim=1).tolist()
        axes = grid_axes(steps, extent, dirs.k, unit=unit, theta0_norm=theta_norm,
                         direction_norms=norms)
        start = time.perf_counter()
        loss = sample_grid(objective, vectors, axes, chunk_size=chunk_size,
                           points_per_chunk=points_per_chunk, memory_budget=memory_budget,
                           checkpoint=checkpoint, progress=progress, distributed=sharded)
        timings["grid_s"] = time.perf_counter() - start
        timings["points_per_s"] = loss.size / max(timings["grid_s"], 1e-12)
        metadata = {
            "source": "compute",
            "library_version": _library_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "directions": dirs.describe(),
            "extent": _jsonable_extent(extent),
            "extent_unit": unit.value,
            "extent_ranges": [list(r) for r in extent_ranges(extent, dirs.k)],
            "theta0_norm": theta_norm,
            "theta0": _theta0_record(objective, loss, axes),
            "objective": objective.describe(),
            "description": description,
            "timings": timings,
        }
        if sharded:
            metadata["world_size"] = dist_utils.world_size()
        if store_directions is None:
            size = vectors.numel() * vectors.element_size()
            store_directions = size <= STORE_DIRECTIONS_MAX_BYTES
        return cls(loss, axes, metadata, vectors if store_directions else None)

    @staticmethod
    def _computed_directions(objective: Objective, directions: str, k: int, which: str,
                             seed: int) -> Directions:
        if directions == "hessian":
            return hessian_directions(objective, k, which, seed=seed)
        return random_directions(objective, k, seed=seed)

    @staticmethod
    def _given_directions(objective: Objective, directions: Any, dims: int | None
                          ) -> Directions:
        dirs = user_directions(objective, directions)
        if dims is not None:
            if dims > dirs.k:
                raise ValueError(f"dims={dims} but only {dirs.k} directions were given; pass "
                                 f"dims<={dirs.k} or more directions")
            dirs = Directions(dirs.vectors[:dims], dirs.kind, dirs.normalization,
                              dirs.orthonormal,
                              None if dirs.eigenvalues is None else dirs.eigenvalues[:dims],
                              dirs.info)
        return dirs

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        """Number of grid dimensions k."""
        return self.loss.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape."""
        return self.loss.shape

    @property
    def eigenvalues(self) -> np.ndarray | None:
        """Hessian eigenvalues of the directions, when they are Hessian directions."""
        values = self.metadata.get("directions", {}).get("eigenvalues")
        return None if values is None else np.asarray(values, dtype=np.float64)

    @property
    def theta0_index(self) -> tuple[int, ...] | None:
        """Grid index of θ₀ (all coordinates 0), or None when the grid does not contain it
        (an even number of steps, or a range that excludes 0)."""
        return origin_index(self.axes)

    @property
    def loss_at_theta0(self) -> float | None:
        """The loss of the trained parameters: recorded by `compute` (evaluated at θ₀ when the
        grid misses it), else read at `theta0_index`; None when unknown."""
        recorded = self.metadata.get("theta0")
        if isinstance(recorded, dict) and recorded.get("loss") is not None:
            return float(recorded["loss"])
        index = self.theta0_index
        return None if index is None else float(self.loss[index])

    def coords(self) -> np.ndarray:
        """(N, k) coordinates in the order of ``loss.ravel()``."""
        return grid_coordinates(self.axes)

    def __repr__(self) -> str:
        finite = self.loss[np.isfinite(self.loss)]
        span = f"{finite.min():.4g}..{finite.max():.4g}" if finite.size else "no finite values"
        return f"Landscape(shape={self.shape}, loss {span})"

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str], *, directions: bool = True) -> Path:
        """Write the landscape (format in `landscaper.io`); ``directions=False`` leaves them out."""
        return io.save_landscape(path, self.loss, self.axes, self.metadata,
                                 self.directions if directions else None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Landscape:
        """Read a file written by `save` (never unpickles anything)."""
        loss, axes, metadata, directions = io.load_landscape(path)
        metadata.pop("format_version", None)
        return cls(loss, axes, metadata, directions)

    # ------------------------------------------------------------------ plots
    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """A line (1-D), a filled contour (2-D) or a 2-D slice (k > 2); see `landscaper.plots`."""
        from . import plots

        if self.ndim == 1:
            return plots.plot_line(self, ax=ax, **kwargs)
        return plots.plot_contour(self, ax=ax, **kwargs)

    def plot_surface(self, ax: Any = None, **kwargs: Any) -> Any:
        """A 3-D surface of a 2-D landscape (or of a 2-D slice)."""
        from . import plots

        return plots.plot_surface(self, ax=ax, **kwargs)

    def slice(self, dims: tuple[int, int] = (0, 1), at: dict[int, int] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A 2-D slice ``(x, y, values[x, y])`` through axes ``dims``; other axes fixed at the
        indices in ``at`` (default: θ₀'s index, or the one nearest θ₀)."""
        if self.ndim < 2:
            raise ValueError("a 1-D landscape has no 2-D slice")
        d0, d1 = dims
        if d0 == d1 or not (0 <= d0 < self.ndim and 0 <= d1 < self.ndim):
            raise ValueError(f"dims must name two different axes among 0..{self.ndim - 1}")
        at = dict(at or {})
        nearest = nearest_origin_index(self.axes)
        index: list[Any] = []
        for i in range(self.ndim):
            if i in (d0, d1):
                index.append(slice(None))
            else:
                index.append(at.get(i, nearest[i]))
        values = self.loss[tuple(index)]
        if d0 > d1:
            values = values.T
        return self.axes[d0], self.axes[d1], values

    # ------------------------------------------------------------------ topology
    def merge_tree(self, kind: str = "sublevel", connectivity: str = "full",
                   nonfinite: str = "highest", *,
                   memory_budget: int | str | None = None) -> topology.MergeTree:
        """Merge tree of the sublevel (minima) or superlevel (maxima) sets on the grid.

        ``connectivity="full"`` (3^k−1 neighbours, default) or ``"axis"`` (2k neighbours); see
        `landscaper.topology`. Cached per argument set (``memory_budget`` only bounds the work;
        call this first with it, and basins, SMAD and persistence reuse the cached tree).
        """
        key = ("merge_tree", kind, connectivity, nonfinite)
        if key not in self._cache:
            self._cache[key] = topology.merge_tree(self.loss, connectivity=connectivity,
                                                   kind=kind, coords=self.axes,
                                                   nonfinite=nonfinite,
                                                   memory_budget=memory_budget)
        return self._cache[key]

    def minima(self, connectivity: str = "full") -> np.ndarray:
        """Local minima as an (m, k) array of grid indices, lowest first."""
        return self.merge_tree(connectivity=connectivity).minima_multi_index()

    def basins(self, connectivity: str = "full", threshold: float = 0.0) -> topology.Basins:
        """Steepest-descent basins (labels, volumes, hierarchy), optionally simplified by
        merging basins whose persistence is below ``threshold``."""
        key = ("basins", connectivity, float(threshold))
        if key not in self._cache:
            tree = self.merge_tree(connectivity=connectivity)
            self._cache[key] = (topology.simplify(tree, threshold) if threshold > 0
                                else topology.Basins.from_tree(tree))
        return self._cache[key]

    def persistence(self, connectivity: str = "full") -> np.ndarray:
        """0-dimensional sublevel diagram: (n, 2) rows (birth, death), essential death = inf."""
        return self.merge_tree(connectivity=connectivity).persistence()

    def smad(self, normalize: bool = False, weighted: bool = False, *, pairing: str = "tree",
             threshold: float = 0.0, connectivity: str = "full") -> float:
        """Saddle–Minimum Average Distance (see `landscaper.topology.smad`)."""
        return topology.smad(self.merge_tree(connectivity=connectivity), normalize=normalize,
                             weighted=weighted, pairing=pairing, threshold=threshold)

    def profile(self, connectivity: str = "full") -> topology.LandscapeProfile:
        """Data of the topological landscape profile (Geniesse et al.)."""
        return topology.landscape_profile(self.merge_tree(connectivity=connectivity))

    def show_profile(self, ax: Any = None, *, log: bool = False,
                     connectivity: str = "full") -> Any:
        """Draw the topological landscape profile; returns the Axes."""
        return topology.plot_profile(self.profile(connectivity), ax=ax, log=log)

    def show_merge_tree(self, ax: Any = None, *, connectivity: str = "full") -> Any:
        """Draw the sublevel merge tree; returns the Axes."""
        return topology.plot_merge_tree(self.merge_tree(connectivity=connectivity), ax=ax)

    def show_persistence(self, ax: Any = None, *, barcode: bool = False,
                         connectivity: str = "full") -> Any:
        """Draw the persistence diagram (or barcode); returns the Axes."""
        draw = topology.plot_barcode if barcode else topology.plot_persistence_diagram
        return draw(self.persistence(connectivity), ax=ax)
