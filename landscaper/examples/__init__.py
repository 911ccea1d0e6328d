"""Small, offline example models, data and training helpers, one module per domain.

Used by the demo, the tests, the benchmarks and the notebooks; nothing here is needed by the
core library.

* `landscaper.examples.digits`: scikit-learn's 8×8 digits, a small MLP and CNN for them;
* `landscaper.examples.training`: seeded minibatch training of classifiers and regressors;
* `landscaper.examples.text`: a labelled text set from the docstrings of installed code;
* `landscaper.examples.pinn`: the 1-D convection PINN (problem, physics-informed loss,
  trainer, error);
* `landscaper.examples.chemistry`: solubility molecules, scaffold splits, featurisation,
  `FingerprintMLP` and `DenseGNN` (RDKit for the features).

The digits, training and text helpers are importable from here directly.
"""

from __future__ import annotations

from .digits import digits_cnn, digits_data, digits_mlp
from .text import docstring_sentences
from .training import fit_minibatches, regression_errors, train_classifier, train_regressor

__all__ = [
    "digits_cnn",
    "digits_data",
    "digits_mlp",
    "docstring_sentences",
    "fit_minibatches",
    "regression_errors",
    "train_classifier",
    "train_regressor",
]
