"""Hessian-vector products from gradients alone, for models whose operations have a first
derivative but no second (``torch.compile``d modules, custom kernels, ``once_differentiable``
Functions): opt-in, because its products carry a truncation and rounding error that exact
products do not.

    H v ≈ ‖v‖ (∇L(θ + h v̂) − ∇L(θ − h v̂)) / (2h),   v̂ = v / ‖v‖

Central differences are accurate to O(h²) while rounding grows as ε/h; the default step
h = ε^(1/3) · max(1, ‖θ‖) balances the two (measured on a tanh MLP against exact products: a
relative error of 2e-5 in float32 and 1e-10 in float64). The first product also takes the
step 2h, and Richardson's comparison of the two, ‖D_h − D_2h‖ / (3‖D_h‖), is the error
estimate the operator keeps (``relative_error``) and logs, with a warning when it exceeds 1%:
piecewise-linear activations (ReLU) put kinks within any step and make differences much
worse than on smooth models. Pass the operator to `top_eigenpairs`, `trace` or
`spectral_density` with a ``tol`` above that error.
"""

from __future__ import annotations

import logging

import torch

from .objective import Objective
from .operators import ObjectiveOperator

logger = logging.getLogger(__name__)

#: relative error estimate above which the operator warns
_WARN_ERROR = 1e-2


class FiniteDifferenceHessian(ObjectiveOperator):
    """The Hessian of an objective at θ by central differences of its gradient.

    Args:
        objective: the loss over flat parameters (its gradient needs only first derivatives).
        theta: the point (θ₀ by default).
        step: the difference step h along a unit vector (default ε^(1/3)·max(1, ‖θ‖)).

    Attributes:
        n_hvp: products computed; ``n_gradients`` the gradients they took (2 each, 4 for the
            first, which also estimates the error).
        relative_error: Richardson's estimate of the products' relative error (None before the
            first product).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from landscaper import Objective, top_eigenpairs
        >>> from landscaper.finite_difference import FiniteDifferenceHessian
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
        >>> x, y = torch.randn(20, 3), torch.randn(20, 1)
        >>> data = (x.double(), y.double())
        >>> objective = Objective(model, data, nn.functional.mse_loss)
        >>> approx = top_eigenpairs(FiniteDifferenceHessian(objective), k=1, tol=1e-6)
        >>> exact = top_eigenpairs(objective, k=1)
        >>> bool(abs(approx.eigenvalues[0] - exact.eigenvalues[0]) < 1e-6 * exact.eigenvalues[0])
        True
    """

    def __init__(self, objective: Objective, theta: torch.Tensor | None = None,
                 step: float | None = None) -> None:
        self.objective = objective
        self.theta = (objective.theta0 if theta is None else objective._check_theta(theta)).detach()
        self.dtype, self.device = self.theta.dtype, self.theta.device
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError("finite differences in "
                             f"{str(self.dtype).removeprefix('torch.')} are dominated by "
                             "rounding; build the Objective with compute_dtype=torch.float32 "
                             "or torch.float64")
        self.shape = (objective.num_params, objective.num_params)
        eps = torch.finfo(self.dtype).eps
        default = eps ** (1 / 3) * max(1.0, float(self.theta.norm()))
        self.step = float(default if step is None else step)
        if not self.step > 0:
            raise ValueError(f"step must be a positive number, got {step!r}")
        self.n_hvp = 0
        self.n_gradients = 0
        self.relative_error: float | None = None

    def _difference(self, direction: torch.Tensor, step: float) -> torch.Tensor:
        gradient = self.objective.gradient
        self.n_gradients += 2
        return (gradient(self.theta + step * direction)
                - gradient(self.theta - step * direction)) / (2 * step)

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H @ v by central differences (zero for v = 0)."""
        v = self._vector(vector)
        norm = float(v.norm())
        self.n_hvp += 1
        if norm == 0.0:
            return torch.zeros_like(v)
        direction = v / norm
        product = self._difference(direction, self.step)
        if self.relative_error is None:
            coarse = self._difference(direction, 2 * self.step)
            size = float(product.norm()) or 1.0
            self.relative_error = float((product - coarse).norm()) / (3 * size)
            logger.info("finite-difference Hessian products (step %.3g): estimated relative "
                        "error %.2g", self.step, self.relative_error)
            if self.relative_error > _WARN_ERROR:
                logger.warning(
                    "finite-difference Hessian products have an estimated relative error of "
                    "%.2g (step %.3g): eigenvalues and traces from them are no better than "
                    "that; a smooth activation, compute_dtype=torch.float64 or another step= "
                    "may help", self.relative_error, self.step)
        return product * norm
