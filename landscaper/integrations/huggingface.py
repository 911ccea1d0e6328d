"""HuggingFace ``transformers``: landscapes of models and measurements during ``Trainer.train()``.

- `hf_landscape` computes a `Landscape` of any ``transformers`` model (or any module called as
  ``model(**batch)``) on dict batches, over a subset of its parameters chosen by name patterns.
  The loss is ``outputs.loss`` (labels in the batch) or ``loss_fn(outputs, batch)``.
- `LandscapeCallback` is a ``transformers.TrainerCallback`` that, at chosen global steps,
  records the top Hessian eigenvalues and the SMAD of a small landscape on a fixed probe batch.

Neither ever modifies the model: parameters are swapped in with
`torch.func.functional_call`, and `hf_landscape` does not switch the model to eval
mode for you. A model in training mode with dropout has a random loss and is refused; call
``model.eval()`` first. (The callback, which runs inside training, puts the model in eval mode
for its measurement and restores every module's previous mode afterwards.)

Hessians need second derivatives, which PyTorch's fused scaled-dot-product attention does not
have on CPU; Hessian-vector products therefore run PyTorch's math attention kernel
(`landscaper.hessian.differentiable_attention`), so models loaded with the default
``attn_implementation="sdpa"`` need no reload with eager attention.

``transformers`` is imported only when `LandscapeCallback` is first used
(``pip install transformers accelerate``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import write_json
from .._utils import Stopwatch
from ..directions import eigen_directions
from ..hessian import top_eigenpairs
from ..landscape import Landscape
from ..objective import Objective, select_parameters
from ..summaries import summarize

logger = logging.getLogger(__name__)

__all__ = ["LandscapeCallback", "MeanPoolClassifier", "hf_landscape"]  # noqa: F822 (lazy)

#: `Objective` keyword arguments accepted by `hf_landscape` (the rest go to `Landscape.compute`).
_OBJECTIVE_KWARGS = ("batch_loss", "allow_train_mode")

_INSTALL_HINT = 'pip install "transformers>=4.40" "accelerate>=1.1"'


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            f"the HuggingFace integration needs the transformers package: {_INSTALL_HINT}"
        ) from err
    return transformers


def _dict_batches(batch: Any) -> list[Mapping[str, Any]]:
    """One dict batch (a ``BatchEncoding`` too) or a list of them, checked."""
    batches = [batch] if isinstance(batch, Mapping) else list(batch) if isinstance(
        batch, Iterable) and not isinstance(batch, (str, bytes, torch.Tensor)) else None
    if not batches or not all(isinstance(b, Mapping) for b in batches):
        raise TypeError("batch must be a dict of tensors (e.g. a tokenizer's output with "
                        "'labels') or a non-empty list of such dicts")
    return batches


def _model_info(model: nn.Module) -> dict[str, Any]:
    """JSON-friendly facts about a ``transformers`` model (empty fields for other modules)."""
    config = getattr(model, "config", None)
    return {
        "model_class": type(model).__name__,
        "model_type": getattr(config, "model_type", None),
        "name_or_path": getattr(config, "_name_or_path", None) or None,
        "attn_implementation": getattr(config, "_attn_implementation", None),
    }


def _zero_gradient_params(objective: Objective) -> list[str]:
    """Selected parameters whose gradient at θ₀ is exactly zero (e.g. unused by the loss).

    Their Hessian rows and columns are zero too (for parameters the loss does not use), which
    the Hessian-vector products handle; they are reported so that a subset that cannot move
    the loss is noticed.
    """
    grad = objective.gradient()
    views = objective.unflatten(grad)
    return [name for name in objective.param_names if not bool(views[name].any())]


class MeanPoolClassifier(nn.Module):
    """A sentence encoder (no task head, e.g. all-MiniLM-L6-v2) with mean pooling over the
    attended tokens and a linear head, returning ``{"loss", "logits"}`` as HuggingFace models do.

    Args:
        encoder: a ``transformers`` encoder whose output has ``last_hidden_state``.
        num_labels: classes of the head.
    """

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, **encoder_kwargs: Any) -> dict[str, Any]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              **encoder_kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        logits = self.head((hidden * mask).sum(1) / mask.sum(1))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


def hf_landscape(
    model: nn.Module,
    batch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    params: str | Sequence[str] | None = ("classifier.*",),
    loss_fn: Callable[[Any, Mapping[str, Any]], torch.Tensor] | None = None,
    dims: int | None = 2,
    steps: int | Sequence[int] = 21,
    extent: float | Sequence[Any] = 0.01,
    extent_unit: str = "relative",
    directions: Any = "hessian",
    **kwargs: Any,
) -> Landscape:
    """The loss landscape of a HuggingFace model on dict batches.

    Args:
        model: a ``transformers`` model (any module called as ``model(**batch)`` works), in
            eval mode: a model in training mode with dropout is refused (``model.eval()``
            first). It is never modified.
        batch: a dict batch (a tokenizer's ``BatchEncoding`` included) or a list of them;
            batch losses are averaged weighted by batch size.
        params: names or shell patterns of the parameters forming θ (``"classifier.*"``,
            ``"*.encoder.layer.5.output.dense.*"``); None for every trainable parameter.
        loss_fn: ``loss_fn(outputs, batch) -> scalar``; None takes ``outputs.loss`` (the batch
            then holds ``labels``).
        dims: as for `Landscape.compute`.
        steps: as for `Landscape.compute` (default 21 here).
        extent: as for `Landscape.compute`.
        extent_unit: as for `Landscape.compute`.
        directions: as for `Landscape.compute`.
        **kwargs: ``batch_loss``/``allow_train_mode`` go to `Objective`, everything else
            (``which``, ``seed``, ``memory_budget``, ``checkpoint``, ``progress``, ...) to
            `Landscape.compute`.

    Returns:
        The `Landscape`; ``metadata["huggingface"]`` records the model class and type, its
        attention implementation, the parameter patterns, the selected parameter names,
        their number of tensors and scalars, and those whose gradient at θ₀ is exactly zero
        (``params_zero_gradient``: their Hessian rows are zero).

    Raises:
        ValueError: the model is in training mode with dropout, a pattern matches nothing, or
            the outputs have no ``.loss`` and no ``loss_fn`` was given.
        landscaper.hessian.DoubleBackwardError: Hessian directions of a model with an
            operation that has no second derivative (the message names it and the fix).

    Examples:
        A tiny BERT classifier built from its config (no download), with its default SDPA
        attention; the landscape spans its classification head:

        >>> import torch
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> from landscaper.integrations.huggingface import hf_landscape
        >>> _ = torch.manual_seed(0)
        >>> config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
        ...                     num_attention_heads=2, intermediate_size=32,
        ...                     max_position_embeddings=16, num_labels=2)
        >>> model = BertForSequenceClassification(config).eval()
        >>> batch = {"input_ids": torch.randint(0, 50, (4, 8)),
        ...          "attention_mask": torch.ones(4, 8, dtype=torch.long),
        ...          "labels": torch.tensor([0, 1, 0, 1])}
        >>> land = hf_landscape(model, batch, steps=5, progress=False)
        >>> land.shape, land.direction_kind
        ((5, 5), 'hessian')
        >>> info = land.metadata["huggingface"]
        >>> info["params"], info["num_params"]
        (['classifier.weight', 'classifier.bias'], 34)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batches = _dict_batches(batch)
    objective_kwargs = {key: kwargs.pop(key) for key in _OBJECTIVE_KWARGS if key in kwargs}
    memory_budget = kwargs.get("memory_budget", "2GiB")
    objective = Objective(model, batches, loss_fn, params, memory_budget=memory_budget,
                          **objective_kwargs)
    zero_grad = _zero_gradient_params(objective)
    if zero_grad:
        logger.info("%d selected parameter tensor(s) get no gradient from the loss (their "
                    "Hessian rows are zero): %s", len(zero_grad), ", ".join(zero_grad[:6]))
    land = Landscape.compute(objective=objective, dims=dims, steps=steps, extent=extent,
                             extent_unit=extent_unit, directions=directions, **kwargs)
    patterns = None if params is None else [params] if isinstance(params, str) else list(params)
    land.metadata["huggingface"] = {
        **_model_info(model),
        "param_patterns": patterns,
        "params": list(objective.param_names),
        "num_param_tensors": len(objective.param_names),
        "num_params": objective.num_params,
        "params_zero_gradient": zero_grad,
    }
    return land


# ---------------------------------------------------------------------------- Trainer callback
class _LandscapeCallbackImpl:
    """Record Hessian eigenvalues and SMAD of a small landscape at chosen training steps.

    A ``transformers.TrainerCallback``: pass it to ``Trainer(..., callbacks=[cb])``. At every
    chosen global step (after the optimizer step) it puts the model in eval mode, computes on
    the fixed ``probe_batch`` the top-``k`` Hessian eigenvalues over the ``params`` subset and a
    ``dims``-D landscape (``grid_steps`` points per axis) along the top Hessian directions, and
    then restores every module's previous training flag. Parameters, buffers, ``.grad`` and
    the random number generators are left exactly as they were, so training proceeds
    bit-for-bit as without the callback. Measurements run on the main process only; sharded
    models (FSDP, DeepSpeed ZeRO-3) are not supported.

    Args:
        probe_batch: a dict batch (or list of dict batches) with labels, or with a ``loss_fn``.
        every: measure at every ``every``-th global step (3 → steps 3, 6, 9, ...).
        steps: explicit global steps to measure at (0 measures before training starts);
            combined with ``every`` when both are given.
        params: names or shell patterns of the parameter subset (kept small: every Hessian
            eigenvalue costs tens of Hessian-vector products).
        loss_fn: ``loss_fn(outputs, batch)``; None takes ``outputs.loss``.
        k: number of top eigenvalues recorded.
        dims: the landscape's dimensions, along the top-``dims`` Hessian eigenvectors
            (default 2).
        grid_steps: points per axis (default 11).
        extent: half-width per axis (default ±1% of ‖θ‖); ``extent="auto"`` or an
            `AutoExtent` rescans at every measurement.
        extent_unit: as for `Landscape.compute` (default ``"relative"``).
        seed: Lanczos start-vector seed (a private generator; the global RNG is not touched).
        json_path: when set, the history is rewritten there (atomically) after every
            measurement.
        keep_landscapes: keep each `Landscape` in ``callback.landscapes[step]``.
        **landscape_kwargs: passed to `Landscape.compute` (``memory_budget``, ...).

    Attributes:
        history: one dict per measurement: ``step``, ``epoch``, ``eigenvalues`` (top-k,
            descending), ``smad``, ``smad_normalized``, ``minima`` (number of local minima),
            ``minima_by_radius`` and ``saddle_radius`` (the scale summary around θ), ``extent``
            (as used: with ``extent="auto"``, as chosen at that step),
            ``loss`` (at the current parameters), ``num_params``, ``n_hvp`` and ``seconds``.
    """

    def __init__(
        self,
        probe_batch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        every: int | None = None,
        steps: Iterable[int] | None = None,
        params: str | Sequence[str] | None = ("classifier.*",),
        loss_fn: Callable[[Any, Mapping[str, Any]], torch.Tensor] | None = None,
        k: int = 1,
        dims: int = 2,
        grid_steps: int = 11,
        extent: Any = 0.01,
        extent_unit: str = "relative",
        seed: int = 0,
        json_path: str | os.PathLike[str] | None = None,
        keep_landscapes: bool = False,
        **landscape_kwargs: Any,
    ) -> None:
        if every is None and steps is None:
            raise ValueError("pass every=N (measure every N global steps) and/or steps=[...]")
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.steps = frozenset(int(s) for s in (steps or ()))
        if any(s < 0 for s in self.steps):
            raise ValueError("steps must be non-negative global step numbers")
        if k < 1 or dims < 1:
            raise ValueError(f"k and dims must be at least 1, got k={k}, dims={dims}")
        self.probe_batch = _dict_batches(probe_batch)
        self.every = every
        self.params = params
        self.loss_fn = loss_fn
        self.k = k
        self.dims = dims
        self.grid_steps = grid_steps
        self.extent = extent
        self.extent_unit = extent_unit
        self.seed = seed
        self.json_path = json_path
        self.keep_landscapes = keep_landscapes
        self.landscape_kwargs = {"progress": False, **landscape_kwargs}
        self.history: list[dict[str, Any]] = []
        self.landscapes: dict[int, Landscape] = {}

    # ------------------------------------------------------------------ schedule
    def should_measure(self, step: int) -> bool:
        """Whether global step ``step`` is one of the chosen steps."""
        if step in self.steps:
            return True
        return self.every is not None and step > 0 and step % self.every == 0

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       **kwargs: Any) -> Any:
        if model is not None:
            select_parameters(model, self.params)  # a pattern typo fails now, not mid-run
            if state.global_step == 0 and 0 in self.steps and state.is_world_process_zero:
                self.measure(model, step=0, epoch=state.epoch)
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                    **kwargs: Any) -> Any:
        step = int(state.global_step)
        if model is not None and state.is_world_process_zero and self.should_measure(step):
            self.measure(model, step=step, epoch=state.epoch)
        return control

    # ------------------------------------------------------------------ measurement
    def measure(self, model: nn.Module, step: int, epoch: float | None = None) -> dict[str, Any]:
        """Measure now (in eval mode, restoring the modules' modes and the RNG afterwards),
        append the record to ``history`` and return it."""
        modes = [(module, module.training) for module in model.modules()]
        devices = sorted({p.device.index or 0 for p in model.parameters()
                          if p.device.type == "cuda"})
        watch = Stopwatch()
        try:
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                model.eval()
                record, land = self._measure(model)
        finally:
            for module, training in modes:
                module.training = training
        record = {"step": step, "epoch": epoch, **record,
                  "seconds": watch.seconds}
        self.history.append(record)
        if self.keep_landscapes:
            self.landscapes[step] = land
        logger.info("step %d: top Hessian eigenvalue(s) %s, SMAD %.4g (normalized %.4g), "
                    "%d minima, %.2fs", step, ", ".join(f"{v:.4g}" for v in
                                                        record["eigenvalues"]),
                    record["smad"], record["smad_normalized"], record["minima"],
                    record["seconds"])
        if self.json_path is not None:
            self.to_json(self.json_path)
        return record

    def _measure(self, model: nn.Module) -> tuple[dict[str, Any], Landscape]:
        budget = self.landscape_kwargs.get("memory_budget", "2GiB")
        objective = Objective(model, self.probe_batch, self.loss_fn, self.params,
                              memory_budget=budget)
        k = min(max(self.k, self.dims), objective.num_params)
        eig = top_eigenpairs(objective, k, seed=self.seed)
        dirs = eigen_directions(eig, self.dims)
        land = Landscape.compute(objective=objective, directions=dirs, steps=self.grid_steps,
                                 extent=self.extent, extent_unit=self.extent_unit,
                                 seed=self.seed, **self.landscape_kwargs)
        land.metadata["huggingface"] = {**_model_info(model), "params": list(
            objective.param_names), "num_params": objective.num_params}
        record = {
            "eigenvalues": [float(v) for v in eig.eigenvalues[: self.k]],
            **summarize(land, "history"),
            "loss": land.loss_at_theta0,
            "num_params": objective.num_params,
            "n_hvp": int(eig.n_hvp),
        }
        return record, land

    # ------------------------------------------------------------------ output
    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the settings and ``history`` as strict JSON, atomically (NaN/inf as ``"nan"``/
        ``"inf"``, see `landscaper._files`)."""
        payload = {
            "params": None if self.params is None else (
                [self.params] if isinstance(self.params, str) else list(self.params)),
            "k": self.k,
            "dims": self.dims,
            "grid_steps": self.grid_steps,
            "extent": self.extent,
            "extent_unit": self.extent_unit,
            "history": self.history,
        }
        return write_json(path, payload)


def _build_callback_class() -> type:
    transformers = _require_transformers()
    cls = type("LandscapeCallback", (_LandscapeCallbackImpl, transformers.TrainerCallback), {
        "__doc__": _LandscapeCallbackImpl.__doc__,
        "__module__": __name__,
    })
    return cls


def __getattr__(name: str) -> Any:
    # `LandscapeCallback` subclasses transformers.TrainerCallback, built on first access so
    # that importing this module does not import transformers.
    if name == "LandscapeCallback":
        cls = _build_callback_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
