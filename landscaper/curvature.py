"""Curvature matrices beside the Hessian: the generalised Gauss–Newton and the empirical Fisher.

For a loss L(θ) = Σ_b w_b ℓ_b(f_b(θ)) (f_b the model's outputs on batch b, ℓ_b the
mean-reduced ``loss_fn`` of them, w_b the objective's batch weights):

- GGN: G = Σ_b w_b J_bᵀ ∇²ℓ_b J_b, J_b = ∂f_b/∂θ. Positive semi-definite for convex ℓ
  (cross-entropy, MSE). Each product is one forward-mode pass (J v), the loss's own
  Hessian-vector product in output space, and one reverse pass (Jᵀ u).
- Empirical Fisher: F = Σ_b (w_b / n_b) Σₙ gₙ gₙᵀ, gₙ the gradient of sample n's loss. Each
  product is a forward-mode pass through the per-sample losses (their Jacobian times v) and
  one reverse pass.

Both need ``(inputs..., targets)`` batches with a ``loss_fn`` of the model's output tensor,
and the empirical Fisher a model that treats samples independently (eval mode). They evaluate
every layer (no reuse of frozen calls), inside the same full-precision and differentiable-
attention contexts as Hessian-vector products.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import torch
from torch.func import grad, jvp, vjp, vmap

from ._utils import parse_choice
from .objective import Objective
from .operators import ObjectiveOperator


class Curvature(str, Enum):
    """Which curvature matrix of the loss the algorithms use."""

    HESSIAN = "hessian"
    GGN = "ggn"
    FISHER = "fisher"


def parse_curvature(curvature: str | Curvature) -> Curvature:
    """``curvature`` as a `Curvature`, refusing unknown names with the valid ones."""
    return parse_choice(Curvature, curvature, "curvature")


def _supervised_batches(objective: Objective, what: str) -> list[tuple[Any, ...]]:
    """The objective's batches as ``(inputs..., targets)``; refused (before any work) where
    the loss is not ``loss_fn(model(*inputs), targets)``."""
    if objective.batch_loss_fn is not None or objective.loss_fn is None:
        raise ValueError(f"the {what} needs a loss of the model's outputs: build the Objective "
                         "from (inputs, targets) batches with loss_fn=..., not batch_loss= or "
                         "a model's own outputs.loss")
    for batch in objective.batches:
        if isinstance(batch, Mapping) or len(batch) < 2:
            raise ValueError(f"the {what} needs (inputs..., targets) batches; for dict batches "
                             "use curvature='hessian', or pass tuples with loss_fn=...")
    return [tuple(b) for b in objective.batches]


class _OutputCurvature(ObjectiveOperator):
    """What the GGN and the Fisher share: an objective's batches, point, dtype and layout."""

    what = "curvature"

    def __init__(self, objective: Objective, theta: torch.Tensor | None = None) -> None:
        self.objective = objective
        self.batches = _supervised_batches(objective, self.what)
        self.theta = (objective.theta0 if theta is None else objective._check_theta(theta)
                      ).detach()
        self.shape = (objective.num_params, objective.num_params)
        self.dtype, self.device = self.theta.dtype, self.theta.device
        self.n_hvp = 0

    def _outputs(self, inputs: tuple[Any, ...]) -> Any:
        objective = self.objective
        return lambda theta: objective._call_model(theta, *inputs)

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """The curvature matrix times v, summed over batches with the objective's weights."""
        from .hessian import differentiable_attention

        v = self._vector(vector)
        objective = self.objective

        def local() -> torch.Tensor:
            out = torch.zeros_like(self.theta)
            with objective.full_precision(), differentiable_attention(), torch.enable_grad():
                for weight, (*inputs, targets) in zip(objective.weights, self.batches,
                                                      strict=True):
                    out += weight * self._batch_product(tuple(inputs), targets, v).detach()
            return out

        # as for Hessian-vector products: a failure on one process is raised on all of them
        out = objective.reduce_mean(objective.together(local))
        self.n_hvp += 1
        return out

    def _batch_product(self, inputs: tuple[Any, ...], targets: Any, v: torch.Tensor
                       ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class GGNOperator(_OutputCurvature):
    """The generalised Gauss–Newton matrix Σ_b w_b J_bᵀ ∇²ℓ_b J_b at θ (see the module
    docstring)."""

    what = "GGN"

    def _batch_product(self, inputs: tuple[Any, ...], targets: Any, v: torch.Tensor
                       ) -> torch.Tensor:
        outputs = self._outputs(inputs)
        loss_fn = self.objective.loss_fn
        out, jv = jvp(outputs, (self.theta,), (v,))
        # the loss's Hessian in output space times Jv, by reverse over reverse (symmetric, so
        # the pullback of its gradient; forward over reverse trips over mse_loss's backward)
        _, loss_pullback = vjp(grad(lambda o: loss_fn(o, targets)), out.detach())
        (hjv,) = loss_pullback(jv)
        _, pullback = vjp(outputs, self.theta)
        (gv,) = pullback(hjv)
        return gv


class FisherOperator(_OutputCurvature):
    """The empirical Fisher Σ_b (w_b / n_b) Σₙ gₙ gₙᵀ at θ (see the module docstring)."""

    what = "empirical Fisher"

    def _batch_product(self, inputs: tuple[Any, ...], targets: Any, v: torch.Tensor
                       ) -> torch.Tensor:
        outputs, loss_fn = self._outputs(inputs), self.objective.loss_fn

        def per_sample(theta: torch.Tensor) -> torch.Tensor:
            out = outputs(theta)
            return vmap(lambda o, t: loss_fn(o[None], t[None]))(out, targets)

        losses, jv = jvp(per_sample, (self.theta,), (v,))
        _, pullback = vjp(per_sample, self.theta)
        (fv,) = pullback(jv)
        return fv / losses.shape[0]
