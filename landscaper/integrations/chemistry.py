"""The chemistry examples' old home: they now live in `landscaper.examples.chemistry` (data,
scaffolds, features, models) and `landscaper.examples.training` (training, errors);
re-exported here."""

from __future__ import annotations

from ..examples import chemistry as _chemistry
from ..examples.chemistry import *  # noqa: F403
from ..examples.training import regression_errors, train_regressor

__all__ = [*_chemistry.__all__, "regression_errors", "train_regressor"]
