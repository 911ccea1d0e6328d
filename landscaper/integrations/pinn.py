"""The convection PINN's old home: it now lives in `landscaper.examples.pinn` (re-exported)."""

from __future__ import annotations

from ..examples import pinn as _pinn
from ..examples.pinn import *  # noqa: F403
from ..examples.pinn import BATCH_KEYS, TWO_PI

__all__ = [*_pinn.__all__, "BATCH_KEYS", "TWO_PI"]
