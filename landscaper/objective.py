"""The loss of a model as a function of one flat parameter vector θ.

Everything in landscaper (Hessian-vector products, grids, jumps) is a function of θ.
`Objective` builds it once from ``(model, data, loss_fn)`` with
:func:`torch.func.functional_call`, so the user's module is never modified: parameters are
swapped in for the duration of one call and restored by PyTorch, also after an exception.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from ._utils import format_bytes, parse_bytes, progress_bar

logger = logging.getLogger(__name__)

Batch = Any
#: ``batch_loss(call_model, batch) -> scalar`` for losses that are not ``loss_fn(model(x), y)``,
#: e.g. a PINN residual that differentiates the network output with respect to its inputs.
BatchLoss = Callable[[Callable[..., Any], Batch], torch.Tensor]

_STOCHASTIC_MODULES = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


@dataclass(frozen=True)
class ParameterLayout:
    """Where each selected parameter lives inside the flat vector θ."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]

    @property
    def num_params(self) -> int:
        """Length of θ."""
        return self.offsets[-1] + math.prod(self.shapes[-1]) if self.names else 0

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` (length P) shaped like each parameter, keyed by name."""
        return {
            name: flat[offset : offset + math.prod(shape)].view(shape)
            for name, shape, offset in zip(self.names, self.shapes, self.offsets, strict=True)
        }

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate per-parameter tensors (all names required) into one flat vector."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"missing tensors for parameters {missing[:5]}")
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            t = tensors[name]
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
            parts.append(t.reshape(-1))
        return torch.cat(parts)


def select_parameters(
    model: nn.Module, params: str | Sequence[str] | None = None
) -> list[tuple[str, nn.Parameter]]:
    """The parameters that form θ, in ``model.named_parameters()`` order.

    Args:
        model: the module.
        params: None for every parameter with ``requires_grad``; otherwise one or more names
            or shell-style patterns (``"encoder.layer.5.*"``, ``"classifier.*"``).
    """
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
        frozen = len(named) - len(chosen)
        if frozen:
            logger.info("leaving %d frozen parameter tensors out of theta", frozen)
    else:
        patterns = [params] if isinstance(params, str) else list(params)
        unmatched = [
            pat for pat in patterns if not any(fnmatch.fnmatchcase(n, pat) for n, _ in named)
        ]
        if unmatched:
            sample = ", ".join(n for n, _ in named[:8])
            raise ValueError(
                f"parameter pattern(s) {unmatched} match no parameter of the model; "
                f"names look like: {sample}"
            )
        chosen = [(n, p) for n, p in named if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
        frozen_chosen = [n for n, p in chosen if not p.requires_grad]
        if frozen_chosen:
            logger.info("parameters %s have requires_grad=False but were selected by name: they "
                        "are part of theta (the model keeps them frozen)", frozen_chosen[:5])
    if not chosen:
        raise ValueError("no parameters selected: the model has no trainable parameters; "
                         "pass params=[...] naming the ones to analyse")
    dtypes = {p.dtype for _, p in chosen}
    devices = {p.device for _, p in chosen}
    if any(not dt.is_floating_point for dt in dtypes):
        bad = [n for n, p in chosen if not p.dtype.is_floating_point]
        raise ValueError(f"parameters {bad[:5]} are not real floating point; select real-valued "
                         "parameters with params=[...]")
    if len(dtypes) > 1:
        raise ValueError(f"selected parameters mix dtypes {sorted(map(str, dtypes))}; convert the "
                         "model with model.to(dtype) or select one dtype with params=[...]")
    if len(devices) > 1:
        raise ValueError(f"selected parameters live on several devices "
                         f"{sorted(map(str, devices))}; move the model with model.to(device) or "
                         "select parameters on one device with params=[...]")
    return chosen


def _check_no_meta(model: nn.Module) -> None:
    """Refuse parameters or buffers on the meta device: they have no values to evaluate."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    on_meta = [name for name, t in tensors if t.device.type == "meta"]
    if on_meta:
        raise ValueError(
            f"{len(on_meta)} parameter/buffer tensors of the model are on the meta device and "
            f"have no values ({', '.join(on_meta[:4])}{', ...' if len(on_meta) > 4 else ''}); "
            "load the weights first (model.to_empty(device=...) then load_state_dict) and move "
            "the whole model with model.to(device)")


def _nonfinite_parameters(layout: ParameterLayout, theta: torch.Tensor) -> dict[str, int]:
    """Number of NaN/inf entries of each parameter tensor of θ that has any."""
    counts = {}
    for name, piece in layout.unflatten(theta).items():
        bad = int((~torch.isfinite(piece)).sum())
        if bad:
            counts[name] = bad
    return counts


def _all_tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) batch, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _all_tensors(item)]
    return []


def _find_tensor(obj: Any) -> torch.Tensor | None:
    return next(iter(_all_tensors(obj)), None)


def _batch_size(batch: Batch) -> int:
    tensor = _find_tensor(batch)
    if tensor is None or tensor.ndim == 0:
        return 1
    return int(tensor.shape[0])


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _scalar_loss(loss: Any, source: str) -> torch.Tensor:
    """The loss as a 0-d tensor; a clear error for anything that is not one number."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"{source} returned {type(loss).__name__}, not a tensor; return a scalar "
                        "torch tensor computed from the model output (not .item() or a float)")
    if loss.numel() != 1:
        raise ValueError(f"{source} returned a tensor of shape {tuple(loss.shape)}, not a scalar; "
                         "reduce it to one number per batch (e.g. reduction='mean')")
    if not loss.dtype.is_floating_point:
        raise ValueError(f"{source} returned a {loss.dtype} tensor; the loss must be real "
                         "floating point to be differentiated")
    return loss.reshape(())


def normalize_data(data: Any) -> list[Batch]:
    """Turn the accepted data forms into a list of batches.

    Accepted: a tuple ``(inputs, targets)`` (one batch), a dict (one HuggingFace-style batch),
    a list of such batches, or any re-iterable of batches such as a ``DataLoader`` (it is read
    once, so a shuffling loader gives one fixed order).
    """
    if isinstance(data, (tuple, Mapping)):
        batches = [data]
    elif isinstance(data, torch.Tensor):
        raise TypeError("data is a bare tensor; pass (inputs, targets) as a tuple, or a list of "
                        "such tuples, or use batch_loss=... for an unsupervised loss")
    elif isinstance(data, Iterable):
        batches = list(data)
        if batches and isinstance(batches[0], torch.Tensor):
            raise TypeError("data is a list of tensors; write a single batch as a tuple "
                            "(inputs, targets), or pass a list of such tuples")
    else:
        raise TypeError(f"cannot use {type(data).__name__} as data; pass (inputs, targets), a "
                        "dict batch, a list of batches or a DataLoader")
    if not batches:
        raise ValueError("data holds no batches: pass at least one batch")
    if any(isinstance(b, (tuple, list, Mapping)) and len(b) == 0 for b in batches):
        raise ValueError("data holds an empty batch (an empty tuple or dict); a batch is "
                         "(inputs, targets) or a dict of tensors")
    if any(_batch_size(b) == 0 for b in batches):
        raise ValueError("data holds an empty batch (batch size 0); drop it before building "
                         "the Objective")
    if any(t.device.type == "meta" for b in batches for t in _all_tensors(b)):
        raise ValueError("data holds tensors on the meta device, which have no values; pass "
                         "real tensors (they are moved to the model's device)")
    return batches


class Objective:
    """The mean loss over a data set as a function of a flat parameter vector θ.

    Args:
        model: any ``nn.Module``; it is never modified.
        data: ``(inputs, targets)``, a dict batch, a list of batches or a DataLoader.
        loss_fn: ``loss_fn(outputs, targets)`` for tuple batches, ``loss_fn(outputs, batch)`` for
            dict batches; None with dict batches takes ``outputs.loss`` (HuggingFace style).
        params: names or shell patterns of the parameters forming θ (None: all trainable).
        batch_loss: optional ``batch_loss(call_model, batch)`` replacing the default
            ``loss_fn(call_model(inputs), targets)``; ``call_model`` runs the model at θ. Use it for
            losses that need derivatives with respect to inputs (PINNs).
        allow_train_mode: evaluate a model that is in training mode with dropout or batch norm.
            Off by default: such a model gives a random or batch-dependent loss.
        memory_budget: bytes (or a string such as ``"2GiB"``) that batched evaluation may use.

    The loss of several batches is their mean weighted by batch size, so it equals the mean
    over all samples for mean-reduced losses.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        params: str | Sequence[str] | None = None,
        *,
        batch_loss: BatchLoss | None = None,
        allow_train_mode: bool = False,
        memory_budget: int | str = "2GiB",
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.batch_loss_fn = batch_loss
        self.allow_train_mode = allow_train_mode
        self.memory_budget = parse_bytes(memory_budget)
        self._check_mode(model, allow_train_mode)
        _check_no_meta(model)

        selected = select_parameters(model, params)
        names = tuple(n for n, _ in selected)
        shapes = tuple(p.shape for _, p in selected)
        offsets, total = [], 0
        for shape in shapes:
            offsets.append(total)
            total += math.prod(shape)
        self.layout = ParameterLayout(names, shapes, tuple(offsets))
        first = selected[0][1]
        self.device, self.dtype = first.device, first.dtype
        self.theta0 = torch.cat([p.detach().reshape(-1) for _, p in selected]).clone()
        #: NaN/inf entries of θ₀ per parameter (the model's own weights); empty when finite.
        self.nonfinite_theta0 = _nonfinite_parameters(self.layout, self.theta0)
        if self.nonfinite_theta0:
            logger.warning("the model's own parameters hold non-finite values (%s): every loss "
                           "that depends on them is NaN/inf, and Hessians and relative extents "
                           "are undefined; they are kept as they are", self.nonfinite_theta0)
        selected_names = set(names)
        self._fixed_params = {
            n: p.detach() for n, p in model.named_parameters() if n not in selected_names
        }
        self._buffers = dict(model.named_buffers())
        self.batches = [_to_device(b, self.device) for b in normalize_data(data)]
        sizes = [_batch_size(b) for b in self.batches]
        self.num_samples = sum(sizes)
        self.weights = [s / self.num_samples for s in sizes]
        if loss_fn is None and batch_loss is None and not all(
            isinstance(b, Mapping) for b in self.batches
        ):
            raise ValueError("loss_fn is required for (inputs, targets) batches, e.g. "
                             "loss_fn=torch.nn.functional.cross_entropy")
        self._vmap_ok = True
        self._bytes_per_point: int | None = None
        self._tuned_chunk: tuple[int, float] | None = None

    # ------------------------------------------------------------------ construction checks
    @staticmethod
    def _check_mode(model: nn.Module, allow_train_mode: bool) -> None:
        stochastic = [
            name or type(m).__name__
            for name, m in model.named_modules()
            if m.training and isinstance(m, _STOCHASTIC_MODULES) and getattr(m, "p", 1.0) != 0
        ]
        if stochastic and not allow_train_mode:
            raise ValueError(
                f"the model is in training mode and has dropout/batch-norm layers "
                f"({', '.join(stochastic[:4])}{', ...' if len(stochastic) > 4 else ''}), so its "
                "loss is random or batch dependent. Call model.eval() before building the "
                "Objective, or pass allow_train_mode=True to analyse the training-mode loss."
            )

    # ------------------------------------------------------------------ basic properties
    @property
    def num_params(self) -> int:
        """Length of θ."""
        return self.layout.num_params

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters forming θ, in order."""
        return self.layout.names

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter views of a flat vector."""
        return self.layout.unflatten(theta)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary used in metadata."""
        return {
            "model": type(self.model).__name__,
            "num_params": self.num_params,
            "params": list(self.param_names),
            "num_samples": self.num_samples,
            "num_batches": len(self.batches),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            **({"nonfinite_theta0": dict(self.nonfinite_theta0)} if self.nonfinite_theta0 else {}),
        }

    # ------------------------------------------------------------------ evaluation
    def _call_model(self, theta: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        params = dict(self._fixed_params)
        params.update(self.layout.unflatten(theta))
        buffers = self._buffers
        if self.allow_train_mode:  # batch norm updates its running stats in place: use copies
            buffers = {n: b.clone() for n, b in buffers.items()}
        return functional_call(self.model, (params, buffers), args, kwargs, strict=False)

    def loss_on(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean loss of one batch at θ (differentiable)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call_model(theta, *args, **kwargs)

        if self.batch_loss_fn is not None:
            return _scalar_loss(self.batch_loss_fn(call, batch), "batch_loss")
        if isinstance(batch, Mapping):
            outputs = call(**batch)
            if self.loss_fn is not None:
                return _scalar_loss(self.loss_fn(outputs, batch), "loss_fn")
            if isinstance(outputs, Mapping):
                loss = outputs.get("loss")
            else:
                loss = getattr(outputs, "loss", None)
            if loss is None:
                raise ValueError("the model output has no .loss: include labels in the batch or "
                                 "pass loss_fn=lambda outputs, batch: ...")
            return _scalar_loss(loss, "outputs.loss")
        *inputs, targets = batch
        if not inputs:
            return _scalar_loss(self.loss_fn(call(targets)), "loss_fn")
        return _scalar_loss(self.loss_fn(call(*inputs), targets), "loss_fn")

    def __call__(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over all batches at θ (θ₀ when omitted); differentiable."""
        theta = self.theta0 if theta is None else self._check_theta(theta)
        return self._loss_all(theta)

    def gradient(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """∇L(θ) as a flat tensor (accumulated batch by batch to bound memory)."""
        theta = (self.theta0 if theta is None else self._check_theta(theta)).detach()
        grad = torch.zeros_like(theta)
        for weight, batch in zip(self.weights, self.batches, strict=True):
            th = theta.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss_on(th, batch), th, allow_unused=True,
                                       materialize_grads=True)
            grad += weight * g
        return grad

    def _check_theta(self, theta: torch.Tensor, batched: bool = False) -> torch.Tensor:
        """θ (or a (B, P) batch with ``batched=True``) on the objective's device and dtype."""
        theta = torch.as_tensor(theta)
        ndim = 2 if batched else 1
        if theta.ndim != ndim:
            want = f"(B, {self.num_params})" if batched else f"({self.num_params},)"
            other = ("one vector: call the objective" if batched
                     else "a (B, P) batch: use objective.batch(thetas)")
            raise ValueError(f"theta must have shape {want}, got {tuple(theta.shape)}; for "
                             f"{other}")
        if theta.shape[-1] != self.num_params:
            raise ValueError(f"theta has length {theta.shape[-1]}, the objective has "
                             f"{self.num_params} parameters ({len(self.param_names)} tensors)")
        if theta.dtype.is_complex:
            raise ValueError(f"theta must be real, got dtype {theta.dtype}")
        return theta.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ batched evaluation
    def bytes_per_point(self) -> int:
        """Estimated memory of evaluating one θ inside a vmapped chunk.

        One copy of θ plus the outputs of every submodule on the largest batch (an upper
        bound on live activations), measured once with forward hooks.
        """
        if self._bytes_per_point is None:
            activation = 0

            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                nonlocal activation
                stack = [output]
                while stack:
                    item = stack.pop()
                    if isinstance(item, torch.Tensor):
                        activation += item.numel() * item.element_size()
                    elif isinstance(item, Mapping):
                        stack.extend(item.values())
                    elif isinstance(item, (list, tuple)):
                        stack.extend(item)

            largest = max(range(len(self.batches)), key=lambda i: self.weights[i])
            handles = [m.register_forward_hook(hook) for m in self.model.modules()]
            try:
                with torch.no_grad():
                    self.loss_on(self.theta0, self.batches[largest])
            finally:
                for h in handles:
                    h.remove()
            itemsize = self.theta0.element_size()
            self._bytes_per_point = int(self.num_params * itemsize + activation)
        return self._bytes_per_point

    def chunk_size(self, memory_budget: int | str | None = None) -> int:
        """How many parameter vectors one vmapped call may take within the memory budget."""
        budget = self.memory_budget if memory_budget is None else parse_bytes(memory_budget)
        per_point = self.bytes_per_point()
        if per_point > budget:
            raise MemoryError(
                f"one evaluation needs about {format_bytes(per_point)} but the memory budget is "
                f"{format_bytes(budget)}; raise memory_budget, use smaller batches, or select "
                "fewer parameters with params=[...]"
            )
        return max(1, budget // per_point)

    def tune_chunk_size(self, max_chunk: int, max_points: int = 512) -> tuple[int, float]:
        """The fastest vmap chunk among 1, 4, 16, … up to ``max_chunk``, and its seconds/point.

        Measured on copies of θ₀, spending at most about ``max_points`` evaluations; chunk 1
        means plain sequential calls. On CPUs a large vmapped batch is often slower per point
        than a small one (or than no vmap at all), so the memory bound alone is a poor choice.
        The result is cached on the objective.
        """
        if self._tuned_chunk is not None and self._tuned_chunk[0] <= max_chunk:
            return self._tuned_chunk
        candidates = [1]
        while candidates[-1] * 4 <= max_chunk:
            candidates.append(candidates[-1] * 4)
        best_chunk, best_time, spent = 1, float("inf"), 0
        with torch.no_grad():
            self._evaluate_block(self.theta0[None], vectorize=False)  # warm-up
            for chunk in candidates:
                reps = max(1, 8 // chunk)
                if chunk > 1 and (spent + chunk * reps > max_points or not self._vmap_ok):
                    break
                block = self.theta0.expand(chunk, -1)
                if chunk > 1:
                    self._evaluate_block(block, vectorize=True)  # warm-up of this shape
                start = time.perf_counter()
                for _ in range(reps):
                    self._evaluate_block(block, vectorize=True)
                per_point = (time.perf_counter() - start) / (chunk * reps)
                spent += chunk * (reps + int(chunk > 1))
                if per_point < best_time:
                    best_chunk, best_time = chunk, per_point
                elif per_point > 1.5 * best_time:
                    break
        logger.info("chunk size %d is fastest (%.3g ms per point)", best_chunk, 1e3 * best_time)
        self._tuned_chunk = (best_chunk, best_time)
        return self._tuned_chunk

    def _loss_all(self, theta: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, batch in zip(self.weights, self.batches, strict=True):
            term = weight * self.loss_on(theta, batch)
            total = term if total is None else total + term
        return total

    def batch(
        self,
        thetas: torch.Tensor,
        *,
        chunk_size: int | None = None,
        vectorize: bool = True,
        progress: bool = False,
    ) -> torch.Tensor:
        """Losses at a (B, P) batch of parameter vectors, without gradients.

        Chunks of ``chunk_size`` vectors (default: as many as the memory budget allows) are
        evaluated together with :func:`torch.func.vmap`; a model that vmap cannot batch falls
        back to one vector at a time (logged once).
        """
        thetas = self._check_theta(thetas, batched=True)
        chunk = chunk_size or self.chunk_size()
        out = torch.empty(thetas.shape[0], dtype=self.dtype, device=self.device)
        bar = progress_bar(thetas.shape[0], "loss", progress)
        with torch.no_grad(), bar:
            for start in range(0, thetas.shape[0], chunk):
                block = thetas[start : start + chunk]
                out[start : start + block.shape[0]] = self._evaluate_block(block, vectorize)
                bar.update(block.shape[0])
        return out

    def _evaluate_block(self, block: torch.Tensor, vectorize: bool) -> torch.Tensor:
        if vectorize and self._vmap_ok and block.shape[0] > 1:
            randomness = "different" if self.allow_train_mode else "error"
            try:
                return vmap(self._loss_all, randomness=randomness)(block)
            except (RuntimeError, NotImplementedError) as err:
                self._vmap_ok = False
                logger.warning("vmap cannot batch this model (%s); evaluating one point at a "
                               "time", str(err).splitlines()[0][:200])
        return torch.stack([self._loss_all(theta) for theta in block])
