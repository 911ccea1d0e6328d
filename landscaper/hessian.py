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
from ._utils import check_count, format_bytes, parse_bytes
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


def parse_which(which: str | Which) -> Which:
    """The `Which` named by ``which``, or an error listing the valid names."""
    try:
        return Which(which)
    except ValueError:
        raise ValueError(f"which must be 'LA', 'LM' or 'SA', got {which!r}") from None


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


#: What to do about PyTorch's fused attention, which has no second derivative on CPU.
_ATTENTION_HINT = (
    " This is PyTorch's fused scaled-dot-product attention (F.scaled_dot_product_attention, "
    "used by nn.MultiheadAttention, nn.TransformerEncoderLayer and HuggingFace models loaded "
    "with attn_implementation=\"sdpa\"). Compute the curvature inside `with "
    "torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):`, whose kernel has "
    "second derivatives, or load a HuggingFace model with attn_implementation=\"eager\", e.g. "
    "AutoModel.from_pretrained(path, attn_implementation=\"eager\").")
#: What to do about a torch.compile'd module (aot_autograd has no double backward).
_COMPILE_HINT = (
    " This is a torch.compile'd module: compute the curvature on the uncompiled module "
    "(compiled._orig_mod, or build the model without torch.compile); losses and grids work "
    "compiled.")


def _second_derivative_hint(err: RuntimeError) -> DoubleBackwardError | None:
    """A `DoubleBackwardError` naming the fix when ``err`` says a second derivative is
    missing; None for any other error."""
    text = str(err)
    if "derivative for" in text and "not implemented" in text:
        attention = "scaled_dot_product" in text or "attention" in text
        hint = _ATTENTION_HINT if attention else ""
    elif "does not currently support double backward" in text:
        hint = _COMPILE_HINT
    else:
        return None
    return DoubleBackwardError(
        f"Hessian-vector products need second derivatives, and an operation of this model "
        f"has none ({text.splitlines()[0]}).{hint} Otherwise replace that operation or "
        "exclude its parameters with params=[...]."
    )


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
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"Hessian-vector products in {str(self.dtype).removeprefix('torch.')} are "
                f"dominated by rounding (machine epsilon {torch.finfo(self.dtype).eps:.1e}), "
                "and Lanczos would stop on a false breakdown; build the Objective with "
                "compute_dtype=torch.float32 (the default for float16/bfloat16 models) or "
                "torch.float64")
        self.device = self.theta.device
        self.n_hvp = 0
        #: whether every product is a collective over ranks (a `DistributedObjective`)
        self.reduces = isinstance(objective, DistributedObjective)
        self._graph_checked = False

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H @ v for a flat vector v."""
        v = vector.to(device=self.device, dtype=self.dtype).reshape(-1)
        if v.shape[0] != self.shape[0]:
            raise ValueError(f"vector has length {v.shape[0]}, the Hessian is {self.shape}")
        obj = self.objective
        if self.reduces:
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


#: β below this many machine epsilons (times the largest |α|) is a breakdown: the Krylov space
#: is invariant up to rounding.
_BREAKDOWN_EPS = 1e3


#: Residuals below this many machine epsilons times the largest |Ritz value| are rounding.
_ROUNDING_EPS = 10.0


class _Lanczos:
    """Lanczos three-term recurrence with full (twice-applied) reorthogonalisation.

    A breakdown (β at rounding level: the Krylov space of the start vector is invariant) either
    ends the run (``restart_seed=None``, as stochastic Lanczos quadrature needs) or starts a new
    block from a random vector orthogonal to the basis, so eigenvalues outside that space are
    still found. Either way the β measured at the breakdown enters the residual bounds, which
    are therefore never reported as zero because of a breakdown.
    """

    def __init__(self, op: HessianOperator, start: torch.Tensor, memory_budget: int, *,
                 restart_seed: int | None = None) -> None:
        self.op = op
        self.basis: list[torch.Tensor] = [start / start.norm()]
        self.alphas: list[float] = []
        #: off-diagonal of the tridiagonal matrix (0 where a new block starts).
        self.betas: list[float] = []
        #: (index of a block's last vector, β measured there) for every restart.
        self.breaks: list[tuple[int, float]] = []
        self.memory_budget = memory_budget
        self.exhausted = False
        self._restarts = (None if restart_seed is None
                          else torch.Generator().manual_seed(restart_seed))

    def _orthogonalize(self, w: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(self.basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        return w

    def _append(self, vector: torch.Tensor) -> None:
        needed = (len(self.basis) + 1) * vector.numel() * vector.element_size()
        if needed > self.memory_budget:
            raise MemoryError(
                f"the Lanczos basis would exceed the memory budget ({format_bytes(needed)}); "
                "use method=\"arpack\" with a small ncv, raise memory_budget, or lower max_iter"
            )
        self.basis.append(vector)

    def step(self) -> None:
        q = self.basis[-1]
        w = self.op.matvec(q)
        alpha = float(torch.dot(w, q))
        w = w - alpha * q
        if self.betas:
            w = w - self.betas[-1] * self.basis[-2]
        w = self._orthogonalize(w)
        beta = float(w.norm())
        if self.op.reduces:
            # every decision (convergence, exhaustion) follows from alphas and betas: rank 0's
            # keep all ranks in lockstep even where their arithmetic differs in the last bits
            coefficients = torch.tensor([alpha, beta], dtype=torch.float64)
            alpha, beta = dist_utils.broadcast_tensor(coefficients).tolist()
        if not (np.isfinite(alpha) and np.isfinite(beta)):
            raise ValueError("the Hessian-vector product is not finite at theta (NaN/inf in the "
                             "model's weights, data or loss); see objective.nonfinite_theta0")
        self.alphas.append(alpha)
        self.betas.append(beta)
        if len(self.basis) == w.shape[0]:
            self.exhausted = True  # the basis spans the whole space
            return
        # rounding is judged against this block's curvature, so that a block exploring the
        # small eigenvalues left after the large ones were found is not cut short
        block = self.alphas[self.breaks[-1][0] + 1 if self.breaks else 0:]
        scale = max(abs(a) for a in block) or 1.0
        if beta > _BREAKDOWN_EPS * torch.finfo(w.dtype).eps * scale:
            self._append(w / beta)
            return
        if self._restarts is None:
            self.exhausted = True  # the Krylov space is invariant: stop here
            return
        fresh = torch.randn(w.shape[0], generator=self._restarts, dtype=torch.float64)
        fresh = self._orthogonalize(fresh.to(dtype=w.dtype, device=w.device) / fresh.norm())
        if float(fresh.norm()) < 1e-4:  # the basis spans the space up to rounding
            self.exhausted = True
            return
        self.breaks.append((len(self.alphas) - 1, beta))
        self.betas[-1] = 0.0
        self._append(fresh / fresh.norm())

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and eigenvectors of the tridiagonal matrix."""
        alphas = np.asarray(self.alphas)
        if len(alphas) == 1:
            return alphas.copy(), np.ones((1, 1))
        return scipy.linalg.eigh_tridiagonal(alphas, np.asarray(self.betas[:-1]))

    def residuals(self, vecs: np.ndarray) -> np.ndarray:
        """Bounds on ‖H v − λ v‖ for the Ritz vectors with coefficients ``vecs`` (columns):
        the last β times each vector's last coefficient, plus the same at every restart."""
        out = abs(self.betas[-1]) * np.abs(vecs[-1, :])
        for index, beta in self.breaks:
            out = out + abs(beta) * np.abs(vecs[index, :])
        return out

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
    which, method = parse_which(which), Method(method)
    k = check_count("k", k)
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
    if max_steps < k:
        raise ValueError(f"max_iter={max_iter} Lanczos steps cannot give k={k} eigenpairs; pass "
                         f"max_iter >= {k}")
    lanczos = _Lanczos(op, start, budget, restart_seed=seed + 1)
    converged = False
    while True:
        lanczos.step()
        values, vecs = lanczos.ritz()
        order = _order(values, which)[:k]
        res = lanczos.residuals(vecs[:, order])
        # relative to |λ|, but eigenvalues at rounding level (zero curvature) are judged
        # against the rounding of the products themselves
        floor = _ROUNDING_EPS * torch.finfo(op.dtype).eps * float(np.max(np.abs(values)))
        wanted = tol * np.maximum(np.abs(values[order]), floor / tol)
        if len(values) >= k:
            converged = bool(np.all(res <= wanted))
        if converged or lanczos.exhausted or len(lanczos.alphas) >= max_steps:
            break
    if not converged:
        logger.warning("Lanczos stopped after %d steps with relative residuals %s > tol %.1e; "
                       "raise max_iter or tol", len(lanczos.alphas),
                       np.array2string(tol * res / np.maximum(wanted, 1e-300), precision=2), tol)
    tiny = np.abs(values[order]) * tol < floor
    if converged and tiny.any() and op.dtype != torch.float64:
        logger.warning("eigenvalue(s) %s are below what %s Hessian-vector products resolve to "
                       "tol %.1e: they are accurate to about ±%.2g only; pass "
                       "compute_dtype=torch.float64 to the Objective for more digits",
                       np.array2string(values[order][tiny], precision=3),
                       str(op.dtype).removeprefix("torch."), tol, floor)
    vectors = lanczos.ritz_vectors(vecs[:, order])
    return EigenResult(values[order].astype(np.float64), vectors, op.n_hvp, res,
                       converged, method.value, objective.layout)


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
    n_probes = check_count("n_probes", n_probes, minimum=2)  # for a standard error
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
    n_probes = check_count("n_probes", n_probes)
    n_steps = check_count("n_steps", n_steps)
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
