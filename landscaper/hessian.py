"""The Hessian of an `Objective` as a linear operator, its top eigenpairs, trace and density.

`HessianOperator` implements only the Hessian-vector product (reverse-over-reverse autograd,
accumulated batch by batch); `to_scipy()` converts it to a SciPy ``LinearOperator`` at the
edge. `top_eigenpairs` runs Lanczos with full reorthogonalisation and stops as soon as the
wanted Ritz pairs have converged (``method="lanczos"``), or SciPy's implicitly restarted
ARPACK (``method="arpack"``) when the Krylov basis would not fit in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch

from . import distributed as dist_utils
from ._utils import format_bytes, parse_bytes
from .distributed import DistributedObjective
from .objective import Objective, ParameterLayout

logger = logging.getLogger(__name__)


class DoubleBackwardError(RuntimeError):
    """The model uses an operation that has no second derivative."""


class Which(str, Enum):
    """Which end of the spectrum `top_eigenpairs` returns.

    Members:
        LA: largest algebraic (the most positive curvature).
        LM: largest magnitude (negative curvature counts too).
        SA: smallest algebraic (the most negative curvature).
    """

    LA = "LA"
    LM = "LM"
    SA = "SA"


class Method(str, Enum):
    """Eigen-solver behind `top_eigenpairs`.

    Members:
        lanczos: torch Lanczos with full reorthogonalisation and early stopping on the Ritz
            residuals; fewest Hessian-vector products; keeps every Krylov vector in memory.
        arpack: SciPy ``eigsh`` (implicitly restarted Lanczos); memory bounded by ``ncv``
            vectors, usually more products.
    """

    LANCZOS = "lanczos"
    ARPACK = "arpack"


def _second_derivative_hint(err: RuntimeError) -> DoubleBackwardError | None:
    text = str(err)
    if "derivative for" in text and "not implemented" in text:
        hint = ""
        if "scaled_dot_product" in text or "attention" in text:
            hint = (" This is PyTorch's fused scaled-dot-product attention. For a HuggingFace "
                    "model, load it with attn_implementation=\"eager\", e.g. "
                    "AutoModel.from_pretrained(path, attn_implementation=\"eager\").")
        return DoubleBackwardError(
            f"Hessian-vector products need second derivatives, and an operation of this model "
            f"has none ({text.splitlines()[0]}).{hint} Otherwise replace that operation or "
            "exclude its parameters with params=[...]."
        )
    return None


# `once_differentiable` wraps every backward in one shared inner function: its code object
# identifies such Functions in a graph.
_ONCE_DIFFERENTIABLE_CODE = torch.autograd.function.once_differentiable(
    lambda ctx: None).__code__


def _refuse_once_differentiable(loss: torch.Tensor) -> None:
    """Raise if the loss graph holds a Function whose backward is ``@once_differentiable``.

    Such a backward returns gradients without a graph, so a second derivative through it would
    silently be zero rather than fail.
    """
    seen, stack, found = set(), [loss.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        cls = getattr(node, "_forward_cls", None)
        if getattr(getattr(cls, "backward", None), "__code__", None) is _ONCE_DIFFERENTIABLE_CODE:
            found.append(cls.__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    if found:
        raise DoubleBackwardError(
            f"{', '.join(sorted(set(found)))} is marked @once_differentiable, so the Hessian "
            "through it would silently be zero; give it a differentiable backward, use an "
            "equivalent built from differentiable torch ops, or exclude the parameters before it "
            "with params=[...]")


class HessianOperator:
    """The Hessian of an objective at θ as a linear operator over flat vectors.

    Args:
        objective: the loss over flat parameters. A `DistributedObjective` (each rank holding a
            shard of the data) makes every product a collective: the local products are
            all-reduced weighted by sample counts, giving the Hessian of the mean loss over
            all ranks' data, the same on every rank.
        theta: the point (θ₀ of the objective by default).

    Attributes:
        n_hvp: Hessian-vector products computed so far (a matmat of m columns counts m).
    """

    def __init__(self, objective: Objective, theta: torch.Tensor | None = None) -> None:
        self.objective = objective
        self.theta = (objective.theta0 if theta is None else objective._check_theta(theta)).detach()
        self.shape = (objective.num_params, objective.num_params)
        self.dtype = self.theta.dtype
        self.device = self.theta.device
        self.n_hvp = 0
        self._graph_checked = False

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H @ v for a flat vector v."""
        v = vector.to(device=self.device, dtype=self.dtype).reshape(-1)
        if v.shape[0] != self.shape[0]:
            raise ValueError(f"vector has length {v.shape[0]}, the Hessian is {self.shape}")
        obj = self.objective
        if isinstance(obj, DistributedObjective):
            # a failure on one rank (OOM, no second derivative) is raised on all of them
            # before the reduction, so no rank is left waiting in it
            error, out = None, None
            try:
                out = self._local_matvec(v)
            except Exception as err:  # noqa: BLE001 - re-raised on every rank
                error = err
            dist_utils.raise_together(error)
            out = obj.reduce_mean(out)
        else:
            out = self._local_matvec(v)
        self.n_hvp += 1
        return out

    def _local_matvec(self, v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(self.theta)
        obj = self.objective
        for weight, batch in zip(obj.weights, obj.batches, strict=True):
            theta = self.theta.clone().requires_grad_(True)
            try:
                loss = obj.loss_on(theta, batch)
                (grad,) = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True,
                                              materialize_grads=True)
                if not self._graph_checked:  # once: a graph walk costs about one forward
                    _refuse_once_differentiable(loss)
                    self._graph_checked = True
                if not grad.requires_grad:  # loss is at most linear in theta: H = 0
                    continue
                (hv,) = torch.autograd.grad(grad, theta, grad_outputs=v, allow_unused=True,
                                            materialize_grads=True)
            except RuntimeError as err:
                hinted = _second_derivative_hint(err)
                if hinted is not None:
                    raise hinted from err
                raise
            out += weight * hv.detach()
        return out

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """H @ V for V of shape (P, m)."""
        return torch.stack([self.matvec(col) for col in vectors.T], dim=1)

    def __matmul__(self, other: torch.Tensor) -> torch.Tensor:
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    def to_dense(self) -> torch.Tensor:
        """The full (P, P) matrix; only for small models (P HVPs)."""
        return self.matmat(torch.eye(self.shape[0], dtype=self.dtype, device=self.device))

    def to_scipy(self, dtype: Any = np.float64) -> scipy.sparse.linalg.LinearOperator:
        """A SciPy ``LinearOperator`` taking and returning NumPy arrays of ``dtype``."""

        def mv(x: np.ndarray) -> np.ndarray:
            y = self.matvec(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).ravel()))
            return y.detach().cpu().numpy().astype(dtype, copy=False)

        return scipy.sparse.linalg.LinearOperator(self.shape, matvec=mv, rmatvec=mv, dtype=dtype)


@dataclass(frozen=True)
class EigenResult:
    """Top eigenpairs of a Hessian.

    Attributes:
        eigenvalues: (k,) float64, descending (by magnitude for ``which="LM"``, ascending for
            ``which="SA"``).
        eigenvectors: (k, P) tensor with orthonormal rows, in the order of ``eigenvalues``.
        n_hvp: Hessian-vector products used.
        residuals: ‖H v − λ v‖ bound for each pair.
        converged: whether every pair met the tolerance.
        method: the solver used.
    """

    eigenvalues: np.ndarray
    eigenvectors: torch.Tensor
    n_hvp: int
    residuals: np.ndarray
    converged: bool
    method: str
    layout: ParameterLayout | None = field(default=None, repr=False)

    def views(self, i: int) -> dict[str, torch.Tensor]:
        """Eigenvector ``i`` as per-parameter tensors keyed by parameter name."""
        if self.layout is None:
            raise ValueError("this result carries no parameter layout")
        return self.layout.unflatten(self.eigenvectors[i])


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 1e-4


def _order(values: np.ndarray, which: Which) -> np.ndarray:
    if which is Which.LA:
        return np.argsort(-values, kind="stable")
    if which is Which.SA:
        return np.argsort(values, kind="stable")
    return np.argsort(-np.abs(values), kind="stable")


def _start_vector(p: int, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(p, generator=gen, dtype=torch.float64)
    return (v / v.norm()).to(dtype=dtype, device=device)


class _Lanczos:
    """Lanczos three-term recurrence with full (twice-applied) reorthogonalisation."""

    def __init__(self, op: HessianOperator, start: torch.Tensor, memory_budget: int) -> None:
        self.op = op
        self.basis: list[torch.Tensor] = [start / start.norm()]
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.memory_budget = memory_budget
        self.exhausted = False

    def step(self) -> None:
        q = self.basis[-1]
        w = self.op.matvec(q)
        alpha = float(torch.dot(w, q))
        w = w - alpha * q
        if self.betas:
            w = w - self.betas[-1] * self.basis[-2]
        stacked = torch.stack(self.basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        if isinstance(self.op.objective, DistributedObjective):
            # every decision (convergence, exhaustion) follows from alphas and betas: rank 0's
            # keep all ranks in lockstep even where their arithmetic differs in the last bits
            coefficients = torch.tensor([alpha, beta], dtype=torch.float64)
            alpha, beta = dist_utils.broadcast_tensor(coefficients).tolist()
        if not (np.isfinite(alpha) and np.isfinite(beta)):
            raise ValueError("the Hessian-vector product is not finite at theta (NaN/inf in the "
                             "model's weights, data or loss); see objective.nonfinite_theta0")
        self.alphas.append(alpha)
        self.betas.append(beta)
        scale = max(abs(a) for a in self.alphas) or 1.0
        if beta <= 1e3 * torch.finfo(w.dtype).eps * scale or len(self.basis) == w.shape[0]:
            self.exhausted = True  # the Krylov space is invariant: Ritz pairs are exact
            return
        needed = (len(self.basis) + 1) * w.numel() * w.element_size()
        if needed > self.memory_budget:
            raise MemoryError(
                f"the Lanczos basis would exceed the memory budget ({format_bytes(needed)}); "
                "use method=\"arpack\" with a small ncv, raise memory_budget, or lower max_iter"
            )
        self.basis.append(w / beta)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and eigenvectors of the tridiagonal matrix."""
        alphas = np.asarray(self.alphas)
        if len(alphas) == 1:
            return alphas.copy(), np.ones((1, 1))
        return scipy.linalg.eigh_tridiagonal(alphas, np.asarray(self.betas[:-1]))

    def residuals(self, vecs: np.ndarray) -> np.ndarray:
        if self.exhausted:
            return np.zeros(vecs.shape[1])
        return abs(self.betas[-1]) * np.abs(vecs[-1, :])

    def ritz_vectors(self, vecs: np.ndarray) -> torch.Tensor:
        basis = torch.stack(self.basis[: vecs.shape[0]])
        coeffs = torch.as_tensor(vecs.T, dtype=basis.dtype, device=basis.device)
        out = coeffs @ basis
        return out / out.norm(dim=1, keepdim=True)


def top_eigenpairs(
    objective: Objective,
    k: int = 1,
    which: str | Which = "LA",
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    method: str | Method = "lanczos",
    ncv: int | None = None,
    seed: int = 0,
    theta: torch.Tensor | None = None,
    memory_budget: int | str | None = None,
) -> EigenResult:
    """Top-k eigenpairs of the Hessian by Lanczos.

    Args:
        objective: the loss over flat parameters.
        k: number of eigenpairs.
        which: ``"LA"`` (largest algebraic), ``"LM"`` (largest magnitude) or ``"SA"``.
        tol: relative residual tolerance ‖Hv − λv‖ ≤ tol·|λ| (default 1e-4 in float32, 1e-9 in
            float64; the eigenvalue error is then of order tol²·|λ|/gap).
        max_iter: most Lanczos steps (``"lanczos"``) or ARPACK restarts (``"arpack"``).
        method: ``"lanczos"`` or ``"arpack"``, see `Method`.
        ncv: ARPACK's Krylov basis size.
        seed: seed of the start vector (results are deterministic for a seed).
        theta: the point (θ₀ by default).
        memory_budget: bytes the Krylov basis may take (the objective's budget by default).
    """
    which, method = Which(which), Method(method)
    op = HessianOperator(objective, theta)
    p = op.shape[0]
    if not 1 <= k <= p:
        raise ValueError(f"k must be between 1 and the number of parameters ({p}), got {k}")
    tol = _default_tol(op.dtype) if tol is None else tol
    budget = objective.memory_budget if memory_budget is None else parse_bytes(memory_budget)
    start = _start_vector(p, seed, op.dtype, op.device)

    if method is Method.ARPACK:
        if k >= p:
            raise ValueError("ARPACK needs k < number of parameters; use method=\"lanczos\"")
        vals, vecs = scipy.sparse.linalg.eigsh(
            op.to_scipy(), k=k, which=which.value, tol=tol, maxiter=max_iter, ncv=ncv,
            v0=start.double().cpu().numpy(),
        )
        order = _order(vals, which)
        vectors = torch.as_tensor(vecs[:, order].T.copy(), dtype=op.dtype, device=op.device)
        res = np.array([float((op.matvec(v) - lam * v).norm()) for lam, v in
                        zip(vals[order], vectors, strict=True)])
        return EigenResult(vals[order].astype(np.float64), vectors, op.n_hvp, res, True,
                           method.value, objective.layout)

    max_steps = min(p, max_iter if max_iter is not None else max(300, 10 * k))
    lanczos = _Lanczos(op, start, budget)
    converged = False
    while True:
        lanczos.step()
        values, vecs = lanczos.ritz()
        order = _order(values, which)[:k]
        res = lanczos.residuals(vecs[:, order])
        if len(values) >= k:
            converged = bool(np.all(res <= tol * np.maximum(np.abs(values[order]), 1e-30)))
        if converged or lanczos.exhausted or len(lanczos.alphas) >= max_steps:
            break
    if len(values) < k:
        raise ValueError(f"the Hessian has a {len(values)}-dimensional Krylov space from this "
                         f"start vector, fewer than k={k}; try another seed or a smaller k")
    if not converged and not lanczos.exhausted:
        logger.warning("Lanczos stopped after %d steps with relative residuals %s > tol %.1e; "
                       "raise max_iter or tol", len(lanczos.alphas),
                       np.array2string(res / np.abs(values[order]), precision=2), tol)
    vectors = lanczos.ritz_vectors(vecs[:, order])
    return EigenResult(values[order].astype(np.float64), vectors, op.n_hvp, res,
                       converged or lanczos.exhausted, method.value, objective.layout)


@dataclass(frozen=True)
class TraceResult:
    """Hutchinson estimate of tr(H): ``estimate`` ± ``std_error`` from ``samples``."""

    estimate: float
    std_error: float
    samples: np.ndarray
    n_hvp: int


def trace(
    objective: Objective,
    n_probes: int = 100,
    *,
    seed: int = 0,
    theta: torch.Tensor | None = None,
) -> TraceResult:
    """Hutchinson's estimator of the Hessian trace with Rademacher probes."""
    if n_probes < 2:
        raise ValueError("n_probes must be at least 2 to report a standard error")
    op = HessianOperator(objective, theta)
    gen = torch.Generator().manual_seed(seed)
    samples = np.empty(n_probes)
    for i in range(n_probes):
        z = (torch.randint(0, 2, (op.shape[0],), generator=gen) * 2 - 1).to(op.dtype)
        z = z.to(op.device)
        samples[i] = float(torch.dot(z, op.matvec(z)))
    return TraceResult(float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(n_probes)),
                       samples, op.n_hvp)


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian's eigenvalue density.

    Attributes:
        nodes: (n_probes, m) Ritz values of each probe's Lanczos run.
        weights: (n_probes, m) quadrature weights (each row sums to 1).
        n_hvp: Hessian-vector products used.
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_hvp: int

    def density(self, grid: np.ndarray, sigma: float | None = None) -> np.ndarray:
        """Gaussian-smoothed density on ``grid`` (integrates to 1 over a wide enough grid)."""
        grid = np.asarray(grid, dtype=np.float64)
        if sigma is None:
            span = float(self.nodes.max() - self.nodes.min()) or 1.0
            sigma = span / 100
        diff = grid[:, None, None] - self.nodes[None]
        kernel = np.exp(-0.5 * (diff / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        return (kernel * self.weights[None]).sum(axis=(1, 2)) / self.nodes.shape[0]


def spectral_density(
    objective: Objective,
    n_probes: int = 10,
    n_steps: int = 80,
    *,
    seed: int = 0,
    theta: torch.Tensor | None = None,
) -> SpectralDensity:
    """Eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al., Yao et al.)."""
    op = HessianOperator(objective, theta)
    steps = min(n_steps, op.shape[0])
    nodes = np.zeros((n_probes, steps))
    weights = np.zeros((n_probes, steps))
    for i in range(n_probes):
        lanczos = _Lanczos(op, _start_vector(op.shape[0], seed + i, op.dtype, op.device),
                           objective.memory_budget)
        while len(lanczos.alphas) < steps and not lanczos.exhausted:
            lanczos.step()
        values, vecs = lanczos.ritz()
        nodes[i, : len(values)] = values
        weights[i, : len(values)] = vecs[0, :] ** 2
    return SpectralDensity(nodes, weights, op.n_hvp)
