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

    from .scale import ScaleSummary

__all__ = [
    "plot_profile",
    "plot_merge_tree",
    "plot_persistence_diagram",
    "plot_barcode",
    "plot_scale_summary",
]


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else new_axes()


def _diagram(diagram: DiagramLike) -> np.ndarray:
    if isinstance(diagram, MergeTree):
        return diagram.persistence()
    d = np.asarray(diagram, dtype=float)
    return d.reshape(-1, 2)


def _outline_polygon(outline: np.ndarray) -> np.ndarray:
    """(P, 2) vertices of a region: up its left edge, down its right edge."""
    return np.concatenate([outline[:, [1, 0]], outline[::-1][:, [2, 0]]])


def _value_norm(levels: np.ndarray, log: bool):
    """A colour norm over ``levels`` (log when asked and they are all positive)."""
    from matplotlib import colors

    lo, hi = float(np.nanmin(levels)), float(np.nanmax(levels))
    if log and lo > 0:
        return colors.LogNorm(lo, hi if hi > lo else lo * 10)
    return colors.Normalize(lo, hi if hi > lo else lo + 1)


def plot_profile(
    profile_data_or_tree: LandscapeProfile | MergeTree, ax: Axes | None = None, log: bool = False,
    *, values: np.ndarray | None = None,
) -> Axes:
    """Draw the topological landscape profile as nested basins (after Geniesse et al.).

    Every basin is a filled region, its width at value ``y`` the volume of its part of the
    sublevel set ``{f <= y}`` (from the profile's `LandscapeProfile.outlines`): children
    hang side by side under the floor of the basin they merge into, at the saddle's value,
    within its width; the top region spans all N points. Regions are coloured by the value of
    their floor (viridis, dark = low) with a dot at each minimum. Without the values the
    widths are modelled from the basin volumes (a wedge per minimum, a constant width above a
    saddle: see `landscaper.topology.profile`); with them (``values=``, or a profile
    built from values) they are measured. A single basin is drawn as one grey valley.

    Args:
        profile_data_or_tree: A `LandscapeProfile` or a `MergeTree`.
        ax: Axes to draw on (a new Figure's Axes if None).
        log: Logarithmic value axis (``symlog`` if any value is <= 0).
        values: With a tree, the values it was computed from, to measure the widths.

    Returns:
        The Axes; the regions are one ``PolyCollection`` (gid ``"profile-basins"``), one
        polygon per region in `LandscapeProfile.region_nodes` order.
    """
    from matplotlib import colormaps
    from matplotlib.collections import PolyCollection

    prof = profile_data_or_tree
    if not isinstance(prof, LandscapeProfile):
        prof = landscape_profile(prof, values=values)
    ax = _axes(ax)
    outlines = list(prof.outlines)
    if prof.x.size and not outlines:  # a profile made without outlines: the curve's valleys
        outlines = [np.array([[b, 0.5 * (x0 + x1), 0.5 * (x0 + x1)], [t, x0, x1]])
                    for x0, x1, b, t in prof.regions.tolist()]
    leaf = prof.region_kinds == "minimum"
    if outlines:
        polygons = [_outline_polygon(o) for o in outlines]
        if leaf.sum() > 1:
            floors = np.array([o[0, 0] for o in outlines])
            norm = _value_norm(floors, log)
            faces = colormaps["viridis"](norm(floors))
            faces[:, :3] = 0.45 * faces[:, :3] + 0.55  # pale, so edges and dots stand out
            many = len(polygons) > 40  # thinner edges, or the edges are all one sees
            coll = PolyCollection(polygons, facecolors=faces, edgecolors="0.15",
                                  linewidths=0.25 if many else 0.6)
        else:
            coll = PolyCollection(polygons, facecolors="0.85", edgecolors="k", linewidths=1)
        coll.set_gid("profile-basins")
        ax.add_collection(coll, autolim=True)
        ax.autoscale_view()
        bottoms = np.array([o[0] for o, is_leaf in zip(outlines, leaf, strict=True) if is_leaf])
        ax.plot(0.5 * (bottoms[:, 1] + bottoms[:, 2]), bottoms[:, 0], "o", color="C0",
                mec="k", mew=0.5, ms=4 if len(bottoms) <= 40 else 2.5, ls="none", zorder=3)
    if log:
        ax.set_yscale("log" if prof.y.size and np.nanmin(prof.y) > 0 else "symlog")
    upward = not prof.regions.size or bool(np.all(prof.regions[:, 2] <= prof.regions[:, 3]))
    ax.set_xlabel(f"{'sub' if upward else 'super'}level-set volume (points)" if prof.measured
                  else "cumulative basin volume (points)")
    ax.set_ylabel("value")
    return ax


def _persistence_order(tree: MergeTree) -> np.ndarray:
    """Leaves, most persistent first (essential classes first, ties: lowest first)."""
    pers = np.abs(tree.death_values - tree.minima_values)
    return np.lexsort((np.arange(tree.n_minima), -np.where(np.isfinite(pers), pers, np.inf)))


def _distinct_format(values: np.ndarray) -> str:
    """A ``g`` format with 3 or more significant digits: enough that different values read
    differently."""
    distinct = np.unique(values[np.isfinite(values)])
    for digits in range(3, 10):
        if len({f"{v:.{digits}g}" for v in distinct.tolist()}) == distinct.size:
            return f".{digits}g"
    return ".10g"


def _share(count: int, total: int) -> str:
    pct = 100.0 * count / max(total, 1)
    return f"{pct:.0f}%" if pct >= 10 else f"{pct:.2g}%"


#: Size of an x-small label's character (width) and line (height), in points (about).
_CHAR_PT, _LINE_PT = 4.2, 8.5


def _label_tree(ax: Axes, tree: MergeTree, x: np.ndarray, y: np.ndarray, n_labels: int,
                values: np.ndarray) -> None:
    """Label the ``n_labels`` most persistent leaves and their saddles with ``values``, at
    their drawn heights ``y``, skipping any label whose (estimated) box would overlap one
    placed before; sets the limits to make room."""
    shown = _persistence_order(tree)[: max(int(n_labels), 0)]
    if not shown.size:
        return
    deaths = tree.death[shown]
    fmt = _distinct_format(np.concatenate([values[shown], values[deaths[deaths >= 0]]]))
    down = tree.kind == "sublevel"  # minima at the bottom: their labels go below them
    lo, hi = float(y.min()), float(y.max())
    span = hi - lo if hi > lo else 1.0
    box = ax.get_position()
    width_pt, height_pt = box.width * ax.figure.get_figwidth() * 72, \
        box.height * ax.figure.get_figheight() * 72
    share = min((6 + 4 * _LINE_PT) / height_pt, 0.45)  # room for two rows of labels
    room = 1.05 * share / (1 - share) * span
    xlim = (float(x.min()) - max(0.08 * float(np.ptp(x)), 0.5),
            float(x.max()) + max(0.08 * float(np.ptp(x)), 0.5))
    ylim = (lo - room, hi + 0.05 * span) if down else (lo - 0.05 * span, hi + room)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)

    def points(node: int) -> tuple[float, float]:
        return ((x[node] - xlim[0]) / (xlim[1] - xlim[0]) * width_pt,
                (y[node] - ylim[0]) / (ylim[1] - ylim[0]) * height_pt)

    placed: list[tuple[float, float, float, float]] = []

    def place(node: int, text: str, boxes: list[tuple[float, float, float, float]],
              **style) -> None:
        px, py = points(node)
        for left, bottom, right, top in boxes:
            shift = max(0.0, -left) - max(0.0, right - width_pt)  # keep inside the axes
            left, right = left + shift, right + shift
            if all(right <= p[0] or left >= p[2] or top <= p[1] or bottom >= p[3]
                   for p in placed) and bottom >= -2 and top <= height_pt + 2:
                placed.append((left, bottom, right, top))
                anchor = (0.5 * (left + right) - px, (top if down else bottom) - py)
                ax.annotate(text, (x[node], y[node]), xytext=anchor, textcoords="offset points",
                            va="top" if down else "bottom", fontsize="x-small",
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                                  "alpha": 0.75}, **style)
                return

    saddles: set[int] = set()
    for leaf in shown.tolist():
        volume = int(tree.volumes[leaf])
        unit = "pt" if volume == 1 else "pts"
        text = f"{values[leaf]:{fmt}}\n{volume} {unit} ({_share(volume, tree.n_points)})"
        w, h = _CHAR_PT * max(map(len, text.split("\n"))), 2 * _LINE_PT
        px, py = points(leaf)
        rows = [4 + (h + 2) * row for row in range(2)]
        place(leaf, text, [(px - w / 2, py - r - h, px + w / 2, py - r) if down else
                           (px - w / 2, py + r, px + w / 2, py + r + h) for r in rows],
              ha="center", color="C0")
        s = int(tree.death[leaf])
        if s >= 0 and s not in saddles:
            saddles.add(s)
            text = f"{values[s]:{fmt}}"
            px, py = points(s)
            w = _CHAR_PT * len(text)
            if down:
                boxes = [(px + 4, py + 2, px + 4 + w, py + 2 + _LINE_PT),
                         (px - 4 - w, py + 2, px - 4, py + 2 + _LINE_PT)]
            else:
                boxes = [(px + 4, py - 2 - _LINE_PT, px + 4 + w, py - 2),
                         (px - 4 - w, py - 2 - _LINE_PT, px - 4, py - 2)]
            place(s, text, boxes, ha="center", color="C3")


def plot_merge_tree(tree: MergeTree, ax: Axes | None = None, *, n_labels: int = 6,
                    log: bool = False) -> Axes:
    """Draw a merge tree: nodes at their values, leaves spread along x, edges child -> parent.

    The ``n_labels`` most persistent minima (the essential ones first) are labelled with their
    value and basin volume (points and share of all points), and the saddles where they die
    with their value; the other nodes are drawn unlabelled so that labels stay readable on
    trees with many leaves. A minimum's label goes under it (over it for a superlevel tree),
    one row further if that place is taken; a label that would overlap one already placed (for
    a more persistent minimum) is left out. The axis limits are set to make room for them.

    Args:
        tree: The merge tree.
        ax: Axes to draw on (a new Figure's Axes if None).
        n_labels: How many minima (and their saddles) to label; 0 for none.
        log: Draw values on a log scale (when every finite value is positive; otherwise
            linear), for losses that span decades.

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
    y = tree.node_value.astype(float) + 0.0  # no -0 labels
    lo, hi = tree.value_range
    y = np.where(np.isfinite(y), y, hi)
    values = y
    log = bool(log and lo > 0)
    if log:  # drawn at log10 heights so that the label layout stays linear
        y = np.log10(y)
    segments = [[x[c], x[c], x[p], np.nan] for c, p in tree.edges.tolist()]
    levels = [[y[c], y[p], y[p], np.nan] for c, p in tree.edges.tolist()]
    if segments:
        ax.plot(np.ravel(segments), np.ravel(levels), color="0.3", lw=1)
    for code, marker, col in (
        (KIND_LEAF, "o", "C0"),
        (KIND_SADDLE, "s", "C3"),
        (KIND_ROOT, "^", "k"),
    ):
        sel = tree.node_kind == code
        ax.plot(x[sel], y[sel], marker, color=col, ms=4, ls="none")
    _label_tree(ax, tree, x, y, n_labels, values)
    ax.set_xlabel("cumulative basin volume (points)")
    ax.set_ylabel("value")
    if log:
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{10 ** v:g}"))
        ax.set_ylabel("value (log scale)")
    return ax


def _finite_range(d: np.ndarray) -> tuple[float, float]:
    vals = d[np.isfinite(d)]
    return (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)


def plot_persistence_diagram(
    diagram: DiagramLike | Mapping[str, DiagramLike], ax: Axes | None = None
) -> Axes:
    """Scatter one or several persistence diagrams; essential classes sit on a line labelled inf.

    Args:
        diagram: an (n, 2) array or a `MergeTree`, or a mapping ``{label: diagram}`` to
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
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, ax.yaxis):  # at most 6 short labels: values like 0.00075 collide
        axis.set_major_locator(MaxNLocator(nbins=5))
    ax.ticklabel_format(style="sci", scilimits=(-3, 4), useMathText=True)
    if None not in diagrams:
        ax.legend(fontsize="small")
    return ax


def plot_barcode(diagram: DiagramLike, ax: Axes | None = None) -> Axes:
    """Draw one horizontal bar per persistence pair (essential bars run to the right edge).

    Args:
        diagram: (n, 2) array or a `MergeTree`.
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


def plot_scale_summary(summary: ScaleSummary, ax: Axes | None = None) -> Axes:
    """Draw how the topology changes with scale: minima and SMAD against the box radius.

    The number of minima is drawn on ``ax`` and SMAD on a twin y-axis sharing its x-axis; a
    dashed vertical line marks the radius at which θ₀'s basin first meets a saddle. The x-axis
    is the radius in grid steps, or, when the summary has an ``extent``, the box half-width in
    coordinate units (the largest over the axes).

    Args:
        summary: A `landscaper.topology.scale.ScaleSummary`.
        ax: Axes to draw on (a new Figure's Axes if None).

    Returns:
        The Axes holding the minima (the SMAD twin is ``ax.figure``'s other Axes).
    """
    from matplotlib.ticker import MaxNLocator

    ax = _axes(ax)
    if summary.extent is not None:
        x = np.asarray(summary.extent, dtype=float).max(axis=1)
        ax.set_xlabel("box half-width (coordinate units, largest over axes)")
    else:
        x = np.asarray(summary.radius, dtype=float)
        ax.set_xlabel("box radius (grid steps)")
    ax.plot(x, summary.n_minima, "o-", color="C0", ms=3, label="minima")
    ax.set_ylabel("number of minima")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    twin = ax.twinx()
    label = "SMAD (normalized)" if summary.smad_normalized else "SMAD"
    twin.plot(x, summary.smad, "s--", color="C1", ms=3, label=label)
    twin.set_ylabel(label)
    if summary.saddle_radius is not None:
        at = x[int(np.flatnonzero(summary.radius == summary.saddle_radius)[0])]
        ax.axvline(at, color="C3", ls="--", lw=1,
                   label=f"θ₀'s basin meets a saddle (r = {summary.saddle_radius})")
    handles, labels = ax.get_legend_handles_labels()
    twin_handles, twin_labels = twin.get_legend_handles_labels()
    # On the twin, drawn last, so that no line of it covers the legend.
    twin.legend(handles + twin_handles, labels + twin_labels, fontsize="small")
    return ax
