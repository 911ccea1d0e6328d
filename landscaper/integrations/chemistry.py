"""The chemistry examples' old home: they now live in `landscaper.examples.chemistry` (data,
scaffolds, features, models) and `landscaper.examples.training` (training, errors);
re-exported here."""

from __future__ import annotations

from ..examples.chemistry import (
    ATOM_FEATURES,
    DenseGNN,
    FingerprintMLP,
    MoleculeSet,
    ScaffoldSplit,
    dense_graphs,
    load_solubility,
    morgan_fingerprints,
    murcko_scaffolds,
    scaffold_split,
    solubility_data_dir,
)
from ..examples.training import regression_errors, train_regressor

__all__ = [
    "ATOM_FEATURES",
    "DenseGNN",
    "FingerprintMLP",
    "MoleculeSet",
    "ScaffoldSplit",
    "dense_graphs",
    "load_solubility",
    "morgan_fingerprints",
    "murcko_scaffolds",
    "regression_errors",
    "scaffold_split",
    "solubility_data_dir",
    "train_regressor",
]
