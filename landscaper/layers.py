"""Per-layer spectra: the top eigenvalues and the trace of each parameter group's own block of
the Hessian (or GGN, or empirical Fisher), with the other parameters held at θ₀.

The block of group g is H_gg = PᵀHP (P selects g's coordinates of θ); it is what a
layer-wise curvature table reports (the per-layer eigenvalues and traces users of PyHessian
ask for). Each block product costs one product of the whole matrix, so a table of G groups
costs about G × (Lanczos + trace) products; restrict θ with ``Objective(params=...)`` first
to pay only for the layers of interest.

    spectra = layer_spectra(objective, k=2)   # one row per module
    print(spectra.table())
    spectra.plot()                            # bars of the top eigenvalue and the trace
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .curvature import Curvature, parse_curvature
from .hessian import CurvatureSource, TraceMethod, Which, as_operator, top_eigenpairs, trace
from .objective import ParameterLayout
from .operators import RestrictedOperator

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: how `layer_spectra` groups parameters: ``"module"`` (by owning module), ``"parameter"``
#: (each tensor alone), patterns (one group each) or ``{label: pattern(s)}``.
Groups = str | Sequence[str] | Mapping[str, str | Sequence[str]] | None


@dataclass(frozen=True)
class GroupSpectrum:
    """One parameter group's curvature block.

    Attributes:
        name: the group's label (a module path, a parameter name or the caller's label).
        parameters: names of the parameters in the group.
        size: how many coordinates of θ it has.
        eigenvalues: its top ``k`` eigenvalues (of the block, descending by ``which``).
        trace: the stochastic estimate of the block's trace, and ``trace_std_error`` its error.
        converged: whether Lanczos met its tolerance on this block.
        n_hvp: products of the whole matrix this row used.
    """

    name: str
    parameters: tuple[str, ...]
    size: int
    eigenvalues: np.ndarray
    trace: float
    trace_std_error: float
    converged: bool
    n_hvp: int


@dataclass(frozen=True)
class LayerSpectra:
    """The rows of `layer_spectra`, in θ's order."""

    groups: tuple[GroupSpectrum, ...]
    curvature: str

    @property
    def n_hvp(self) -> int:
        """Products of the whole matrix used by all rows."""
        return sum(g.n_hvp for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly rows."""
        return {"curvature": self.curvature, "n_hvp": self.n_hvp, "groups": [
            {"name": g.name, "parameters": list(g.parameters), "size": g.size,
             "top_eigenvalues": [float(v) for v in g.eigenvalues], "trace": g.trace,
             "trace_std_error": g.trace_std_error, "converged": g.converged,
             "n_hvp": g.n_hvp} for g in self.groups]}

    def table(self) -> str:
        """A plain-text table: group, size, top eigenvalue(s), trace ± error."""
        width = max([len("group")] + [len(g.name) for g in self.groups])
        lines = [f"{'group':<{width}}  {'size':>9}  {'top eigenvalues':<28}  trace"]
        for g in self.groups:
            values = ", ".join(f"{v:.4g}" for v in g.eigenvalues)
            flag = "" if g.converged else "  (not converged)"
            lines.append(f"{g.name:<{width}}  {g.size:>9}  {values:<28}  "
                         f"{g.trace:.4g} ± {g.trace_std_error:.2g}{flag}")
        return "\n".join(lines)

    def plot(self, ax: Axes | None = None) -> Axes:
        """Bars of each group's top eigenvalue and trace (symmetric-log axis, so negative
        curvature stays visible). Returns the Axes."""
        from .topology._axes import new_axes

        ax = new_axes(ax)
        x = np.arange(len(self.groups))
        top = [float(g.eigenvalues[0]) for g in self.groups]
        traces = [g.trace for g in self.groups]
        errors = [g.trace_std_error for g in self.groups]
        ax.bar(x - 0.2, top, width=0.4, label="top eigenvalue")
        ax.bar(x + 0.2, traces, width=0.4, yerr=errors, capsize=2, label="trace")
        magnitudes = np.abs(np.concatenate([top, traces]))
        positive = magnitudes[magnitudes > 0]
        ax.set_yscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
        ax.set_xticks(x, [g.name for g in self.groups], rotation=45, ha="right")
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_ylabel(f"{self.curvature} curvature of the block")
        ax.set_title(f"Per-layer {self.curvature} spectrum")
        ax.legend()
        return ax


def _layout_of(source: Any) -> ParameterLayout:
    layout = getattr(source, "layout", None)
    if not isinstance(layout, ParameterLayout):
        raise TypeError("layer_spectra needs parameter names: pass an Objective or an "
                        "operator with a .layout (HessianOperator, GGNOperator, FisherOperator)")
    return layout


def parameter_groups(names: Sequence[str], groups: Groups = None) -> dict[str, list[str]]:
    """Which of θ's parameter ``names`` form each group, in θ's order.

    ``groups``: None or ``"module"`` groups by the owning module (``"0.weight"`` and
    ``"0.bias"`` form ``"0"``); ``"parameter"`` keeps each tensor alone; a list of shell
    patterns makes one group per pattern; a mapping ``{label: pattern or patterns}`` names
    the groups. A pattern matching none of the names is an error listing them.
    """
    if groups is None or groups == "module":
        found: dict[str, list[str]] = {}
        for name in names:
            found.setdefault(name.rpartition(".")[0] or name, []).append(name)
        return found
    if groups == "parameter":
        return {name: [name] for name in names}
    if isinstance(groups, str):
        groups = [groups]
    labelled = groups if isinstance(groups, Mapping) else {pat: pat for pat in groups}
    found = {}
    for label, patterns in labelled.items():
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        members = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not members:
            listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ValueError(f"group {label!r} ({', '.join(patterns)}) matches none of θ's "
                             f"parameters: {listed}")
        found[str(label)] = members
    return found


def _coordinates(layout: ParameterLayout, members: Sequence[str]) -> torch.Tensor:
    where = {n: (o, math.prod(s)) for n, s, o in
             zip(layout.names, layout.shapes, layout.offsets, strict=True)}
    return torch.cat([torch.arange(where[n][0], sum(where[n])) for n in members])


def layer_spectra(
    source: CurvatureSource,
    groups: Groups = None,
    *,
    k: int = 1,
    which: str | Which = "LA",
    trace_probes: int = 30,
    trace_method: str | TraceMethod = "hutch++",
    curvature: str | Curvature = "hessian",
    tol: float | None = None,
    seed: int = 0,
    theta: torch.Tensor | None = None,
) -> LayerSpectra:
    """Top ``k`` eigenvalues and the trace of each parameter group's block of the curvature.

    Args:
        source: an `Objective` (its ``curvature`` matrix at ``theta``) or an operator with a
            ``layout`` naming θ's parameters.
        groups: see `parameter_groups` (default: one group per module).
        k: eigenvalues per group (capped at the group's size).
        which: ``"LA"`` largest, ``"LM"`` largest in magnitude, ``"SA"`` smallest.
        trace_probes: products for each block's trace (`trace`); a block of at most
            ``trace_probes`` coordinates gets its exact trace instead.
        trace_method: the estimator of each block's trace (`trace`'s ``method``).
        curvature: ``"hessian"``, ``"ggn"`` or ``"fisher"`` for an `Objective`.
        tol: Lanczos tolerance.
        seed: the seed of Lanczos' start vector and of the trace probes.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from landscaper import Objective
        >>> from landscaper.layers import layer_spectra
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        >>> data = (torch.randn(32, 4), torch.randint(0, 3, (32,)))
        >>> spectra = layer_spectra(Objective(model, data, nn.functional.cross_entropy))
        >>> [(g.name, g.size) for g in spectra.groups]
        [('0', 30), ('2', 21)]
    """
    curvature = parse_curvature(curvature)
    members = parameter_groups(_layout_of(source).names, groups)  # fails before any product
    op = as_operator(source, theta, curvature)
    layout = _layout_of(op)
    rows = []
    for name, names in members.items():
        block = RestrictedOperator(op, _coordinates(layout, names))
        size = block.shape[0]
        eigen = top_eigenpairs(block, k=min(k, size), which=which, tol=tol, seed=seed)
        if size <= trace_probes:  # as many products as the estimate: take the exact trace
            value, error = float(torch.diagonal(block.to_dense()).sum()), 0.0
        else:
            estimate = trace(block, n_probes=trace_probes, seed=seed, method=trace_method)
            value, error = estimate.estimate, estimate.std_error
        rows.append(GroupSpectrum(name, tuple(names), size, eigen.eigenvalues, value, error,
                                  eigen.converged, block.n_hvp))
    return LayerSpectra(tuple(rows), curvature.value)
