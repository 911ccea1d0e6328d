"""Embeddings of sampled parameter vectors: cosine-distance PHATE and a PCA baseline.

Horoi et al. (2022) embed jump & retrain trajectories with a PHATE variant that uses cosine
distance both for the affinity kernel and for the metric MDS, then build a kNN graph on the
PHATE diffusion-potential distances. Parameter vectors can be far too large to hold in memory
(hundreds of samples x tens of millions of parameters), so everything here starts from the
(n x n) Gram matrix of the samples, streamed from an array, a ``np.memmap`` or a torch tensor:

* `cosine_distances`: 1 - cos between rows, from the streamed Gram matrix;
* `phate_embedding`: PHATE on those distances (``knn_dist="precomputed_distance"``) with
  ``mds_dist="cosine"``; returns the diffusion potential and its Euclidean distances too;
* `pca_embedding`: the linear baseline, from the streamed centred Gram matrix.

``phate`` is GPL-2 and therefore an optional extra (``pip install phate``); it is
imported only when `phate_embedding` runs.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.spatial.distance import pdist, squareform

from ._utils import Stopwatch

logger = logging.getLogger(__name__)

__all__ = [
    "PcaResult",
    "PhateResult",
    "cosine_distances",
    "gram_matrix",
    "pca_embedding",
    "phate_embedding",
]

# A column slab is converted to float64 before the product; never hold more than this many
# float64 values (256 MiB) at a time, whatever ``block_rows`` asks for.
_MAX_SLAB_VALUES = 2**25


# ------------------------------------------------------------------ streamed Gram matrix
def _shape(samples: Any) -> tuple[int, int]:
    shape = tuple(samples.shape)
    if len(shape) != 2:
        raise ValueError(f"samples must be a 2-D (n, P) array, got shape {shape}")
    n, p = (int(s) for s in shape)
    if n == 0 or p == 0:
        raise ValueError(f"samples must be non-empty, got shape {shape}")
    return n, p


def _slab_width(n: int, p: int, block_rows: int) -> int:
    """Columns per slab: as many values as ``block_rows`` full rows, capped in size."""
    if int(block_rows) < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    values = min(int(block_rows) * p, max(_MAX_SLAB_VALUES, n))
    return max(1, min(p, values // n))


def gram_matrix(samples: Any, *, center: bool = False, block_rows: int = 64) -> np.ndarray:
    """Gram matrix ``X Xᵀ`` (or of the column-centred ``X``) of an (n, P) array, streamed.

    ``samples`` may be a numpy array, a ``np.memmap`` or a torch tensor (any device; the
    products then run on that device). The sum over the P columns is accumulated in float64
    over column slabs of all n rows; each slab holds as many values as ``block_rows`` full
    rows (at most 2**25 float64 values), so a row-major memmap is read exactly once, in long
    contiguous runs, and never more than one slab is materialised. With ``center=True`` each
    slab is centred by its own column means, which is exact (no cancellation between large
    raw Gram entries, which matters for samples that sit close to a common optimum).

    Returns an exactly symmetric (n, n) float64 array.
    """
    n, p = _shape(samples)
    width = _slab_width(n, p, block_rows)
    if isinstance(samples, torch.Tensor):
        gram_t = torch.zeros((n, n), dtype=torch.float64, device=samples.device)
        with torch.no_grad():
            for c0 in range(0, p, width):
                slab = samples[:, c0:c0 + width].to(torch.float64)
                if center:
                    slab = slab - slab.mean(dim=0, keepdim=True)
                gram_t += slab @ slab.T
        gram = gram_t.cpu().numpy()
    else:
        gram = np.zeros((n, n), dtype=np.float64)
        for c0 in range(0, p, width):
            slab = np.asarray(samples[:, c0:c0 + width], dtype=np.float64)
            if center:
                slab = slab - slab.mean(axis=0, keepdims=True)
            gram += slab @ slab.T
    if not np.all(np.isfinite(gram)):
        bad = np.flatnonzero(~np.isfinite(np.diag(gram)))
        where = f" (rows {bad[:10].tolist()})" if bad.size else ""
        raise ValueError(f"samples contain NaN or inf values{where}")
    gram = 0.5 * (gram + gram.T)  # exactly symmetric: a + b == b + a in floating point
    return gram


def _cosine_from_gram(gram: np.ndarray) -> np.ndarray:
    sq_norms = np.diag(gram).copy()
    zero = np.flatnonzero(sq_norms <= 0.0)
    if zero.size:
        rows = ", ".join(str(i) for i in zero[:10]) + (" ..." if zero.size > 10 else "")
        raise ValueError(f"cosine distance is undefined for zero-norm rows: row {rows}")
    norms = np.sqrt(sq_norms)
    dist = 1.0 - gram / norms[:, None] / norms[None, :]
    np.clip(dist, 0.0, 2.0, out=dist)
    dist = 0.5 * (dist + dist.T)
    np.fill_diagonal(dist, 0.0)
    return dist


def cosine_distances(samples: Any, *, block_rows: int = 64) -> np.ndarray:
    """Cosine distances ``1 - cos(x_i, x_j)`` between the rows of an (n, P) array.

    Computed from the streamed float64 Gram matrix (see `gram_matrix`), so ``samples`` may be a
    ``np.memmap`` far larger than memory, or a torch tensor. The result is exactly symmetric,
    has a zero diagonal and lies in [0, 2]. A row with zero norm raises ``ValueError``.
    """
    return _cosine_from_gram(gram_matrix(samples, center=False, block_rows=block_rows))


# ------------------------------------------------------------------ PCA baseline
@dataclass(frozen=True)
class PcaResult:
    """Linear baseline embedding (PCA scores), from the streamed Gram matrix.

    Attributes:
        embedding: (n, n_components) principal-component scores ``X_c V_k = U_k S_k``; each
            column's sign is fixed so that its largest-magnitude entry is positive.
        explained_variance: (n_components,) variances along the components (``S² / (n-1)``).
        explained_variance_ratio: (n_components,) fraction of the total variance.
        singular_values: (n_components,) singular values of the (centred) sample matrix.
        center: whether the samples were column-centred (``False``: uncentred SVD).
    """

    embedding: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray
    center: bool
    params: dict[str, Any] = field(default_factory=dict)


def pca_embedding(
    samples: Any, n_components: int = 2, *, center: bool = True, block_rows: int = 64
) -> PcaResult:
    """PCA of the rows of an (n, P) array via an eigendecomposition of its n x n Gram matrix.

    Matches ``sklearn.decomposition.PCA(n_components).fit_transform(samples)`` up to the sign
    of each component, without ever holding more than one slab of ``samples`` (see
    `gram_matrix`). The principal axes in parameter space are not computed (that would need
    a second pass over the samples).
    """
    watch = Stopwatch()
    n, p = _shape(samples)
    k = int(n_components)
    if not 1 <= k <= min(n, p):
        raise ValueError(f"n_components must be between 1 and min(n, P) = {min(n, p)}, "
                         f"got {n_components!r}")
    gram = gram_matrix(samples, center=center, block_rows=block_rows)
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    evecs = evecs[:, order]
    total = float(np.trace(gram))
    sing = np.sqrt(evals[:k])
    coords = evecs[:, :k] * sing[None, :]
    peak = np.argmax(np.abs(coords), axis=0)
    signs = np.sign(coords[peak, np.arange(k)])
    signs[signs == 0] = 1.0
    coords = coords * signs[None, :]
    dof = max(n - 1, 1) if center else n
    ratio = evals[:k] / total if total > 0 else np.zeros(k)
    logger.info("PCA embedding of %d x %d samples: %.3f s", n, p, watch.seconds)
    return PcaResult(
        embedding=coords,
        explained_variance=evals[:k] / dof,
        explained_variance_ratio=ratio,
        singular_values=sing,
        center=bool(center),
        params={"n_components": k, "center": bool(center), "block_rows": int(block_rows)},
    )


# ------------------------------------------------------------------ PHATE
@dataclass(frozen=True)
class PhateResult:
    """Cosine-distance PHATE embedding (Horoi et al. 2022, Sec. 3.2-3.3).

    Attributes:
        embedding: (n, n_components) PHATE coordinates (metric MDS, cosine distance).
        diffusion_potential: (n, n) PHATE diffusion potential ``-log(P^t + 1e-7)``.
        potential_distances: (n, n) Euclidean distances between rows of the diffusion
            potential (the paper's potential distances, used for its kNN graph).
        distances: (n, n) the cosine distances the affinity kernel was built from.
        t: the diffusion time used (the automatically selected one when ``t="auto"``).
        params: the PHATE settings used, plus the phate version.
    """

    embedding: np.ndarray
    diffusion_potential: np.ndarray
    potential_distances: np.ndarray
    distances: np.ndarray
    t: int
    params: dict[str, Any] = field(default_factory=dict)


def _import_phate() -> Any:
    try:
        return importlib.import_module("phate")
    except ImportError as exc:
        raise ImportError(
            "phate_embedding needs the optional 'phate' package (GPL-2, not installed by "
            'default); install it with: pip install phate'
        ) from exc


class _ForwardToLogger(logging.Handler):
    """Re-emit records of phate's/graphtools' task logger on this module's logger."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        if "SGD-MDS" in message:
            message += " (mds_solver='smacof' is slower but runs SMACOF to convergence)"
        logger.log(record.levelno, "phate: %s", message)


@contextmanager
def _phate_output_to_logging(enabled: bool) -> Iterator[None]:
    """Route phate's own stdout logger (tasklogger ``graphtools``) into `logging`.

    phate prints through a logger named ``graphtools`` with a stdout handler; with
    ``verbose=False`` only its warnings (e.g. "SGD-MDS may not have converged") get through.
    They are forwarded to ``landscaper.embedding`` at their own level instead.
    """
    if not enabled:
        yield
        return
    phate_logger = logging.getLogger("graphtools")
    saved = phate_logger.handlers[:]
    saved_propagate = phate_logger.propagate
    phate_logger.handlers = [_ForwardToLogger()]
    phate_logger.propagate = False
    try:
        yield
    finally:
        phate_logger.handlers = saved
        phate_logger.propagate = saved_propagate


@contextmanager
def _stage(what: str) -> Iterator[None]:
    watch = Stopwatch()
    yield
    logger.info("%s: %.3f s", what, watch.seconds)


def _check_distance_matrix(dist: Any) -> np.ndarray:
    if isinstance(dist, torch.Tensor):
        dist = dist.detach().cpu().numpy()
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"precomputed=True needs a square (n, n) distance matrix, got shape "
                         f"{dist.shape}")
    if not np.all(np.isfinite(dist)) or np.any(dist < 0):
        raise ValueError("a precomputed distance matrix must be finite and non-negative")
    if np.any(np.diag(dist) != 0):
        raise ValueError("a precomputed distance matrix must have a zero diagonal")
    if not np.allclose(dist, dist.T, rtol=1e-10, atol=1e-12):
        raise ValueError("a precomputed distance matrix must be symmetric")
    return 0.5 * (dist + dist.T)


def phate_embedding(
    samples_or_distances: Any,
    *,
    n_components: int = 2,
    knn: int = 5,
    decay: float = 40,
    t: int | str = "auto",
    seed: int = 0,
    precomputed: bool = False,
    n_jobs: int = 1,
    verbose: bool = False,
    block_rows: int = 64,
    mds_solver: str = "sgd",
) -> PhateResult:
    """Cosine-distance PHATE of sampled parameter vectors (Horoi et al. 2022, Sec. 3.2).

    The affinity kernel is built from cosine distances between the samples: they are computed
    here from the streamed Gram matrix (`cosine_distances`, so ``samples_or_distances`` may be
    a ``np.memmap`` or a torch tensor) and passed to ``phate.PHATE`` with
    ``knn_dist="precomputed_distance"``; with ``precomputed=True`` the input is taken to be
    such an (n, n) cosine distance matrix already. This gives the same affinities as
    ``knn_dist="cosine"`` on the raw vectors *with* ``n_pca=None``; phate's default
    ``n_pca=100`` would instead take cosines of PCA-reduced (hence centred) vectors whenever
    n and P exceed 100, which is not the paper's cosine between parameter vectors.

    ``mds_dist="cosine"`` in phate is not about the input: MDS always embeds distances
    between rows of the diffusion potential, and ``mds_dist`` picks the metric between those
    rows. It therefore applies unchanged to a precomputed input, and cosine is used, as in the
    paper. ``n_landmark=None`` keeps the diffusion potential n x n (no landmark compression).

    phate's printing is silenced with ``verbose=False``; its warnings (e.g. SGD-MDS
    convergence) are forwarded to the ``landscaper.embedding`` logger, which also gets one
    INFO line with the seconds of each stage. Deterministic for a fixed ``seed``.

    Raises:
        ImportError: phate is not installed (``pip install phate``).
        ValueError: fewer than ``knn + 2`` samples, zero-norm samples, a bad distance matrix.
    """
    if precomputed:
        n = int(np.shape(samples_or_distances)[0])
    else:
        n, _ = _shape(samples_or_distances)
    if int(knn) < 1:
        raise ValueError(f"knn must be a positive integer, got {knn!r}")
    if n < int(knn) + 2:
        raise ValueError(
            f"PHATE with knn={knn} needs at least knn + 2 = {int(knn) + 2} samples, got {n}; "
            f"pass a smaller knn (at most {max(n - 2, 0)}) or more samples")
    if not 1 <= int(n_components) < n:
        raise ValueError(f"n_components must be between 1 and n - 1 = {n - 1}, "
                         f"got {n_components!r}")

    phate = _import_phate()
    if precomputed:
        dist = _check_distance_matrix(samples_or_distances)
    else:
        with _stage(f"cosine distances of {n} samples"):
            dist = cosine_distances(samples_or_distances, block_rows=block_rows)

    params: dict[str, Any] = {
        "n_components": int(n_components), "knn": int(knn), "decay": decay, "t": t,
        "seed": seed, "knn_dist": "precomputed_distance (cosine)", "mds_dist": "cosine",
        "mds": "metric", "mds_solver": mds_solver, "gamma": 1, "n_landmark": None,
        "n_jobs": n_jobs, "phate_version": getattr(phate, "__version__", "unknown"),
    }
    op = phate.PHATE(
        n_components=int(n_components), knn=int(knn), decay=decay, t=t, gamma=1,
        knn_dist="precomputed_distance", mds_dist="cosine", mds="metric",
        mds_solver=mds_solver, n_landmark=None, n_jobs=n_jobs, random_state=seed,
        verbose=bool(verbose),
    )
    with _phate_output_to_logging(not verbose):
        with _stage("PHATE affinities and diffusion operator"):
            op.fit(dist)
        with _stage("PHATE diffusion potential (t selection)"):
            potential = np.array(op.diff_potential, dtype=np.float64)
        with _stage("PHATE metric MDS (cosine)"):
            embedding = np.array(op.transform(), dtype=np.float64)
    t_used = int(op.optimal_t) if t == "auto" else int(t)
    with _stage("potential distances"):
        pot_dist = squareform(pdist(potential, metric="euclidean"))
    params["t_used"] = t_used
    return PhateResult(
        embedding=embedding,
        diffusion_potential=potential,
        potential_distances=pot_dist,
        distances=dist,
        t=t_used,
        params=params,
    )
