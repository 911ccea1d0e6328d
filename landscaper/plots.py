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


#: A range narrower than this, relative to its values, is float noise around a constant grid.
_CONSTANT_RTOL = 1e-9


def _colour_range(low: float, high: float, log: bool) -> tuple[float, float]:
    """``(low, high)``, widened around the value when the grid is (numerically) constant, so
    that the colour sits mid-scale and the colour bar still has a range to label."""
    if high - low > _CONSTANT_RTOL * max(abs(low), abs(high)):
        return low, high
    if log:
        return low / 1.1, low * 1.1
    half = 0.1 * abs(low) if low != 0 else 1.0
    return low - half, low + half


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
        low, high = _colour_range(float(positive.min()), float(positive.max()), log=True)
        return colors.LogNorm(vmin=low, vmax=high), np.geomspace(low, high, levels)
    low, high = _colour_range(float(finite.min()), float(finite.max()), log=False)
    return colors.Normalize(vmin=low, vmax=high), np.linspace(low, high, levels)


def _linear_ticks(low: float, high: float) -> np.ndarray:
    """At least 3 round values (steps of 1, 2, 2.5 or 5 times a power of ten) in [low, high]."""
    from matplotlib.ticker import MaxNLocator

    span = high - low
    inside = np.array([low, 0.5 * (low + high), high])
    for bins in range(5, 13):
        ticks = MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        ticks = np.where(np.abs(ticks) < 1e-9 * span, 0.0, ticks)
        ticks = ticks[(ticks >= low - 1e-9 * span) & (ticks <= high + 1e-9 * span)]
        if ticks.size >= 3:
            return ticks
    return inside


def _log_ticks(low: float, high: float) -> np.ndarray:
    """At least 3 round values in [low, high] for a log scale: powers of ten when the range
    spans enough decades (thinned to at most 8), else 1-2-5 or 1..9 times powers of ten,
    else (a range under a factor of ~2) evenly spaced round values."""
    first, last = int(np.floor(np.log10(low))), int(np.ceil(np.log10(high)))
    tol = 1e-9
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = np.array([m * 10.0 ** e for e in range(first, last + 1) for m in mantissas])
        ticks = ticks[(ticks >= low * (1 - tol)) & (ticks <= high * (1 + tol))]
        if ticks.size >= 3:
            return ticks[:: -(-ticks.size // 8)]
    return _linear_ticks(low, high)


def _format_tick(value: float, digits: int, positional: tuple[int, int] = (-4, 6)) -> str:
    """``value`` with ``digits`` significant digits: positional for powers of ten in
    ``positional`` (half-open), otherwise a short exponent form (``2e-7``, ``1.5e12``)."""
    if value == 0:
        return "0"
    exponent = int(np.floor(np.log10(abs(value))))
    if positional[0] <= exponent < positional[1]:
        text = f"{value:.{max(0, digits - 1 - exponent)}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
    else:
        mantissa, power = f"{value:.{digits - 1}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        text = f"{mantissa}e{int(power)}"
    return "0" if text in ("-0", "0") else text


def _tick_labels(ticks: np.ndarray) -> list[str]:
    """The shortest labels (fewest significant digits) that show every tick's value exactly;
    if some need an exponent, values from 1e-3 and 1e3 outwards all get one (``1e-4``, not
    ``0.0001`` next to ``1e-8``)."""
    span = float(np.ptp(ticks)) or 1.0
    values = ticks.tolist()
    for digits in range(1, 16):
        labels = [_format_tick(t, digits) for t in values]
        if len(set(labels)) == len(labels) and all(
                abs(float(text) - t) <= 1e-9 * max(span, abs(t))
                for text, t in zip(labels, values, strict=True)):
            break
    if any("e" in text for text in labels):
        labels = [_format_tick(t, digits, positional=(-2, 3)) for t in values]
    return labels


def _label_colorbar(cbar: Any, norm: Any) -> None:
    """Put at least 3 labelled ticks, at round values spanning the colour range, on a bar."""
    low, high = float(norm.vmin), float(norm.vmax)
    ticks = _log_ticks(low, high) if isinstance(norm, colors.LogNorm) else _linear_ticks(low, high)
    cbar.set_ticks(ticks, labels=_tick_labels(ticks))
    cbar.minorticks_off()


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
        colorbar: add a colour bar, with at least 3 labelled ticks at round values spanning
            the range (powers of ten on a log scale when it spans decades). A constant grid is
            coloured mid-scale on a bar of ±10% around its value.
    """
    x, y, values = landscape.slice(dims, at)
    ax = ax or new_axes()
    norm, level_values = _norm_and_levels(values, log, levels)
    draw = ax.contourf if filled else ax.contour
    # values are indexed [x, y]; matplotlib wants Z[row=y, col=x]
    artist = draw(x, y, _masked(values, log).T, levels=level_values, norm=norm, cmap=cmap)
    if colorbar:
        _label_colorbar(ax.figure.colorbar(artist, ax=ax, label="loss"), norm)
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
