"""Matplotlib drawings of merge trees, profiles and persistence diagrams.

Every function takes an optional ``ax``; if it is None a new ``matplotlib.figure.Figure`` is
created (no pyplot global state). The Axes is returned; nothing is shown and no style or
rcParams are changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ._axes import new_axes
from .merge_tree import KIND_LEAF, KIND_ROOT, KIND_SADDLE, MergeTree
from .persistence import DiagramLike
from .profile import LandscapeProfile, landscape_profile

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_profile", "plot_merge_tree", "plot_persistence_diagram", "plot_barcode"]


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else new_axes()


def _diagram(diagram: DiagramLike) -> np.ndarray:
    if isinstance(diagram, MergeTree):
        return diagram.persistence()
    d = np.asarray(diagram, dtype=float)
    return d.reshape(-1, 2)


def plot_profile(
    profile_data_or_tree: LandscapeProfile | MergeTree, ax: Axes | None = None, log: bool = False
) -> Axes:
    """Draw the topological landscape profile.

    Args:
        profile_data_or_tree: A :class:`LandscapeProfile` or a :class:`MergeTree`.
        ax: Axes to draw on (a new Figure's Axes if None).
        log: Logarithmic value axis (``symlog`` if any value is <= 0).

    Returns:
        The Axes.
    """
    prof = profile_data_or_tree
    if not isinstance(prof, LandscapeProfile):
        prof = landscape_profile(prof)
    ax = _axes(ax)
    if prof.x.size:
        base = np.nanmax(prof.y)
        ax.fill_between(prof.x, prof.y, base, color="0.85", lw=0)
        ax.plot(prof.x, prof.y, color="k", lw=1)
        leaf = prof.region_kinds == "minimum"
        cx = 0.5 * (prof.regions[leaf, 0] + prof.regions[leaf, 1])
        ax.plot(cx, prof.regions[leaf, 2], "o", color="C0", ms=3)
    if log:
        ax.set_yscale("log" if prof.y.size and np.nanmin(prof.y) > 0 else "symlog")
    ax.set_xlabel("cumulative basin volume (points)")
    ax.set_ylabel("value")
    return ax


def plot_merge_tree(tree: MergeTree, ax: Axes | None = None) -> Axes:
    """Draw a merge tree: nodes at their values, leaves spread along x, edges child -> parent.

    Args:
        tree: The merge tree.
        ax: Axes to draw on (a new Figure's Axes if None).

    Returns:
        The Axes.
    """
    ax = _axes(ax)
    prof = landscape_profile(tree)
    x = np.zeros(tree.n_nodes)
    # Each node sits at the centre of the interval its subtree occupies in the profile.
    x[prof.region_nodes] = 0.5 * (prof.regions[:, 0] + prof.regions[:, 1])
    for r in tree.roots.tolist():
        ch = np.flatnonzero(tree.node_parent == r)
        x[r] = x[ch].mean() if ch.size else 0.0
    y = tree.node_value.astype(float)
    lo, hi = tree.value_range
    y = np.where(np.isfinite(y), y, hi)
    for c, p in tree.edges.tolist():
        ax.plot([x[c], x[c], x[p]], [y[c], y[p], y[p]], color="0.3", lw=1)
    for code, marker, col in (
        (KIND_LEAF, "o", "C0"),
        (KIND_SADDLE, "s", "C3"),
        (KIND_ROOT, "^", "k"),
    ):
        sel = tree.node_kind == code
        ax.plot(x[sel], y[sel], marker, color=col, ms=4, ls="none")
    ax.set_xlabel("cumulative basin volume (points)")
    ax.set_ylabel("value")
    return ax


def _finite_range(d: np.ndarray) -> tuple[float, float]:
    vals = d[np.isfinite(d)]
    return (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)


def plot_persistence_diagram(
    diagram: DiagramLike | Mapping[str, DiagramLike], ax: Axes | None = None
) -> Axes:
    """Scatter one or several persistence diagrams; essential classes sit on a line labelled inf.

    Args:
        diagram: an (n, 2) array or a :class:`MergeTree`, or a mapping ``{label: diagram}`` to
            draw several (e.g. D0 and D1) on one set of axes, one colour each, with a legend.
        ax: Axes to draw on (a new Figure's Axes if None).

    Returns:
        The Axes.
    """
    labelled = dict(diagram) if isinstance(diagram, Mapping) else {None: diagram}
    diagrams = {label: _diagram(d) for label, d in labelled.items()}
    ax = _axes(ax)
    lo, hi = _finite_range(np.concatenate([d.reshape(-1) for d in diagrams.values()]))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    inf_y = hi + 2 * pad
    ax.plot([lo - pad, inf_y], [lo - pad, inf_y], color="0.5", lw=1)
    essential = False
    for i, (label, d) in enumerate(diagrams.items()):
        fin = np.isfinite(d[:, 1])
        finite_colour, essential_colour = (f"C{i}", f"C{i}") if label is not None else ("C0", "C3")
        ax.plot(d[fin, 0], d[fin, 1], "o", color=finite_colour, ms=4, ls="none", label=label)
        if (~fin).any():
            essential = True
            ax.plot(d[~fin, 0], np.full((~fin).sum(), inf_y), "o", color=essential_colour, ms=4,
                    ls="none", mfc="none" if label is not None else None)
    if essential:
        ax.axhline(inf_y, color="0.5", lw=0.8, ls="--")
        ax.text(lo - pad, inf_y, "inf", va="bottom")
    ax.set_xlabel("birth")
    ax.set_ylabel("death")
    if None not in diagrams:
        ax.legend(fontsize="small")
    return ax


def plot_barcode(diagram: DiagramLike, ax: Axes | None = None) -> Axes:
    """Draw one horizontal bar per persistence pair (essential bars run to the right edge).

    Args:
        diagram: (n, 2) array or a :class:`MergeTree`.
        ax: Axes to draw on (a new Figure's Axes if None).

    Returns:
        The Axes.
    """
    d = _diagram(diagram)
    ax = _axes(ax)
    lo, hi = _finite_range(d)
    end = hi + 0.1 * (hi - lo if hi > lo else 1.0)
    for i, (b, e) in enumerate(d.tolist()):
        ess = not np.isfinite(e)
        ax.plot([b, end if ess else e], [i, i], color="C3" if ess else "C0", lw=2)
    ax.set_xlabel("value")
    ax.set_ylabel("pair")
    return ax
