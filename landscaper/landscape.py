"""`Landscape`: a loss grid in a k-dimensional subspace, with its metadata, files and plots."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import io, topology
from ._precise import norm
from ._utils import Stopwatch, check_count, to_numpy
from .directions import (
    NAMED_DIRECTIONS,
    Directions,
    axis_label,
    check_direction_count,
    user_directions,
)
from .grid import (
    Execution,
    GridRequest,
    GridSpec,
    check_checkpoint,
    executor_for,
    grid_coordinates,
    nearest_origin_index,
    origin_index,
    report_nonfinite,
    require_all_data,
)
from .grid.axes import ExtentUnit
from .grid.extent_scan import loss_at_theta0, scan_extent
from .hessian import parse_which
from .objective import Objective

logger = logging.getLogger(__name__)

#: Directions are stored in saved files by default only below this size.
STORE_DIRECTIONS_MAX_BYTES = 100 * 2**20

#: The flat keyword options of `Landscape.compute`, by the group they fill.
_GROUPS: dict[str, tuple[type, tuple[str, ...]]] = {
    "grid": (GridRequest, ("dims", "steps", "extent", "extent_unit")),
    "execution": (Execution, ("memory_budget", "chunk_size", "points_per_chunk", "checkpoint",
                              "progress", "distributed")),
}
_DIRECTION_OPTIONS = {"which": "LA", "seed": 0}
_OBJECTIVE_OPTIONS = tuple(name for name in inspect.signature(Objective.__init__).parameters
                           if name not in ("self", "model", "data", "loss_fn", "memory_budget"))


def _library_version() -> str:
    from . import __version__

    return __version__


def _grouped(grid: GridRequest | None, execution: Execution | None, options: dict[str, Any]
             ) -> tuple[GridRequest, Execution, dict[str, Any], dict[str, Any]]:
    """The grid request, the execution options, the direction options and the `Objective`
    options from ``compute``'s grouped and flat keyword arguments."""
    options = dict(options)
    groups: dict[str, Any] = {}
    for name, given in (("grid", grid), ("execution", execution)):
        group, names = _GROUPS[name]
        flat = {key: options.pop(key) for key in names if key in options}
        if given is not None and flat:
            raise TypeError(f"pass {', '.join(sorted(flat))} inside {name}=... or as keywords, "
                            "not both")
        groups[name] = given if given is not None else group(**flat)
    chosen = {key: options.pop(key, default) for key, default in _DIRECTION_OPTIONS.items()}
    unknown = sorted(set(options) - set(_OBJECTIVE_OPTIONS))
    if unknown:
        known = [n for _, names in _GROUPS.values() for n in names]
        raise TypeError(f"Landscape.compute got unexpected keyword argument(s) {unknown}; it "
                        f"takes {', '.join(known + list(_DIRECTION_OPTIONS))} and the Objective "
                        f"options {', '.join(_OBJECTIVE_OPTIONS)}")
    return groups["grid"], groups["execution"], chosen, options


def _planned_dims(directions: Any, dims: int | None) -> int | None:
    """The grid dimension when it is known before the objective exists, checking ``dims`` and
    a direction name; None for direction arrays (counted once they are checked)."""
    if isinstance(directions, str):
        if directions not in NAMED_DIRECTIONS:
            names = ", ".join(repr(n) for n in NAMED_DIRECTIONS)
            raise ValueError(f"unknown directions {directions!r}: use {names}, a Directions "
                             "object or a (k, P) array")
        return 2 if dims is None else dims
    if isinstance(directions, Directions):
        if dims is not None and dims > directions.k:
            raise ValueError(f"dims={dims} but only {directions.k} directions were given; pass "
                             f"dims<={directions.k} or more directions")
        return directions.k if dims is None else dims
    return None


def _given_directions(objective: Objective, directions: Any, dims: int | None) -> Directions:
    """Directions passed as an object or an array, checked and cut to ``dims``."""
    dirs = user_directions(objective, directions)
    if dims is None:
        return dirs
    if dims > dirs.k:
        raise ValueError(f"dims={dims} but only {dirs.k} directions were given; pass "
                         f"dims<={dirs.k} or more directions")
    return Directions(dirs.vectors[:dims], dirs.kind, dirs.normalization, dirs.orthonormal,
                      None if dirs.eigenvalues is None else dirs.eigenvalues[:dims], dirs.info)


def _checked_theta0_norm(objective: Objective, unit: ExtentUnit) -> float:
    """‖θ₀‖, refused when a relative extent would scale with a zero or non-finite norm."""
    theta_norm = norm(objective.theta0)
    if unit is ExtentUnit.RELATIVE and not (np.isfinite(theta_norm) and theta_norm > 0):
        raise ValueError(
            f"a relative extent scales with ‖θ₀‖, which is {theta_norm:g} for the selected "
            f"parameters ({len(objective.param_names)} tensors"
            f"{', NaN/inf weights' if not np.isfinite(theta_norm) else ', all zero'}); pass "
            "extent_unit=\"absolute\" with extents in direction units")
    return theta_norm


def _scanned_request(objective: Objective, dirs: Directions, request: GridRequest,
                     theta_norm: float, executor: Any, execution: Execution,
                     loss0: float) -> tuple[GridRequest, dict[str, Any]]:
    """``request`` with its automatic extent replaced by the ranges its 1-D scans chose, and
    the scan's record (evaluated like the grid, without checkpoint or progress bar)."""
    quiet = replace(execution, checkpoint=None, progress=False)

    def evaluate(direction: Directions, axis: np.ndarray) -> np.ndarray:
        return executor.run(objective, GridSpec.from_axes(direction, [axis]), quiet)

    extent, record = scan_extent(evaluate, dirs, request.auto, loss0, request.unit,
                                 theta_norm)
    return replace(request, extent=extent), record


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


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
        spec: the typed `GridSpec` behind the metadata (None when the direction vectors are not
            kept).
    """

    def __init__(self, loss: np.ndarray, axes: Sequence[np.ndarray],
                 metadata: dict[str, Any] | None = None,
                 directions: np.ndarray | torch.Tensor | None = None, *,
                 spec: GridSpec | None = None) -> None:
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
        #: the typed grid (`GridSpec`: `Directions` with kind and eigenvalues, axes, extent)
        #: when the direction vectors are kept (computed or loaded with them); else None, and
        #: the same facts are in ``metadata``
        self.spec = spec
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
        directions: str | Directions | np.ndarray | torch.Tensor | Sequence[Any] = "hessian",
        grid: GridRequest | None = None,
        execution: Execution | None = None,
        description: str | dict[str, Any] | None = None,
        store_directions: bool | None = None,
        **options: Any,
    ) -> Landscape:
        """Sample the loss of a model on a grid around its parameters.

        Args:
            model: as for `Objective` (or pass ``objective=`` instead of all three).
            data: as for `Objective`.
            loss_fn: as for `Objective`.
            directions: ``"hessian"`` (top-k eigenvectors, default), ``"random"``
                (filter-normalised; see `landscaper.directions.NAMED_DIRECTIONS`), a
                `Directions`, or a (k, P) array / list of dicts.
            grid: the `GridRequest` (``dims``, ``steps``, ``extent``, ``extent_unit``), or
                give those as keywords: ``dims`` (default 2, or the number of given
                directions), ``steps`` (points per axis, one value or one per axis, default
                41), ``extent`` (half-width per axis or ``(low, high)`` pairs, default 0.01;
                or ``"auto"`` / `landscaper.AutoExtent`: each axis' half-width where 1-D
                scans see the loss first reach a stated rise above θ₀'s, recorded in
                ``metadata["extent_auto"]``) in ``extent_unit`` (``"relative"``:
                displacement up to extent·‖θ₀‖, Landscaper's convention, the default;
                ``"absolute"``: direction multipliers).
            execution: the `Execution` options (``memory_budget``, ``chunk_size``,
                ``points_per_chunk``, ``checkpoint``, ``progress``, ``distributed``), or give
                those as keywords. ``memory_budget`` defaults to the objective's ("2GiB" for
                one built here). ``distributed=True`` shards the grid across an initialised
                torch.distributed process group, all of whose ranks call this together
                (None: when a group with several ranks exists; False, the default, works
                alone); every rank computes the directions, uses rank 0's, and returns the
                full landscape.
            description: free text or dict describing model and data, kept in metadata.
            store_directions: keep the direction vectors in the object and saved files
                (default: when they take under 100 MiB).
            **options: the keywords of ``grid`` and ``execution`` above; ``which`` (Hessian
                eigenvalue selection, default ``"LA"``) and ``seed`` (random directions and
                the Lanczos start vector, default 0); and, when the objective is built here,
                ``params`` and the other `Objective` options (``batch_loss``,
                ``allow_train_mode``, ``sample_count``, ``compute_dtype``).

        Every argument is checked before the model is evaluated or a Hessian computed.

        Examples:
            A 2-D landscape along the top two Hessian eigenvectors, each axis reaching
            ±10% of ‖θ₀‖, with θ₀ at the centre:

            >>> import torch
            >>> from torch import nn
            >>> from landscaper import Landscape
            >>> _ = torch.manual_seed(0)
            >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
            >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
            >>> land = Landscape.compute(model, (x, y), nn.functional.cross_entropy,
            ...                          dims=2, steps=11, extent=0.1, progress=False)
            >>> land.shape, land.direction_kind, land.theta0_index
            ((11, 11), 'hessian', (5, 5))
            >>> bool(land.loss[land.theta0_index] == land.loss_at_theta0)
            True
            >>> theta0 = nn.utils.parameters_to_vector(model.parameters()).detach()
            >>> round(float(land.axes[0][-1]) / float(theta0.norm()), 6)
            0.1

            Random (filter-normalised) directions instead, on a 1-D line of 5 points:

            >>> line = Landscape.compute(model, (x, y), nn.functional.cross_entropy,
            ...                          directions="random", dims=1, steps=5, progress=False)
            >>> line.shape, line.direction_kind
            ((5,), 'random')
        """
        request, execution, chosen, objective_kwargs = _grouped(grid, execution, options)
        which = str(parse_which(chosen["which"]).value)
        seed = check_count("seed", chosen["seed"], minimum=0)
        execution.check()
        if store_directions is not None and not isinstance(store_directions, bool):
            raise TypeError(f"store_directions must be True, False or None, got "
                            f"{store_directions!r}")
        request.check_forms(None)
        k = _planned_dims(directions, request.dims)
        request.check_forms(k)  # the forms of steps and extent (the size once k <= P is known)
        objective = cls._objective(model, data, loss_fn, objective, execution, objective_kwargs)
        watch = Stopwatch()
        require_all_data(objective)  # before any Hessian work
        loss0 = None
        if request.auto is not None:  # its target needs θ₀'s loss: refused now if it has none
            loss0 = loss_at_theta0(objective)
            request.auto.target(loss0)
        given = None
        if isinstance(directions, str):
            check_direction_count(k, objective, NAMED_DIRECTIONS[directions].label)
        else:
            given = _given_directions(objective, directions, request.dims)
            k = given.k
        n_points = request.check_size(k, execution.budget(objective))
        theta_norm = _checked_theta0_norm(objective, request.unit)
        executor = executor_for(execution.distributed)
        if execution.checkpoint is not None:  # rank 0 reads it alone, so that all ranks agree
            executor.on_leader(lambda: check_checkpoint(execution.checkpoint, objective,
                                                        n_points))
        dirs = executor.share_directions(lambda: given if given is not None else (
            NAMED_DIRECTIONS[directions].make(objective, k, which=which, seed=seed)))
        timings = {"directions_s": watch.seconds}
        scanned = None
        if request.auto is not None:
            watch = Stopwatch()
            request, scanned = _scanned_request(objective, dirs, request, theta_norm,
                                                executor, execution, loss0)
            timings["extent_scan_s"] = watch.seconds
        spec = GridSpec.build(dirs, request, theta_norm)
        watch = Stopwatch()
        loss = executor.run(objective, spec, execution).reshape(spec.shape)
        timings["grid_s"] = watch.seconds
        timings["points_per_s"] = loss.size / max(timings["grid_s"], 1e-12)
        metadata = {
            "source": "compute",
            "library_version": _library_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **spec.describe(),
            **({"extent_auto": scanned} if scanned is not None else {}),
            "theta0": _theta0_record(objective, loss, spec.axes),
            "objective": objective.describe(),
            "description": description,
            "timings": timings,
            **executor.describe(),
        }
        vectors = dirs.vectors
        if store_directions is None:
            store_directions = vectors.numel() * vectors.element_size() <= (
                STORE_DIRECTIONS_MAX_BYTES)
        if not store_directions:  # the spec holds the vectors: keep neither (k·P numbers)
            return cls(loss, spec.axes, metadata)
        if vectors.device.type != "cpu":  # kept on the host, never holding GPU memory
            spec = replace(spec, directions=replace(spec.directions, vectors=vectors.cpu()))
        return cls(loss, spec.axes, metadata, vectors, spec=spec)

    @staticmethod
    def _objective(model: nn.Module | None, data: Any, loss_fn: Any,
                   objective: Objective | None, execution: Execution,
                   objective_kwargs: dict[str, Any]) -> Objective:
        """The objective given, or one built from the model (with the run's memory budget)."""
        if objective is not None:
            if objective_kwargs:
                raise TypeError(f"{', '.join(sorted(objective_kwargs))} apply when the "
                                "objective is built here; pass them to Objective(...) instead")
            return objective
        if model is None or data is None:
            raise ValueError("pass model and data (and loss_fn), or objective=Objective(...)")
        budget = "2GiB" if execution.memory_budget is None else execution.memory_budget
        return Objective(model, data, loss_fn, memory_budget=budget, **objective_kwargs)

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
        if self.spec is not None:
            values = self.spec.directions.eigenvalues
        else:
            values = self.metadata.get("directions", {}).get("eigenvalues")
        return None if values is None else np.asarray(values, dtype=np.float64)

    @property
    def direction_kind(self) -> str | None:
        """What the directions are (``"hessian"``, ``"random"``, ``"pca"``, ``"user"``), or
        None when unknown."""
        if self.spec is not None:
            return self.spec.directions.kind
        return self.metadata.get("directions", {}).get("kind")

    def axis_label(self, i: int) -> str:
        """The figure label of axis ``i`` (Hessian directions show their eigenvalue)."""
        return axis_label(self.direction_kind, self.eigenvalues, i)

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
        spec = None
        described = metadata.get("directions")
        unit = metadata.get("extent_unit", ExtentUnit.ABSOLUTE.value)
        if (directions is not None and isinstance(described, dict)
                and unit in {u.value for u in ExtentUnit}):
            spec = GridSpec(Directions.from_description(described, directions), tuple(axes),
                            metadata.get("extent"), ExtentUnit(unit),
                            _float_or_none(metadata.get("theta0_norm")))
        return cls(loss, axes, metadata, directions, spec=spec)

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
        """Saddle–Minimum Average Distance: the mean loss gap between each minimum and its
        saddle (see `landscaper.topology.smad`).

        Args:
            normalize: divide each gap by the landscape's finite loss range (max − min).
            weighted: multiply each gap by its minimum's basin volume fraction.
            pairing: ``"tree"`` (default: every minimum, the global one included, with the
                saddle where its component first merges) or ``"persistence"`` (elder rule:
                each minimum but the global one with the saddle where it dies).
            threshold: merge basins whose persistence is below it first.
            connectivity: ``"full"`` (3^k − 1 grid neighbours, default) or ``"axis"`` (2k).

        Returns:
            SMAD as a float; 0.0 for a landscape with a single minimum.

        Examples:
            Two wells, at x = −1 (loss −0.2) and x = +1 (loss 0.2), joined by a saddle near
            x = 0 (loss 1.0001 on this grid):

            >>> import numpy as np
            >>> from landscaper import Landscape
            >>> a = np.linspace(-2, 2, 41)
            >>> x, y = np.meshgrid(a, a, indexing="ij")
            >>> land = Landscape.from_arrays((x**2 - 1) ** 2 + 0.3 * y**2 + 0.2 * x, [a, a])
            >>> len(land.minima())
            2
            >>> round(land.smad(), 4)  # (1.2001 + 0.8001) / 2
            1.0001
            >>> round(land.smad(pairing="persistence"), 4)  # the shallower well only
            0.8001
            >>> round(land.smad(normalize=True), 4)  # as a fraction of the loss range
            0.0926
        """
        return topology.smad(self.merge_tree(connectivity=connectivity), normalize=normalize,
                             weighted=weighted, pairing=pairing, threshold=threshold)

    def profile(self, connectivity: str = "full") -> topology.LandscapeProfile:
        """Data of the topological landscape profile (Geniesse et al.)."""
        return topology.landscape_profile(self.merge_tree(connectivity=connectivity),
                                          values=self.loss)

    def scale_summary(self, radii: Sequence[int] | None = None, *, connectivity: str = "full",
                      smad_normalize: bool = False) -> topology.ScaleSummary:
        """How the topology changes with scale: minima, SMAD and θ₀'s basin in nested boxes
        around θ₀ (the grid point nearest it), one per radius in grid steps (default: all);
        see `landscaper.topology.scale_summary`. Cached per argument set."""
        key = ("scale", None if radii is None else tuple(radii), connectivity, smad_normalize)
        if key not in self._cache:
            self._cache[key] = topology.scale_summary(
                self.loss, center=nearest_origin_index(self.axes), radii=radii,
                connectivity=connectivity, coords=self.axes, smad_normalize=smad_normalize)
        return self._cache[key]

    def show_scale(self, ax: Any = None, *, connectivity: str = "full") -> Any:
        """Draw minima and SMAD against the box radius around θ₀; returns the Axes."""
        return topology.plot_scale_summary(self.scale_summary(connectivity=connectivity), ax=ax)

    def show_profile(self, ax: Any = None, *, log: bool = False,
                     connectivity: str = "full") -> Any:
        """Draw the topological landscape profile; returns the Axes."""
        return topology.plot_profile(self.profile(connectivity), ax=ax, log=log)

    def show_merge_tree(self, ax: Any = None, *, connectivity: str = "full",
                        log: bool = False) -> Any:
        """Draw the sublevel merge tree (``log``: values on a log scale); returns the Axes."""
        return topology.plot_merge_tree(self.merge_tree(connectivity=connectivity), ax=ax,
                                        log=log)

    def show_persistence(self, ax: Any = None, *, barcode: bool = False,
                         connectivity: str = "full") -> Any:
        """Draw the persistence diagram (or barcode); returns the Axes."""
        draw = topology.plot_barcode if barcode else topology.plot_persistence_diagram
        return draw(self.persistence(connectivity), ax=ax)
