"""The loss of a model as a function of one flat parameter vector θ.

Everything in landscaper (Hessian-vector products, grids, jumps) is a function of θ.
`Objective` builds it once from ``(model, data, loss_fn)`` with
`torch.func.functional_call`, so the user's module is never modified: parameters are
swapped in for the duration of one call and restored by PyTorch, also after an exception.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from ._utils import format_bytes, parse_bytes, progress_bar
from .batches import (
    Batch,
    SampleCount,
    all_tensors,
    check_consistent_dtypes,
    floating_dtypes,
    map_tensors,
    normalize_data,
    prepare,
    sample_counts,
)
from .frozen import EntryCall, FrozenCalls, record
from .losses import fast_loss

logger = logging.getLogger(__name__)

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

    def unflatten(self, flat: torch.Tensor, slices: bool = False) -> dict[str, torch.Tensor]:
        """Views of ``flat`` (length P) shaped like each parameter, keyed by name.

        One ``split`` by default: autograd returns the gradient of a split as one
        concatenation, where each slice's backward fills a zero vector of length P (on
        all-MiniLM-L6-v2's 105 tensors that made a Hessian-vector product 8x slower).
        ``slices=True`` gives one slice per parameter instead, for a forward that writes to
        its parameters in place (``nn.Embedding(max_norm=...)``), which autograd refuses on
        the views of one split."""
        sizes = [math.prod(shape) for shape in self.shapes]
        if slices:
            starts = self.offsets
            pieces = tuple(flat[a:a + n] for a, n in zip(starts, sizes, strict=True))
        else:
            pieces = flat.split(sizes)
        return {name: piece.view(shape)
                for name, shape, piece in zip(self.names, self.shapes, pieces, strict=True)}

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


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """Second names of tied parameters (one `Parameter` registered twice) → their first name.

    ``model.named_parameters()`` lists a tied parameter once, under the first name it was
    registered with (e.g. ``embed.weight`` for an output layer that reuses it as
    ``lm_head.weight``); the other names are these aliases.
    """
    first = {id(p): n for n, p in model.named_parameters()}
    return {n: first[id(p)] for n, p in model.named_parameters(remove_duplicate=False)
            if first[id(p)] != n}


def select_parameters(
    model: nn.Module, params: str | Sequence[str] | None = None
) -> list[tuple[str, nn.Parameter]]:
    """The parameters that form θ, in ``model.named_parameters()`` order.

    Args:
        model: the module.
        params: None for every parameter with ``requires_grad``; otherwise one or more names
            or shell-style patterns (``"encoder.layer.5.*"``, ``"classifier.*"``). A tied
            parameter may be named by any of its names; it enters θ once, under its first.
    """
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
        frozen = len(named) - len(chosen)
        if frozen:
            logger.info("leaving %d frozen parameter tensors out of theta", frozen)
    else:
        patterns = [params] if isinstance(params, str) else list(params)
        if not patterns or not all(isinstance(pat, str) for pat in patterns):
            raise TypeError(f"params must be a name/pattern or a non-empty list of them, got "
                            f"{params!r}")
        aliases = tied_aliases(model)
        names = [n for n, _ in named] + list(aliases)

        def matches(name: str) -> list[str]:
            return [pat for pat in patterns if fnmatch.fnmatchcase(name, pat)]

        unmatched = [pat for pat in patterns if not any(matches(n) for n in names)]
        if unmatched:
            sample = ", ".join(n for n, _ in named[:8])
            raise ValueError(
                f"parameter pattern(s) {unmatched} match no parameter of the model; "
                f"names look like: {sample}"
            )
        via_alias = {first for alias, first in aliases.items() if matches(alias)}
        for alias, first in aliases.items():
            if matches(alias) and not matches(first):
                logger.info("%s is tied to %s (one Parameter): it enters theta once, as %s",
                            alias, first, first)
        chosen = [(n, p) for n, p in named if matches(n) or n in via_alias]
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


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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


#: Parameter dtypes whose arithmetic is too coarse for Hessians and Lanczos: such models are
#: evaluated in float32 copies by default (see ``compute_dtype``).
LOW_PRECISION = (torch.float16, torch.bfloat16)


def resolve_compute_dtype(model_dtype: torch.dtype,
                          compute_dtype: torch.dtype | str | None) -> torch.dtype:
    """The dtype losses and curvature are computed in: the model's own, or float32 for
    float16/bfloat16 models, unless the caller chooses one."""
    if compute_dtype is None:
        return torch.float32 if model_dtype in LOW_PRECISION else model_dtype
    if isinstance(compute_dtype, str):
        compute_dtype = getattr(torch, compute_dtype.removeprefix("torch."), None)
    if not isinstance(compute_dtype, torch.dtype) or not compute_dtype.is_floating_point:
        raise ValueError(f"compute_dtype must be a real floating torch dtype such as "
                         f"torch.float32 or torch.float64, got {compute_dtype!r}")
    return compute_dtype


def random_loss_message(cause: str) -> str:
    """The refusal of a model whose loss is random, whatever makes it so."""
    return (f"{cause}, so its loss is random or batch dependent. Call model.eval() before "
            "building the Objective, or pass allow_train_mode=True to analyse the training-mode "
            "loss.")


def _rng_states(device: torch.device) -> list[torch.Tensor]:
    states = [torch.random.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _moved(name: str, new: str) -> None:
    warnings.warn(f"Objective.{name} is deprecated: grid planning moved to {new}",
                  DeprecationWarning, stacklevel=3)


@contextmanager
def _without_tf32_convolutions() -> Iterator[None]:
    """cuDNN convolutions in full float32 while the body runs (TF32, on by default, keeps
    about 3 digits: too few for curvature); the caller's setting is restored."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def _warn_reduced_matmul_precision(device: torch.device, dtype: torch.dtype) -> None:
    if (device.type == "cuda" and dtype == torch.float32
            and torch.get_float32_matmul_precision() != "highest"):
        logger.warning("torch.get_float32_matmul_precision() is %r: float32 matrix products on "
                       "the GPU run in reduced precision (TF32/bfloat16), so losses and "
                       "curvature keep about 3 digits; call "
                       "torch.set_float32_matmul_precision('highest') or pass "
                       "compute_dtype=torch.float64", torch.get_float32_matmul_precision())


def _same_value(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality of two loss values (NaN equals NaN)."""
    a, b = a.detach().reshape(-1), b.detach().reshape(-1)
    return bool(torch.equal(a, b) or (torch.isnan(a).all() and torch.isnan(b).all()))


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
        allow_train_mode: evaluate a model whose loss is random or batch dependent: training
            mode with dropout or batch norm, or a forward that draws random numbers. Off by
            default.
        memory_budget: bytes (or a string such as ``"2GiB"``) that batched evaluation may use.
        sample_count: how many samples each batch holds, for the weighted mean: None reads the
            targets (tuple batches) or ``labels`` (dict batches), see
            `landscaper.batches.count_samples`; or a function ``batch -> int``; or one count per
            batch.
        compute_dtype: dtype of θ and of the arithmetic. Default: the parameters' dtype, but
            float32 for float16/bfloat16 models, whose rounding would swamp curvature (their
            weights, floating buffers and the data in their dtype are upcast exactly, into
            copies). ``torch.float64`` gives double-precision Hessians of any model.
        reuse_frozen: compute once per batch the submodule calls that θ does not change (all
            of an encoder below the first selected layer, say) and reuse them at every point
            and Hessian-vector product (see `landscaper.frozen`); False evaluates everything
            every time. Off by itself, with one log line, where it cannot be shown safe.

    The loss of several batches is their mean weighted by sample count (label tokens for
    integer label arrays, −100 left out), so it equals the loss of all the data as one batch for
    mean-reduced losses (a sum-reduced loss gives the weighted mean of the batch sums).

    At construction the loss at θ₀ is evaluated twice on the smallest batch: a model that
    draws random numbers or gives two different values is refused (unless
    ``allow_train_mode``), and data the model cannot take fail here, before any expensive work.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from landscaper import Objective
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> objective = Objective(model, (x, y), nn.functional.cross_entropy)
        >>> objective.num_params, objective.param_names
        (67, ('0.weight', '0.bias', '2.weight', '2.bias'))

        Called without θ it is the loss at the model's own parameters θ₀:

        >>> bool(torch.isclose(objective(), nn.functional.cross_entropy(model(x), y)))
        True
        >>> objective.gradient().shape
        torch.Size([67])

        Several parameter vectors at once, one loss each (the model itself never changes):

        >>> thetas = objective.theta0 + 0.01 * torch.randn(5, objective.num_params)
        >>> objective.batch(thetas).shape
        torch.Size([5])
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
        sample_count: SampleCount | None = None,
        compute_dtype: torch.dtype | str | None = None,
        reuse_frozen: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}; wrap "
                            "a function in an nn.Module whose parameters it uses")
        for name, fn in (("loss_fn", loss_fn), ("batch_loss", batch_loss)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.model = model
        self.loss_fn = loss_fn
        #: the same loss in a faster form for evaluation without gradients, or None
        #: (`landscaper.losses`: cross-entropy over few classes on CPUs)
        self._fast_loss = fast_loss(loss_fn)
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
        #: dtype of the model's selected parameters; `dtype` is the one computed in.
        self.model_dtype = first.dtype
        self.device = first.device
        self.dtype = resolve_compute_dtype(first.dtype, compute_dtype)
        if self.dtype != self.model_dtype:
            logger.info("the model's parameters are %s: losses and curvature are computed in %s "
                        "copies of its parameters, floating buffers and %s data (the model is "
                        "not changed)", _name(self.model_dtype), _name(self.dtype),
                        _name(self.model_dtype))
        _warn_reduced_matmul_precision(self.device, self.dtype)
        self.theta0 = torch.cat([p.detach().reshape(-1) for _, p in selected]).to(self.dtype)
        #: NaN/inf entries of θ₀ per parameter (the model's own weights); empty when finite.
        self.nonfinite_theta0 = _nonfinite_parameters(self.layout, self.theta0)
        if self.nonfinite_theta0:
            logger.warning("the model's own parameters hold non-finite values (%s): every loss "
                           "that depends on them is NaN/inf, and Hessians and relative extents "
                           "are undefined; they are kept as they are", self.nonfinite_theta0)
        selected_names = set(names)
        self._fixed_params = {n: self._computed(p.detach()) for n, p in model.named_parameters()
                              if n not in selected_names}
        # copies: a forward that updates buffers in place (counters, EMAs, observers,
        # spectral norm's power iteration) must never reach the user's model
        self._buffers = {n: self._computed(b).clone() for n, b in model.named_buffers()}
        #: buffers that forward updates in place: every evaluation starts from the model's
        self._reset_buffers: frozenset[str] = frozenset()
        #: whether forward modifies its inputs in place (each evaluation gets copies then)
        self._copy_inputs = False
        #: whether forward writes to its parameters in place (each gets its own slice of θ)
        self._writes_params = False
        self.batches = [prepare(b, self.device, self.model_dtype, self.dtype)
                        for b in normalize_data(data)]
        check_consistent_dtypes(self.batches)
        if loss_fn is None and batch_loss is None and not all(
            isinstance(b, Mapping) for b in self.batches
        ):
            raise ValueError("loss_fn is required for (inputs, targets) batches, e.g. "
                             "loss_fn=torch.nn.functional.cross_entropy")
        counts = sample_counts(self.batches, sample_count, supervised=batch_loss is None)
        #: samples per batch (None: one batch whose tensors disagree on what a sample is).
        self.sample_counts = counts
        self.num_samples = None if counts is None else sum(counts)
        self.weights = [1.0] if counts is None else [c / self.num_samples for c in counts]
        self._vmap_ok = True
        #: per batch, the submodule calls θ does not change, answered from a record (recorded
        #: at the batch's first evaluation outside a vmap; see `_record_frozen`)
        self._frozen: list[FrozenCalls | None] = [None] * len(self.batches)
        self._batch_index = {id(b): i for i, b in enumerate(self.batches)}
        self._unrecorded: set[int] = set()
        self._frozen_bytes = 0
        #: whether the records of what θ does not change are too large to keep (a grid then
        #: records each batch once per chunk of points; see `landscaper.subspace`)
        self.streams_frozen = False
        self._check_first_evaluation(reuse_frozen)

    def _computed(self, tensor: torch.Tensor) -> torch.Tensor:
        """A floating tensor of the model's dtype in the compute dtype (itself otherwise)."""
        return tensor.to(self.dtype) if tensor.dtype == self.model_dtype else tensor

    # ------------------------------------------------------------------ construction checks
    @staticmethod
    def _check_mode(model: nn.Module, allow_train_mode: bool) -> None:
        stochastic = [
            name or type(m).__name__
            for name, m in model.named_modules()
            if m.training and isinstance(m, _STOCHASTIC_MODULES) and getattr(m, "p", 1.0) != 0
        ]
        if stochastic and not allow_train_mode:
            raise ValueError(random_loss_message(
                f"the model is in training mode and has dropout/batch-norm layers "
                f"({', '.join(stochastic[:4])}{', ...' if len(stochastic) > 4 else ''})"))

    def _check_first_evaluation(self, reuse_frozen: bool) -> None:
        """Evaluate θ₀ on the smallest batch: note in-place updates, refuse randomness, explain
        dtype errors, and start reusing what θ does not change if asked and safe.

        The first evaluation runs on a copy of the batch and on the buffer copies: a forward
        that modifies its inputs gets copies of the data at every evaluation from then on, and
        buffers it updates are reset to the model's values at every evaluation, so each loss
        is a function of θ alone and neither the data nor the model ever change. Then the loss
        is evaluated once more (recording that batch's reusable calls, `_start_reuse`): a
        random number drawn, or a different value, is refused. The random number generators
        are forked, so the caller's random stream is untouched.
        """
        smallest = min(range(len(self.batches)), key=lambda i: sum(
            t.numel() for t in all_tensors(self.batches[i])))
        batch = self.batches[smallest]
        probe = map_tensors(batch, torch.clone)
        inputs = [t._version for t in all_tensors(probe)]
        buffers = {n: b._version for n, b in self._buffers.items()}
        theta_version = self.theta0._version
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                before = _rng_states(self.device)
                first = self.loss_on(self.theta0, probe)
                drew = any(not torch.equal(a, b) for a, b in
                           zip(before, _rng_states(self.device), strict=True))
                self._note_in_place(probe, inputs, buffers)
                self._writes_params = self.theta0._version != theta_version
                if self._writes_params:
                    logger.info("the model's forward writes to its parameters in place (e.g. "
                                "nn.Embedding with max_norm): each parameter is passed as its "
                                "own slice of θ, which gradients and Hessian-vector products "
                                "accept at the cost of one length-P fill per parameter tensor")
                if reuse_frozen:
                    self._start_reuse()
                second = self.loss_on(self.theta0, batch)
        except RuntimeError as err:
            raise self._explain_failure(err, batch) from err
        if self.allow_train_mode:
            return
        if drew:
            raise ValueError(random_loss_message(
                "the model draws random numbers in forward (functional dropout, torch.rand, "
                "stochastic depth, ...)"))
        if not _same_value(first, second):
            gap, scale = float((first - second).abs()), float(torch.maximum(first.abs(),
                                                                             second.abs()))
            if gap <= 64 * torch.finfo(self.dtype).eps * scale:  # e.g. CUDA atomics
                logger.warning("the loss at θ₀ differs in its last bits between two calls "
                               "(%.17g, %.17g): non-deterministic kernels; values agree to "
                               "rounding", float(first), float(second))
                return
            raise ValueError(random_loss_message(
                f"the loss at the same θ differs between two calls ({float(first):.17g} then "
                f"{float(second):.17g})"))

    def _note_in_place(self, probe: Batch, inputs: list[int], buffers: dict[str, int]) -> None:
        """After the first evaluation: copy inputs / reset buffers that forward changed."""
        if any(t._version != v for t, v in zip(all_tensors(probe), inputs, strict=True)):
            self._copy_inputs = True
            logger.info("the model's forward modifies its inputs in place: every evaluation "
                        "gets copies of the data (yours are never changed)")
        changed = frozenset(n for n, b in self._buffers.items() if b._version != buffers[n])
        if changed:
            self._reset_buffers = changed
            originals = dict(self.model.named_buffers())
            for name in changed:  # back to the model's values, for every evaluation
                self._buffers[name] = self._computed(originals[name]).clone()
            logger.info("the model's forward updates buffers in place (%s): every evaluation "
                        "starts from the model's values, which are never changed",
                        ", ".join(sorted(changed)[:4]))

    def _explain_failure(self, err: RuntimeError, batch: Batch) -> Exception:
        """The error to raise when the first evaluation fails: the cause named where it is a
        dtype the Objective chose or the data bring, the original error otherwise."""
        text = str(err).splitlines()[0][:160]
        mismatch = sorted(map(_name, floating_dtypes([batch]) - {self.dtype}))
        if mismatch:
            return ValueError(
                f"evaluating the loss at θ₀ failed ({text}): the data hold {', '.join(mismatch)}"
                f" tensors but the model computes in {_name(self.dtype)}; convert the data (e.g. "
                f"x.to(torch.{_name(self.dtype)})) or the model (model.to(torch.{mismatch[0]}))")
        if self.dtype != self.model_dtype and "dtype" in text.lower():
            return ValueError(
                f"evaluating the loss at θ₀ in {_name(self.dtype)} copies of this "
                f"{_name(self.model_dtype)} model failed ({text}): its forward converts to "
                f"{_name(self.model_dtype)} itself. Pass compute_dtype=torch."
                f"{_name(self.model_dtype)} to evaluate in its own precision (losses and grids; "
                "Hessians need float32 or float64), or remove the hard-coded conversion")
        return err

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
            "dtype": _name(self.dtype),
            **({"model_dtype": _name(self.model_dtype)} if self.model_dtype != self.dtype
               else {}),
            "device": str(self.device),
            **({"nonfinite_theta0": dict(self.nonfinite_theta0)} if self.nonfinite_theta0 else {}),
        }

    # ------------------------------------------------------------------ reduction hooks
    #: Whether this process holds all the data (a grid evaluates every point on all of it);
    #: False for an objective over one shard of the data (`DistributedObjective`).
    holds_all_data = True

    def reduce_mean(self, local: torch.Tensor) -> torch.Tensor:
        """Turn a mean over this process's samples into the mean over all samples: the
        identity here; an objective over a shard of the data combines the shards."""
        return local

    def together(self, compute: Callable[[], Any]) -> Any:
        """Run ``compute``: the hook where an objective spread over several processes makes
        one process's error every process's error (so none waits in a reduction)."""
        return compute()

    def lockstep(self, values: torch.Tensor) -> torch.Tensor:
        """The values every process decides on: this process's own here; one spread over
        several processes uses rank 0's, so their decisions never diverge in the last bit."""
        return values

    # ------------------------------------------------------------------ evaluation
    def _call_model(self, theta: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        params = dict(self._fixed_params)
        params.update(self.layout.unflatten(theta, slices=self._writes_params))
        buffers = self._buffers
        if self.allow_train_mode:  # batch norm updates its running stats in place: use copies
            buffers = {n: b.clone() for n, b in buffers.items()}
        elif self._reset_buffers:
            buffers = {n: b.clone() if n in self._reset_buffers else b
                       for n, b in buffers.items()}
        with self.full_precision():
            return functional_call(self.model, (params, buffers), args, kwargs, strict=False)

    def full_precision(self) -> AbstractContextManager[None]:
        """A context in which this objective's kernels keep full precision: on a GPU, cuDNN
        convolutions without TF32 (forward here, and the backward passes of gradients and
        Hessian-vector products, which run outside the forward); nothing to do elsewhere."""
        return _without_tf32_convolutions() if self.device.type == "cuda" else nullcontext()

    def _start_reuse(self) -> None:
        """Reuse what θ does not change, unless that cannot be shown safe (one log line)."""
        why = ("the loss is random (allow_train_mode)" if self.allow_train_mode else
               "forward modifies its inputs or buffers in place"
               if self._copy_inputs or self._reset_buffers else
               "the model is compiled" if hasattr(self.model, "_orig_mod") else None)
        if why is not None:
            logger.info("evaluating every submodule at every point: %s", why)
            return
        self._unrecorded = set(range(len(self.batches)))

    def _stop_reuse(self, why: str) -> None:
        self._frozen = [None] * len(self.batches)
        self._unrecorded = set()
        self.streams_frozen = False
        logger.info("evaluating every submodule at every point from now on: %s", why)

    def record_frozen(self) -> None:
        """Record now what θ does not change for every batch not recorded yet (otherwise done
        at each batch's first evaluation outside a vmap), e.g. before measuring an evaluation."""
        for index in sorted(self._unrecorded):
            self._record_frozen(index)

    def frozen_record(self, index: int) -> FrozenCalls | None:
        """Batch ``index``'s submodule calls that depend on neither θ nor inputs that require
        grad (see `landscaper.frozen`), recorded by one evaluation at θ₀ with θ requiring grad;
        None when there are none. Not kept: `loss_on` uses the records it keeps."""
        theta = self.theta0.detach().clone().requires_grad_(True)
        batch = self.batches[index]
        with torch.enable_grad():
            return record(self.model, lambda: self._loss_fresh(theta, batch))

    def _record_frozen(self, index: int) -> None:
        """Record batch ``index`` (`frozen_record`) and keep it while all records fit a
        quarter of the memory budget; beyond that none are kept, and grids stream them
        (`streams_frozen`)."""
        self._unrecorded.discard(index)
        found = self.frozen_record(index)
        if found is None:
            return
        self._frozen_bytes += found.nbytes
        if self._frozen_bytes > self.memory_budget // 4:
            held = format_bytes(self._frozen_bytes)
            self._frozen = [None] * len(self.batches)
            self._unrecorded = set()
            self.streams_frozen = True
            logger.info("the outputs θ does not change take %s, more than a quarter of the "
                        "memory budget %s: none are kept; a grid records each batch once per "
                        "chunk of points instead, and Hessian-vector products evaluate every "
                        "submodule", held, format_bytes(self.memory_budget))
            return
        self._frozen[index] = found
        if found.n_calls:
            logger.info("batch %d: reusing %d submodule outputs θ does not change (%s), "
                        "computed once", index, found.n_calls, format_bytes(found.nbytes))

    def batch_index(self, batch: Batch) -> int | None:
        """Position of ``batch`` in `batches` (None for a batch that is not one of them)."""
        index = self._batch_index.get(id(batch))
        if index is not None and self.batches[index] is not batch:  # an id reused by another
            return None
        return index

    def loss_on(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean loss of one batch at θ (differentiable). Submodule calls θ does not change are
        answered from the record of that batch (`landscaper.frozen`) when there is one."""
        index = self.batch_index(batch)
        if index in self._unrecorded and torch._C._functorch.peek_interpreter_stack() is None:
            self._record_frozen(index)  # outside vmap: the recording sees plain tensors
        frozen = None if index is None else self._frozen[index]
        return self.loss_replayed(theta, batch, frozen)

    def loss_replayed(self, theta: torch.Tensor, batch: Batch, frozen: FrozenCalls | None,
                      answers: Mapping[EntryCall, Callable[..., Any]] | None = None
                      ) -> torch.Tensor:
        """Mean loss of ``batch`` at θ with ``frozen`` (its record, or None) replayed, and
        ``answers`` for some of its entry calls; a replay that deviates from the record stops
        all reuse (one warning) and this evaluation is redone in full."""
        if frozen is None or not (frozen.n_calls or answers):
            return self._loss_fresh(theta, batch)
        with frozen.replaying(answers):
            loss = self._loss_fresh(theta, batch)
        if frozen.deviated is None:
            return loss
        logger.warning("stopped reusing submodule outputs (%s)", frozen.deviated)
        self._stop_reuse(frozen.deviated)
        return self._loss_fresh(theta, batch)

    def _loss_fresh(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean loss of one batch at θ, every submodule evaluated."""

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call_model(theta, *args, **kwargs)

        if self._copy_inputs:
            batch = map_tensors(batch, torch.clone)

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
        outputs = call(*inputs)
        if self._fast_loss is not None:
            loss = self._fast_loss(outputs, targets)
            if loss is not None:
                return loss
        return _scalar_loss(self.loss_fn(outputs, targets), "loss_fn")

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
            with self.full_precision():
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

    # ------------------------------------------------------------------ planning (moved)
    def bytes_per_point(self) -> int:
        """Deprecated: use `landscaper.grid.plan.bytes_per_point` (grid planning left the
        objective)."""
        from .grid import plan

        _moved("bytes_per_point", "landscaper.grid.plan.bytes_per_point(objective)")
        return plan.bytes_per_point(self)

    def chunk_size(self, memory_budget: int | str | None = None) -> int:
        """Deprecated: use `landscaper.grid.plan.max_chunk_size`."""
        from .grid import plan

        _moved("chunk_size", "landscaper.grid.plan.max_chunk_size(objective, budget)")
        return plan.max_chunk_size(self, memory_budget)

    def tune_chunk_size(self, max_chunk: int, max_points: int = 512) -> tuple[int, float]:
        """Deprecated: use `landscaper.grid.plan.tune_chunk_size`."""
        from .grid import plan

        _moved("tune_chunk_size", "landscaper.grid.plan.tune_chunk_size(objective, ...)")
        return plan.tune_chunk_size(self, max_chunk, max_points)

    # ------------------------------------------------------------------ batched evaluation
    @property
    def vectorizes(self) -> bool:
        """Whether `batch` evaluates several θ in one vmapped call (False once vmap failed on
        this model: it then evaluates one θ at a time)."""
        return self._vmap_ok

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
        evaluated together with `torch.func.vmap`; a model that vmap cannot batch falls
        back to one vector at a time (logged once).
        """
        thetas = self._check_theta(thetas, batched=True)
        return self.evaluate_rows(self._loss_all, thetas, chunk_size=chunk_size,
                                  vectorize=vectorize, progress=progress)

    def evaluate_rows(self, loss: Callable[..., torch.Tensor], *rows: torch.Tensor,
                      chunk_size: int | None = None, vectorize: bool = True,
                      progress: bool = False) -> torch.Tensor:
        """``loss(*row)`` for every row of the tensors ``rows`` (equal first dimensions),
        without gradients, vmapped in chunks as `batch` does (``loss`` evaluates this objective
        at a point the row describes)."""
        from .grid.plan import max_chunk_size

        chunk = chunk_size or max_chunk_size(self)
        n = rows[0].shape[0]
        out = torch.empty(n, dtype=self.dtype, device=self.device)
        bar = progress_bar(n, "loss", progress)
        with torch.no_grad(), bar:
            for start in range(0, n, chunk):
                block = [r[start : start + chunk] for r in rows]
                out[start : start + block[0].shape[0]] = self._evaluate_block(
                    loss, block, vectorize)
                bar.update(block[0].shape[0])
        return out

    def _evaluate_block(self, loss: Callable[..., torch.Tensor], block: list[torch.Tensor],
                        vectorize: bool) -> torch.Tensor:
        if vectorize and self._vmap_ok and block[0].shape[0] > 1:
            randomness = "different" if self.allow_train_mode else "error"
            try:
                return vmap(loss, randomness=randomness)(*block)
            except (RuntimeError, NotImplementedError) as err:
                if "randomness" in str(err) and not self.allow_train_mode:
                    raise ValueError(random_loss_message(
                        "the model draws random numbers in forward (functional dropout, "
                        "torch.rand, stochastic depth, ...)")) from err
                self._vmap_ok = False
                logger.warning("vmap cannot batch this model (%s); evaluating one point at a "
                               "time", str(err).splitlines()[0][:200])
        return torch.stack([loss(*row) for row in zip(*block, strict=True)])
