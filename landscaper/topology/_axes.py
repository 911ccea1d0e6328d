"""The fresh Axes every figure of the package draws on when the caller passes none.

It lives in `topology` (the lowest layer) so that topology's drawings need nothing above it;
`landscaper.plots` re-exports it. matplotlib is imported on first use, so importing the
package never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def new_axes(projection: str | None = None, figsize: tuple[float, float] = (5.0, 4.0)) -> Axes:
    """A fresh Axes on its own Figure, outside pyplot's global state."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained").add_subplot(projection=projection)
