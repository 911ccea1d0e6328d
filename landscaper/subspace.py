"""The loss on an affine subspace θ = origin + Σᵢ aᵢ·dᵢ, evaluated at coefficient rows a.

A grid lives in such a subspace. On top of reusing what θ does not change
(`landscaper.frozen`), the calls θ reaches first are often linear in their own parameters with
an input θ does not change (`FrozenCalls.entries`: a `Linear` on a frozen encoder's output, a
CNN's first convolution on the images). Inside the subspace their output is

    y(a) = y₀ + Σᵢ aᵢ·yᵢ,

with y₀ the call's output at the origin and yᵢ its output with its parameters set to
direction i's part of them: k + 1 products per batch, computed once, where `Objective.batch`
computes one per point. Exact, because those modules are linear in their parameters; any
other call runs as usual at θ = origin + a·D.

When the records do not fit the memory budget (`Objective.streams_frozen`), each batch is
recorded once per `SubspaceLoss.batch` call (a grid chunk of at least 256 points), evaluated at
all of its points and dropped, so a chunk costs one evaluation of the frozen computation per
batch instead of one per point.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ._utils import format_bytes
from .frozen import EntryCall, FrozenCalls
from .grid.plan import max_chunk_size
from .objective import Objective

logger = logging.getLogger(__name__)

#: Answers for the entry calls of one batch: (y₀, the (k, ...) stack of the yᵢ) per call.
Products = dict[EntryCall, tuple[torch.Tensor, torch.Tensor]]


class SubspaceLoss:
    """Losses at coefficient rows of the subspace ``origin + a @ directions`` of an objective.

    Args:
        objective: the loss; its records of what θ does not change are used.
        origin: (P,) point of the subspace (θ₀ for a grid).
        directions: (k, P) spanning vectors.
        affine_entries: build the output of the entry calls from k + 1 products (False:
            evaluate them at each point, as `Objective.batch` does).
    """

    def __init__(self, objective: Objective, origin: torch.Tensor, directions: torch.Tensor,
                 *, affine_entries: bool = True) -> None:
        self.objective = objective
        self.origin = objective._check_theta(origin)
        self.directions = objective._check_theta(directions, batched=True)
        self.affine_entries = affine_entries
        self._owner = {id(p): n for n, p in objective.model.named_parameters()}
        self._products: list[Products | None] | None = None
        #: memory held by the entry products of all batches.
        self.nbytes = 0

    @property
    def k(self) -> int:
        """Dimension of the subspace."""
        return self.directions.shape[0]

    def points(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The parameter vectors origin + A·D of coefficient rows A (n, k)."""
        return torch.addmm(self.origin[None, :], coefficients, self.directions)

    # ------------------------------------------------------------------ entry products
    def _direction_parts(self, module: nn.Module) -> list[dict[str, torch.Tensor]]:
        """Per direction, the module's own parameters set to that direction's part of them
        (zero for parameters outside θ)."""
        layout = self.objective.layout
        views = [layout.unflatten(d) for d in self.directions]
        parts: list[dict[str, torch.Tensor]] = [{} for _ in views]
        for name, param in module.named_parameters(recurse=False):
            owner = self._owner.get(id(param))
            for part, view in zip(parts, views, strict=True):
                part[name] = (view[owner] if owner in view else
                              torch.zeros(param.shape, dtype=self.origin.dtype,
                                          device=self.origin.device))
        return parts

    def _products_of(self, index: int, frozen: FrozenCalls | None) -> Products | None:
        """y₀ and the yᵢ of every entry call of batch ``index`` (None: no entries)."""
        if frozen is None or not frozen.entries or not self.affine_entries:
            return None
        inputs: dict[EntryCall, tuple[torch.Tensor, torch.Tensor]] = {}

        def capture(entry: EntryCall) -> Callable[..., Any]:
            def run(forward: Callable[..., Any], x: torch.Tensor) -> torch.Tensor:
                out = forward(x)
                inputs[entry] = (x, out)
                return out
            return run

        objective, batch = self.objective, self.objective.batches[index]
        with torch.no_grad():
            objective.loss_replayed(self.origin, batch, frozen,
                                    {entry: capture(entry) for entry in frozen.entries})
            if frozen.deviated is not None or len(inputs) != len(frozen.entries):
                return None
            products: Products = {}
            for entry, (x, base) in inputs.items():
                module = entry[0]
                stacked = torch.stack([functional_call(module, part, (x,))
                                       for part in self._direction_parts(module)])
                products[entry] = (base, stacked)
        return products

    def prepare(self) -> None:
        """Compute the entry products of every batch (done by the first `batch` call)."""
        if self._products is not None:
            return
        objective = self.objective
        objective.record_frozen()
        self._products = [None] * len(objective.batches)
        if objective.streams_frozen:
            return
        for index in range(len(objective.batches)):
            self._products[index] = self._products_of(index, objective._frozen[index])
        self.nbytes = sum(t.numel() * t.element_size() for products in self._products
                          if products for pair in products.values() for t in pair)
        if self.nbytes + objective._frozen_bytes > objective.memory_budget // 4:
            logger.info("the %d-direction products of the first layers θ reaches take %s, more "
                        "than the memory budget allows beside the records: evaluating those "
                        "layers at every point", self.k, format_bytes(self.nbytes))
            self._products = [None] * len(objective.batches)
            self.nbytes = 0
        elif self.nbytes:
            logger.info("answering the first layers θ reaches from %d products per batch (%s)",
                        self.k + 1, format_bytes(self.nbytes))

    # ------------------------------------------------------------------ evaluation
    def _loss_of_batch(self, theta: torch.Tensor, a: torch.Tensor, index: int,
                       frozen: FrozenCalls | None, products: Products | None) -> torch.Tensor:
        """Loss of batch ``index`` at θ = origin + a·D (both given: θ is built outside vmap,
        one chunk at a time, so it is held once)."""
        objective = self.objective
        answers = None
        if products:
            def combine(base: torch.Tensor, stacked: torch.Tensor) -> Callable[..., Any]:
                return lambda _forward, _x: base + torch.tensordot(a, stacked, dims=1)
            answers = {entry: combine(*pair) for entry, pair in products.items()}
        return objective.loss_replayed(theta, objective.batches[index], frozen, answers)

    def _loss_all(self, theta: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        objective, products = self.objective, self._products
        total = None
        for index, weight in enumerate(objective.weights):
            term = weight * self._loss_of_batch(theta, a, index, objective._frozen[index],
                                                products[index])
            total = term if total is None else total + term
        return total

    def batch(self, coefficients: torch.Tensor, *, chunk_size: int | None = None,
              vectorize: bool = True) -> torch.Tensor:
        """Losses at the points origin + a·D of coefficient rows (n, k), without gradients;
        equal to ``objective.batch(self.points(coefficients))`` to float rounding."""
        objective = self.objective
        coefficients = torch.as_tensor(coefficients).to(device=objective.device,
                                                        dtype=objective.dtype)
        if coefficients.ndim != 2 or coefficients.shape[1] != self.k:
            raise ValueError(f"coefficients must have shape (n, {self.k}), got "
                             f"{tuple(coefficients.shape)}")
        self.prepare()
        chunk = chunk_size or max_chunk_size(objective)
        if not objective.streams_frozen:
            return self._rows(self._loss_all, coefficients, chunk, vectorize)
        # one batch at a time: its record and products made, used at every row, dropped
        total = torch.zeros(coefficients.shape[0], dtype=objective.dtype,
                            device=objective.device)
        for index, weight in enumerate(objective.weights):
            frozen = objective.frozen_record(index)
            products = self._products_of(index, frozen)

            def loss(theta: torch.Tensor, a: torch.Tensor, index: int = index,
                     frozen: FrozenCalls | None = frozen,
                     products: Products | None = products) -> torch.Tensor:
                return self._loss_of_batch(theta, a, index, frozen, products)

            total += weight * self._rows(loss, coefficients, chunk, vectorize)
        return total

    def _rows(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              coefficients: torch.Tensor, chunk: int, vectorize: bool) -> torch.Tensor:
        """``loss(θ, a)`` at every row, vmapped ``chunk`` rows at a time; the θ vectors of
        one call at a time are built (one product), so they are held once."""
        objective = self.objective
        out = torch.empty(coefficients.shape[0], dtype=objective.dtype, device=objective.device)
        for start in range(0, coefficients.shape[0], chunk):
            block = coefficients[start : start + chunk]
            out[start : start + block.shape[0]] = objective.evaluate_rows(
                loss, self.points(block), block, chunk_size=chunk, vectorize=vectorize)
        return out
