"""Chemistry integration: featurisation on molecules whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402

from landscaper import Objective  # noqa: E402
from landscaper.integrations.chemistry import (  # noqa: E402
    ATOM_FEATURES,
    DenseGNN,
    FingerprintMLP,
    dense_graphs,
    load_solubility,
    morgan_fingerprints,
    murcko_scaffolds,
    regression_errors,
    scaffold_split,
    train_regressor,
)

IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"
DICLOFENAC = "O=C(O)Cc1ccccc1Nc1c(Cl)cccc1Cl"


def _column(name: str) -> int:
    return ATOM_FEATURES.index(name)


def test_murcko_scaffolds_of_known_drugs():
    scaffolds = murcko_scaffolds(["c1ccccc1", "CCO", IBUPROFEN, "c1ccc(cc1)-c1ccccc1",
                                  DICLOFENAC])
    assert scaffolds == ["c1ccccc1", "", "c1ccccc1", "c1ccc(-c2ccccc2)cc1",
                         "c1ccc(Nc2ccccc2)cc1"]


def test_morgan_fingerprints_count_environments_by_hand():
    # radius 2: methane has one environment; ethane two distinct (CH3, CH3-C), the radius-1
    # environments of both atoms cover the same bond and count once in bits, per atom in counts;
    # benzene's six atoms are equivalent at radii 0, 1 and 2: 3 bits, 18 counted environments.
    bits = morgan_fingerprints(["C", "CC", "c1ccccc1", "CCO"])
    counts = morgan_fingerprints(["C", "CC", "c1ccccc1"], counts=True)
    assert bits.dtype == np.float32 and bits.shape == (4, 2048)
    assert bits.sum(1).tolist() == [1.0, 2.0, 3.0, 6.0]
    assert set(np.unique(bits)) <= {0.0, 1.0}
    assert counts.sum(1).tolist() == [1.0, 3.0, 18.0]
    assert np.array_equal(counts > 0, bits[:3] > 0)


def test_dense_graphs_features_of_known_molecules():
    x, adj = dense_graphs(["c1ccccc1", "CCO", "[NH4+]"], max_atoms=8, dtype=torch.float64)
    assert x.shape == (3, 8, len(ATOM_FEATURES)) and adj.shape == (3, 8, 8)
    assert torch.equal(adj, adj.transpose(1, 2))
    benzene = x[0, :6]
    assert adj[0].sum() == 12 and torch.all(adj[0, :6, :6].sum(1) == 2)
    for name in ("element=C", "degree=2", "hydrogens=1", "hybridisation=SP2", "aromatic",
                 "in_ring"):
        assert torch.all(benzene[:, _column(name)] == 1), name
    ethanol = x[1, :3]
    assert ethanol[:, _column("element=O")].tolist() == [0, 0, 1]
    assert ethanol[:, _column("hydrogens=3")].tolist() == [1, 0, 0]
    assert ethanol[2, _column("hydrogens=1")] == 1 and adj[1].sum() == 4
    assert torch.all(ethanol[:, _column("aromatic")] == 0)
    ammonium = x[2, 0]
    assert ammonium[_column("charge=+1")] == 1 and ammonium[_column("hydrogens=4")] == 1
    # exactly one element bit per real atom, none on padding: the model's atom mask
    assert (x.sum(-1) > 0).sum(1).tolist() == [6, 3, 1]
    element_bits = x[..., : _column("degree=0")].sum(-1)
    assert set(element_bits.unique().tolist()) == {0.0, 1.0}


def test_featurisation_errors_name_the_fix():
    with pytest.raises(ValueError, match="cannot be parsed"):
        morgan_fingerprints(["CC", "not-a-smiles"])
    with pytest.raises(ValueError, match="raise max_atoms"):
        dense_graphs(["c1ccccc1"], max_atoms=4)


def _gnn_reference(model: DenseGNN, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
    """Per-atom loops over explicit neighbour lists, float64: the message passing by hand."""
    out = []
    for xi, ai in zip(x, adj, strict=True):
        atoms = [i for i in range(len(xi)) if xi[i].sum() > 0]
        h = {i: torch.relu(model.embed(xi[i])) for i in atoms}
        for self_w, neighbour_w in zip(model.self_weights, model.neighbour_weights, strict=True):
            h = {i: torch.relu(self_w(h[i]) + neighbour_w(
                sum((h[j] for j in atoms if ai[i, j] == 1), torch.zeros_like(h[i]))))
                for i in atoms}
        out.append(model.head(sum(h.values())).squeeze(-1))
    return torch.stack(out)


def test_dense_gnn_matches_hand_written_message_passing_and_is_invariant():
    smiles = [IBUPROFEN, "CCO", "c1ccc2ccccc2c1"]
    model = DenseGNN(width=8, layers=2, seed=3).double().eval()
    x, adj = dense_graphs(smiles, dtype=torch.float64)
    with torch.no_grad():
        pred = model(x, adj)
        torch.testing.assert_close(pred, _gnn_reference(model, x, adj), rtol=1e-12, atol=1e-12)
        # padding does not change predictions
        x_pad, adj_pad = dense_graphs(smiles, max_atoms=30, dtype=torch.float64)
        torch.testing.assert_close(model(x_pad, adj_pad), pred, rtol=1e-12, atol=1e-12)
        # renumbering the atoms (a permuted SMILES) does not either
        mol = Chem.MolFromSmiles(IBUPROFEN)
        order = list(np.random.default_rng(0).permutation(mol.GetNumAtoms()).tolist())
        shuffled = Chem.MolToSmiles(Chem.RenumberAtoms(mol, order), canonical=False)
        assert shuffled != IBUPROFEN
        x_perm, adj_perm = dense_graphs([shuffled], dtype=torch.float64)
        torch.testing.assert_close(model(x_perm, adj_perm)[0], pred[0], rtol=1e-10, atol=1e-10)


def test_gnn_objective_batches_like_single_evaluations():
    """vmap over parameter vectors through the dense GNN gives the per-vector losses."""
    x, adj = dense_graphs(["CCO", "c1ccccc1O", IBUPROFEN, "CCN"], dtype=torch.float64)
    y = torch.tensor([0.5, -0.7, -3.0, 0.9], dtype=torch.float64)
    model = DenseGNN(width=6, layers=2, seed=0).double().eval()
    objective = Objective(model, (x, adj, y), torch.nn.functional.mse_loss)
    thetas = objective.theta0 + 0.05 * torch.randn(5, objective.num_params, dtype=torch.float64,
                                                   generator=torch.Generator().manual_seed(0))
    batched = objective.batch(thetas, chunk_size=5)
    single = torch.stack([objective(t) for t in thetas])
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-12)


def test_solubility_data_and_scaffold_split():
    data = load_solubility()
    assert len(data) == 1282 and data.origin.count("train") == 1025
    assert data.names[0] == "n-pentane" and data.y[0] == pytest.approx(-3.18)
    assert np.isfinite(data.y).all()
    split = scaffold_split(data.smiles, ood_fraction=0.2, id_fraction=0.1, seed=0)
    parts = [split.train, split.id_test, split.ood_test]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(data)))
    scaffolds = np.asarray(split.scaffolds, dtype=object)
    seen = set(scaffolds[split.train]) | set(scaffolds[split.id_test])
    assert not seen & set(scaffolds[split.ood_test])
    assert set(scaffolds[split.id_test]) <= set(scaffolds[split.train])
    assert abs(len(split.ood_test) / len(data) - 0.2) < 0.02
    assert len(split.id_test) == round(0.1 * len(data))
    again = scaffold_split(data.smiles, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, [again.train, again.id_test,
                                                           again.ood_test], strict=True))
    other = scaffold_split(data.smiles, seed=1)
    assert np.array_equal(other.ood_test, split.ood_test)  # the seed only picks the ID control
    assert not np.array_equal(other.id_test, split.id_test)
    assert set(scaffolds[other.id_test]) <= set(scaffolds[other.train])
    subset = data.subset(split.ood_test[:3])
    assert subset.smiles == tuple(data.smiles[i] for i in split.ood_test[:3])


def test_train_regressor_fits_and_errors_match_numpy():
    fp = torch.tensor(morgan_fingerprints(["CCO", "CCCO", "CCCCO", "c1ccccc1", "c1ccccc1C"],
                                          n_bits=64))
    y = torch.tensor([1.1, 0.6, 0.0, -1.6, -2.2])
    model = FingerprintMLP(n_bits=64, width=16, seed=0)
    before = regression_errors(model, (fp, y))
    model, info = train_regressor(model, (fp, y), epochs=200, lr=1e-2, batch_size=5)
    after = regression_errors(model, (fp, y))
    assert not model.training and after["rmse"] < 0.1 < before["rmse"]
    assert info["loss"] == pytest.approx(after["rmse"] ** 2, rel=1e-5)
    residual = (model(fp) - y).detach().double().numpy()
    assert after["mae"] == pytest.approx(np.abs(residual).mean(), rel=1e-12)
