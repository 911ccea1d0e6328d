"""The jump & retrain figure: a 2-D embedding of `landscaper.trajectories.Samples`.

Like `landscaper.plots`, it draws on a fresh Figure when no ``ax`` is given and changes no
global state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps, colors

from .topology._axes import new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .trajectories import Samples

__all__ = ["plot_trajectories"]


def plot_trajectories(
    embedding: np.ndarray,
    samples: Samples,
    ax: Axes | None = None,
    *,
    cmap: str = "viridis",
) -> Axes:
    """Horoi et al.'s Fig. 2: a 2-D embedding of jump & retrain samples.

    Points are coloured by log10 loss; each (seed, step size) trajectory is a line in its
    seed's colour that fades as retraining progresses; jump points are diamonds whose edge
    colour encodes the step size.
    """
    coords = np.asarray(embedding)[:, :2]
    if coords.shape[0] != len(samples):
        raise ValueError(f"embedding has {coords.shape[0]} rows for {len(samples)} samples")
    ax = ax or new_axes(figsize=(5.5, 4.5))
    log_loss = np.log10(np.clip(samples.loss, np.finfo(float).tiny, None))
    seeds = sorted(set(samples.seed.tolist()))
    steps = sorted(set(samples.step_size.tolist()))
    step_colours = colormaps["autumn"](np.linspace(0, 0.8, max(len(steps), 1)))
    for i, seed in enumerate(seeds):
        base = colors.to_rgb(f"C{i % 10}")
        for step in steps:
            rows = np.flatnonzero((samples.seed == seed) & (samples.step_size == step))
            rows = rows[np.argsort(samples.epoch[rows])]
            n = len(rows)
            for j in range(n - 1):
                alpha = 1.0 - 0.8 * j / max(n - 1, 1)
                ax.plot(coords[rows[j : j + 2], 0], coords[rows[j : j + 2], 1], color=base,
                        alpha=alpha, lw=1)
    scatter = ax.scatter(coords[:, 0], coords[:, 1], c=log_loss, cmap=cmap, s=12, zorder=3)
    jumps = np.flatnonzero(samples.epoch == 0)
    for row in jumps:
        colour = step_colours[steps.index(samples.step_size[row])]
        ax.scatter(coords[row, 0], coords[row, 1], marker="D", s=40, facecolor="none",
                   edgecolor=colour, linewidths=1.5, zorder=4)
    ax.figure.colorbar(scatter, ax=ax, label="log10 loss")
    ax.set_xlabel("embedding 1")
    ax.set_ylabel("embedding 2")
    ax.set_title(f"{len(samples)} samples, {len(seeds)} seeds, step sizes "
                 + ", ".join(f"{s:g}" for s in steps), fontsize="small")
    return ax
