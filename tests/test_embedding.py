"""Tests for landscaper.embedding: streamed cosine distances, PCA baseline, cosine PHATE."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from landscaper.embedding import (
    PcaResult,
    PhateResult,
    cosine_distances,
    gram_matrix,
    pca_embedding,
    phate_embedding,
)

# Three well-separated clusters give a disconnected kNN graph, which phate warns about.
disconnected_ok = pytest.mark.filterwarnings("ignore:Graph is disconnected:RuntimeWarning")


def _random(n: int = 23, p: int = 37, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, p))


def _memmap(tmp_path, x: np.ndarray, dtype=np.float64) -> np.memmap:
    mm = np.memmap(tmp_path / "samples.dat", dtype=dtype, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    return np.memmap(tmp_path / "samples.dat", dtype=dtype, mode="r", shape=x.shape)


def _three_trajectories(n_per: int = 20, dim: int = 50, seed: int = 0):
    """Three noisy straight trajectories in ``dim``-D, far apart in angle."""
    rng = np.random.default_rng(seed)
    xs, labels = [], []
    s = np.linspace(0.0, 1.0, n_per)[:, None]
    for c in range(3):
        start, direction = 5.0 * rng.normal(size=dim), rng.normal(size=dim)
        xs.append(start + 3.0 * s * direction + 0.05 * rng.normal(size=(n_per, dim)))
        labels += [c] * n_per
    return np.vstack(xs), np.array(labels)


# ------------------------------------------------------------------ cosine distances
def test_cosine_distances_match_scipy():
    x = _random()
    d = cosine_distances(x)
    np.testing.assert_allclose(d, cdist(x, x, metric="cosine"), rtol=0, atol=1e-13)
    assert d.dtype == np.float64
    assert np.array_equal(d, d.T)
    assert np.all(np.diag(d) == 0.0)


def test_cosine_distances_memmap_torch_and_block_sizes(tmp_path):
    x = _random(n=19, p=41, seed=1)
    ref = cosine_distances(x)
    mm = _memmap(tmp_path, x)
    for block_rows in (1, 2, 5, 64, 1000):
        np.testing.assert_allclose(cosine_distances(x, block_rows=block_rows), ref,
                                   rtol=0, atol=1e-14)
        np.testing.assert_array_equal(cosine_distances(mm, block_rows=block_rows),
                                      cosine_distances(x, block_rows=block_rows))
    np.testing.assert_allclose(cosine_distances(torch.from_numpy(x)), ref, rtol=0, atol=1e-14)
    # float32 storage is accumulated in float64
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(cosine_distances(_memmap(tmp_path, x32, np.float32)),
                               cdist(x32.astype(np.float64), x32.astype(np.float64), "cosine"),
                               rtol=0, atol=1e-13)


def test_gram_matrix_centred_matches_dense():
    x = _random(n=11, p=29, seed=2) + 1e3  # large common offset: centring must be exact
    xc = x - x.mean(axis=0)
    for block_rows in (1, 3, 64):
        g = gram_matrix(x, center=True, block_rows=block_rows)
        np.testing.assert_allclose(g, xc @ xc.T, rtol=1e-9, atol=1e-9)
        assert np.array_equal(g, g.T)


def test_cosine_distances_errors():
    x = _random(n=6, p=5)
    x[4] = 0.0
    with pytest.raises(ValueError, match="zero-norm rows: row 4"):
        cosine_distances(x)
    with pytest.raises(ValueError, match="2-D"):
        cosine_distances(np.ones(5))
    y = _random(n=4, p=3)
    y[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cosine_distances(y)
    with pytest.raises(ValueError, match="block_rows"):
        cosine_distances(_random(), block_rows=0)


# ------------------------------------------------------------------ PCA baseline
def _align_signs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flip columns of ``a`` to match the signs of ``b``."""
    signs = np.sign(np.sum(a * b, axis=0))
    return a * signs[None, :]


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    x = _random(n=30, p=12, seed=3) * np.linspace(3.0, 0.1, 12)[None, :] + 7.0
    ours = pca_embedding(x, n_components=3)
    ref = PCA(n_components=3, svd_solver="full")
    coords = ref.fit_transform(x)
    assert isinstance(ours, PcaResult)
    np.testing.assert_allclose(_align_signs(ours.embedding, coords), coords,
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.abs(ours.embedding), np.abs(coords), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_ratio, ref.explained_variance_ratio_,
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.explained_variance, ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(ours.singular_values, ref.singular_values_, rtol=1e-10)


def test_pca_wide_data_memmap_and_torch(tmp_path):
    from sklearn.decomposition import PCA

    x = _random(n=15, p=300, seed=4)
    ref = PCA(n_components=2, svd_solver="full").fit_transform(x)
    ours = pca_embedding(x, 2, block_rows=4)
    np.testing.assert_allclose(_align_signs(ours.embedding, ref), ref, rtol=0, atol=1e-10)
    from_mm = pca_embedding(_memmap(tmp_path, x), 2, block_rows=4)
    np.testing.assert_array_equal(from_mm.embedding, ours.embedding)
    np.testing.assert_array_equal(from_mm.explained_variance_ratio,
                                  ours.explained_variance_ratio)
    from_torch = pca_embedding(torch.from_numpy(x), 2, block_rows=4)
    np.testing.assert_allclose(from_torch.embedding, ours.embedding, rtol=0, atol=1e-10)


def test_pca_uncentred_is_truncated_svd():
    x = _random(n=10, p=8, seed=5) + 2.0
    ours = pca_embedding(x, 2, center=False)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    ref = u[:, :2] * s[:2]
    np.testing.assert_allclose(_align_signs(ours.embedding, ref), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_ratio, s[:2] ** 2 / np.sum(s**2),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="n_components"):
        pca_embedding(x, 9)


# ------------------------------------------------------------------ PHATE
def test_missing_phate_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "phate", None)  # makes `import phate` fail
    with pytest.raises(ImportError, match=r'pip install phate'):
        phate_embedding(_random(n=12, p=5))


def test_too_few_samples_for_knn():
    with pytest.raises(ValueError, match=r"knn \+ 2 = 7 samples, got 6.*smaller knn"):
        phate_embedding(_random(n=6, p=5), knn=5)


@disconnected_ok
def test_phate_deterministic_and_separates_clusters(caplog):
    pytest.importorskip("phate")
    x, labels = _three_trajectories()
    with caplog.at_level(logging.INFO, logger="landscaper.embedding"):
        first = phate_embedding(x, seed=3)
    second = phate_embedding(x, seed=3)
    assert isinstance(first, PhateResult)
    n = len(labels)
    assert first.embedding.shape == (n, 2)
    assert first.diffusion_potential.shape == (n, n)
    for name in ("embedding", "diffusion_potential", "potential_distances", "distances"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.t == second.t and first.t >= 1
    assert first.params["t_used"] == first.t
    assert first.params["mds_dist"] == "cosine" and first.params["seed"] == 3
    # one INFO line per stage, with seconds
    stages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("cosine distances") and m.endswith(" s") for m in stages)
    assert any(m.startswith("PHATE metric MDS") for m in stages)

    # leave-one-out 1-NN on the 2-D embedding recovers the trajectory labels
    d = cdist(first.embedding, first.embedding)
    np.fill_diagonal(d, np.inf)
    accuracy = np.mean(labels[np.argmin(d, axis=1)] == labels)
    assert accuracy == 1.0

    # potential distances: Euclidean between potential rows, symmetric with zero diagonal
    pd_ = first.potential_distances
    assert np.array_equal(pd_, pd_.T)
    assert np.all(np.diag(pd_) == 0.0)
    np.testing.assert_allclose(pd_, cdist(first.diffusion_potential, first.diffusion_potential),
                               rtol=1e-10, atol=1e-10)


@disconnected_ok
def test_phate_precomputed_memmap_and_raw_cosine_agree(tmp_path, capfd):
    phate = pytest.importorskip("phate")
    x, _ = _three_trajectories(n_per=12, dim=30, seed=1)
    ours = phate_embedding(x, seed=0, t=10)
    capfd.readouterr()
    assert ours.t == 10
    from_mm = phate_embedding(_memmap(tmp_path, x), seed=0, t=10)
    np.testing.assert_array_equal(from_mm.embedding, ours.embedding)
    pre = phate_embedding(cosine_distances(x), precomputed=True, seed=0, t=10)
    np.testing.assert_array_equal(pre.embedding, ours.embedding)
    assert capfd.readouterr().out == ""  # phate's printing is silenced / sent to logging

    # phate's own cosine kernel on the raw vectors (no PCA step) gives the same result
    op = phate.PHATE(knn=5, decay=40, t=10, knn_dist="cosine", mds_dist="cosine",
                     n_pca=None, n_landmark=None, random_state=0, verbose=False)
    emb = op.fit_transform(x)
    np.testing.assert_allclose(op.diff_potential, ours.diffusion_potential, atol=1e-8)
    np.testing.assert_allclose(emb, ours.embedding, atol=1e-8)


def test_phate_rejects_bad_precomputed_matrix():
    pytest.importorskip("phate")
    d = cosine_distances(_random(n=10, p=4))
    d[0, 1] += 0.1
    with pytest.raises(ValueError, match="symmetric"):
        phate_embedding(d, precomputed=True)
    with pytest.raises(ValueError, match="square"):
        phate_embedding(np.zeros((10, 3)), precomputed=True)
