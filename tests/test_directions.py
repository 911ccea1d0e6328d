"""Direction sets: filter normalisation, PCA, user input, Hessian directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscaper import (
    Objective,
    hessian_directions,
    pca_directions,
    random_directions,
    user_directions,
)


@pytest.fixture
def cnn_objective(cnn_case):
    model, x, y, reference = cnn_case
    return Objective(model, (x, y), F.cross_entropy), reference


def test_filter_normalisation_matches_li_et_al(cnn_objective):
    obj, _ = cnn_objective
    d = random_directions(obj, k=2, seed=4)
    ref = obj.unflatten(obj.theta0)
    for row in d.vectors:
        views = obj.unflatten(row)
        # conv filters and linear rows: each filter has the norm of the same filter in theta0
        for name in ("0.weight", "3.weight"):
            got = views[name].flatten(1).norm(dim=1)
            want = ref[name].flatten(1).norm(dim=1)
            assert torch.allclose(got, want, rtol=1e-12)
        assert torch.count_nonzero(views["0.bias"]) == 0  # Li et al.: biases not moved
    d_bias = random_directions(obj, k=1, seed=4, bias="filter")
    assert torch.isclose(obj.unflatten(d_bias.vectors[0])["3.bias"].norm(), ref["3.bias"].norm())
    assert d.describe()["normalization"] == "filter"


def test_random_directions_deterministic_and_other_norms(cnn_objective):
    obj, _ = cnn_objective
    a = random_directions(obj, k=3, seed=7)
    b = random_directions(obj, k=3, seed=7)
    assert torch.equal(a.vectors, b.vectors)
    unit = random_directions(obj, k=3, seed=7, normalization="unit", orthogonalize=True)
    assert unit.orthonormal
    assert torch.allclose(
        unit.vectors @ unit.vectors.T, torch.eye(3, dtype=torch.float64), atol=1e-12
    )
    model = random_directions(obj, k=2, seed=1, normalization="model")
    assert torch.allclose(model.vectors.norm(dim=1), obj.theta0.norm().expand(2))
    layer = random_directions(obj, k=1, seed=1, normalization="layer")
    for name, piece in obj.unflatten(layer.vectors[0]).items():
        assert torch.isclose(piece.norm(), obj.unflatten(obj.theta0)[name].norm())
    with pytest.raises(ValueError):
        random_directions(obj, k=1, normalization="per-neuron")


def test_pca_directions_match_numpy_svd():
    rng = np.random.default_rng(0)
    traj = (rng.standard_normal((12, 3)) * [3.0, 1.5, 1.0]) @ rng.standard_normal((3, 50))
    traj = traj + rng.standard_normal((12, 50)) * 1e-3
    d = pca_directions(torch.tensor(traj), k=2)
    centered = traj - traj.mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    cos = np.abs(np.sum(d.vectors.numpy() * vt[:2], axis=1))
    assert np.all(cos > 1 - 1e-10)
    assert np.allclose(d.eigenvalues, (s[:2] ** 2) / (s**2).sum())
    with pytest.raises(ValueError, match="fewer than k"):
        pca_directions(torch.tensor(traj[:2]), k=2)


def test_user_directions_shapes_dicts_and_zero_norm(cnn_objective):
    obj, _ = cnn_objective
    p = obj.num_params
    flat = torch.randn(2, p, dtype=torch.float64)
    d = user_directions(obj, flat)
    assert torch.equal(d.vectors, flat) and d.kind == "user"
    as_dicts = [obj.unflatten(row) for row in flat]
    assert torch.equal(user_directions(obj, as_dicts).vectors, flat)
    assert torch.equal(user_directions(obj, flat.numpy()).vectors, flat)
    with pytest.raises(ValueError, match=f"shape \\(k, {p}\\)"):
        user_directions(obj, torch.randn(2, p + 1))
    with pytest.raises(ValueError, match="zero or non-finite norm"):
        user_directions(obj, torch.zeros(1, p))
    with pytest.raises(ValueError, match="linearly dependent"):
        user_directions(obj, torch.stack([flat[0], 2 * flat[0]]), orthogonalize=True)


def test_hessian_directions_are_dense_eigenvectors(cnn_objective):
    obj, reference = cnn_objective
    dense = torch.autograd.functional.hessian(reference, obj.theta0)
    evals, evecs = torch.linalg.eigh(dense)
    d = hessian_directions(obj, k=2)
    assert d.kind == "hessian" and d.orthonormal
    assert np.allclose(d.eigenvalues, evals.flip(0)[:2].numpy(), rtol=1e-6)
    cos = torch.abs((d.vectors @ evecs.flip(1)[:, :2]).diagonal())
    assert torch.all(cos > 0.9999)


@pytest.mark.parametrize("normalization", ["model", "layer"])
def test_normalised_directions_of_a_large_float32_model_have_exact_norms(normalization):
    """Norms of 8M float32 entries reduced in float32 came out 3e-4 off; the grid's axes are
    in units of these norms."""
    from landscaper.directions import normalize
    from landscaper.objective import ParameterLayout

    gen = torch.Generator().manual_seed(0)
    shapes = (torch.Size([2048, 4096]), torch.Size([5]))
    layout = ParameterLayout(("w", "b"), shapes, (0, 2048 * 4096))
    theta = torch.randn(layout.num_params, generator=gen) + 0.5
    vectors = torch.randn(2, layout.num_params, generator=gen)
    out = normalize(vectors, theta, layout, normalization)
    if normalization == "model":
        expected = theta.double().norm().expand(2)
        got = out.double().norm(dim=1)
    else:
        expected = theta[:2048 * 4096].double().norm().expand(2)
        got = out[:, :2048 * 4096].double().norm(dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
