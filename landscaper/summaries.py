"""The one registry of landscape summaries: plain functions ``Landscape -> value`` with a name.

A summary is registered once, with flags saying where it appears:

- ``report``: the ``landscape`` section of a report's ``metrics.json`` (`report.landscape_metrics`);
- ``compare``: the rows of ``landscaper compare`` (table and ``--json``);
- ``history``: each record of the HuggingFace ``LandscapeCallback``.

Entries keep their registration order, which is the order of the keys (and of compare's rows).
A new summary is one decorated function::

    from landscaper import summaries

    @summaries.register("loss_range", compare=True)
    def loss_range(land):
        return float(np.nanmax(land.loss) - np.nanmin(land.loss))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .topology import total_persistence

if TYPE_CHECKING:
    from .landscape import Landscape

#: Where a summary can appear (the flags of `register`).
TARGETS = ("report", "compare", "history")

SummaryFunction = Callable[["Landscape"], Any]


@dataclass(frozen=True)
class Summary:
    """A named landscape summary and where it appears."""

    name: str
    function: SummaryFunction
    report: bool = True
    compare: bool = False
    history: bool = False

    def appears_in(self, target: str) -> bool:
        """Whether this summary is part of ``target`` (one of `TARGETS`)."""
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        return bool(getattr(self, target))


_REGISTRY: dict[str, Summary] = {}


def register(name: str, *, report: bool = True, compare: bool = False,
             history: bool = False) -> Callable[[SummaryFunction], SummaryFunction]:
    """Decorator registering ``function(land) -> value`` as summary ``name``.

    The value should be JSON-friendly (a Python number, string, list or None). A name can be
    registered once; `unregister` frees it.
    """
    if name in _REGISTRY:
        raise ValueError(f"a landscape summary named {name!r} is registered already")

    def decorate(function: SummaryFunction) -> SummaryFunction:
        _REGISTRY[name] = Summary(name, function, report=report, compare=compare,
                                  history=history)
        return function

    return decorate


def unregister(name: str) -> None:
    """Remove summary ``name`` (KeyError when there is none)."""
    del _REGISTRY[name]


def summaries(target: str | None = None) -> list[Summary]:
    """Registered summaries in registration order; only those of ``target`` when given."""
    return [s for s in _REGISTRY.values() if target is None or s.appears_in(target)]


def names(target: str) -> list[str]:
    """Names of ``target``'s summaries, in order (compare's rows, say)."""
    return [s.name for s in summaries(target)]


def summarize(land: Landscape, target: str = "report") -> dict[str, Any]:
    """``{name: value}`` of every summary of ``target`` for ``land``, in registration order."""
    return {s.name: s.function(land) for s in summaries(target)}


# ---------------------------------------------------------------------- the built-in summaries
def _finite(land: Landscape) -> np.ndarray:
    return land.loss[np.isfinite(land.loss)]


@register("shape", compare=True)
def shape(land: Landscape) -> list[int]:
    """Grid shape."""
    return list(land.shape)


@register("extent", history=True)
def extent(land: Landscape) -> Any:
    """Half-width (or ranges) of the axes as used (an automatic extent: as its scans chose)."""
    return land.metadata.get("extent")


@register("extent_unit")
def extent_unit(land: Landscape) -> str | None:
    """``"relative"`` (fractions of ‖θ₀‖) or ``"absolute"`` (direction units)."""
    return land.metadata.get("extent_unit")


@register("loss_min", compare=True)
def loss_min(land: Landscape) -> float | None:
    """Lowest finite loss on the grid (None when there is none)."""
    finite = _finite(land)
    return float(finite.min()) if finite.size else None


@register("loss_max", compare=True)
def loss_max(land: Landscape) -> float | None:
    """Highest finite loss on the grid (None when there is none)."""
    finite = _finite(land)
    return float(finite.max()) if finite.size else None


@register("loss_at_theta0")
def loss_at_theta0(land: Landscape) -> float | None:
    """Loss of the trained parameters (see `Landscape.loss_at_theta0`)."""
    return land.loss_at_theta0


@register("theta0_on_grid")
def theta0_on_grid(land: Landscape) -> bool:
    """Whether the grid contains θ₀ itself."""
    return land.theta0_index is not None


@register("nonfinite")
def nonfinite(land: Landscape) -> Any:
    """What the computation recorded about non-finite losses."""
    return land.metadata.get("nonfinite")


@register("minima", compare=True, history=True)
def minima(land: Landscape) -> int:
    """Number of local minima (leaves of the sublevel merge tree, full connectivity)."""
    return int(land.merge_tree().n_minima)


@register("minima_by_radius", report=False, history=True)
def minima_by_radius(land: Landscape) -> list[int] | None:
    """Local minima in each nested box around θ₀, radius 1, 2, … grid steps (see
    `Landscape.scale_summary`); None for grids too small or too non-finite for it."""
    summary = _scale(land)
    return None if summary is None else [int(m) for m in summary.n_minima]


@register("saddle_radius", compare=True, history=True)
def saddle_radius(land: Landscape) -> int | None:
    """Grid steps from θ₀ to the first box in which θ₀'s basin meets a saddle (None: never,
    or no scale summary)."""
    summary = _scale(land)
    return None if summary is None else summary.saddle_radius


def _scale(land: Landscape) -> Any:
    if max(land.shape) < 3:
        return None
    try:
        return land.scale_summary()
    except ValueError:  # boxes with fewer than two finite values
        return None


@register("smad", compare=True, history=True)
def smad(land: Landscape) -> float:
    """Saddle–Minimum Average Distance."""
    return float(land.smad())


@register("smad_normalized", compare=True, history=True)
def smad_normalized(land: Landscape) -> float:
    """SMAD divided by the loss range, in [0, 1]."""
    return float(land.smad(normalize=True))


@register("smad_weighted")
def smad_weighted(land: Landscape) -> float:
    """SMAD weighted by basin volume."""
    return float(land.smad(weighted=True))


@register("total_persistence_d0", compare=True)
def total_persistence_d0(land: Landscape) -> float:
    """Sum of squared lifetimes of the finite pairs of the 0-dimensional sublevel diagram."""
    return total_persistence(land.persistence(), p=2)


@register("connectivity")
def connectivity(land: Landscape) -> str:
    """The grid neighbourhood every topological summary uses."""
    return "full (3^k-1 neighbours)"


@register("eigenvalues_of_axes", compare=True)
def eigenvalues_of_axes(land: Landscape) -> list[float] | None:
    """Hessian eigenvalues of the directions, when they are Hessian directions."""
    return None if land.eigenvalues is None else [float(v) for v in land.eigenvalues]
