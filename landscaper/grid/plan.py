"""How a grid is evaluated: vmap chunk size, points per chunk, memory and time.

Planning measures the objective (one forward with hooks for the memory of one point, a few
timed calls for the fastest vmap chunk) but never evaluates the grid. The measurements are
cached per objective, so planning twice costs nothing.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._utils import Stopwatch, format_bytes, nested_bytes, parse_bytes
from ..objective import Objective

if TYPE_CHECKING:  # the subspace evaluates through the planner's chunk bound
    from ..subspace import SubspaceLoss

logger = logging.getLogger(__name__)

#: Grid points built and written per chunk are at least this many (vmap chunks are grouped).
MIN_POINTS_PER_CHUNK = 256
#: A distributed grid gets at least this many chunks per rank by default (load balance).
MIN_CHUNKS_PER_RANK = 8

_BYTES_PER_POINT: weakref.WeakKeyDictionary[Objective, int] = weakref.WeakKeyDictionary()
#: per objective, the tuned chunk and its seconds per point, of θ rows and of subspace rows
_TUNED_CHUNK: weakref.WeakKeyDictionary[Objective, dict[bool, tuple[int, float]]] = (
    weakref.WeakKeyDictionary())


def _timed_rows(objective: Objective, subspace: SubspaceLoss | None
                ) -> Callable[[int, int], None]:
    """``evaluate(n, chunk)``: losses at ``n`` copies of the origin in vmapped calls of
    ``chunk``, as a grid evaluates them (through ``subspace`` when given), finished when it
    returns (a GPU is synchronised, so a stopwatch around it times the work)."""
    if subspace is None:
        def losses(n: int, chunk: int) -> torch.Tensor:
            return objective.batch(objective.theta0.expand(n, -1), chunk_size=chunk,
                                   vectorize=chunk > 1)
    else:
        zeros = torch.zeros(1, subspace.k, dtype=objective.dtype, device=objective.device)

        def losses(n: int, chunk: int) -> torch.Tensor:
            return subspace.batch(zeros.expand(n, -1), chunk_size=chunk, vectorize=chunk > 1)

    def evaluate(n: int, chunk: int) -> None:
        losses(n, chunk)
        if objective.device.type == "cuda":
            torch.cuda.synchronize(objective.device)

    return evaluate


@dataclass(frozen=True)
class GridPlan:
    """The chunking of a grid and what it will cost, measured on the objective before the run.

    Attributes:
        n_points: grid points.
        chunk_size: parameter vectors per vmapped call (1: sequential calls).
        points_per_chunk: points built with one matrix product (and checkpointed) together.
        bytes_per_point: estimated memory of one point inside a vmapped call.
        seconds_per_point: measured evaluation time per point.
    """

    n_points: int
    chunk_size: int
    points_per_chunk: int
    bytes_per_point: int
    seconds_per_point: float

    @property
    def bytes_per_chunk(self) -> int:
        """Estimated memory of one chunk."""
        return self.points_per_chunk * self.bytes_per_point

    @property
    def seconds(self) -> float:
        """Estimated wall time of the whole grid (on one process)."""
        return self.n_points * self.seconds_per_point

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every chunk of flat grid points, in order."""
        step = self.points_per_chunk
        return [(start, min(start + step, self.n_points))
                for start in range(0, self.n_points, step)]

    def with_chunking(self, chunk_size: int, points_per_chunk: int) -> GridPlan:
        """The same plan with another chunking (a checkpoint's, so a resumed run is identical)."""
        return replace(self, chunk_size=chunk_size, points_per_chunk=points_per_chunk)


#: The former name of `GridPlan`.
GridEstimate = GridPlan


def bytes_per_point(objective: Objective) -> int:
    """Estimated memory of evaluating one θ inside a vmapped chunk.

    One copy of θ plus the outputs of every submodule on the largest batch (an upper bound on
    live activations), measured once per objective with forward hooks.
    """
    if objective not in _BYTES_PER_POINT:
        activation = 0

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            nonlocal activation
            activation += nested_bytes(output)

        largest = max(range(len(objective.batches)), key=lambda i: objective.weights[i])
        objective.record_frozen()  # measure the evaluation as the grid will run it
        handles = [m.register_forward_hook(hook) for m in objective.model.modules()]
        try:
            with torch.no_grad():
                objective.loss_on(objective.theta0, objective.batches[largest])
        finally:
            for h in handles:
                h.remove()
        itemsize = objective.theta0.element_size()
        _BYTES_PER_POINT[objective] = int(objective.num_params * itemsize + activation)
    return _BYTES_PER_POINT[objective]


def max_chunk_size(objective: Objective, memory_budget: int | str | None = None) -> int:
    """How many parameter vectors one vmapped call may take within the memory budget (the
    objective's by default)."""
    budget = objective.memory_budget if memory_budget is None else parse_bytes(memory_budget)
    per_point = bytes_per_point(objective)
    if per_point > budget:
        raise MemoryError(
            f"one evaluation needs about {format_bytes(per_point)} but the memory budget is "
            f"{format_bytes(budget)}; raise memory_budget, use smaller batches, or select "
            "fewer parameters with params=[...]")
    return max(1, budget // per_point)


def tune_chunk_size(objective: Objective, max_chunk: int, max_points: int = 512,
                    subspace: SubspaceLoss | None = None) -> tuple[int, float]:
    """The fastest vmap chunk among 1, 4, 16, … up to ``max_chunk``, and its seconds/point.

    Measured on copies of θ₀ (as points of ``subspace`` when given, the way a grid evaluates
    them), spending at most about ``max_points`` evaluations: one timing per chunk first,
    then up to two more of the two fastest, the best of each chunk's timings deciding; chunk
    1 means plain sequential calls. On CPUs a large vmapped batch is often slower per point
    than a small one (or than no vmap at all), so the memory bound alone is a poor choice.
    The result is cached per objective.
    """
    cache = _TUNED_CHUNK.setdefault(objective, {})
    cached = cache.get(subspace is not None)
    if cached is not None and cached[0] <= max_chunk:
        return cached
    evaluate = _timed_rows(objective, subspace)
    candidates = [1]
    while candidates[-1] * 4 <= max_chunk:
        candidates.append(candidates[-1] * 4)
    spent = 0

    def timing(chunk: int) -> float:
        """Seconds per point of one timing (chunk 1: over 8 sequential points)."""
        nonlocal spent
        calls = max(1, 8 // chunk)
        watch = Stopwatch()
        for _ in range(calls):
            evaluate(chunk, chunk)
        spent += chunk * calls
        return watch.seconds / (chunk * calls)

    evaluate(1, 1)  # warm-up
    timings: dict[int, list[float]] = {1: [timing(1)]}
    for chunk in candidates[1:]:  # one timing each, growing until slower or over budget
        if spent + 2 * chunk > max_points or not objective.vectorizes:
            break
        evaluate(chunk, chunk)  # warm-up of this shape
        spent += chunk
        timings[chunk] = [timing(chunk)]
        best = min(min(t) for t in timings.values())
        if timings[chunk][0] > 1.5 * best:
            break
    # then up to two more timings of the two fastest, as the budget allows: one slow timing
    # (another process, a page fault) must not decide the chunk of a grid of hours
    for _ in range(2):
        for chunk in sorted(timings, key=lambda c: min(timings[c]))[:2]:
            if spent + chunk * max(1, 8 // chunk) <= max_points:
                timings[chunk].append(timing(chunk))
    best_chunk = min(timings, key=lambda c: min(timings[c]))
    best_time = min(timings[best_chunk])
    logger.info("chunk size %d is fastest (%.3g ms per point)", best_chunk, 1e3 * best_time)
    cache[subspace is not None] = (best_chunk, best_time)
    return best_chunk, best_time


def estimate_grid(objective: Objective, n_points: int, memory_budget: int | str | None = None,
                  chunk_size: int | None = None, points_per_chunk: int | None = None,
                  subspace: SubspaceLoss | None = None) -> GridPlan:
    """Memory and time of a grid of ``n_points``; raises MemoryError if it cannot fit.

    Without ``chunk_size`` the fastest vmap chunk that fits the budget (the objective's by
    default) is measured (`tune_chunk_size`), on ``subspace`` when the grid is evaluated
    through one.
    """
    budget = objective.memory_budget if memory_budget is None else parse_bytes(memory_budget)
    result_bytes = n_points * 8
    if result_bytes > budget:
        raise MemoryError(f"the loss array alone needs {format_bytes(result_bytes)}, more than "
                          f"the memory budget {format_bytes(budget)}; use fewer steps or dims, or "
                          "raise memory_budget")
    most = max(1, min(max_chunk_size(objective, budget - result_bytes), n_points))
    per_point_bytes = bytes_per_point(objective)
    if chunk_size is None:
        chunk, per_point = tune_chunk_size(objective, most, max_points=max(8, n_points // 16),
                                           subspace=subspace)
    else:
        chunk = max(1, min(chunk_size, n_points))
        if chunk > most:
            raise MemoryError(
                f"chunk_size={chunk_size} parameter vectors per call exceed the memory budget "
                f"{format_bytes(budget)} (~{format_bytes(per_point_bytes)} each); "
                f"pass chunk_size<={most} or raise memory_budget")
        probe = min(chunk, 16)  # a timing sample, not a chunk
        watch = Stopwatch()
        _timed_rows(objective, subspace)(probe, probe)
        per_point = watch.seconds / probe
    if points_per_chunk is None:
        group = max(1, min(most // chunk, -(-MIN_POINTS_PER_CHUNK // chunk)))
        points = min(chunk * group, n_points)
    else:
        points = max(1, min(points_per_chunk, n_points))
    return GridPlan(n_points, chunk, points, per_point_bytes, per_point)


def balanced_points_per_chunk(points_per_chunk: int, n_points: int, chunk_size: int,
                              world_size: int) -> int:
    """Points per chunk lowered so each of ``world_size`` ranks gets at least
    `MIN_CHUNKS_PER_RANK` chunks (a multiple of ``chunk_size``; unchanged for one rank)."""
    if world_size <= 1:
        return points_per_chunk
    share = -(-n_points // (MIN_CHUNKS_PER_RANK * world_size))
    return max(1, min(points_per_chunk, -(-share // chunk_size) * chunk_size))


def plan_grid(objective: Objective, n_points: int, *, memory_budget: int | str | None = None,
              chunk_size: int | None = None, points_per_chunk: int | None = None,
              world_size: int = 1, subspace: SubspaceLoss | None = None) -> GridPlan:
    """The plan of a grid of ``n_points`` evaluated by ``world_size`` processes: `estimate_grid`,
    with the default points per chunk lowered for load balance across ranks."""
    plan = estimate_grid(objective, n_points, memory_budget, chunk_size, points_per_chunk,
                         subspace)
    if points_per_chunk is None:
        plan = plan.with_chunking(plan.chunk_size, balanced_points_per_chunk(
            plan.points_per_chunk, n_points, plan.chunk_size, world_size))
    return plan
