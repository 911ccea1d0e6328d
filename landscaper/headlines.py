"""The few numbers a report opens with, each with a one-sentence reading.

A report's ``metrics.json`` holds every number; a reader first wants six of them and what they
mean for this model: the sharpest curvature, the total curvature, how many minima the grid
has, how deep they are (SMAD, persistence), at what scale θ₀'s basin meets another, and the
loss persistence of jump & retrain. `headlines` picks them from a report's metrics (absent
stages are skipped) and `compare_headlines` says how two models differ in each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Headline", "compare_headlines", "headlines"]


@dataclass(frozen=True)
class Headline:
    """One headline number: what it is, its value as text, and what it says."""

    key: str
    label: str
    value: float | None
    text: str
    reading: str


def _get(metrics: Mapping[str, Any], *path: Any) -> Any:
    for key in path:
        if isinstance(metrics, Mapping) and key in metrics:
            metrics = metrics[key]
        elif isinstance(metrics, list) and isinstance(key, int) and -len(metrics) <= key < len(
                metrics):
            metrics = metrics[key]
        else:
            return None
    return metrics


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _top_eigenvalue(m: Mapping[str, Any]) -> Headline | None:
    top = _get(m, "hessian", "top_eigenvalues", 0)
    if top is None:
        return None
    matrix = {"ggn": "GGN", "fisher": "Fisher"}.get(_get(m, "hessian", "curvature"), "Hessian")
    return Headline("top_eigenvalue", f"top {matrix} eigenvalue", top, _fmt(top),
                    f"the sharpest direction: a step of length ε along it raises the loss by "
                    f"about {_fmt(top / 2)}·ε²")


def _trace(m: Mapping[str, Any]) -> Headline | None:
    trace, top = _get(m, "hessian", "trace"), _get(m, "hessian", "top_eigenvalues", 0)
    if trace is None:
        return None
    error = _get(m, "hessian", "trace_std_error")
    text = _fmt(trace) + (f" ± {error:.2g}" if error is not None else "")
    reading = "the total curvature over all directions"
    if top and top > 0 and trace > 0:
        reading += (f"; trace / top eigenvalue = {trace / top:.3g}, roughly how many "
                    "directions are as sharp as the sharpest")
    return Headline("trace", "trace", trace, text, reading)


def _minima(m: Mapping[str, Any]) -> Headline | None:
    minima = _get(m, "landscape", "minima")
    if minima is None:
        return None
    reading = ("a single basin: the loss rises from θ₀'s basin in every direction of the grid"
               if minima == 1 else
               f"{minima} local minima on the grid: the loss has barriers at this scale")
    return Headline("minima", "minima on the grid", float(minima), str(minima), reading)


def _smad(m: Mapping[str, Any]) -> Headline | None:
    smad = _get(m, "landscape", "smad")
    if smad is None:
        return None
    normalized = _get(m, "landscape", "smad_normalized")
    text = _fmt(smad) + (f" ({normalized:.3g} of the loss range)" if normalized else "")
    reading = ("no minimum is separated from another by a saddle" if smad == 0 else
               "the mean loss climb from a minimum to the saddle where its basin joins "
               "another: how deep the basins are")
    return Headline("smad", "SMAD", smad, text, reading)


def _persistence(m: Mapping[str, Any]) -> Headline | None:
    total = _get(m, "landscape", "total_persistence_d0")
    if total is None:
        return None
    reading = ("nothing to merge: one basin" if total == 0 else
               "the sum of squared depths of every basin but the deepest (elder rule, p = 2): "
               "a few deep, separate basins weigh more than many shallow ones")
    return Headline("persistence", "total persistence (grid, H0, p = 2)", total, _fmt(total),
                    reading)


def _scale(m: Mapping[str, Any]) -> Headline | None:
    scale = _get(m, "scale")
    if not isinstance(scale, Mapping) or not scale.get("radius"):
        return None
    outer = max(scale["radius"])
    radius = scale.get("saddle_radius")
    if radius is None:
        return Headline("saddle_radius", "θ₀'s basin meets a saddle", None, "never",
                        f"θ₀'s basin stays alone in every box up to the grid's edge "
                        f"({outer} steps)")
    return Headline("saddle_radius", "θ₀'s basin meets a saddle", float(radius),
                    f"{radius} of {outer} steps",
                    f"θ₀'s basin first joins another in the box {radius} grid steps around θ₀"
                    f" ({radius / outer:.0%} of the way to the edge), at loss "
                    f"{_fmt(scale.get('saddle_value'))}")


def _jump_retrain(m: Mapping[str, Any]) -> Headline | None:
    d0, d1 = _get(m, "jump_retrain", "total_persistence_d0"), _get(m, "jump_retrain",
                                                                   "total_persistence_d1")
    if d0 is None:
        return None
    basins = _get(m, "jump_retrain", "basins")
    barrier = _get(m, "jump_retrain", "largest_barrier")
    samples = _get(m, "jump_retrain", "samples")
    if basins is not None and barrier is not None:  # reports since the basin count
        apart = _get(m, "jump_retrain", "essential_d0") or 1
        reading = (f"the {samples} retraining samples fall into one basin of their kNN graph"
                   if basins == 1 else
                   f"the {samples} retraining samples fall into {basins} basins of their kNN "
                   "graph")
        if barrier:
            reading += f", the deepest barrier between them {_fmt(barrier)} in loss"
        if apart > 1:
            reading += f" ({apart} groups the graph never joins)"
        if d1:
            reading += f"; {_fmt(d1)} of the persistence in loops (H1)"
    else:
        reading = ("retraining from every jump lands in one connected low-loss region"
                   if d0 == 0 and not d1 else
                   "retrained jumps land in low-loss regions separated by loss barriers on the "
                   "samples' kNN graph (Horoi et al.): higher means more topological activity")
    return Headline("jr_persistence", "J&R total persistence (H0, H1)", d0,
                    f"{_fmt(d0)}, {_fmt(d1)}", reading)


_PICKERS: tuple[Callable[[Mapping[str, Any]], Headline | None], ...] = (
    _top_eigenvalue, _trace, _minima, _smad, _persistence, _scale, _jump_retrain)


def headlines(metrics: Mapping[str, Any]) -> list[Headline]:
    """The headline numbers of a report's metrics, in reading order (absent ones skipped)."""
    return [h for pick in _PICKERS if (h := pick(metrics)) is not None]


def _difference(first: Headline | None, second: Headline | None, names: tuple[str, str]
                ) -> str:
    """One sentence on how two models' values of one headline differ."""
    label = (first or second).label
    a = None if first is None else first.value
    b = None if second is None else second.value
    na, nb = names
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        texts = [f"{name} {h.text}" for name, h in zip(names, (first, second), strict=True)
                 if h is not None]
        return f"{label}: " + ("; ".join(texts) if texts else "unknown")
    if a == b:
        return f"{label}: the same in both"
    if a > 0 and b > 0 and max(a, b) < 1000 * min(a, b):  # beyond 1000×, the values say more
        high, low, ratio = (na, nb, a / b) if a > b else (nb, na, b / a)
        return f"{label}: {high}'s is {ratio:.3g}× {low}'s"
    return f"{label}: higher for {na if a > b else nb} ({_fmt(a)} against {_fmt(b)})"


def compare_headlines(first: Mapping[str, Any], second: Mapping[str, Any],
                      names: tuple[str, str]) -> list[tuple[str, Headline | None,
                                                            Headline | None, str]]:
    """Row by row, ``(label, first's headline, second's, how they differ)`` for every headline
    either report has."""
    a = {h.key: h for h in headlines(first)}
    b = {h.key: h for h in headlines(second)}
    rows = []
    for key in [*a, *(k for k in b if k not in a)]:
        ha, hb = a.get(key), b.get(key)
        rows.append(((ha or hb).label, ha, hb, _difference(ha, hb, names)))
    return rows
