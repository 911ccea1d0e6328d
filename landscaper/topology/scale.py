"""How the topology of a sampled landscape changes with the scale it is looked at.

One fine grid of loss values is cut into nested boxes of growing radius around one grid point
(by default the centre of the grid, i.e. the trained model θ₀). In each box the exact merge
tree is computed afresh (`landscaper.topology.merge_tree`), and `scale_summary`
records the number of minima, SMAD, the size of θ₀'s basin and the first radius at which
θ₀'s basin meets a saddle.

Each box is an independent sub-landscape: the edges of a box are edges of its domain, so a box
that cuts through a well can have a *boundary minimum* on its edge (the lowest point of the
box on a slope that keeps falling outside it). That is the topology the box really has, and
it is why the number of minima need not grow monotonically with the radius.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .merge_tree import KIND_SADDLE, MIN_FINITE_VALUES, merge_tree
from .neighbours import _check_connectivity
from .smad import smad as _smad

if TYPE_CHECKING:
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["ScaleSummary", "scale_summary"]


@dataclass(frozen=True, eq=False)
class ScaleSummary:
    """Topology of nested boxes around one grid point, one entry per radius.

    Attributes:
        radius: (n,) int64 box radii in grid steps, increasing.
        extent: (n, d) float box half-width per axis in coordinate units (the larger of the
            distances from the centre's coordinate to the box's two edges on that axis), or
            ``None`` when no ``coords`` were given.
        n_minima: (n,) int64 number of minima (merge-tree leaves) in each box.
        smad: (n,) float SMAD of each box (``pairing="tree"``; normalised by the box's finite
            value range when ``smad_normalized``). NaN when a NaN point is a leaf or saddle.
        center_basin_volume: (n,) int64 points in the steepest-descent basin holding the
            centre point, within the box.
        center_basin_fraction: (n,) float ``center_basin_volume / box_size``.
        center_min_value: (n,) float value at the minimum of the centre's basin.
        saddle_radius: First radius (of those computed) at which the centre's basin has a
            parent saddle, i.e. merges with another basin of the box; ``None`` if it never does.
        saddle_value: Value at that saddle (``None`` when ``saddle_radius`` is ``None``; NaN
            stays NaN).
        center: The centre's grid index, one int per axis.
        box_size: (n,) int64 number of grid points in each (clipped) box.
        smad_normalized: Whether ``smad`` was divided by each box's finite value range.
    """

    radius: np.ndarray
    extent: np.ndarray | None
    n_minima: np.ndarray
    smad: np.ndarray
    center_basin_volume: np.ndarray
    center_basin_fraction: np.ndarray
    center_min_value: np.ndarray
    saddle_radius: int | None
    saddle_value: float | None
    center: tuple[int, ...]
    box_size: np.ndarray
    smad_normalized: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy: lists of ints/floats, ``None`` where absent; NaN stays NaN."""
        return {
            "radius": [int(r) for r in self.radius],
            "extent": None if self.extent is None else [
                [float(x) for x in row] for row in self.extent
            ],
            "n_minima": [int(x) for x in self.n_minima],
            "smad": [float(x) for x in self.smad],
            "center_basin_volume": [int(x) for x in self.center_basin_volume],
            "center_basin_fraction": [float(x) for x in self.center_basin_fraction],
            "center_min_value": [float(x) for x in self.center_min_value],
            "saddle_radius": self.saddle_radius,
            "saddle_value": self.saddle_value,
            "center": list(self.center),
            "box_size": [int(x) for x in self.box_size],
            "smad_normalized": self.smad_normalized,
        }

    def plot(self, ax: Axes | None = None) -> Axes:
        """Draw minima and SMAD against radius; see `plot_scale_summary`."""
        from .plotting import plot_scale_summary

        return plot_scale_summary(self, ax=ax)


# ----------------------------------------------------------------------------- validation
def _check_values(values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(
            f"values must be an n-D array of loss values on a grid, got {type(values).__name__} "
            f"that numpy cannot turn into one ({exc})") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"values must be a real numeric array (ints or floats), got dtype {arr.dtype}; "
            "pass the loss grid as a float array")
    if arr.ndim < 1:
        raise ValueError(
            "values must be an array with at least one axis (the loss grid, 'ij' indexing), "
            "got a scalar")
    if arr.size == 0:
        raise ValueError(f"values must not be empty, got shape {arr.shape}")
    if max(arr.shape) < 2:
        raise ValueError(
            f"values of shape {arr.shape} hold a single point: there are no boxes to grow; "
            "sample at least 2 points along some axis")
    finite = int(np.count_nonzero(np.isfinite(arr))) if arr.dtype.kind == "f" else arr.size
    if finite < MIN_FINITE_VALUES:
        raise ValueError(
            f"only {finite} of {arr.size} values are finite: there is no topology to follow "
            "across scales; check the model's weights and data, or sample a smaller extent "
            "around θ₀")
    return arr


def _check_center(center: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    d = len(shape)
    if center is None:
        return tuple(n // 2 for n in shape)
    if isinstance(center, (str, bytes)) or not isinstance(center, (Sequence, np.ndarray)):
        raise TypeError(
            f"center must be a grid index with one int per axis ({d} here), e.g. "
            f"{tuple(n // 2 for n in shape)}, got {center!r}")
    items = list(np.asarray(center).reshape(-1)) if isinstance(center, np.ndarray) else list(
        center)
    if len(items) != d:
        raise ValueError(
            f"center must have one index per axis of values ({d}), got {len(items)}: "
            f"{center!r}")
    out = []
    for axis, (c, n) in enumerate(zip(items, shape, strict=True)):
        if isinstance(c, (bool, np.bool_)):
            raise TypeError(f"center[{axis}] must be an int grid index, got {c!r}")
        try:
            ci = operator.index(c)
        except TypeError as exc:
            raise TypeError(
                f"center[{axis}] must be an int grid index, got {c!r}; pass grid indices, not "
                "coordinates") from exc
        if not 0 <= ci < n:
            raise ValueError(
                f"center[{axis}]={ci} is outside axis {axis} of length {n}: pass an index in "
                f"0..{n - 1}")
        out.append(int(ci))
    return tuple(out)


def _check_radii(radii: Any, max_radius: int) -> np.ndarray:
    if radii is None:
        return np.arange(1, max_radius + 1, dtype=np.int64)
    if np.ndim(radii) == 0:
        raise TypeError(
            f"radii must be a sequence of radii in grid steps, got the scalar {radii!r}; for "
            f"every radius up to R pass range(1, R + 1), for one radius pass [R]")
    arr = np.asarray(radii)
    if arr.ndim != 1:
        raise ValueError(f"radii must be a 1-D sequence, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"radii must not be empty; the default is 1..{max_radius}")
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"radii are grid steps and must be ints, got {radii!r} (dtype {arr.dtype}); "
            "convert coordinate half-widths to steps first")
    arr = arr.astype(np.int64)
    if (arr <= 0).any():
        raise ValueError(
            f"radii must be positive grid steps, got {int(arr[arr <= 0][0])}; radius 1 is the "
            "centre and its immediate neighbours")
    if (arr > max_radius).any():
        raise ValueError(
            f"radius {int(arr[arr > max_radius][0])} is beyond the grid: from this centre the "
            f"box covers the whole grid at radius {max_radius}; pass radii in 1..{max_radius}")
    if (np.diff(arr) <= 0).any():
        raise ValueError(
            f"radii must be strictly increasing, got {arr.tolist()}; pass sorted(set(radii))")
    return arr


def _check_coords(coords: Any, shape: tuple[int, ...]) -> list[np.ndarray] | None:
    if coords is None:
        return None
    d = len(shape)
    if isinstance(coords, (str, bytes)) or not isinstance(coords, (Sequence, np.ndarray)):
        raise TypeError(
            f"coords must be one 1-D coordinate array per axis ({d} here), got "
            f"{type(coords).__name__}")
    if len(coords) != d:
        raise ValueError(
            f"coords must hold one 1-D array per axis of values ({d}), got {len(coords)}")
    out = []
    for axis, (c, n) in enumerate(zip(coords, shape, strict=True)):
        a = np.asarray(c)
        if a.dtype.kind not in "iuf":
            raise TypeError(f"coords[{axis}] must be numeric, got dtype {a.dtype}")
        if a.ndim != 1 or a.size != n:
            raise ValueError(
                f"coords[{axis}] must be a 1-D array of {n} coordinates (axis {axis} of "
                f"values), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"coords[{axis}] must be finite")
        out.append(a.astype(float))
    return out


def _box(center: tuple[int, ...], shape: tuple[int, ...], r: int) -> tuple[slice, ...]:
    return tuple(slice(max(c - r, 0), min(c + r + 1, n)) for c, n in zip(center, shape,
                                                                       strict=True))


def _check_boxes(arr: np.ndarray, center: tuple[int, ...], radii: np.ndarray) -> None:
    """Every box must hold enough finite values for a merge tree (checked before any work)."""
    if arr.dtype.kind != "f":
        return
    finite = np.isfinite(arr)
    for r in radii.tolist():
        box = finite[_box(center, arr.shape, r)]
        n_fin = int(np.count_nonzero(box))
        if n_fin >= MIN_FINITE_VALUES or n_fin == box.size:
            continue
        ok = next((q for q in range(r + 1, max(arr.shape) + 1)
                   if np.count_nonzero(finite[_box(center, arr.shape, q)]) >= MIN_FINITE_VALUES),
                  None)
        hint = f"start radii at {ok} (the first box with {MIN_FINITE_VALUES} finite values)" \
            if ok is not None else "choose another center"
        raise ValueError(
            f"the box of radius {r} around center {center} holds only {n_fin} finite value(s) "
            f"of {box.size}: its minima and SMAD would be made up; {hint}, or check the loss "
            "around this point")


# ----------------------------------------------------------------------------- computation
def scale_summary(
    values: np.ndarray,
    *,
    center: Sequence[int] | None = None,
    radii: Sequence[int] | None = None,
    connectivity: str = "full",
    coords: Sequence[np.ndarray] | None = None,
    smad_normalize: bool = False,
) -> ScaleSummary:
    """Minima, SMAD and θ₀'s basin over nested boxes of growing radius around one grid point.

    The box of radius ``r`` holds every grid index within ``r`` steps of ``center`` on every
    axis (an L∞ ball), clipped to the grid. The merge tree of each box is computed exactly and
    independently of the rest of the grid (`landscaper.topology.merge_tree` on the
    cropped array), so box edges act as domain edges and a box that cuts a well may have a
    boundary minimum on its edge. Ties are broken by position exactly as on the full grid
    (cropping keeps the C order of the points).

    When ``center`` is not the centre of the grid, or the grid is not a cube, boxes clip at the
    edges: along an axis the box stops growing on the side that reached the edge (and on both
    sides once it spans the axis), so it is no longer symmetric about the centre and holds
    fewer than ``(2 r + 1)**d`` points (see ``box_size``). The largest radius is the one whose
    box is the whole grid, ``max`` over axes of ``max(c, n - 1 - c)``.

    Non-finite values are handled as by `merge_tree` (``nonfinite="highest"``): NaN and
    +inf rank above every finite value, so they act as walls. They are never replaced: if a
    NaN point ends up a leaf or a saddle (e.g. a NaN between two descending slopes is the
    saddle joining them), its NaN value shows in ``smad``, ``center_min_value`` or
    ``saddle_value``. Each box that contains NaN/+inf logs the merge tree's warning.

    Args:
        values: n-D array (``d >= 1``, ``"ij"`` indexing) of loss values on a regular grid.
        center: Grid index of θ₀, one int per axis; default the centre index ``n // 2`` of
            each axis.
        radii: Strictly increasing positive radii in grid steps; default ``1..max radius``.
        connectivity: Grid neighbourhood, ``"full"`` (default) or ``"axis"``.
        coords: Optional per-axis 1-D coordinate arrays (e.g. the directions' step sizes);
            only used to report ``extent``.
        smad_normalize: Divide each box's SMAD by that box's finite value range.

    Returns:
        The `ScaleSummary`.

    Raises:
        TypeError, ValueError: for invalid inputs, before any merge tree is computed.
    """
    arr = _check_values(values)
    shape = tuple(int(s) for s in arr.shape)
    _check_connectivity(connectivity)
    c = _check_center(center, shape)
    max_radius = max(max(ci, n - 1 - ci) for ci, n in zip(c, shape, strict=True))
    rad = _check_radii(radii, max_radius)
    axes = _check_coords(coords, shape)
    _check_boxes(arr, c, rad)

    k = rad.size
    n_min = np.zeros(k, dtype=np.int64)
    smad_v = np.zeros(k, dtype=float)
    vol = np.zeros(k, dtype=np.int64)
    size = np.zeros(k, dtype=np.int64)
    cmin = np.zeros(k, dtype=float)
    extent = None if axes is None else np.zeros((k, len(shape)), dtype=float)
    saddle_radius: int | None = None
    saddle_value: float | None = None
    for i, r in enumerate(rad.tolist()):
        box = _box(c, shape, r)
        tree = merge_tree(arr[box], connectivity=connectivity)
        local = tuple(ci - s.start for ci, s in zip(c, box, strict=True))
        leaf = int(tree.labels[local])  # basin label == leaf node id
        n_min[i] = tree.n_minima
        smad_v[i] = _smad(tree, normalize=smad_normalize)
        vol[i] = tree.volumes[leaf]
        size[i] = tree.n_points
        cmin[i] = tree.node_value[leaf]
        parent = int(tree.node_parent[leaf])
        if saddle_radius is None and parent >= 0 and tree.node_kind[parent] == KIND_SADDLE:
            saddle_radius, saddle_value = int(r), float(tree.node_value[parent])
        if extent is not None:
            for a, (x, s) in enumerate(zip(axes, box, strict=True)):
                x0 = x[c[a]]
                extent[i, a] = max(abs(x[s.stop - 1] - x0), abs(x0 - x[s.start]))
        logger.debug("radius %d: %d points, %d minima, SMAD %.6g, centre basin %d points", r,
                     size[i], n_min[i], smad_v[i], vol[i])
    logger.info("scale summary around %s: radii %d..%d, minima %d..%d, centre basin meets a "
                "saddle at radius %s", c, rad[0], rad[-1], n_min.min(), n_min.max(),
                saddle_radius)
    out = {"radius": rad, "n_minima": n_min, "smad": smad_v, "center_basin_volume": vol,
           "center_basin_fraction": vol / size, "center_min_value": cmin, "box_size": size}
    if extent is not None:
        out["extent"] = extent
    for a in out.values():
        a.setflags(write=False)
    return ScaleSummary(
        extent=out.pop("extent", None),
        saddle_radius=saddle_radius,
        saddle_value=saddle_value,
        center=c,
        smad_normalized=bool(smad_normalize),
        **out,
    )
