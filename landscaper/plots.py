"""Matplotlib figures of landscapes (jump & retrain's embedding figure: `landscaper.jr_plots`).

Every function takes an optional ``ax`` and returns the Axes it drew on. Without ``ax`` a new
``matplotlib.figure.Figure`` is made (not a pyplot figure), so nothing global changes and
nothing is shown: display ``ax.figure`` in a notebook or call ``ax.figure.savefig(path)``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colors

from .grid import nearest_origin_index
from .jr_plots import plot_trajectories
from .topology._axes import new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .landscape import Landscape

__all__ = ["new_axes", "plot_contour", "plot_line", "plot_surface", "plot_trajectories"]

logger = logging.getLogger(__name__)


def _label_dims(ax: Axes, landscape: Landscape, dims: tuple[int, int]) -> None:
    """Name the x and y axes after the two landscape directions a slice shows."""
    ax.set_xlabel(landscape.axis_label(dims[0]))
    ax.set_ylabel(landscape.axis_label(dims[1]))


def _norm_and_levels(values: np.ndarray, log: bool, levels: int) -> tuple[Any, np.ndarray]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("the landscape has no finite values to plot")
    if log:
        positive = finite[finite > 0]
        if positive.size == 0:
            raise ValueError("log colouring needs positive losses; plot with log=False")
        if positive.size < finite.size:
            logger.warning("%d non-positive losses are left blank in a log-scale plot",
                           finite.size - positive.size)
        low, high = positive.min(), positive.max()
        high = high if high > low else low * 10
        return colors.LogNorm(vmin=low, vmax=high), np.geomspace(low, high, levels)
    low, high = finite.min(), finite.max()
    high = high if high > low else low + 1.0
    return colors.Normalize(vmin=low, vmax=high), np.linspace(low, high, levels)


def _masked(values: np.ndarray, log: bool) -> np.ma.MaskedArray:
    masked = np.ma.masked_invalid(values)
    return np.ma.masked_less_equal(masked, 0) if log else masked


def plot_line(landscape: Landscape, ax: Axes | None = None, *, log: bool = False) -> Axes:
    """The loss along a 1-D landscape."""
    if landscape.ndim != 1:
        raise ValueError(f"plot_line needs a 1-D landscape, this one is {landscape.ndim}-D; "
                         "use plot_contour")
    ax = ax or new_axes()
    ax.plot(landscape.axes[0], landscape.loss, color="C0")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(landscape.axis_label(0))
    ax.set_ylabel("loss")
    return ax


def plot_contour(
    landscape: Landscape,
    ax: Axes | None = None,
    *,
    dims: tuple[int, int] = (0, 1),
    at: dict[int, int] | None = None,
    filled: bool = True,
    levels: int = 30,
    log: bool = False,
    colorbar: bool = True,
    cmap: str = "viridis",
    mark_center: bool = True,
) -> Axes:
    """Contour (filled by default) of a 2-D landscape, or of a 2-D slice through a k-D one.

    Args:
        dims: the two axes to show; the others are fixed at the indices in ``at``
            (default: θ₀'s index, or the one nearest θ₀).
        log: logarithmic colour scale, for losses spanning orders of magnitude.
    """
    x, y, values = landscape.slice(dims, at)
    ax = ax or new_axes()
    norm, level_values = _norm_and_levels(values, log, levels)
    draw = ax.contourf if filled else ax.contour
    # values are indexed [x, y]; matplotlib wants Z[row=y, col=x]
    artist = draw(x, y, _masked(values, log).T, levels=level_values, norm=norm, cmap=cmap)
    if colorbar:
        ax.figure.colorbar(artist, ax=ax, label="loss")
    if mark_center:
        ax.plot([0], [0], marker="+", color="white" if filled else "black", markersize=10)
    _label_dims(ax, landscape, dims)
    if landscape.ndim > 2:
        nearest = nearest_origin_index(landscape.axes)
        fixed = {i: (at or {}).get(i, nearest[i]) for i in range(landscape.ndim) if i not in dims}
        ax.set_title("slice at " + ", ".join(f"a{i}={landscape.axes[i][j]:.3g}"
                                             for i, j in fixed.items()), fontsize="small")
    return ax


def plot_surface(
    landscape: Landscape,
    ax: Axes | None = None,
    *,
    dims: tuple[int, int] = (0, 1),
    at: dict[int, int] | None = None,
    log: bool = False,
    cmap: str = "viridis",
) -> Axes:
    """3-D surface of a 2-D landscape (or slice). ``ax`` must be a 3-D Axes if given."""
    x, y, values = landscape.slice(dims, at)
    ax = ax or new_axes(projection="3d")
    if getattr(ax, "name", "") != "3d":
        raise ValueError("plot_surface needs a 3-D Axes: fig.add_subplot(projection='3d')")
    grid_x, grid_y = np.meshgrid(x, y, indexing="ij")
    z = np.where(np.isfinite(values), values, np.nan)
    norm, _ = _norm_and_levels(values, log, 2)
    shown = np.log10(np.where(z > 0, z, np.nan)) if log else z
    ax.plot_surface(grid_x, grid_y, shown, cmap=cmap, norm=None if log else norm,
                    linewidth=0, antialiased=True)
    _label_dims(ax, landscape, dims)
    ax.set_zlabel("log10 loss" if log else "loss")
    return ax
