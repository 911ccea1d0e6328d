"""The convection PINN's old home: it now lives in `landscaper.examples.pinn` (re-exported)."""

from __future__ import annotations

from ..examples.pinn import (
    BATCH_KEYS,
    TWO_PI,
    ConvectionProblem,
    convection_loss,
    make_mlp,
    relative_l2_error,
    train_pinn,
)

__all__ = [
    "BATCH_KEYS",
    "TWO_PI",
    "ConvectionProblem",
    "convection_loss",
    "make_mlp",
    "relative_l2_error",
    "train_pinn",
]
