"""Per-layer spectra against the blocks of a dense float64 Hessian and GGN built in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscaper import Objective
from landscaper.curvature import GGNOperator
from landscaper.layers import layer_spectra, parameter_groups


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(),
                          nn.Linear(6, 3)).double().eval()
    x, y = torch.randn(48, 5, dtype=torch.float64), torch.randint(0, 3, (48,))
    obj = Objective(model, (x, y), F.cross_entropy)
    hess = torch.autograd.functional.hessian(obj, obj.theta0.clone())
    return obj, hess


def block(matrix: torch.Tensor, obj: Objective, names: list[str]) -> np.ndarray:
    layout = obj.layout
    index = np.concatenate([np.arange(o, o + int(np.prod(s))) for n, s, o in
                            zip(layout.names, layout.shapes, layout.offsets, strict=True)
                            if n in names])
    return matrix.numpy()[np.ix_(index, index)]


def test_module_blocks_match_the_dense_hessian(case):
    obj, hess = case
    spectra = layer_spectra(obj, k=2, trace_probes=40, tol=1e-10)
    assert [g.name for g in spectra.groups] == ["0", "2", "4"]
    assert [g.size for g in spectra.groups] == [42, 48, 21]
    for g in spectra.groups:
        dense = block(hess, obj, list(g.parameters))
        reference = np.sort(np.linalg.eigvalsh(dense))[::-1][:2]
        np.testing.assert_allclose(g.eigenvalues, reference, rtol=1e-7, atol=1e-12)
        exact = np.trace(dense)
        if g.size <= 40:  # as many products as probes: the exact trace
            assert g.trace == pytest.approx(exact, rel=1e-9) and g.trace_std_error == 0.0
        else:
            assert abs(g.trace - exact) < 4 * g.trace_std_error + 1e-9
        assert g.converged and g.n_hvp > 0
    assert spectra.n_hvp == sum(g.n_hvp for g in spectra.groups)


def test_named_groups_and_the_ggn(case):
    obj, _ = case
    ggn = GGNOperator(obj).to_dense()
    groups = {"weights": "*.weight", "last": ["4.weight", "4.bias"]}
    spectra = layer_spectra(obj, groups, k=1, curvature="ggn", tol=1e-10)
    for g, names in zip(spectra.groups, (["0.weight", "2.weight", "4.weight"],
                                         ["4.weight", "4.bias"]), strict=True):
        assert list(g.parameters) == names
        reference = np.linalg.eigvalsh(block(ggn, obj, names)).max()
        assert g.eigenvalues[0] == pytest.approx(reference, rel=1e-7)
    assert spectra.curvature == "ggn"


def test_grouping_rules_and_bad_patterns():
    names = ("embed.weight", "blocks.0.attn.weight", "blocks.0.attn.bias", "scale")
    assert parameter_groups(names) == {"embed": ["embed.weight"],
                                       "blocks.0.attn": ["blocks.0.attn.weight",
                                                         "blocks.0.attn.bias"],
                                       "scale": ["scale"]}
    assert list(parameter_groups(names, "parameter")) == list(names)
    assert parameter_groups(names, ["blocks.*"]) == {"blocks.*": list(names[1:3])}
    with pytest.raises(ValueError, match="group 'head.\\*'.*matches none.*embed.weight"):
        parameter_groups(names, ["head.*"])


def test_a_bad_group_fails_before_any_product(case, monkeypatch):
    obj, _ = case
    from landscaper.hessian import HessianOperator

    built = []
    monkeypatch.setattr(HessianOperator, "__init__", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match="matches none"):
        layer_spectra(obj, ["nope.*"])
    assert not built


def test_table_figure_and_json(case):
    obj, _ = case
    spectra = layer_spectra(obj, k=1, trace_probes=8)
    text = spectra.table()
    assert text.splitlines()[0].startswith("group") and len(text.splitlines()) == 4
    ax = spectra.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2", "4"]
    record = spectra.to_dict()
    assert record["groups"][0]["size"] == 42 and record["curvature"] == "hessian"


def test_an_operator_without_parameter_names_is_refused():
    with pytest.raises(TypeError, match="needs parameter names"):
        layer_spectra(torch.eye(3))
