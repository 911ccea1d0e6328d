"""landscaper: what the loss landscape around a trained PyTorch model looks like."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .directions import (
    Directions,
    hessian_directions,
    pca_directions,
    random_directions,
    user_directions,
)
from .distributed import DistributedObjective
from .grid import AutoExtent, Execution, GridRequest, GridSpec, sample_grid
from .hessian import HessianOperator, spectral_density, top_eigenpairs, trace
from .jump_retrain import JumpRetrain
from .landscape import Landscape
from .layers import layer_spectra
from .objective import Objective

try:
    __version__ = version("landscaper-tda")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "Directions",
    "DistributedObjective",
    "AutoExtent",
    "Execution",
    "GridRequest",
    "GridSpec",
    "HessianOperator",
    "JumpRetrain",
    "Landscape",
    "Objective",
    "__version__",
    "hessian_directions",
    "layer_spectra",
    "pca_directions",
    "random_directions",
    "sample_grid",
    "spectral_density",
    "top_eigenpairs",
    "trace",
    "user_directions",
]
