"""Direction sets spanning the subspace a landscape is sampled in.

Hessian eigenvectors, random directions with filter-wise normalisation (Li et al., 2018),
principal components of a trajectory, or directions the user supplies. Normalisation and
orthonormalisation are explicit options, never implicit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._precise import norm, row_norms
from .objective import Objective, ParameterLayout

if TYPE_CHECKING:
    from .hessian import EigenResult


class Normalization(str, Enum):
    """How direction vectors are scaled.

    Members:
        filter: each filter (row along the first axis) of each parameter tensor gets the norm
            of the same filter in θ₀ (Li et al., 2018).
        layer: each parameter tensor gets the norm of that tensor in θ₀.
        model: the whole vector gets the norm of θ₀.
        unit: the whole vector gets norm 1.
        none: vectors are used as given.
    """

    FILTER = "filter"
    LAYER = "layer"
    MODEL = "model"
    UNIT = "unit"
    NONE = "none"


class BiasMode(str, Enum):
    """What filter normalisation does with 1-D parameters (biases, norm-layer scales).

    Members:
        zero: set them to zero, so the landscape moves only weights (Li et al.'s default).
        filter: treat each 1-D tensor as one filter and scale it to its norm in θ₀.
    """

    ZERO = "zero"
    FILTER = "filter"


@dataclass(frozen=True)
class Directions:
    """k direction vectors over θ.

    Attributes:
        vectors: (k, P) tensor.
        kind: ``"hessian"``, ``"random"``, ``"pca"`` or ``"user"``.
        normalization: the `Normalization` applied.
        orthonormal: whether the rows are orthonormal.
        eigenvalues: Hessian eigenvalues (``kind="hessian"``) or explained variances (``"pca"``).
        info: extra JSON-friendly facts (seed, HVPs used, ...).
    """

    vectors: torch.Tensor
    kind: str
    normalization: str = Normalization.NONE.value
    orthonormal: bool = False
    eigenvalues: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Number of directions."""
        return int(self.vectors.shape[0])

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (without the vectors)."""
        return {
            "kind": self.kind,
            "k": self.k,
            "normalization": self.normalization,
            "orthonormal": self.orthonormal,
            "eigenvalues": None if self.eigenvalues is None else self.eigenvalues.tolist(),
            "norms": self.vectors.norm(dim=1).tolist(),
            **self.info,
        }

    @classmethod
    def from_description(cls, description: Mapping[str, Any],
                         vectors: torch.Tensor | np.ndarray) -> Directions:
        """The `Directions` that `describe` gave ``description`` for, with its ``vectors``
        (e.g. from a saved landscape)."""
        derived = {"kind", "k", "normalization", "orthonormal", "eigenvalues", "norms"}
        eigenvalues = description.get("eigenvalues")
        return cls(torch.as_tensor(vectors), str(description.get("kind", "user")),
                   str(description.get("normalization", Normalization.NONE.value)),
                   bool(description.get("orthonormal", False)),
                   None if eigenvalues is None else np.asarray(eigenvalues, dtype=np.float64),
                   {k: v for k, v in description.items() if k not in derived})

    def axis_label(self, i: int) -> str:
        """How axis ``i`` of a landscape along these directions is labelled in figures."""
        return axis_label(self.kind, self.eigenvalues, i)


#: Direction kinds that are eigenvectors of a curvature matrix (their eigenvalue is shown).
EIGEN_KINDS = ("hessian", "ggn", "fisher")
#: How refusals and figures name them.
EIGEN_LABELS = {"hessian": "Hessian", "ggn": "GGN", "fisher": "Fisher"}


def axis_label(kind: str | None, eigenvalues: Sequence[float] | None, i: int) -> str:
    """The figure label of direction ``i`` of a set of ``kind`` (Hessian directions show
    their eigenvalue)."""
    if kind in EIGEN_KINDS and eigenvalues is not None and i < len(eigenvalues):
        return f"direction {i} (λ={float(eigenvalues[i]):.3g})"
    return f"direction {i}"


def orthonormalize(vectors: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows spanning the same space (QR in float64, signs kept stable)."""
    q, r = torch.linalg.qr(vectors.double().T)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    if torch.any(torch.abs(torch.diagonal(r)) < 1e-12 * torch.abs(r).max()):
        raise ValueError("directions are linearly dependent and cannot be orthonormalised")
    return (q * signs).T.to(vectors.dtype)


def normalize(
    vectors: torch.Tensor,
    theta: torch.Tensor,
    layout: ParameterLayout,
    normalization: str | Normalization = "filter",
    bias: str | BiasMode = "zero",
) -> torch.Tensor:
    """Scale each row of ``vectors`` (k, P) according to ``normalization`` relative to θ."""
    normalization, bias = Normalization(normalization), BiasMode(bias)
    out = vectors.clone()
    if normalization is Normalization.NONE:
        return out
    if normalization in (Normalization.MODEL, Normalization.UNIT):
        target = norm(theta) if normalization is Normalization.MODEL else 1.0
        return out / row_norms(out).to(out)[:, None] * target
    reference = layout.unflatten(theta)
    for row in out:
        for name, piece in layout.unflatten(row).items():
            ref = reference[name]
            if normalization is Normalization.LAYER or (
                    piece.ndim <= 1 and bias is not BiasMode.ZERO):
                # float64 over a whole tensor (`landscaper._precise`); 0/0 stays NaN
                piece.mul_(torch.tensor(norm(ref.reshape(-1)), dtype=torch.float64)
                           / norm(piece.reshape(-1)))
            elif piece.ndim <= 1:
                piece.zero_()
            else:
                ref_norms = torch.linalg.vector_norm(ref.flatten(1), dim=1)
                own_norms = torch.linalg.vector_norm(piece.flatten(1), dim=1)
                shape = (-1,) + (1,) * (piece.ndim - 1)
                piece.mul_((ref_norms / own_norms).view(shape))
    return out


def check_direction_count(k: int, objective: Objective, what: str) -> None:
    """Refuse k directions that an objective of P parameters cannot hold (before any work)."""
    if not 1 <= k <= objective.num_params:
        raise ValueError(f"cannot take k={k} {what} directions of an objective with "
                         f"{objective.num_params} parameters; pass 1 <= dims (k) <= "
                         f"{objective.num_params}, or select more parameters with params=[...]")


def _check_shape(vectors: torch.Tensor, objective: Objective) -> None:
    p = objective.num_params
    if vectors.ndim == 1 and vectors.shape[0] == p:
        raise ValueError(f"directions must be 2-D (k, {p}); a single direction of shape ({p},) "
                         "is written as d[None] or [d]")
    if vectors.ndim != 2 or vectors.shape[1] != p or vectors.shape[0] < 1:
        raise ValueError(f"directions must have shape (k, {p}) for the selected parameters, got "
                         f"{tuple(vectors.shape)}")
    if vectors.dtype.is_complex or vectors.dtype == torch.bool:
        raise ValueError(f"directions must be real numbers, got dtype {vectors.dtype}")


def _check_theta0_finite(objective: Objective, normalization: Normalization) -> None:
    if normalization in (Normalization.FILTER, Normalization.LAYER, Normalization.MODEL) and (
            objective.nonfinite_theta0):
        raise ValueError(
            f"{normalization.value!r} normalisation scales directions by the norms of θ₀, but the "
            f"model's parameters hold NaN/inf ({objective.nonfinite_theta0}); fix the weights, or "
            "use normalization='unit' (and extent_unit='absolute') to look at them anyway")


def _check_nonzero(vectors: torch.Tensor) -> None:
    norms = vectors.norm(dim=1)
    bad = torch.nonzero(~(norms > 0) | ~torch.isfinite(norms)).flatten().tolist()
    if bad:
        raise ValueError(f"direction(s) {bad} have zero or non-finite norm; a landscape along "
                         "them would be flat or undefined. Check the vectors you passed.")


#: Directions whose normalised Gram matrix has an eigenvalue below this span fewer than k axes.
DEPENDENT_TOL = 1e-8


def _check_independent(vectors: torch.Tensor) -> None:
    """Refuse linearly dependent rows (a repeated or parallel direction): the grid would
    sample one line or plane several times over and its topology would be degenerate."""
    if vectors.shape[0] < 2:
        return
    unit = vectors.double()
    unit = unit / unit.norm(dim=1, keepdim=True)
    gram = unit @ unit.T
    if float(torch.linalg.eigvalsh(gram)[0]) >= DEPENDENT_TOL:
        return
    cosines = gram.abs().fill_diagonal_(0)
    i, j = divmod(int(torch.argmax(cosines)), gram.shape[0])
    parallel = (f" (directions {i} and {j} are parallel, |cos| = {float(cosines[i, j]):.12g})"
                if float(cosines[i, j]) > 1 - DEPENDENT_TOL else "")
    raise ValueError(f"the directions are linearly dependent{parallel}, so the grid would span "
                     f"fewer than {vectors.shape[0]} dimensions; pass independent directions")


def _finish(vectors: torch.Tensor, objective: Objective, normalization: str, bias: str,
            orthogonalize: bool) -> tuple[torch.Tensor, bool]:
    _check_theta0_finite(objective, Normalization(normalization))
    if orthogonalize:
        vectors = orthonormalize(vectors)
    vectors = normalize(vectors, objective.theta0, objective.layout, normalization, bias)
    if Normalization(normalization) in (Normalization.FILTER, Normalization.LAYER,
                                        Normalization.MODEL) and not bool(
            torch.all(vectors.norm(dim=1) > 0)):
        raise ValueError(f"{Normalization(normalization).value!r} normalisation scales each "
                         "direction by the norms of θ₀, which are zero for the selected "
                         "parameters (e.g. zero-initialised biases); use normalization='unit' "
                         "(and extent_unit='absolute')")
    _check_nonzero(vectors)
    orthonormal = orthogonalize and Normalization(normalization) in (
        Normalization.UNIT, Normalization.NONE)
    return vectors, orthonormal


def eigen_directions(result: EigenResult, k: int | None = None, which: str = "LA",
                     kind: str = "hessian") -> Directions:
    """The first ``k`` eigenpairs of a `~landscaper.hessian.EigenResult` (all by default) as
    directions of ``kind`` (the curvature matrix they come from: ``"hessian"``, ``"ggn"``,
    ``"fisher"``): unit norm, orthonormal, with their eigenvalues."""
    k = len(result.eigenvalues) if k is None else k
    return Directions(result.eigenvectors[:k], kind, Normalization.UNIT.value, True,
                      np.asarray(result.eigenvalues[:k], dtype=np.float64),
                      {"n_hvp": result.n_hvp, "which": str(which),
                       "converged": result.converged})


def hessian_directions(objective: Objective, k: int = 2, which: str = "LA",
                       curvature: str = "hessian", **eig_kwargs: Any) -> Directions:
    """The top-k eigenvectors (unit norm, orthonormal) of the Hessian, or of the GGN or
    empirical Fisher with ``curvature="ggn"``/``"fisher"``, with their eigenvalues."""
    from .curvature import parse_curvature
    from .hessian import top_eigenpairs

    curvature = parse_curvature(curvature).value
    check_direction_count(k, objective, EIGEN_LABELS[curvature])
    result = top_eigenpairs(objective, k, which, curvature=curvature, **eig_kwargs)
    return eigen_directions(result, which=which, kind=curvature)


def random_directions(
    objective: Objective,
    k: int = 2,
    *,
    seed: int = 0,
    normalization: str | Normalization = "filter",
    bias: str | BiasMode = "zero",
    orthogonalize: bool = False,
) -> Directions:
    """k Gaussian random directions, normalised (filter-wise by default, Li et al. 2018).

    ``orthogonalize=True`` orthonormalises the raw Gaussian vectors before normalisation.
    """
    check_direction_count(k, objective, "random")
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(k, objective.num_params, generator=gen, dtype=torch.float64)
    raw = raw.to(dtype=objective.dtype, device=objective.device)
    vectors, orthonormal = _finish(raw, objective, str(Normalization(normalization).value),
                                   str(BiasMode(bias).value), orthogonalize)
    return Directions(vectors, "random", Normalization(normalization).value, orthonormal, None,
                      {"seed": seed, "bias": BiasMode(bias).value})


def pca_directions(trajectory: torch.Tensor | np.ndarray, k: int = 2,
                   *, center: bool = True) -> Directions:
    """The top-k principal directions of a (T, P) trajectory of parameter vectors.

    Uses the T×T Gram matrix, so memory stays O(T·P) for T ≪ P.
    """
    traj = torch.as_tensor(trajectory)
    if traj.ndim != 2 or traj.shape[0] < 2:
        raise ValueError(f"trajectory must be (T, P) with T >= 2, got {tuple(traj.shape)}")
    x = traj.double()
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    gram = x @ x.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)[:k]
    if k > traj.shape[0] - int(center) or torch.any(evals[order] <= 1e-12 * evals.max()):
        raise ValueError(f"the trajectory spans fewer than k={k} dimensions; lower k")
    vectors = (evecs[:, order].T @ x) / evals[order].sqrt()[:, None]
    explained = (evals[order] / evals.clamp_min(0).sum()).cpu().numpy()
    return Directions(vectors.to(traj.dtype if traj.dtype.is_floating_point else torch.float64),
                      "pca", Normalization.UNIT.value, True, explained,
                      {"centered": center, "trajectory_length": int(traj.shape[0])})


def user_directions(
    objective: Objective,
    directions: torch.Tensor | np.ndarray | Sequence[Any],
    *,
    normalization: str | Normalization = "none",
    bias: str | BiasMode = "zero",
    orthogonalize: bool = False,
) -> Directions:
    """Directions given as a (k, P) array, a list of flat vectors, or a list of
    ``{parameter name: tensor}`` dicts (only the selected parameters).

    A `Directions` object is checked (shape and non-zero norms) and returned unchanged.
    """
    if isinstance(directions, Directions):
        _check_shape(directions.vectors, objective)
        _check_nonzero(directions.vectors)
        _check_independent(directions.vectors)
        return directions
    if isinstance(directions, (list, tuple)):
        if not directions:
            raise ValueError(f"no directions given: pass a (k, {objective.num_params}) array")
        if isinstance(directions[0], Mapping):
            vectors = torch.stack([objective.layout.flatten(
                {name: torch.as_tensor(v).to(objective.device) for name, v in d.items()})
                for d in directions])
        else:
            rows = [torch.as_tensor(np.asarray(r) if isinstance(r, np.ndarray) else r)
                    for r in directions]
            if any(r.ndim != 1 for r in rows):
                raise ValueError("a list of directions must hold flat vectors of length "
                                 f"{objective.num_params}, got shapes "
                                 f"{[tuple(r.shape) for r in rows][:4]}")
            if len({r.shape[0] for r in rows}) > 1:
                raise ValueError(f"directions have different lengths "
                                 f"{sorted({r.shape[0] for r in rows})}; each must have "
                                 f"{objective.num_params} entries")
            vectors = torch.stack(rows)
    else:
        vectors = torch.as_tensor(np.asarray(directions) if isinstance(directions, np.ndarray)
                                  else directions)
    _check_shape(vectors, objective)
    vectors = vectors.to(dtype=objective.dtype, device=objective.device)
    _check_nonzero(vectors)
    _check_independent(vectors)
    vectors, orthonormal = _finish(vectors, objective, str(Normalization(normalization).value),
                                   str(BiasMode(bias).value), orthogonalize)
    return Directions(vectors, "user", Normalization(normalization).value, orthonormal)


@dataclass(frozen=True)
class NamedDirections:
    """A direction set that `Landscape.compute(directions=name)` builds from the objective.

    Attributes:
        label: how refusals name it (``"Hessian"``, ``"random"``).
        make: ``make(objective, k, which=..., seed=...) -> Directions``.
    """

    label: str
    make: Callable[..., Directions]


#: The direction sets ``directions="..."`` names; a new kind is added here only.
NAMED_DIRECTIONS: dict[str, NamedDirections] = {
    "hessian": NamedDirections("Hessian", lambda objective, k, which, seed: hessian_directions(
        objective, k, which, seed=seed)),
    "random": NamedDirections("random", lambda objective, k, which, seed: random_directions(
        objective, k, seed=seed)),
    "ggn": NamedDirections("GGN", lambda objective, k, which, seed: hessian_directions(
        objective, k, which, "ggn", seed=seed)),
    "fisher": NamedDirections("Fisher", lambda objective, k, which, seed: hessian_directions(
        objective, k, which, "fisher", seed=seed)),
}
