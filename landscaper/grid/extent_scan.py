"""``extent="auto"``: each axis' range from cheap 1-D scans of the loss along its direction.

A fixed extent (say 5% of ‖θ₀‖) shows a sharp model's loss exploding and a flat model's
loss barely moving, so neither landscape has visible structure and two models cannot be
compared. `AutoExtent` instead chooses each axis' half-width as the distance at which the loss
first reaches a stated rise above θ₀'s loss, along that axis' direction in both signs. Grids
of different models made with the same rule then span the same rise of the loss.

The scan costs two short 1-D grids per direction, both signs together (``2·scan_points``
geometric distances, then ``2·refine_points`` inside the brackets), evaluated like any grid
(batched, frozen prefix reused), and its result is recorded in the landscape's metadata.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..directions import Directions
from .axes import ExtentUnit

logger = logging.getLogger(__name__)

#: The spelling of the automatic extent in `GridRequest`, `Landscape.compute` and the CLI.
AUTO = "auto"


@dataclass(frozen=True)
class AutoExtent:
    """The rule of an automatic extent: scan until the loss reaches a target.

    The target is ``min(factor·L₀, L₀ + rise)`` for θ₀'s loss ``L₀ > 0`` (either term
    switched off by passing None), ``L₀ + rise`` when ``L₀ ≤ 0``. Along each direction dᵢ
    and its negative the scan finds the first distance at which the loss reaches the target
    (or stops being finite); the axis' half-width is the farther of the two sides, so the
    loss reaches the target on both sides within the grid and θ₀ stays its centre point.

    Attributes:
        factor: multiple of θ₀'s loss to reach (default 10).
        rise: absolute rise above θ₀'s loss to reach (default 1.0, in the loss' units).
        max_extent: the farthest half-width scanned, in the grid's extent unit (default 2.0:
            twice ‖θ₀‖ for a relative extent); an axis whose loss never reaches the target
            gets this, with a warning.
        scan_points: geometric distances per side, from ``max_extent·2^-(scan_points-1)`` up.
        refine_points: evenly spaced distances inside the bracket found by the scan.
        symmetric: one half-width per axis (True) or the two sides' own ``(low, high)`` (θ₀
            is then a grid point only by chance).
    """

    factor: float | None = 10.0
    rise: float | None = 1.0
    max_extent: float = 2.0
    scan_points: int = 24
    refine_points: int = 8
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.factor is None and self.rise is None:
            raise ValueError("AutoExtent needs a target: give factor (a multiple of θ₀'s loss), "
                             "rise (an absolute rise above it) or both")
        if self.factor is not None and not (math.isfinite(self.factor) and self.factor > 1):
            raise ValueError(f"AutoExtent factor must be a finite number above 1, got "
                             f"{self.factor!r}; e.g. factor=10")
        if self.rise is not None and not (math.isfinite(self.rise) and self.rise > 0):
            raise ValueError(f"AutoExtent rise must be positive and finite, got {self.rise!r}; "
                             "e.g. rise=1.0")
        if not (math.isfinite(self.max_extent) and self.max_extent > 0):
            raise ValueError(f"AutoExtent max_extent must be positive and finite, got "
                             f"{self.max_extent!r}")
        for name, minimum in (("scan_points", 2), ("refine_points", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"AutoExtent {name} must be an integer >= {minimum}, got "
                                 f"{value!r}")

    def target(self, loss0: float) -> float:
        """The loss the scan looks for, given θ₀'s loss."""
        if not math.isfinite(loss0):
            raise ValueError(f"extent='auto' scans for a rise above θ₀'s loss, which is "
                             f"{loss0!r}; fix the model or data (see objective.nonfinite_theta0)"
                             " or give a numeric extent")
        candidates = []
        if self.factor is not None and loss0 > 0:
            candidates.append(self.factor * loss0)
        if self.rise is not None:
            candidates.append(loss0 + self.rise)
        if not candidates:
            raise ValueError(f"θ₀'s loss is {loss0:g} <= 0, so a multiple of it is no rise; "
                             "give AutoExtent(rise=...) as well")
        return min(candidates)

    def rule(self) -> str:
        """The rule in words (kept in metadata)."""
        terms = [f"{self.factor:g}·L₀" if self.factor is not None else None,
                 f"L₀ + {self.rise:g}" if self.rise is not None else None]
        target = " and ".join(t for t in terms if t)
        shape = "the farther side's distance" if self.symmetric else "each side's distance"
        return (f"along ±dᵢ the first distance where the loss reaches "
                f"{'the lower of ' if None not in terms else ''}{target}; half-width = {shape}")

    def describe(self) -> dict[str, Any]:
        """The rule's settings (JSON-friendly)."""
        return {"factor": self.factor, "rise": self.rise, "max_extent": self.max_extent,
                "scan_points": self.scan_points, "refine_points": self.refine_points,
                "symmetric": self.symmetric, "rule": self.rule()}


def parse_auto_extent(extent: Any) -> AutoExtent | None:
    """The `AutoExtent` that ``extent`` asks for (``"auto"`` gives the default rule), or
    None for a numeric extent."""
    if isinstance(extent, AutoExtent):
        return extent
    if isinstance(extent, str):
        if extent.strip().lower() != AUTO:
            raise ValueError(f"extent={extent!r}: a text extent can only be 'auto'; otherwise "
                             "give a half-width (e.g. extent=0.5) or (low, high) pairs")
        return AutoExtent()
    return None


#: Evaluates the 1-D grid θ₀ + a·d for an increasing axis of multipliers a: (d, axis) ->
#: float64 losses in axis order.
Evaluate = Callable[[Directions, np.ndarray], np.ndarray]


def _first_crossing(values: np.ndarray, target: float) -> int | None:
    """Index of the first value at or above ``target`` or not finite, None if there is none."""
    hit = ~np.isfinite(values) | (values >= target)
    return int(np.argmax(hit)) if hit.any() else None


def _both_sides(evaluate: Evaluate, direction: Directions
                ) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A function evaluating increasing multipliers along −d and +d in one 1-D grid, returning
    each side's losses nearest first."""

    def losses(negative: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        axis = np.concatenate([-negative[::-1], positive])
        values = evaluate(direction, axis)
        return values[:negative.size][::-1], values[negative.size:]

    return losses


def _refined(bracket: tuple[float, float, float, float], inner: np.ndarray,
             inner_values: np.ndarray, target: float) -> float:
    """The crossing inside ``bracket = (low, high, loss at low, loss at high)`` from the loss
    at the evenly spaced ``inner`` points, linearly interpolated in its last sub-bracket."""
    low, high, low_value, high_value = bracket
    fine = np.concatenate([[low], inner, [high]])
    fine_values = np.concatenate([[low_value], inner_values, [high_value]])
    j = _first_crossing(fine_values[1:], target) + 1  # the bracket's top end always crosses
    a, b, va, vb = fine[j - 1], fine[j], fine_values[j - 1], fine_values[j]
    if np.isfinite(vb) and vb > va:
        b = a + (b - a) * (target - va) / (vb - va)
    return float(b)


def _sides(evaluate: Evaluate, direction: Directions, distances: np.ndarray, loss0: float,
           target: float, refine_points: int) -> tuple[list[tuple[float, bool]], int]:
    """For −d and +d: (multiplier where the loss first reaches the target, whether it did),
    and the points evaluated; ``distances`` are increasing multipliers of d."""
    losses = _both_sides(evaluate, direction)
    scans = losses(distances, distances)
    brackets, results = [], []
    for values in scans:
        hit = _first_crossing(values, target)
        if hit is None:
            brackets.append(None)
            continue
        low, low_value = (0.0, loss0) if hit == 0 else (float(distances[hit - 1]),
                                                        float(values[hit - 1]))
        brackets.append((low, float(distances[hit]), low_value, float(values[hit])))
    inner = [np.linspace(b[0], b[1], refine_points + 2)[1:-1] if b else np.empty(0)
             for b in brackets]
    refined = losses(*inner) if any(b is not None for b in brackets) else (None, None)
    for bracket, points, values in zip(brackets, inner, refined, strict=True):
        results.append((float(distances[-1]), False) if bracket is None else
                       (_refined(bracket, points, values, target), True))
    return results, 2 * distances.size + sum(p.size for p in inner)


def scan_extent(evaluate: Evaluate, directions: Directions, rule: AutoExtent, loss0: float,
                unit: ExtentUnit, theta0_norm: float) -> tuple[list[Any], dict[str, Any]]:
    """Each axis' range by ``rule`` and the record of the scan.

    Args:
        evaluate: evaluates a 1-D grid along one direction (see `Evaluate`).
        directions: the grid's directions.
        rule: the `AutoExtent`.
        loss0: θ₀'s loss.
        unit: the extent unit the ranges are expressed in.
        theta0_norm: ‖θ₀‖ (scales a relative extent).

    Returns:
        ``(extent, record)``: one half-width per axis (or ``(low, high)`` pairs when
        ``rule.symmetric`` is False) in ``unit``, and a JSON-friendly record.
    """
    target = rule.target(loss0)
    norms = directions.vectors.norm(dim=1).tolist()
    ladder = rule.max_extent * 2.0 ** -np.arange(rule.scan_points - 1, -1, -1)
    extent: list[Any] = []
    axes_record = []
    evaluations = 0
    for i, norm in enumerate(norms):
        scale = theta0_norm / norm if unit is ExtentUnit.RELATIVE else 1.0  # unit -> multiplier
        one = Directions(directions.vectors[i:i + 1], directions.kind)
        sides, n = _sides(evaluate, one, ladder * scale, loss0, target, rule.refine_points)
        evaluations += n
        (neg, neg_hit), (pos, pos_hit) = ((reach / scale, hit) for reach, hit in sides)
        extent.append(max(neg, pos) if rule.symmetric else (-neg, pos))
        axes_record.append({"negative": neg, "positive": pos, "reached": [neg_hit, pos_hit]})
    missed = [i for i, a in enumerate(axes_record) if not all(a["reached"])]
    if missed:
        logger.warning("extent='auto': along axes %s the loss stays below the target %.4g up "
                       "to max_extent=%g (%s); those sides use max_extent", missed, target,
                       rule.max_extent, unit.value)
    record = {**rule.describe(), "loss0": loss0, "target": target, "unit": unit.value,
              "axes": axes_record, "extent": extent, "evaluations": evaluations}
    logger.info("extent='auto': target loss %.4g (θ₀: %.4g); half-widths %s (%s), %d evaluations",
                target, loss0, [f"{e:.3g}" if np.isscalar(e) else e for e in extent],
                unit.value, evaluations)
    return extent, record


def loss_at_theta0(objective: Any) -> float:
    """θ₀'s loss as a float (no graph)."""
    with torch.no_grad():
        return float(objective())
