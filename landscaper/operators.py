"""Symmetric linear operators over flat vectors: the one interface the curvature algorithms use.

An operator implements only its product. It has ``shape`` (P, P), ``dtype``, ``device``,
``matvec(v)`` and a product counter ``n_hvp``; `SymmetricOperator` derives the rest (``matmat``,
``@``, ``to_dense``, ``to_scipy``, and ``lockstep``, the identity outside several processes).
`top_eigenpairs`, `trace` and `spectral_density` accept any of them, and through
`landscaper.hessian.as_operator` also a dense matrix, a SciPy ``LinearOperator`` or any object
with a ``matvec``/``matmat``/``@`` product and a square ``shape``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse.linalg
import torch

if TYPE_CHECKING:
    from .objective import Objective, ParameterLayout

#: Dense matrices whose asymmetry ‖A − Aᵀ‖_max exceeds this many machine epsilons times
#: ‖A‖_max are refused (curvature matrices are symmetric; an asymmetric one is a mistake).
_SYMMETRY_EPS = 1e3


class SymmetricOperator:
    """Base of operators that implement only ``matvec``: the derived products and views.

    Subclasses set ``shape``, ``dtype``, ``device`` and ``n_hvp`` and define ``matvec``.
    """

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device
    n_hvp: int = 0

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _vector(self, vector: Any) -> torch.Tensor:
        """``vector`` as a flat tensor of the operator's dtype and device, length checked."""
        v = torch.as_tensor(vector).to(device=self.device, dtype=self.dtype).reshape(-1)
        if v.shape[0] != self.shape[0]:
            raise ValueError(f"vector has length {v.shape[0]}, the operator is {self.shape}")
        return v

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """A @ V for V of shape (P, m), one product per column."""
        return torch.stack([self.matvec(col) for col in vectors.T], dim=1)

    def __matmul__(self, other: torch.Tensor) -> torch.Tensor:
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    def lockstep(self, values: torch.Tensor) -> torch.Tensor:
        """The numbers every process running this operator decides on (one process: these)."""
        return values

    def to_dense(self) -> torch.Tensor:
        """The full (P, P) matrix; only for small operators (P products)."""
        return self.matmat(torch.eye(self.shape[0], dtype=self.dtype, device=self.device))

    def to_scipy(self, dtype: Any = np.float64) -> scipy.sparse.linalg.LinearOperator:
        """A SciPy ``LinearOperator`` taking and returning NumPy arrays of ``dtype``."""

        def mv(x: np.ndarray) -> np.ndarray:
            y = self.matvec(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).ravel()))
            return y.detach().cpu().numpy().astype(dtype, copy=False)

        return scipy.sparse.linalg.LinearOperator(self.shape, matvec=mv, rmatvec=mv, dtype=dtype)


def _square_shape(shape: Any, what: str) -> tuple[int, int]:
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise ValueError(f"{what} must be square (P, P), got shape {shape}")
    return shape  # type: ignore[return-value]


class ObjectiveOperator(SymmetricOperator):
    """A curvature operator of an `Objective` (``self.objective``): its parameter layout,
    memory budget and cross-process decisions are the objective's."""

    objective: Objective

    @property
    def layout(self) -> ParameterLayout:
        """How flat vectors split into the objective's parameters."""
        return self.objective.layout

    @property
    def memory_budget(self) -> int:
        """The objective's memory budget (for the Krylov basis)."""
        return self.objective.memory_budget

    def lockstep(self, values: torch.Tensor) -> torch.Tensor:
        """The numbers every process running this operator decides on (see
        `Objective.lockstep`)."""
        return self.objective.lockstep(values)


class DenseOperator(SymmetricOperator):
    """A symmetric matrix held in memory (a tensor or an array), e.g. a dense reference.

    Raises:
        ValueError: the matrix is not square, not real floating point, holds NaN/inf or is
            not symmetric to rounding.
    """

    def __init__(self, matrix: torch.Tensor | np.ndarray) -> None:
        matrix = torch.as_tensor(matrix)
        self.shape = _square_shape(matrix.shape, "a dense operator")
        if not matrix.dtype.is_floating_point:
            matrix = matrix.double()
        if not bool(torch.isfinite(matrix).all()):
            raise ValueError("the matrix holds NaN or inf; its eigenvalues are undefined")
        scale = float(matrix.abs().max())
        gap = float((matrix - matrix.T).abs().max())
        if gap > _SYMMETRY_EPS * torch.finfo(matrix.dtype).eps * max(scale, 1e-300):
            raise ValueError(f"the matrix is not symmetric (max |A - Aᵀ| = {gap:.3g} against "
                             f"max |A| = {scale:.3g}); pass (A + A.T) / 2 if that is meant")
        self.matrix, self.dtype, self.device = matrix, matrix.dtype, matrix.device
        self.n_hvp = 0

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """A @ v."""
        self.n_hvp += 1
        return self.matrix @ self._vector(vector)

    def to_dense(self) -> torch.Tensor:
        """The matrix itself."""
        return self.matrix


class WrappedOperator(SymmetricOperator):
    """Any object with a square ``shape`` and a product: ``matvec``, ``matmat`` or ``@``
    (a SciPy ``LinearOperator``, a curvlinops or hessian-eigenthings operator, ...). Vectors
    go in as the wrapped object's kind (NumPy for SciPy operators, torch otherwise).

    Args:
        inner: the operator; it must be symmetric (this is not checked: it costs products).
        dtype: dtype of the vectors the algorithms use (default: ``inner.dtype`` if it is a
            torch or NumPy floating dtype, else float64).
        device: device of those vectors (default: ``inner.device`` or the CPU).

    A ``memory_budget`` (bytes) the wrapped object declares is kept: it bounds the vectors
    that Lanczos and Hutch++ hold.
    """

    def __init__(self, inner: Any, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        self.inner = inner
        self.shape = _square_shape(getattr(inner, "shape", ()), "the operator")
        self._numpy = isinstance(inner, scipy.sparse.linalg.LinearOperator)
        self.dtype = dtype or _torch_dtype(getattr(inner, "dtype", None))
        self.device = torch.device(device or getattr(inner, "device", None) or "cpu")
        self.n_hvp = 0
        if getattr(inner, "memory_budget", None) is not None:
            self.memory_budget = inner.memory_budget

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """The wrapped object's product with v."""
        v = self._vector(vector)
        self.n_hvp += 1
        x: Any = v.detach().cpu().numpy() if self._numpy else v
        for name in ("matvec", "matmat", "__matmul__"):
            product = getattr(self.inner, name, None)
            if product is not None:
                y = product(x[:, None]) if name == "matmat" else product(x)
                return torch.as_tensor(np.asarray(y) if self._numpy else y).reshape(-1).to(
                    device=self.device, dtype=self.dtype)
        raise TypeError(f"{type(self.inner).__name__} has no matvec, matmat or @ product")


def _torch_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    try:
        return {np.float32: torch.float32, np.float64: torch.float64}[np.dtype(dtype).type]
    except (TypeError, KeyError):
        return torch.float64


class RestrictedOperator(SymmetricOperator):
    """The block PᵀAP of a symmetric operator A on the coordinates ``index`` (P selects them):
    the curvature of one parameter group with the others held fixed.

    Each product embeds v into a zero vector of A's size, multiplies by A and reads ``index``
    back, so it costs one product of A.
    """

    def __init__(self, inner: SymmetricOperator, index: torch.Tensor) -> None:
        self.inner = inner
        self.index = torch.as_tensor(index, dtype=torch.long, device=inner.device)
        size = int(self.index.numel())
        if size == 0 or int(torch.unique(self.index).numel()) != size:
            raise ValueError("a restriction needs distinct coordinates, at least one")
        if int(self.index.min()) < 0 or int(self.index.max()) >= inner.shape[0]:
            raise ValueError(f"coordinates must lie in [0, {inner.shape[0]}) of the operator")
        self.shape = (size, size)
        self.dtype, self.device = inner.dtype, inner.device
        self.n_hvp = 0
        if hasattr(inner, "memory_budget"):
            self.memory_budget = inner.memory_budget

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """(PᵀAP) v."""
        v = self._vector(vector)
        full = torch.zeros(self.inner.shape[0], dtype=self.dtype, device=self.device)
        full[self.index] = v
        self.n_hvp += 1
        return self.inner.matvec(full)[self.index]

    def lockstep(self, values: torch.Tensor) -> torch.Tensor:
        """As the operator restricted (one decision across the processes running it)."""
        return self.inner.lockstep(values)
