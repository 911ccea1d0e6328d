"""The Hessian of an `Objective` as a linear operator, its top eigenpairs, trace and density.

`HessianOperator` implements only the Hessian-vector product (reverse-over-reverse autograd,
accumulated batch by batch); `to_scipy()` converts it to a SciPy ``LinearOperator`` at the
edge. `top_eigenpairs` runs Lanczos with full reorthogonalisation and stops as soon as the
wanted Ritz pairs have converged (``method="lanczos"``), or SciPy's implicitly restarted
ARPACK (``method="arpack"``) when the Krylov basis would not fit in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ._precise import norm, rows_dot
from ._utils import (
    check_count,
    format_bytes,
    nested_bytes,
    parse_bytes,
    parse_choice,
    serial_numpy_blas,
)
from .curvature import Curvature, FisherOperator, GGNOperator, parse_curvature
from .objective import Objective, ParameterLayout
from .operators import DenseOperator, ObjectiveOperator, SymmetricOperator, WrappedOperator

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
    return parse_choice(Which, which, "which")


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
#: The opt-in fallback for operations with a first derivative only.
_DIFFERENCES_HINT = (
    " pass landscaper.finite_difference.FiniteDifferenceHessian(objective) to the algorithm: "
    "products from central differences of gradients, approximate (it estimates its error).")
#: What to do about a torch.compile'd module (aot_autograd has no double backward).
_COMPILE_HINT = (
    " This is a torch.compile'd module: compute the curvature on the uncompiled module "
    "(compiled._orig_mod, or build the model without torch.compile); losses and grids work "
    "compiled.")


def differentiable_attention() -> AbstractContextManager[None]:
    """A context in which F.scaled_dot_product_attention runs PyTorch's math kernel, which has
    second derivatives (the fused CPU kernels, the default of nn.MultiheadAttention,
    nn.TransformerEncoderLayer and HuggingFace models with attn_implementation="sdpa", have
    none). Hessian-vector products run inside it, so such models need no reload with eager
    attention; their values agree with the fused kernels to rounding."""
    return sdpa_kernel([SDPBackend.MATH])


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
        f"has none ({text.splitlines()[0]}).{hint} Otherwise replace that operation, "
        f"exclude its parameters with params=[...], or{_DIFFERENCES_HINT}"
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
            "equivalent built from differentiable torch ops, exclude the parameters before it "
            f"with params=[...], or{_DIFFERENCES_HINT}")


class HessianOperator(ObjectiveOperator):
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
        self._graph_checked = False
        #: per batch, θ and the gradient with its graph, while they are kept (see
        #: `_gradient_graph`); whether to keep them is decided at the first product
        self._graphs: list[tuple[torch.Tensor, torch.Tensor | None] | None] = (
            [None] * len(objective.batches))
        self._keep_graphs: bool | None = None
        #: bytes the first gradient graph saved for backward
        self._saved_bytes = 0
        #: False once a batched backward failed on this model (products then go one by one)
        self._batched_ok = True

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H @ v for a flat vector v."""
        v = self._vector(vector)
        obj = self.objective
        # the objective's reduction hooks (identities for one process): a failure in one
        # process is raised in all of them before the reduction, so none waits in it
        out = obj.reduce_mean(obj.together(lambda: self._local_matvec(v)))
        self.n_hvp += 1
        return out

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """H @ V for V of shape (P, m): per batch, one gradient graph and one vmapped backward
        pass for a block of columns (as many as a quarter of the memory budget holds), where
        PyTorch can batch the backward; column by column otherwise (logged once)."""
        vectors = torch.as_tensor(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != self.shape[0]:
            raise ValueError(f"vectors must have shape ({self.shape[0]}, m), got "
                             f"{tuple(vectors.shape)}")
        if vectors.shape[1] == 1 or not self._batched_ok:
            return super().matmat(vectors)
        columns = vectors.to(device=self.device, dtype=self.dtype).T.contiguous()
        obj = self.objective
        try:
            out = obj.reduce_mean(obj.together(lambda: self._local_products(columns)))
        except RuntimeError as err:
            if _second_derivative_hint(err) is not None:
                raise
            self._batched_ok = False
            logger.info("Hessian-vector products one column at a time: this model's backward "
                        "pass cannot be batched (%s)", str(err).splitlines()[0][:200])
            return super().matmat(vectors)
        self.n_hvp += columns.shape[0]
        return out.T

    def _local_matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._local_products(v[None, :])[0]

    def _local_products(self, columns: torch.Tensor) -> torch.Tensor:
        """(m, P) rows H vᵢ of this process's batches for rows vᵢ of ``columns``."""
        out: torch.Tensor | None = None
        obj = self.objective
        for index, weight in enumerate(obj.weights):
            try:
                with obj.full_precision(), differentiable_attention():
                    theta, grad = self._gradient_graph(index)
                    if grad is None:
                        continue
                    block = self._columns_per_backward(columns.shape[0])
                    for start in range(0, columns.shape[0], block):
                        part = columns[start:start + block]
                        last = start + block >= columns.shape[0]
                        retain = self._keep_graphs or not last
                        if part.shape[0] == 1:
                            (hv,) = torch.autograd.grad(grad, theta, grad_outputs=part[0],
                                                        retain_graph=retain, allow_unused=True,
                                                        materialize_grads=True)
                            hv = hv[None]
                        else:
                            (hv,) = torch.autograd.grad(grad, theta, grad_outputs=part,
                                                        retain_graph=retain,
                                                        is_grads_batched=True, allow_unused=True,
                                                        materialize_grads=True)
                        hv = hv.detach()
                        if out is None and part.shape[0] == columns.shape[0] and (
                                hv.untyped_storage().data_ptr()
                                != columns.untyped_storage().data_ptr()):
                            # the first batch's own product: no copy
                            out = hv if weight == 1 else hv.mul_(weight)
                            continue
                        if out is None:
                            out = torch.zeros_like(columns)
                        out[start:start + part.shape[0]].add_(hv, alpha=weight)
            except RuntimeError as err:
                hinted = _second_derivative_hint(err)
                if hinted is not None:
                    raise hinted from err
                raise
        return torch.zeros_like(columns) if out is None else out

    def _columns_per_backward(self, m: int) -> int:
        """Columns of one batched backward pass: a quarter of the memory budget over what one
        backward saves (measured at the first graph), at least one."""
        per_column = max(self._saved_bytes, self.theta.numel() * self.theta.element_size())
        return max(1, min(m, self.objective.memory_budget // (4 * per_column)))

    def _gradient_graph(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """θ (a leaf) and ∇L of batch ``index`` with its graph (None where the loss is at most
        linear in θ: H = 0 there). Kept for the next products when all batches' graphs fit a
        quarter of the memory budget (judged from the tensors the first graph saves), so
        that a product costs one backward pass through the gradient instead of a forward
        and two backward passes."""
        if self._graphs[index] is not None:
            return self._graphs[index]
        obj = self.objective
        # a new leaf on θ's own storage (nothing writes to it): a kept graph then holds no
        # copy of θ, one parameter vector less
        theta = self.theta.detach().requires_grad_(True)

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            loss = obj.loss_on(theta, obj.batches[index])
            (grad,) = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True,
                                          materialize_grads=True)
            return loss, grad

        if self._keep_graphs is None:
            (loss, grad), saved = _graph_bytes(build, obj.model)
        else:
            loss, grad = build()
        if not self._graph_checked:  # once: a graph walk costs about one forward
            _refuse_once_differentiable(loss)
            self._graph_checked = True
        pair = (theta, grad if grad.requires_grad else None)
        if self._keep_graphs is None:
            self._saved_bytes = saved
            needed = saved * len(obj.batches)
            self._keep_graphs = needed <= obj.memory_budget // 4
            logger.debug("gradient graphs of %d batch(es): about %s, %s", len(obj.batches),
                         format_bytes(needed), "kept between products" if self._keep_graphs
                         else "rebuilt at every product (over a quarter of the memory budget)")
        if self._keep_graphs:
            self._graphs[index] = pair
        return pair


def _graph_bytes(build: Callable[[], T], model: torch.nn.Module) -> tuple[T, int]:
    """``build()`` and about how many bytes the autograd graph it makes holds: the tensors
    saved for backward; where the loss runs a `torch.func` transform (which refuses
    saved-tensor hooks, as a PINN's input gradients do), four times the outputs of the
    model's submodules instead (forward activations and the saved tensors of their
    backward)."""
    saved = [0]

    def count(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
            return build(), saved[0]
    except RuntimeError as err:
        if "saved tensor hooks" not in str(err):
            raise
    outputs = [0]

    def add(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        outputs[0] += nested_bytes(output)

    handles = [m.register_forward_hook(add) for m in model.modules()]
    try:
        return build(), 4 * outputs[0]
    finally:
        for handle in handles:
            handle.remove()


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
#: Eigenvalues known to less than this relative accuracy are flagged (float32 products).
_COARSE = 1e-2
#: Products whose projections disagree by more than this (relative to the largest |Ritz value|)
#: come from an operator that is not symmetric: a wrong second derivative somewhere.
_ASYMMETRY_TOL = {torch.float32: 1e-2, torch.float64: 1e-6}
#: A verification block ends once its extreme Ritz pair has this relative residual (or the
#: requested tolerance, where that is looser).
_VERIFY_TOL = 1e-2
#: Products before restarted Lanczos measures residuals again after a measured one was above
#: the tolerance (doubled at each miss, so misses cost a few products in all).
_MEASURE_WAIT = 4
#: A Gram–Schmidt pass that keeps at least this fraction of a vector's norm leaves it
#: orthogonal to the basis to rounding; below it, the pass is repeated once (1/√2, ARPACK's).
_KEEP_AFTER_PROJECTION = 2**-0.5


class AsymmetricHessianError(DoubleBackwardError):
    """The Hessian-vector products are not symmetric: some operation's second derivative is
    wrong, so no eigenvalue computed from them can be trusted."""


class _Basis:
    """Orthonormal vectors kept in pages of rows, so that projecting on all of them needs no
    copy of the whole basis (``torch.stack`` of a list would double its memory each step).
    Pages stay allocated when the basis shrinks (a thick restart), and never hold more than
    ``capacity`` rows in all."""

    def __init__(self, page_rows: int, capacity: int | None = None) -> None:
        self.page_rows = page_rows
        self.capacity = capacity
        self.pages: list[torch.Tensor] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def _filled(self) -> list[torch.Tensor]:
        full, last = divmod(self.count, self.page_rows)
        return [*self.pages[:full], *([self.pages[full][:last]] if last else [])]

    def append(self, vector: torch.Tensor) -> None:
        page, row = divmod(self.count, self.page_rows)
        if page == len(self.pages):
            rows = (self.page_rows if self.capacity is None
                    else min(self.page_rows, self.capacity - self.count))
            self.pages.append(torch.empty(rows, vector.shape[0], dtype=vector.dtype,
                                          device=vector.device))
        self.pages[page][row] = vector
        self.count += 1

    def keep_combinations(self, coefficients: torch.Tensor, chunk: int = 2**18) -> None:
        """Replace the basis by the r normalised columns of ``Q C`` (``coefficients`` of shape
        (len, r)), in place: ``chunk`` entries of every vector at a time, so the only
        temporary is (len + r) × chunk."""
        pages = self._filled()
        rows = coefficients.shape[1]
        size = pages[0].shape[1]
        for start in range(0, size, chunk):
            block = torch.cat([page[:, start:start + chunk] for page in pages])
            combined = coefficients.T @ block
            for i in range(rows):
                self[i][start:start + chunk] = combined[i]
        self.count = rows
        for i in range(rows):
            self[i].div_(norm(self[i]))

    def __getitem__(self, index: int) -> torch.Tensor:
        index = index % self.count
        return self.pages[index // self.page_rows][index % self.page_rows]

    def coefficients(self, w: torch.Tensor) -> torch.Tensor:
        """Qᵀw in float64 (`landscaper._precise`: float32 products over long vectors lose
        digits)."""
        return torch.cat([rows_dot(page, w) for page in self._filled()])

    def subtract(self, coefficients: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``w − Q c`` in place, page by page (a basis of 400 MB vectors makes no temporary
        vector)."""
        start = 0
        coefficients = coefficients.to(self.pages[0])  # its dtype and device
        for page in self._filled():
            w.addmv_(page.T, coefficients[start:start + page.shape[0]], alpha=-1.0)
            start += page.shape[0]
        return w

    def combinations(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The r rows ``(Q C)ᵀ`` for ``coefficients`` C of shape (len, r), accumulated page by
        page into one contiguous (r, P) tensor: no temporary beyond the result."""
        start = 0
        coefficients = coefficients.to(self.pages[0])  # its dtype and device
        out: torch.Tensor | None = None
        for page in self._filled():
            part = coefficients[start:start + page.shape[0]].T
            start += page.shape[0]
            out = part @ page if out is None else out.addmm_(part, page)
        assert out is not None
        return out


def _page_rows(capacity: int) -> int:
    """Rows per page: few pages, and at most a quarter of the budget allocated unused."""
    return max(1, min(32, capacity // 4))


class _Lanczos:
    """Lanczos with full reorthogonalisation (classical Gram–Schmidt, a second pass where the
    first cancelled most of the vector).

    Every product ``H q_j`` is projected on the whole basis, so the projected matrix
    ``M = Qᵀ H Q`` is known exactly (its upper triangle; symmetry gives the rest). Three things
    follow from that:

    - a *restart* (a new block from a random vector orthogonal to the basis) is exact: after
      a breakdown (β at rounding level, the Krylov space of the start vector is invariant), or
      on purpose to look for eigenvalues one start vector cannot see (repeated ones); the
      remainder discarded there enters the residual bounds, which are never zero because of a
      restart;
    - the symmetry of the products is checked for free: the projections that a symmetric ``H``
      determines in advance (``qⱼ₋₁ᵀ H qⱼ = βⱼ₋₁``, zero further back) are compared;
    - ``restart_seed=None`` stops at the first breakdown instead, as stochastic Lanczos
      quadrature needs (its weights belong to one start vector).

    With ``wanted=(k, which)`` a basis that reaches the memory budget is *thick-restarted*
    (Wu & Simon 2000): it is replaced by the Ritz vectors nearest to what is wanted (as many
    as `_restart_size` picks, at least k + 1) and the next Lanczos vector. The projected
    matrix of the new basis is diagonal in the Ritz block and the products go on as before;
    each Ritz vector carries the part of its residual that left the basis (earlier restarts'
    discarded remainders) into the residual bounds, so converged means converged (where those
    bounds stall, `_iterate` measures the residuals). The basis then never takes more than the
    budget: a 100.8M-parameter MLP's top-3 converged within 3 GiB. Without ``wanted``, a full
    basis is refused (quadrature needs one unbroken Krylov basis).
    """

    def __init__(self, op: SymmetricOperator, start: torch.Tensor, memory_budget: int, *,
                 restart_seed: int | None = None, scale_hint: float = 0.0,
                 subspace: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 wanted: tuple[int, Which] | None = None) -> None:
        self.op = op
        #: projection onto the space the operator acts on (fresh vectors are kept in it)
        self.subspace = subspace
        #: a known size of the operator (a deflated one is much smaller than the original)
        self.scale_hint = scale_hint
        self.wanted = wanted
        vector_bytes = start.numel() * start.element_size()
        fits = memory_budget // vector_bytes
        if wanted is None:
            self.capacity = fits
        else:  # a restart combines the kept Ritz vectors within the basis's own pages
            self.capacity = fits
            if self.capacity < wanted[0] + 3:
                raise MemoryError(
                    f"the Lanczos basis would exceed the memory budget "
                    f"({format_bytes(memory_budget)} holds {fits} vectors of {start.numel()} "
                    f"entries; restarted Lanczos for k={wanted[0]} needs "
                    f"{format_bytes((wanted[0] + 3) * vector_bytes)}); use "
                    'method="arpack" with a small ncv, raise memory_budget, or lower k')
        self.basis = _Basis(_page_rows(max(self.capacity, 1)), max(self.capacity, 1))
        self.basis.append(start / norm(start))
        #: Lanczos products computed (across restarts).
        self.products = 0
        #: thick restarts done.
        self.restarts = 0
        #: products that needed a second Gram–Schmidt pass (see `_orthogonalized`).
        self.second_passes = 0
        #: the least wanted Ritz value seen (`_wanted_score`), for the sizes of thick restarts
        self._far = np.inf
        #: after a restart: each Ritz vector's residual outside the new basis (its coupling to
        #: the next vector enters the projected matrix with the next product)
        self._outside: np.ndarray | None = None
        self._largest = 0.0
        #: projections of each product ``H q_j`` on ``q_0 … q_j``.
        self.columns: list[np.ndarray] = []
        #: norm of each product's remainder after projection.
        self.remainders: list[float] = []
        #: whether that remainder became the next basis vector (False: discarded at a restart).
        self.continued: list[bool] = []
        #: index of the first vector of each block.
        self.block_starts: list[int] = [0]
        #: largest disagreement of the projections with a symmetric operator (relative).
        self.asymmetry = 0.0
        self.memory_budget = memory_budget
        self.exhausted = False
        self._restarts = (None if restart_seed is None
                          else torch.Generator().manual_seed(restart_seed))

    @property
    def steps(self) -> int:
        """The size of the projected matrix (the products since the last thick restart, plus
        the Ritz vectors it kept)."""
        return len(self.columns)

    def scale(self) -> float:
        """The largest curvature seen (or known from ``scale_hint``)."""
        return max([self.scale_hint, self._largest, *map(abs, self.alphas)])

    @property
    def alphas(self) -> list[float]:
        """The diagonal of the projected matrix."""
        return [float(c[-1]) for c in self.columns]

    def _orthogonalized(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``w`` minus its projection on the basis, and the projection coefficients.

        Classical Gram–Schmidt, repeated once where the first pass removed more than
        ``1 − _KEEP_AFTER_PROJECTION`` of ``w``'s norm (the test of Daniel, Gragg, Kaufman
        and Stewart that ARPACK uses): only then can rounding leave components along the
        basis that matter. Each pass reads the whole basis twice, which dominates a step
        once vectors are large (a 100M-parameter model's basis of 16 vectors is 6 GiB).
        ``w`` itself is left alone (an operator may return a tensor it keeps)."""
        before = norm(w)
        coefficients = self.basis.coefficients(w)
        w = self.basis.subtract(coefficients, w.clone())
        if norm(w) < _KEEP_AFTER_PROJECTION * before:
            again = self.basis.coefficients(w)
            w = self.basis.subtract(again, w)
            coefficients = coefficients + again
            self.second_passes += 1
        return w, coefficients

    def _full(self) -> bool:
        return len(self.basis) + 1 > self.capacity

    def _append(self, vector: torch.Tensor) -> None:
        if self._full():
            needed = (len(self.basis) + 1) * vector.numel() * vector.element_size()
            raise MemoryError(
                f"the Lanczos basis would exceed the memory budget ({format_bytes(needed)}); "
                "use method=\"arpack\" with a small ncv, raise memory_budget, or lower max_iter"
            )
        self.basis.append(vector)

    def _thick_restart(self, following: torch.Tensor | None) -> None:
        """Replace the basis by the wanted Ritz vectors (and ``following``, the next Lanczos
        vector, unless the last remainder was discarded)."""
        assert self.wanted is not None
        k, which = self.wanted
        values, vecs = self.ritz()
        scores = _wanted_score(values, which)
        self._far = min(self._far, float(scores.min()))
        order = _order(values, which)[:_restart_size(scores, k, self.capacity, self._far)]
        kept = vecs[:, order]
        bounds = self.residuals(kept)
        coupling = (self.remainders[-1] * np.abs(kept[-1]) if following is not None
                    else np.zeros(len(order)))
        outside = np.maximum(bounds - coupling, 0.0)
        padded = np.zeros((len(self.basis), len(order)))  # a vector without a column: none
        padded[: kept.shape[0]] = kept
        self.basis.keep_combinations(torch.as_tensor(padded, dtype=self.basis[0].dtype,
                                                     device=self.basis[0].device))
        if following is not None:
            self.basis.append(following)
        self.columns = [np.r_[np.zeros(i), values[j]] for i, j in enumerate(order)]
        self.remainders = list(bounds)  # all of each residual until the coupling is measured
        self.continued = [False] * len(order)
        self.block_starts = [0]
        self._outside = outside if following is not None else None
        self.restarts += 1
        logger.debug("Lanczos thick restart %d after %d products: kept %d Ritz vectors",
                     self.restarts, self.products, len(order))

    def _check_symmetry(self, column: np.ndarray) -> None:
        """Compare the new column with what a symmetric operator implies."""
        j = len(column) - 1
        expected = np.zeros(j)
        for i in range(j):
            if self.continued[i] and i == j - 1:
                expected[i] = self.remainders[i]
        known = np.array([self.continued[i] for i in range(j)], dtype=bool)
        if not known.any():
            return
        scale = max(self.scale(), abs(float(column[-1]))) or 1.0
        gap = float(np.max(np.abs(column[:j][known] - expected[known]))) / scale
        self.asymmetry = max(self.asymmetry, gap)
        if gap > _ASYMMETRY_TOL.get(self.op.dtype, 1e-2):
            raise AsymmetricHessianError(
                f"the Hessian-vector products are not symmetric (projections disagree by "
                f"{gap:.2g} of the largest curvature): an operation of this model has a wrong "
                "second derivative, so no eigenvalue from them can be trusted. Known case: "
                "weight normalisation (nn.utils.weight_norm, parametrizations.weight_norm, "
                "torch._weight_norm) on CPU; remove it from a copy of the model for the analysis "
                "(torch.nn.utils.parametrize.remove_parametrizations) or write W = g·v/‖v‖ "
                "with plain tensor operations, or exclude those parameters with params=[...].")

    def step(self) -> None:
        """One product, projected on the basis; extends the basis or restarts."""
        w = self.op.matvec(self.basis[-1])
        w, coefficients = self._orthogonalized(w)
        beta = norm(w)
        packed = torch.cat([coefficients.double().cpu(), torch.tensor([beta],
                                                                       dtype=torch.float64)])
        # every decision (convergence, restarts) follows from these numbers: with several
        # processes, rank 0's keep all of them in lockstep where their arithmetic differs
        packed = self.op.lockstep(packed)
        column, beta = packed[:-1].numpy(), float(packed[-1])
        if not (np.all(np.isfinite(column)) and np.isfinite(beta)):
            raise ValueError("the Hessian-vector product is not finite at theta (NaN/inf in the "
                             "model's weights, data or loss); see objective.nonfinite_theta0")
        self._check_symmetry(column)
        self.products += 1
        self._largest = max(self._largest, abs(float(column[-1])))
        self.columns.append(column)
        self.remainders.append(beta)
        if self._outside is not None:  # the coupling to the vector after a restart is in M now
            self.remainders[:len(self._outside)] = list(self._outside)
            self._outside = None
        if len(self.basis) == w.shape[0]:
            self.continued.append(False)
            self.exhausted = True  # the basis spans the whole space
            return
        # rounding is judged against this block's curvature, so that a block exploring the
        # small eigenvalues left after the large ones were found is not cut short, but never
        # below what the operator's own rounding produces
        block = max(abs(a) for a in self.alphas[self.block_starts[-1]:])
        scale = max(block, float(np.sqrt(torch.finfo(w.dtype).eps)) * self.scale()) or 1.0
        if beta > _BREAKDOWN_EPS * torch.finfo(w.dtype).eps * scale:
            self.continued.append(True)
            if self.wanted is not None and self._full():
                self._thick_restart(w / beta)
            else:
                self._append(w / beta)
            return
        self.continued.append(False)
        if self._restarts is None or not self._fresh_block():
            self.exhausted = True  # the Krylov space is invariant: stop here

    def _fresh_block(self) -> bool:
        """Append a random vector orthogonal to the basis as the start of a new block (False
        when the basis spans the space)."""
        generator = self._restarts
        dtype, device = self.basis[0].dtype, self.basis[0].device
        fresh = torch.randn(self.basis[0].shape[0], generator=generator, dtype=torch.float64)
        fresh = (fresh / fresh.norm()).to(dtype=dtype, device=device)  # float64: exact
        if self.subspace is not None:
            fresh = self.subspace(fresh)
        fresh, _ = self._orthogonalized(fresh)
        if norm(fresh) < 1e-4:  # the basis spans the space up to rounding
            return False
        if self.wanted is not None and self._full():
            self._thick_restart(None)
            fresh, _ = self._orthogonalized(fresh)
        self.block_starts.append(self.steps)
        self._append(fresh / norm(fresh))
        return True

    def projected(self) -> np.ndarray:
        """The symmetric projected matrix ``Qᵀ H Q`` (from the computed upper triangle)."""
        m = self.steps
        upper = np.zeros((m, m))
        for j, column in enumerate(self.columns):
            upper[: j + 1, j] = column
        return upper + np.triu(upper, 1).T

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and coefficient vectors (columns)."""
        return np.linalg.eigh(self.projected())

    def residuals(self, vecs: np.ndarray) -> np.ndarray:
        """Bounds on ‖H v − λ v‖ for the Ritz vectors with coefficients ``vecs`` (columns):
        every remainder that is not in the basis, times the vector's coefficient there, plus
        what the projected matrix leaves unsymmetric (rounding)."""
        m = self.steps
        out = np.zeros(vecs.shape[1])
        lower_gap = np.zeros((m, m))
        for j in range(m):
            if j == m - 1 or not self.continued[j]:
                out += self.remainders[j] * np.abs(vecs[j, :])
            else:  # β_j against what step j+1 measured for the same entry
                lower_gap[j + 1, j] = self.remainders[j] - self.columns[j + 1][j]
        return out + np.linalg.norm(lower_gap @ vecs, axis=0)

    def ritz_estimates(self, vecs: np.ndarray) -> np.ndarray:
        """‖H v − λ v‖ in exact arithmetic after the last product: its remainder times each
        vector's last coefficient (what ARPACK tests). After thick restarts, `residuals`
        bounds by sums over every restart's leftover, which can stay far above this."""
        return self.remainders[-1] * np.abs(vecs[-1, :])

    def measured_residuals(self, values: np.ndarray, vecs: np.ndarray, allowed: np.ndarray,
                           order: np.ndarray) -> tuple[torch.Tensor, np.ndarray | None]:
        """The Ritz vectors and their residuals ‖H v − λ v‖, one product each, taken in
        ``order`` (most doubtful first) up to the first above ``allowed`` (then None)."""
        vectors = self.ritz_vectors(vecs)
        measured = np.zeros(len(values))
        for i in order:
            product = self.op.matvec(vectors[i])
            found = torch.tensor([norm(product - float(values[i]) * vectors[i])],
                                 dtype=torch.float64)
            measured[i] = float(self.op.lockstep(found)[0])
            if measured[i] > allowed[i]:
                return vectors, None
        return vectors, measured

    def ritz_vectors(self, vecs: np.ndarray) -> torch.Tensor:
        """The Ritz vectors (rows, unit norm) with coefficients ``vecs`` (columns)."""
        padded = np.zeros((len(self.basis), vecs.shape[1]))  # the next vector has no weight
        padded[: vecs.shape[0]] = vecs
        out = self.basis.combinations(torch.as_tensor(padded))
        for row in out:
            row.div_(norm(row))
        return out


def _wanted_score(values: np.ndarray, which: Which) -> np.ndarray:
    """Values mapped so that larger means more wanted."""
    return {Which.LA: values, Which.SA: -values, Which.LM: np.abs(values)}[which]


def _restart_size(scores: np.ndarray, k: int, capacity: int, far: float) -> int:
    """How many Ritz vectors a thick restart keeps (Yamazaki, Bai, Simon, Wang and Wu 2010):
    the ``l`` in [k + 1, (capacity + k) // 2] that maximises ``(capacity − 1 − l)·√γ_l``, the new
    products of the next cycle times the square root of the gap ratio
    ``γ_l = (θ_k − θ_{l+1}) / (θ_{l+1} − θ_far)`` between the k-th wanted Ritz value, the first
    one dropped and the far end of the spectrum (a Chebyshev estimate of what a cycle gains).
    ``scores`` are the Ritz values as `_wanted_score` ranks them; ``far`` the least wanted
    score seen in the whole run (the current basis alone does not reach the far end after a
    restart). A cluster around the k-th value is kept whole; past a clear gap, the room goes
    to new products."""
    ranked = np.sort(scores)[::-1]
    floor = 1e-12 * (float(np.max(np.abs(ranked))) or 1.0)
    best, best_rate = k + 1, -1.0
    # at most half of the room past the k wanted: the Ritz values near the far end of a
    # short basis say little about the spectrum there, and a cycle of one or two products
    # gains next to nothing for the restart it costs
    for kept in range(k + 1, min((capacity + k) // 2, len(ranked) - 1) + 1):
        gap = max(float(ranked[k - 1] - ranked[kept]), 0.0)
        spread = max(float(ranked[kept]) - far, floor)
        rate = (capacity - 1 - kept) * np.sqrt(gap / spread)
        if rate > best_rate:
            best, best_rate = kept, rate
    return best


def _ranks_within(value: float, reference: float, which: Which) -> bool:
    """Whether ``value`` comes before ``reference`` in the order ``which`` asks for."""
    if which is Which.LA:
        return value > reference
    if which is Which.SA:
        return value < reference
    return abs(value) > abs(reference)


def _extreme(values: np.ndarray, which: Which) -> int:
    return int(_order(values, which)[0])


#: Operators (anything but an Objective) get this Krylov-basis budget unless one is given.
DEFAULT_OPERATOR_BUDGET = "2GiB"

#: What the curvature algorithms take: an objective (its Hessian) or a symmetric operator.
CurvatureSource = Any


def as_operator(source: CurvatureSource, theta: torch.Tensor | None = None,
                curvature: str | Curvature = "hessian") -> SymmetricOperator:
    """The symmetric operator behind ``source``: for an `Objective`, its Hessian, generalised
    Gauss–Newton or empirical Fisher at ``theta`` (``curvature``, see
    `landscaper.curvature`); a `SymmetricOperator` as it is; a dense matrix (tensor or
    array, checked symmetric); or any object with a square ``shape`` and a
    ``matvec``/``matmat``/``@`` product (a SciPy ``LinearOperator``, another library's
    operator).

    Raises:
        ValueError: ``theta`` or a curvature other than the Hessian given for something that
            is not an objective, an operator of a dtype Lanczos cannot use, or a matrix that is
            not square and symmetric.
        TypeError: nothing here has a product.
    """
    curvature = parse_curvature(curvature)
    if isinstance(source, Objective):
        kind = {Curvature.HESSIAN: HessianOperator, Curvature.GGN: GGNOperator,
                Curvature.FISHER: FisherOperator}[curvature]
        return kind(source, theta)
    if theta is not None:
        raise ValueError("theta= picks the point of an Objective's Hessian; this operator is "
                         "already fixed (build it at the point you want)")
    if curvature is not Curvature.HESSIAN:
        raise ValueError(f"curvature={curvature.value!r} builds an operator from an Objective; "
                         "this is already an operator (pass the Objective instead)")
    if isinstance(source, SymmetricOperator):
        op = source
    elif isinstance(source, (torch.Tensor, np.ndarray)):
        op = DenseOperator(source)
    elif any(hasattr(source, name) for name in ("matvec", "matmat", "__matmul__")) and (
            hasattr(source, "shape")):
        op = WrappedOperator(source)
    else:
        raise TypeError(f"need an Objective, a symmetric operator, a matrix or an object with "
                        f"a shape and a matvec, got {type(source).__name__}")
    if op.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"products in {str(op.dtype).removeprefix('torch.')} are too coarse "
                         "for Lanczos; give the operator float32 or float64 vectors")
    return op


def _budget(op: SymmetricOperator, memory_budget: int | str | None) -> int:
    """Bytes the Krylov basis may take: the given budget, the operator's, or the default."""
    if memory_budget is not None:
        return parse_bytes(memory_budget)
    return parse_bytes(getattr(op, "memory_budget", DEFAULT_OPERATOR_BUDGET))


def top_eigenpairs(
    objective: CurvatureSource,
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
    verify: bool = True,
    curvature: str | Curvature = "hessian",
) -> EigenResult:
    """Top-k eigenpairs of the Hessian (or of any symmetric operator) by Lanczos.

    Args:
        objective: the loss over flat parameters (its Hessian), or any operator
            `as_operator` accepts (a GGN, a dense matrix, a SciPy ``LinearOperator``, ...).
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
        verify: once k pairs have converged, look for eigenvalues the start vector could not
            see (copies of a repeated eigenvalue, as in multi-output linear heads) with a few
            more products on the operator deflated by the pairs found; skipped for k = 1, whose
            value is right either way. False saves those products.
        curvature: for an objective, ``"hessian"`` (default), ``"ggn"`` (generalised
            Gauss–Newton) or ``"fisher"`` (empirical Fisher); see `landscaper.curvature`.

    Returns:
        An `EigenResult`: ``eigenvalues`` (float64), ``eigenvectors`` (k × P, orthonormal),
        ``n_hvp``, ``residuals`` and ``converged``.

    Examples:
        The top two eigenpairs of a small network's Hessian (in float64), against the
        eigenvalues of the dense Hessian:

        >>> import torch
        >>> from torch import nn
        >>> from landscaper import Objective, top_eigenpairs
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> objective = Objective(model, (x, y), nn.functional.cross_entropy,
        ...                       compute_dtype=torch.float64)
        >>> eig = top_eigenpairs(objective, k=2)
        >>> eig.eigenvalues.round(4).tolist(), eig.converged, tuple(eig.eigenvectors.shape)
        ([0.8258, 0.5479], True, (2, 67))
        >>> dense = torch.func.hessian(objective)(objective.theta0)
        >>> torch.linalg.eigvalsh(dense)[-2:].flip(0).numpy().round(4).tolist()
        [0.8258, 0.5479]

        The same call takes the generalised Gauss–Newton matrix, or any symmetric matrix:

        >>> ggn = top_eigenpairs(objective, k=1, curvature="ggn")
        >>> bool(ggn.eigenvalues[0] > 0)
        True
        >>> matrix = torch.diag(torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64))
        >>> top_eigenpairs(matrix, k=2).eigenvalues.round(6).tolist()
        [3.0, 2.0]
    """
    which, method = parse_which(which), Method(method)
    k = check_count("k", k)
    op = as_operator(objective, theta, curvature)
    p = op.shape[0]
    if not 1 <= k <= p:
        raise ValueError(f"k must be between 1 and the number of parameters ({p}), got {k}")
    tol = _default_tol(op.dtype) if tol is None else tol
    budget = _budget(op, memory_budget)
    layout = getattr(op, "layout", None)
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
        res = np.array([norm(op.matvec(v) - lam * v) for lam, v in
                        zip(vals[order], vectors, strict=True)])
        return EigenResult(vals[order].astype(np.float64), vectors, op.n_hvp, res, True,
                           method.value, layout)

    max_steps = min(p, max_iter if max_iter is not None else max(300, 10 * k))
    if max_steps < k:
        raise ValueError(f"max_iter={max_iter} Lanczos steps cannot give k={k} eigenpairs; pass "
                         f"max_iter >= {k}")
    first = _Lanczos(op, start, budget, restart_seed=seed + 1, wanted=(k, which))
    settle = max(_VERIFY_TOL, tol)
    with serial_numpy_blas():  # each step's small eigh beside torch's products
        found = _iterate(first, k, which, tol, max_steps, settle=settle)
        if verify and k > 1 and found.converged and not first.exhausted:
            scale = first.scale()
            del first  # its basis (up to the whole budget) is not needed by the check
            found = _verified(op, found, scale, k, which, tol, settle, max_steps, budget, seed)
    if not found.converged:
        logger.warning("Lanczos stopped after %d Hessian-vector products with relative "
                       "residuals %s > tol %.1e; raise max_iter or tol", op.n_hvp,
                       np.array2string(found.residuals / np.maximum(
                           np.abs(found.values), found.floor / tol), precision=2), tol)
    tiny = np.abs(found.values) * _COARSE < found.floor  # known to worse than 1%
    if found.converged and tiny.any() and op.dtype != torch.float64:
        logger.warning("eigenvalue(s) %s are below what %s Hessian-vector products resolve: "
                       "they are accurate to about ±%.2g only; pass "
                       "compute_dtype=torch.float64 to the Objective for more digits",
                       np.array2string(found.values[tiny], precision=3),
                       str(op.dtype).removeprefix("torch."), found.floor)
    return EigenResult(found.values.astype(np.float64), found.vectors, op.n_hvp,
                       found.residuals, found.converged, method.value, layout)


@dataclass(frozen=True)
class _Pairs:
    """Ritz pairs in the order asked for, with residual bounds (‖H v − λ v‖)."""

    values: np.ndarray
    #: the Ritz vectors (rows); None where a watch stopped the run (`_iterate`)
    vectors: torch.Tensor | None
    residuals: np.ndarray
    converged: bool
    #: residuals below this are rounding of the products (absolute).
    floor: float
    #: steps after which the extreme Ritz pair first had relative residual ``settle``
    #: (all the steps when it never did).
    settled: int = 0


def _iterate(lanczos: _Lanczos, k: int, which: Which, tol: float, max_steps: int,
             watch: Callable[[np.ndarray, np.ndarray], str | None] | None = None,
             settle: float | None = None) -> _Pairs:
    """Lanczos steps until the k wanted Ritz pairs converge (relative to |λ|, with
    eigenvalues at rounding level judged against the rounding of the products), the space is
    exhausted, ``max_steps`` are taken, or ``watch(values, vecs)`` says stop (then without
    vectors: the caller goes on with the same run or drops it). With ``settle``, also notes
    when the extreme pair first reached that relative residual."""
    settled = None
    # restarted runs: products when exact arithmetic first said converged, and how long the
    # bounds get to follow before the residuals are measured
    estimated, wait = None, _MEASURE_WAIT
    while True:
        lanczos.step()
        values, vecs = lanczos.ritz()
        order = _order(values, which)[:k]
        res = lanczos.residuals(vecs[:, order])
        size = max(float(np.max(np.abs(values))), lanczos.scale_hint)
        floor = _ROUNDING_EPS * torch.finfo(lanczos.op.dtype).eps * size
        allowed = tol * np.maximum(np.abs(values[order]), floor / tol)
        converged = len(values) >= k and bool(np.all(res <= allowed))
        vectors = None
        if not converged and lanczos.restarts and len(values) >= k and np.all(
                lanczos.ritz_estimates(vecs[:, order]) <= allowed):
            estimated = lanczos.products if estimated is None else estimated
        else:
            estimated = None
        if estimated is not None and lanczos.products - estimated >= wait:
            # restarts' bounds add up what each restart left over, in absolute value, and
            # can stall far above the true residuals: when they have not followed what exact
            # arithmetic leaves for a while, measure the residuals (a product each, the
            # loosest bound first, stopping at the first one above the tolerance; after a
            # miss, the bounds get twice as long)
            vectors, measured = lanczos.measured_residuals(
                values[order], vecs[:, order], allowed, np.argsort(allowed - res))
            converged = measured is not None
            if measured is not None:
                res = measured
            else:
                vectors = None  # not kept through the next product
            estimated, wait = lanczos.products, 2 * wait
        if settle is not None and settled is None:
            top = order[0]
            if lanczos.residuals(vecs[:, [top]])[0] <= settle * abs(values[top]):
                settled = lanczos.products
        stop = watch is not None and watch(values, vecs) is not None
        if stop or converged or lanczos.exhausted or lanczos.products >= max_steps:
            if vectors is None and not stop:
                vectors = lanczos.ritz_vectors(vecs[:, order])
            return _Pairs(values[order], vectors, res, converged, floor,
                          settled or lanczos.products)


class _Deflated:
    """``P H P`` with ``P = I − V Vᵀ``: the operator with the eigenvectors found so far
    removed, where a repeated eigenvalue's remaining copies are extreme values."""

    def __init__(self, op: SymmetricOperator, vectors: torch.Tensor) -> None:
        self.op, self.dtype, self.device, self.lockstep = op, op.dtype, op.device, op.lockstep
        gram = torch.stack([rows_dot(vectors, v) for v in vectors])
        identity = torch.eye(len(vectors), dtype=torch.float64, device=gram.device)
        if float((gram - identity).abs().max()) <= 1e3 * torch.finfo(vectors.dtype).eps:
            self.basis = vectors  # orthonormal to rounding (Ritz vectors): no copy
        else:
            q, _ = torch.linalg.qr(vectors.T)
            self.basis = q.T

    def project(self, v: torch.Tensor) -> torch.Tensor:
        return v - self.basis.T @ rows_dot(self.basis, v).to(v)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.project(self.op.matvec(self.project(v)))


def _verified(op: SymmetricOperator, found: _Pairs, scale: float, k: int, which: Which,
              tol: float, settle: float, max_steps: int, budget: int, seed: int) -> _Pairs:
    """Look for eigenvalues the first start vector could not see, and add them.

    One start vector sees one copy of a repeated eigenvalue (multi-output linear heads have
    every eigenvalue repeated). Copies left out are the extreme values of the operator
    deflated by the pairs found, so Lanczos on it from a fresh vector settles on one about as
    fast as the first run settled on its extreme pair (relative residual ``settle``:
    `_VERIFY_TOL`, or ``tol`` where that is looser): a check ends when its extreme pair
    settles below the k-th value, or after twice that many steps (plus two). A copy found is
    converged on the deflated operator and merged, then the check runs again. (A repeated
    top eigenvalue alone is right anyway, so k = 1 needs no check.)
    """
    kth = float(found.values[-1])
    budget_steps = 2 * found.settled + 2
    for attempt in range(k):
        deflated = _Deflated(op, found.vectors)
        gen = torch.Generator().manual_seed(seed + 7919 * (attempt + 1))
        start = torch.randn(op.shape[0], generator=gen, dtype=torch.float64)
        start = deflated.project(start.to(dtype=op.dtype, device=op.device))
        if norm(start) < 1e-4:
            return found  # the pairs found span the space
        run = _Lanczos(deflated, start, budget, restart_seed=seed + 7919 * (attempt + 1) + 1,
                       scale_hint=scale, subspace=deflated.project, wanted=(k, which))
        verdict: list[str] = []

        # beyond the k-th value by more than the tolerance and rounding
        margin = max(tol * abs(kth), found.floor)
        past = kth - margin if which is Which.SA else (
            kth + margin if which is Which.LA else abs(kth) + margin)

        def watch(values: np.ndarray, vecs: np.ndarray, run: _Lanczos = run,
                  verdict: list[str] = verdict, past: float = past) -> str | None:
            top = _extreme(values, which)
            if _ranks_within(values[top], past, which):
                verdict.append("missed")
            elif (run.residuals(vecs[:, [top]])[0] <= settle * abs(values[top])
                  or run.products >= budget_steps):
                verdict.append("clear")
            return verdict[-1] if verdict else None

        _iterate(run, k, which, tol, max_steps, watch)
        if not verdict or verdict[-1] == "clear":
            return found
        logger.info("a repeated eigenvalue was missed by one start vector (a copy above %.6g "
                    "found); converging it", kth)
        extra = _iterate(run, k, which, tol, max_steps)
        values = np.concatenate([found.values, extra.values])
        order = _order(values, which)[:k]
        vectors = torch.cat([found.vectors, extra.vectors])[torch.as_tensor(order)]
        residuals = np.concatenate([found.residuals, extra.residuals])[order]
        floor = max(found.floor, extra.floor)
        allowed = tol * np.maximum(np.abs(values[order]), floor / tol)
        for i in np.flatnonzero(order >= len(found.values)):  # pairs of P H P: measure for H
            residuals[i] = norm(op.matvec(vectors[i]) - values[order[i]] * vectors[i])
            allowed[i] = max(allowed[i], 10 * floor)  # a measured product carries its rounding
        converged = bool(np.all(residuals <= allowed))
        found = _Pairs(values[order], vectors, residuals, converged, floor)
        kth = float(found.values[-1])
        if not converged:
            return found
    return found


class TraceMethod(str, Enum):
    """How `trace` estimates tr(A) from matrix-vector products."""

    HUTCHINSON = "hutchinson"  # mean of zᵀAz over Rademacher probes z
    HUTCH_PLUS_PLUS = "hutch++"  # exact trace on a sketched top subspace + Hutchinson on the rest


@dataclass(frozen=True)
class TraceResult:
    """Stochastic estimate of tr(A): ``estimate`` ± ``std_error``.

    Attributes:
        estimate: the trace estimate (the mean of ``samples``).
        std_error: standard error of the estimate over its random probes.
        samples: one estimate of the trace per random probe (for Hutch++, the exact trace on
            the sketched subspace plus one probe's estimate of the remainder).
        n_hvp: matrix-vector products used.
        method: ``"hutchinson"`` or ``"hutch++"``.
    """

    estimate: float
    std_error: float
    samples: np.ndarray
    n_hvp: int
    method: str = TraceMethod.HUTCHINSON.value


def check_trace_probes(n_probes: Any, method: str | TraceMethod, name: str = "n_probes",
                       method_name: str = "method") -> tuple[int, TraceMethod]:
    """``n_probes`` and ``method`` checked for `trace` (so callers can refuse them before
    other work): Hutch++ needs 4 products (a sketch, its trace, two probes of the rest)."""
    method = parse_choice(TraceMethod, method, method_name)
    if method is TraceMethod.HUTCH_PLUS_PLUS and isinstance(n_probes, int) and n_probes < 4:
        raise ValueError(f"{name} must be at least 4 for Hutch++ (a sketch, its trace and two "
                         f"probes of the rest), got {n_probes}; raise it or use "
                         f"{method_name}='hutchinson'")
    return check_count(name, n_probes, minimum=2), method  # a standard error needs 2


def _rademacher(p: int, m: int, gen: torch.Generator, op: SymmetricOperator) -> torch.Tensor:
    """(p, m) random ±1 probes, drawn on the CPU one column at a time (the same numbers on
    every device and in every block size)."""
    signs = torch.stack([torch.randint(0, 2, (p,), generator=gen) for _ in range(m)], dim=1)
    return (signs * 2 - 1).to(dtype=op.dtype, device=op.device)


def _quadratic_forms(op: SymmetricOperator, m: int, gen: torch.Generator, block: int,
                     basis: torch.Tensor | None) -> np.ndarray:
    """zᵀAz for ``m`` Rademacher probes z (projected off ``basis`` when given), ``block``
    probes per batched product so that the probes never take more than the memory budget."""
    values = []
    for start in range(0, m, block):
        probes = _rademacher(op.shape[0], min(block, m - start), gen, op)
        if basis is not None:
            probes = probes - basis @ (basis.T @ probes)  # (I − QQᵀ) z: the sketched part drops
        values.append(torch.sum(probes * op.matmat(probes), dim=0).double().cpu())
    return torch.cat(values).numpy()


def trace(
    objective: CurvatureSource,
    n_probes: int = 100,
    *,
    seed: int = 0,
    theta: torch.Tensor | None = None,
    curvature: str | Curvature = "hessian",
    method: str | TraceMethod = "hutchinson",
) -> TraceResult:
    """Stochastic trace of the Hessian (or of the ``curvature`` matrix, or of any operator
    `as_operator` accepts) from ``n_probes`` matrix-vector products.

    ``method="hutchinson"`` averages zᵀAz over Rademacher probes. ``method="hutch++"``
    (Meyer, Musco, Musco & Woodruff 2021) spends a third of the products on sketching the
    dominant subspace Q = orth(A S), a third on its exact trace tr(QᵀAQ), and the rest on
    Hutchinson's estimate of the deflated remainder; at equal products its error falls as
    1/m instead of 1/√m when a few eigenvalues dominate (as in trained networks' Hessians).

    Examples:
        >>> import torch
        >>> from landscaper import trace
        >>> a = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]])
        >>> result = trace(a, n_probes=9, method="hutch++")  # its sketch spans all 3 axes
        >>> round(result.estimate, 4), result.n_hvp
        (9.0, 9)
    """
    n_probes, method = check_trace_probes(n_probes, method)
    op = as_operator(objective, theta, curvature)
    p, start = op.shape[0], op.n_hvp
    column = p * op.dtype.itemsize
    budget = _budget(op, None)
    n_sketch = min(n_probes // 3, p) if method is TraceMethod.HUTCH_PLUS_PLUS else 0
    if 3 * n_sketch * column > budget:  # the basis, its products and the QR's workspace
        raise ValueError(f"Hutch++ with n_probes={n_probes} keeps {n_sketch} vectors of {p} "
                         f"entries ({format_bytes(3 * n_sketch * column)} with its products), "
                         f"over the operator's memory budget of {format_bytes(budget)}: use "
                         "fewer n_probes, method='hutchinson', or a larger memory_budget")
    gen = torch.Generator().manual_seed(seed)
    low_rank, basis = 0.0, None
    if n_sketch:
        basis, _ = torch.linalg.qr(op.matmat(_rademacher(p, n_sketch, gen, op)))
        low_rank = float(torch.sum(basis * op.matmat(basis)))
    block = max(1, budget // (4 * column))  # probes and their products, twice over
    samples = low_rank + _quadratic_forms(op, n_probes - 2 * n_sketch, gen, block, basis)
    std_error = float(samples.std(ddof=1) / np.sqrt(len(samples)))
    return TraceResult(float(samples.mean()), std_error, samples, op.n_hvp - start,
                       method.value)


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
        if sigma is None:  # from the nodes that carry weight (not a short probe's padding)
            used = self.nodes[self.weights > 0]
            span = float(used.max() - used.min()) if used.size else 0.0
            sigma = (span or 1.0) / 100
        diff = grid[:, None, None] - self.nodes[None]
        kernel = np.exp(-0.5 * (diff / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        return (kernel * self.weights[None]).sum(axis=(1, 2)) / self.nodes.shape[0]


def spectral_density(
    objective: CurvatureSource,
    n_probes: int = 10,
    n_steps: int = 80,
    *,
    seed: int = 0,
    theta: torch.Tensor | None = None,
    curvature: str | Curvature = "hessian",
) -> SpectralDensity:
    """Eigenvalue density of the Hessian (or of the ``curvature`` matrix, or of any operator
    `as_operator` accepts) by stochastic Lanczos quadrature (Ghorbani et al., Yao et al.)."""
    n_probes = check_count("n_probes", n_probes)
    n_steps = check_count("n_steps", n_steps)
    op = as_operator(objective, theta, curvature)
    budget = _budget(op, None)
    steps = min(n_steps, op.shape[0])
    nodes = np.zeros((n_probes, steps))
    weights = np.zeros((n_probes, steps))
    for i in range(n_probes):
        lanczos = _Lanczos(op, _start_vector(op.shape[0], seed + i, op.dtype, op.device),
                           budget)
        while len(lanczos.alphas) < steps and not lanczos.exhausted:
            lanczos.step()
        values, vecs = lanczos.ritz()
        nodes[i, : len(values)] = values
        weights[i, : len(values)] = vecs[0, :] ** 2
    return SpectralDensity(nodes, weights, op.n_hvp)
