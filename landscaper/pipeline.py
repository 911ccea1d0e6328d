"""The whole analysis of one model as a pipeline: typed settings in, a report folder out.

`run_analysis` runs four stages — the Hessian spectrum, the landscape along the top
eigenvectors, its topology and (optionally) jump & retrain — and writes a `Report`. Its
settings are one frozen `AnalysisConfig`. Bad input is refused by `prepare_objective` before
any Hessian work, with the library's exceptions (``ValueError``, ``MemoryError``,
`~landscaper.grid.CheckpointMismatchError`, ...). A finished stage is reported to an
optional ``on_stage(name, seconds, summary)`` hook; the command line prints those lines.

In a distributed run (``torchrun``) every rank computes the spectrum and its share of the
grid; only rank 0 goes on to topology and J&R and writes the report.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from . import distributed as dist_utils
from ._utils import Stopwatch, format_bytes, parse_bytes
from .curvature import parse_curvature
from .directions import EIGEN_LABELS, eigen_directions
from .grid import AutoExtent, Execution, GridRequest, check_checkpoint
from .grid.extent_scan import parse_auto_extent
from .grid.plan import bytes_per_point
from .hessian import (
    EigenResult,
    SpectralDensity,
    TraceResult,
    check_trace_probes,
    spectral_density,
    top_eigenpairs,
    trace,
)
from .jump_retrain import JumpRetrain
from .landscape import Landscape
from .objective import Objective

if TYPE_CHECKING:  # the report (and matplotlib) is imported when one is written
    from .report import Report, Spectrum

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``on_stage(name, seconds, summary)``: called on rank 0 when a stage has finished.
StageHook = Callable[[str, float, str], None]

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def _one_line(text: str, limit: int = 1000) -> str:
    """``text`` without ANSI escape codes, as one line: its first non-empty line, or, when that
    line ends in a colon (as "Error(s) in loading state_dict for X:"), all of them joined."""
    lines = [line.strip() for line in _ANSI.sub("", str(text)).splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[0]
    if line.endswith(":") and len(lines) > 1:
        line = f"{line} {'; '.join(lines[1:])}"
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of `run_analysis`, grouped by stage (field names are the CLI's options).

    Grid: ``dims`` directions (the top Hessian eigenvectors), ``steps`` points per axis,
    ``extent`` half-width per axis in ``extent_unit`` (``"relative"``: a fraction of ‖θ₀‖;
    ``"absolute"``: direction units), or ``"auto"`` (the default): each axis' half-width where
    the loss first reaches the lower of ``extent_factor``·L₀ and L₀ + ``extent_rise`` (either
    None to drop it; see `landscaper.AutoExtent`).

    Spectrum: ``k`` top eigenvalues (at least ``dims`` are computed), ``seed`` of the Lanczos
    start vectors and of the probes, ``trace_probes`` products of the ``trace_method`` estimator
    (``"hutch++"`` or ``"hutchinson"``), ``slq_probes`` and
    ``slq_steps`` of the stochastic Lanczos quadrature density.

    Parameters and resources: ``params`` names or shell patterns forming θ (None or empty: all
    trainable parameters), the torch ``device``, ``memory_budget`` in bytes (or a size such as
    ``"4GiB"``) for the Lanczos basis and the batched grid, and a ``checkpoint`` folder making
    the grid resumable.

    Jump & retrain (when `run_analysis` gets ``train``): ``jr_seeds`` seeds, ``jr_epochs``
    retraining epochs, ``jr_steps`` step sizes and ``jr_k`` kNN neighbours.

    Output: the report folder ``out``; ``progress`` shows progress bars.
    """

    dims: int = 3
    steps: int = 21
    extent: float | str = "auto"
    extent_unit: str = "relative"
    extent_factor: float | None = 10.0
    extent_rise: float | None = 1.0
    k: int = 5
    curvature: str = "hessian"
    seed: int = 0
    trace_probes: int = 30
    trace_method: str = "hutch++"
    slq_probes: int = 3
    slq_steps: int = 40
    params: tuple[str, ...] | None = None
    device: str = "cpu"
    memory_budget: int | str = "2GiB"
    checkpoint: str | os.PathLike[str] | None = None
    jr_seeds: int = 4
    jr_epochs: int = 10
    jr_steps: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    jr_k: int = 20
    out: Path = Path("landscaper-report")
    progress: bool = True

    def __post_init__(self) -> None:
        params = self.params
        if params is not None:
            params = (params,) if isinstance(params, str) else tuple(params)
        normalized = {"params": params, "memory_budget": parse_bytes(self.memory_budget),
                      "curvature": parse_curvature(self.curvature).value,
                      "trace_method": check_trace_probes(self.trace_probes, self.trace_method,
                                                         "trace_probes", "trace_method")[1].value,
                      "jr_steps": tuple(self.jr_steps), "out": Path(self.out)}
        for name, value in normalized.items():
            object.__setattr__(self, name, value)
        self.grid_extent  # noqa: B018 - refuses a malformed extent rule now

    @property
    def grid_extent(self) -> float | AutoExtent:
        """The extent the grid is asked for: a number, or the `AutoExtent` rule."""
        if parse_auto_extent(self.extent) is None:
            return self.extent
        return AutoExtent(factor=self.extent_factor, rise=self.extent_rise)

    @property
    def n_points(self) -> int:
        """Points of the grid."""
        return self.steps ** self.dims

    @property
    def param_patterns(self) -> list[str] | None:
        """``params`` as `Objective` takes them (None for every trainable parameter)."""
        return list(self.params) if self.params else None


@dataclass
class SpectrumEstimate:
    """The spectrum stage's results: top eigenpairs, trace and SLQ density."""

    eigen: EigenResult
    trace: TraceResult
    density: SpectralDensity
    curvature: str = "hessian"

    def for_report(self) -> Spectrum:
        """The numbers and density curve a report shows."""
        from .report import Spectrum

        nodes = self.density.nodes
        grid = np.linspace(nodes.min() - 0.05 * abs(nodes.min()) - 1e-6,
                           nodes.max() * 1.05 + 1e-6, 400)
        return Spectrum(self.eigen.eigenvalues,
                        self.eigen.n_hvp + self.trace.n_hvp + self.density.n_hvp,
                        self.trace.estimate, self.trace.std_error, grid,
                        self.density.density(grid), self.curvature, self.trace.method)

    def summary(self) -> str:
        """The stage's one-line summary."""
        return (f"top eigenvalue {self.eigen.eigenvalues[0]:.4g}, trace "
                f"{self.trace.estimate:.4g} ± {self.trace.std_error:.2g}")


@dataclass
class AnalysisResult:
    """What `run_analysis` computed; ``report`` is None on ranks other than 0."""

    out: Path
    objective: Objective
    spectrum: SpectrumEstimate
    landscape: Landscape
    jump_retrain: JumpRetrain | None = None
    report: Report | None = None


# ---------------------------------------------------------------------- input checks
def _on_device(model: Any, device: str) -> Any:
    """The model moved to ``device`` (under torchrun: this rank's device)."""
    try:
        return model.to(dist_utils.local_device(device))
    except RuntimeError as err:
        raise ValueError(f"device {device}: cannot move the model there "
                         f"({_one_line(str(err))})") from err


def _objective(model: Any, data: Any, loss_fn: Any, config: AnalysisConfig,
               batch_loss: Any = None) -> Objective:
    """The objective at θ₀; a model or loss that cannot take the data is a ValueError."""
    try:
        return Objective(model, data, loss_fn, config.param_patterns,
                         memory_budget=config.memory_budget, batch_loss=batch_loss)
    except RuntimeError as err:
        raise ValueError(f"the loss at θ₀ cannot be computed on the data "
                         f"({type(err).__name__}: {_one_line(str(err), 300)}); check that "
                         "the data fit the model and the loss function") from err


def _check_sizes(objective: Objective, config: AnalysisConfig) -> None:
    """Refuse ``dims`` or ``k`` beyond θ's size, and a grid evaluation over the budget."""
    p = objective.num_params
    for name, value, what in (("dims", config.dims, "exceeds the"),
                              ("k", config.k, "asks for more eigenvalues than the")):
        if value > p:
            raise ValueError(f"{name}={value} {what} {p} parameters in θ; pass {name} <= {p} "
                             "or select more parameters with params=[...]")
    per_point = bytes_per_point(objective)  # one forward on the largest batch, no HVP
    loss_bytes = 8 * config.n_points
    if per_point + loss_bytes > config.memory_budget:
        raise MemoryError(f"one grid evaluation needs about {format_bytes(per_point)} (and "
                          f"the loss array {format_bytes(loss_bytes)}) but memory_budget is "
                          f"{format_bytes(config.memory_budget)}; raise memory_budget, pass "
                          "smaller batches, or select fewer parameters with params=[...]")


def prepare_objective(model: Any, data: Any, loss_fn: Any, config: AnalysisConfig, *,
                      batch_loss: Any = None) -> Objective:
    """Move the model to ``config.device`` and build its `Objective` (with ``batch_loss``
    for a loss that is not ``loss_fn(model(x), y)``, e.g. a PINN's), refusing bad input
    before any Hessian work.

    Raises:
        ValueError: the model cannot move to the device, the model or the loss cannot take
            the data, ``params`` match nothing, or ``dims``/``k`` exceed θ's size.
        MemoryError: one grid evaluation does not fit ``memory_budget``.
        landscaper.grid.CheckpointMismatchError: ``checkpoint`` belongs to another grid.
    """
    objective = _objective(_on_device(model, config.device), data, loss_fn, config,
                           batch_loss)
    _check_sizes(objective, config)
    if config.checkpoint is not None:
        check = lambda: check_checkpoint(config.checkpoint, objective,  # noqa: E731
                                         config.n_points)
        dist_utils.on_rank0(check) if dist_utils.world_size() > 1 else check()
    return objective


# ---------------------------------------------------------------------- stages
def _run_stage(name: str, on_stage: StageHook | None, summary: Callable[[T], str],
               work: Callable[..., T], *args: Any) -> T:
    """``work(*args)``, timed; its ``summary`` goes to ``on_stage`` (and the debug log)."""
    watch = Stopwatch()
    value = work(*args)
    seconds = watch.seconds
    if on_stage is not None or logger.isEnabledFor(logging.DEBUG):
        text = summary(value)
        logger.debug("%s done in %.1f s: %s", name, seconds, text)
        if on_stage is not None:
            on_stage(name, seconds, text)
    return value


def estimate_spectrum(objective: Objective, config: AnalysisConfig) -> SpectrumEstimate:
    """Top ``max(k, dims)`` eigenpairs, the trace and the SLQ spectral density of the
    ``config.curvature`` matrix (the Hessian by default)."""
    curvature = config.curvature
    eigen = top_eigenpairs(objective, k=max(config.k, config.dims), seed=config.seed,
                           memory_budget=config.memory_budget, curvature=curvature)
    estimate = trace(objective, n_probes=config.trace_probes, seed=config.seed,
                     curvature=curvature, method=config.trace_method)
    density = spectral_density(objective, n_probes=config.slq_probes, n_steps=config.slq_steps,
                               seed=config.seed, curvature=curvature)
    return SpectrumEstimate(eigen, estimate, density, curvature)


def compute_landscape(objective: Objective, spectrum: SpectrumEstimate, config: AnalysisConfig,
                      *, progress: bool, description: Mapping[str, Any] | None = None
                      ) -> Landscape:
    """The loss on the grid along the top ``dims`` Hessian eigenvectors (sharded over the
    ranks under torchrun: every rank calls this)."""
    grid = GridRequest(steps=config.steps, extent=config.grid_extent,
                       extent_unit=config.extent_unit)
    execution = Execution(memory_budget=config.memory_budget, checkpoint=config.checkpoint,
                          progress=progress, distributed=None)
    return Landscape.compute(objective=objective,
                             directions=eigen_directions(spectrum.eigen, config.dims,
                                                         kind=config.curvature),
                             grid=grid, execution=execution,
                             description=dict(description or {}))


def fit_jump_retrain(model: Any, data: Any, loss_fn: Any, config: AnalysisConfig, *,
                     optimizer_factory: Callable[..., Any], accuracy_fn: Any = None,
                     progress: bool = False, batch_loss: Any = None,
                     train_epoch: Callable[..., Any] | None = None) -> JumpRetrain:
    """Jump & retrain around θ₀, embedded with PHATE when it is installed (PCA otherwise);
    ``train_epoch`` as for `JumpRetrain` (default: one pass over the batches)."""
    embedding = "phate" if importlib.util.find_spec("phate") else "pca"
    jr = JumpRetrain(model, data, loss_fn, optimizer_factory, train_epoch,
                     accuracy_fn=accuracy_fn,
                     params=config.param_patterns, seeds=tuple(range(config.jr_seeds)),
                     step_sizes=config.jr_steps, epochs=config.jr_epochs, embedding=embedding,
                     k=config.jr_k, progress=progress, batch_loss=batch_loss)
    return jr.fit()


def _new_report(objective: Objective, config: AnalysisConfig) -> Report:
    """A report of ``config.out`` holding the settings."""
    from .report import Report

    report = Report(config.out)
    report.metrics["settings"] = {
        "dims": config.dims, "steps": config.steps, "extent": config.extent,
        "extent_unit": config.extent_unit, "extent_factor": config.extent_factor,
        "extent_rise": config.extent_rise, "params": config.params, "k": config.k,
        "memory_budget": config.memory_budget,
        "num_params": objective.num_params, "num_samples": objective.num_samples,
        "device": str(objective.device),
    }
    return report


def _spectrum_stage(objective: Objective, config: AnalysisConfig, report: Report | None
                    ) -> SpectrumEstimate:
    from .report import add_spectrum

    spectrum = estimate_spectrum(objective, config)
    if report is not None:
        add_spectrum(report, spectrum.for_report())
    return spectrum


def _landscape_stage(objective: Objective, spectrum: SpectrumEstimate, config: AnalysisConfig,
                     report: Report | None, model_name: str) -> Landscape:
    land = compute_landscape(objective, spectrum, config,
                             progress=config.progress and report is not None,
                             description={"model": model_name})
    if report is not None:
        land.save(config.out / "landscape.npz")
    return land


def _landscape_summary(land: Landscape) -> str:
    return (f"{land.loss.size} points, loss {np.nanmin(land.loss):.4g}.."
            f"{np.nanmax(land.loss):.4g}")


def _topology_stage(report: Report, land: Landscape) -> dict[str, Any]:
    from .report import add_landscape

    add_landscape(report, land)
    return report.metrics["landscape"]


def _topology_summary(metrics: Mapping[str, Any]) -> str:
    return (f"{metrics['minima']} minima, SMAD {metrics['smad']:.4g} (normalized "
            f"{metrics['smad_normalized']:.4g})")


def _jump_retrain_stage(report: Report, fit: Callable[[], JumpRetrain]) -> dict[str, Any]:
    from .report import add_jump_retrain

    add_jump_retrain(report, fit())
    return report.metrics["jump_retrain"]


def _jump_retrain_summary(metrics: Mapping[str, Any]) -> str:
    return (f"{metrics['samples']} samples ({metrics['settings']['embedding']}), total "
            f"persistence D0 {metrics['total_persistence_d0']:.4g}, D1 "
            f"{metrics['total_persistence_d1']:.4g}")


def run_analysis(model: Any, data: Any, loss_fn: Any, config: AnalysisConfig, *,
                 accuracy_fn: Any = None, train: Mapping[str, Any] | None = None,
                 on_stage: StageHook | None = None,
                 objective: Objective | None = None,
                 batch_loss: Any = None) -> AnalysisResult:
    """Spectrum, landscape, topology and (with ``train``) jump & retrain, written as a report
    in ``config.out``.

    Args:
        model: as for `Objective`; it is moved to ``config.device``.
        data: as for `Objective`.
        loss_fn: as for `Objective`.
        config: the settings.
        accuracy_fn: J&R's ``accuracy_fn(outputs, targets)``; None records no accuracy.
        train: ``{"optimizer_factory": parameters -> optimizer}`` runs J&R; an optional
            ``"train_epoch"`` entry replaces its retraining epoch (see `JumpRetrain`).
        on_stage: ``on_stage(name, seconds, summary)`` after each stage, on rank 0.
        objective: the `Objective` that `prepare_objective` built of these arguments (built
            here when None).
        batch_loss: ``batch_loss(call_model, batch)`` replacing ``loss_fn`` (see
            `Objective`); jump & retrain then steps on ``batch_loss(model, batch)``.

    Raises:
        ValueError, MemoryError, CheckpointMismatchError: bad input (see `prepare_objective`),
            before any Hessian work.
    """
    if objective is None:
        objective = prepare_objective(model, data, loss_fn, config, batch_loss=batch_loss)
    report = _new_report(objective, config) if dist_utils.rank() == 0 else None
    hook = on_stage if report is not None else None
    matrix = EIGEN_LABELS[config.curvature]
    spectrum = _run_stage(f"{matrix} spectrum", hook, SpectrumEstimate.summary, _spectrum_stage,
                          objective, config, report)
    land = _run_stage(f"{config.dims}-D {matrix} landscape", hook, _landscape_summary,
                      _landscape_stage, objective, spectrum, config, report, type(model).__name__)
    result = AnalysisResult(config.out, objective, spectrum, land, report=report)
    if report is None:  # the other ranks' part ends with the grid
        return result
    _run_stage("topology", hook, _topology_summary, _topology_stage, report, land)
    if train is not None:
        def fit() -> JumpRetrain:
            result.jump_retrain = fit_jump_retrain(
                model, data, loss_fn, config, optimizer_factory=train["optimizer_factory"],
                accuracy_fn=accuracy_fn, progress=config.progress, batch_loss=batch_loss,
                train_epoch=train.get("train_epoch"))
            return result.jump_retrain

        _run_stage("jump & retrain", hook, _jump_retrain_summary, _jump_retrain_stage, report,
                   fit)
    report.write()
    return result
