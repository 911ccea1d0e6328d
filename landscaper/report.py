"""A shareable report: ``metrics.json``, PNG figures and a self-contained ``index.html``.

The HTML embeds every figure as a data URI, so the single file opens anywhere without network
access; the PNGs sit beside it for reuse in papers and slides.
"""

from __future__ import annotations

import base64
import html
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from ._files import write_json, write_text
from .directions import EIGEN_LABELS
from .headlines import compare_headlines, headlines
from .landscape import Landscape
from .summaries import summarize

logger = logging.getLogger(__name__)


@dataclass
class Spectrum:
    """Hessian spectrum numbers shown in a report."""

    eigenvalues: np.ndarray
    n_hvp: int
    trace: float | None = None
    trace_std_error: float | None = None
    density_grid: np.ndarray | None = None
    density: np.ndarray | None = None
    #: the curvature matrix: ``"hessian"``, ``"ggn"`` or ``"fisher"``
    curvature: str = "hessian"
    #: the trace estimator: ``"hutch++"`` or ``"hutchinson"``
    trace_method: str = "hutchinson"

    @property
    def label(self) -> str:
        """How the report names the matrix."""
        return EIGEN_LABELS.get(self.curvature, self.curvature)

    def metrics(self) -> dict[str, Any]:
        """JSON-friendly numbers with units."""
        return {"curvature": self.curvature,
                "top_eigenvalues": [float(v) for v in self.eigenvalues],
                "n_hvp": int(self.n_hvp), "trace": self.trace,
                "trace_std_error": self.trace_std_error, "trace_method": self.trace_method,
                "units": "loss per squared parameter unit"}


@dataclass
class ReportFigure:
    """One figure of the report: file name, title and how to read it."""

    name: str
    title: str
    caption: str


@dataclass
class Report:
    """Collects metrics and figures, then writes the folder."""

    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[ReportFigure] = field(default_factory=list)

    def add_figure(self, ax: Any, name: str, title: str, caption: str) -> None:
        """Save the Axes' figure as ``name``.png and list it with a caption."""
        self.out.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(self.out / f"{name}.png", dpi=110)
        self.figures.append(ReportFigure(name, title, caption))

    def write(self) -> Path:
        """Write ``metrics.json`` and ``index.html``; returns the folder."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "metrics.json", self.metrics)
        write_text(self.out / "index.html", self._html())
        logger.info("report written to %s", self.out)
        return self.out

    def _html(self) -> str:
        summary = "".join(
            f"<tr><th>{html.escape(h.label)}</th><td class='value'>{html.escape(h.text)}</td>"
            f"<td>{html.escape(h.reading)}.</td></tr>" for h in headlines(self.metrics))
        cards = "".join(_figure_html(self.out, fig) for fig in self.figures)
        return _page("Loss landscape report",
                     "<h2>Summary</h2><p>The headline numbers and what each says; every number "
                     "is in metrics.json and in the table at the end.</p>"
                     f"<table class='summary'>{summary}</table><h2>Figures</h2>{cards}"
                     + _details("Settings and all metrics", self.metrics))


def _figure_html(folder: Path, fig: ReportFigure, heading: str = "") -> str:
    """A figure card with the PNG embedded as a data URI (the page needs no other file)."""
    data = base64.b64encode((folder / f"{fig.name}.png").read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(fig.title)}">'
            f"<figcaption><b>{html.escape(heading + fig.title)}.</b> "
            f"{html.escape(fig.caption)}</figcaption></figure>")


def _details(title: str, metrics: dict[str, Any]) -> str:
    """Every metric in a collapsed table."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_short(v))}</td></tr>"
                   for k, v in _flatten(metrics).items())
    return f"<details><summary>{html.escape(title)}</summary><table>{rows}</table></details>"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>landscaper report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "figure{display:inline-block;width:48%;vertical-align:top;margin:0 1% 2em}"
        "img{width:100%}table{border-collapse:collapse;font-size:0.9em;margin-bottom:1em}"
        "th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;"
        "vertical-align:top}td.value{white-space:nowrap;font-variant-numeric:tabular-nums}"
        "table.summary th{white-space:nowrap}details{margin:1em 0}"
        "summary{cursor:pointer;font-weight:bold}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def write_comparison(out: str | os.PathLike[str], reports: list[tuple[str, Report]]) -> Path:
    """One page comparing two written reports side by side: their headline numbers with a
    sentence on each difference, their figures in pairs, then each one's settings and metrics
    (collapsed). ``metrics.json`` holds ``{"models": {name: metrics}, "comparison": [...]}``;
    each report keeps its own folder."""
    if len(reports) != 2:
        raise ValueError(f"write_comparison compares two reports, got {len(reports)}")
    out = Path(out)
    (name_a, a), (name_b, b) = reports
    rows = compare_headlines(a.metrics, b.metrics, (name_a, name_b))
    table = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(f"<td class='value'>{html.escape(h.text if h else '—')}</td>" for h in (ha, hb))
        + f"<td>{html.escape(diff)}.</td></tr>" for label, ha, hb, diff in rows)
    readings = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(f"<td>{html.escape(h.reading + '.' if h else '—')}</td>" for h in (ha, hb))
        + "</tr>" for label, ha, hb, _ in rows)
    by_name = {fig.name: fig for fig in b.figures}
    pairs = "".join(
        f"<h3>{html.escape(fig.title)}</h3>" + _figure_html(a.out, fig, f"{name_a}: ")
        + _figure_html(b.out, by_name[fig.name], f"{name_b}: ")
        for fig in a.figures if fig.name in by_name)
    body = ("<h2>Summary</h2><table class='summary'><tr><th></th>"
            f"<th>{html.escape(name_a)}</th><th>{html.escape(name_b)}</th><th>difference</th>"
            f"</tr>{table}</table><h2>What each number says</h2>"
            "<table class='summary'><tr><th></th>"
            f"<th>{html.escape(name_a)}</th><th>{html.escape(name_b)}</th></tr>{readings}</table>"
            f"<h2>Figures, side by side</h2>{pairs}"
            + "".join(_details(f"{name}: settings and all metrics", r.metrics)
                      for name, r in reports))
    write_json(out / "metrics.json", {
        "models": {name: r.metrics for name, r in reports},
        "folders": {name: str(r.out.relative_to(out)) if r.out.is_relative_to(out)
                    else str(r.out) for name, r in reports},
        "comparison": [{"headline": label, name_a: ha.value if ha else None,
                        name_b: hb.value if hb else None, "difference": diff}
                       for label, ha, hb, diff in rows]})
    write_text(out / "index.html", _page(f"Loss landscapes: {name_a} and {name_b}", body))
    logger.info("comparison report written to %s", out)
    return out


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], float):
        return ", ".join(f"{v:.5g}" for v in value[:10]) + (" ..." if len(value) > 10 else "")
    return str(value)


def landscape_metrics(land: Landscape) -> dict[str, Any]:
    """Every number the report shows about a landscape: the summaries registered for the report
    in `landscaper.summaries`."""
    return summarize(land, "report")


def add_landscape(report: Report, land: Landscape) -> None:
    """Landscape metrics and figures (slice, surface, merge tree, profile, persistence)."""
    report.metrics["landscape"] = landscape_metrics(land)
    log = bool(np.nanmin(land.loss) > 0)
    where = _theta0_sentence(land)
    if land.ndim == 1:
        report.add_figure(land.plot(log=log), "landscape", "Loss along the direction",
                          f"The loss at θ₀ + a·d, where a = 0 is the trained model; {where}")
    else:
        others = ("" if land.ndim == 2 else
                  " (the other axes at θ₀'s index, or the grid point nearest θ₀)")
        report.add_figure(land.plot(log=log), "landscape", "Loss on a 2-D slice",
                          "Filled contours of the loss through the first two directions"
                          f"{others}; + marks the trained parameters; {where}")
        report.add_figure(land.plot_surface(), "surface", "Loss surface",
                          "The same slice as a surface: steep walls mean high curvature.")
    finite = land.loss[np.isfinite(land.loss)]
    decades = log and finite.size and float(finite.max() / finite.min()) > 100
    report.add_figure(land.show_merge_tree(log=bool(decades)), "merge_tree", "Merge tree",
                      "Minima (bottom leaves, labelled with loss and basin size) join at "
                      "saddles (red, with their loss) as the loss level rises; more leaves and "
                      "deeper branches mean a more rugged landscape.")
    report.add_figure(land.show_profile(log=log), "profile", "Topological landscape profile",
                      "Basins drawn as nested regions (Geniesse et al.): a basin's width at a "
                      "loss level is the number of grid points of its part of the sublevel set, "
                      "and basins that merge at a saddle hang side by side under it.")
    report.add_figure(land.show_persistence(), "persistence", "Persistence diagram",
                      "Each point is a basin born at its minimum and dying at the saddle where "
                      "it merges; points far above the diagonal are deep, separate basins.")
    if max(land.shape) < 3:
        return
    try:
        scale = land.scale_summary()
    except ValueError as err:  # e.g. boxes with fewer than two finite losses
        logger.warning("the report has no scale summary: %s", err)
    else:
        report.metrics["scale"] = scale.to_dict()
        report.add_figure(scale.plot(plots.new_axes()), "scale", "Topology against scale",
                          "Minima and SMAD of nested boxes around θ₀, from one grid point out "
                          "to the whole grid; the dashed line marks the first box in which "
                          "θ₀'s basin meets a saddle. Structure that appears only in the "
                          "outer boxes lies far from the trained model.")


def _theta0_sentence(land: Landscape) -> str:
    """Whether the grid contains the trained model, for the captions."""
    loss = land.loss_at_theta0
    value = "" if loss is None else f" (loss {loss:.6g})"
    if land.theta0_index is not None:
        return f"the grid contains it{value}."
    if loss is None:
        return "the grid does not contain it, and its loss is unknown."
    return ("the grid does not contain it (an even number of steps, or a range excluding 0); "
            f"its loss{value} was evaluated at θ₀ itself.")


def add_spectrum(report: Report, spectrum: Spectrum) -> None:
    """Curvature spectrum metrics and figure (the Hessian's unless a GGN or Fisher)."""
    report.metrics["hessian"] = spectrum.metrics()
    ax = plots.new_axes()
    if spectrum.density is not None:
        ax.plot(spectrum.density_grid, spectrum.density, color="C0", label="SLQ density")
        ax.set_yscale("log")
        ax.set_ylim(bottom=float(np.max(spectrum.density)) * 1e-6)
        ax.set_ylabel("density")
    for i, value in enumerate(spectrum.eigenvalues):
        ax.axvline(value, color="C3", lw=1, label="top eigenvalues" if i == 0 else None)
    ax.set_xlabel(f"{spectrum.label} eigenvalue")
    ax.legend(fontsize="small")
    report.add_figure(ax, "spectrum", f"{spectrum.label} spectrum",
                      "Eigenvalue density by stochastic Lanczos quadrature, with the top "
                      "eigenvalues from Lanczos as red lines: large values mean sharp directions.")


def add_jump_retrain(report: Report, jr: Any) -> None:
    """Jump & retrain metrics and figures."""
    totals = jr.total_persistence()
    d0 = jr.persistence_.diagrams[0]
    finite = d0[np.isfinite(d0[:, 1])]
    report.metrics["jump_retrain"] = {
        "samples": len(jr.samples_), "settings": {k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in jr.settings.items()},
        "total_persistence_d0": totals[0], "total_persistence_d1": totals[1],
        "essential_d0": jr.persistence_.n_essential(0),
        "essential_d1": jr.persistence_.n_essential(1),
        # every D0 class is one basin of the samples' kNN graph (a local minimum of the loss
        # on it), and its persistence the barrier above that minimum to a lower one
        "basins": int(len(d0)),
        "largest_barrier": float((finite[:, 1] - finite[:, 0]).max()) if len(finite) else 0.0,
        "final_loss_mean": float(np.mean(jr.samples_.loss[jr.samples_.epoch ==
                                                          jr.samples_.epoch.max()])),
        "timings_s": dict(jr.timings),
    }
    report.add_figure(jr.plot_embedding(), "trajectories", "Jump & retrain trajectories",
                      "Embedding of the retraining trajectories (colour: log loss; diamonds: "
                      "jump points; lines fade as retraining proceeds).")
    report.add_figure(jr.plot_persistence(), "jr_persistence", "Loss persistence of the samples",
                      "Persistence of the loss filtration on the kNN graph of the samples; "
                      "higher total persistence means more topological activity around the "
                      "minimum.")


def report_for_landscape(land: Landscape, out: str | os.PathLike[str]) -> Path:
    """Rebuild a report from a saved landscape alone (no recomputation of the grid)."""
    report = Report(Path(out))
    report.metrics["source"] = land.metadata.get("source")
    add_landscape(report, land)
    return report.write()
