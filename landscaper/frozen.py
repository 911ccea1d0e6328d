"""Reusing the computation θ does not change: submodule outputs recorded once per batch.

When θ is a subset of the parameters (a classifier head, the last block of an encoder), every
submodule call whose inputs and output do not depend on θ gives the same output at every grid
point and in every Hessian-vector product. `record` runs the model once at θ₀ with θ requiring
grad and keeps, per batch, the output of each outermost such call (a clone: later in-place
updates cannot reach it); `FrozenCalls.replaying` then answers those calls from the record and
runs everything else.

Safe by construction, and checked: a call is reused only if no tensor among its inputs and
outputs required grad in the recording (so neither θ nor an input that requires grad reaches
it, whatever the module reads); every replay must make the recorded sequence of calls with
tensors of the recorded shapes, and no recorded output may be modified in place. A replay
that deviates says so (`FrozenCalls.deviated`) and the caller evaluates again without it.

The first calls θ reaches are often linear in their own parameters with an input θ does not
change (a `Linear` on the frozen encoder's output, the first convolution on the images): the
record names them (`FrozenCalls.entries`), so that in a subspace θ₀ + Σᵢ aᵢ·dᵢ their output
can be built as y₀ + Σᵢ aᵢ·yᵢ from k + 1 products computed once (`landscaper.subspace`).
Calls under a functorch transform or carrying forward-mode tangents (input derivatives by
`torch.func.jvp`) are never reused nor named.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

logger = logging.getLogger(__name__)


#: Modules whose output is linear in their parameters jointly for a fixed input (an input θ
#: does not change makes their output affine in θ); ``Embedding`` only without ``max_norm``.
LINEAR_IN_PARAMETERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                        nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Embedding)


def _tensors(*values: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(values)[0] if isinstance(t, torch.Tensor)]


def _plain(tensor: torch.Tensor) -> bool:
    """Neither wrapped by a functorch transform nor carrying a forward-mode tangent."""
    if torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        return False
    return torch.autograd.forward_ad.unpack_dual(tensor).tangent is None


def _linear_in_parameters(module: nn.Module) -> bool:
    """A leaf of `LINEAR_IN_PARAMETERS` without hooks of its own (they could change what
    forward gives)."""
    if not isinstance(module, LINEAR_IN_PARAMETERS) or next(module.children(), None) is not None:
        return False
    if isinstance(module, nn.Embedding) and module.max_norm is not None:
        return False  # renormalises its weight in place
    return not (module._forward_hooks or module._forward_pre_hooks)


def _shapes(args: Any, kwargs: Any) -> tuple[tuple[int, ...], ...]:
    if not kwargs and all(isinstance(a, torch.Tensor) for a in args):  # the usual call
        return tuple(tuple(a.shape) for a in args)
    return tuple(tuple(t.shape) for t in _tensors(args, kwargs))


@dataclass
class _Frame:
    """One submodule call seen while recording."""

    module: nn.Module
    parent: _Frame | None
    shapes: tuple[tuple[int, ...], ...] = ()
    frozen: bool = False
    entry: bool = False
    output: Any = None
    children: list[_Frame] = field(default_factory=list)


@dataclass
class _Replay:
    """The calls of one module a replay makes: recorded output (or None: run it) and the
    input shapes each call must have."""

    calls: list[tuple[Any, tuple[tuple[int, ...], ...]]]
    position: int = 0


#: One call of `FrozenCalls.entries`: the module and which of its calls (0 for the first).
EntryCall = tuple[nn.Module, int]


class FrozenCalls:
    """The reusable submodule calls of one batch (see the module docstring).

    Attributes:
        nbytes: memory held by the recorded outputs.
        n_calls: outermost calls answered from the record at each evaluation.
        entries: calls of `LINEAR_IN_PARAMETERS` modules that θ reaches only through their
            own parameters (their input does not depend on θ), in call order.
        deviated: why the last replay did not follow the record (None when it did).
    """

    def __init__(self, replays: dict[nn.Module, _Replay], nbytes: int, n_calls: int,
                 entries: list[EntryCall] | None = None) -> None:
        self._replays = replays
        self.nbytes = nbytes
        self.n_calls = n_calls
        self.entries = entries or []
        self.deviated: str | None = None
        self._versions = [(t, t._version) for r in replays.values() for out, _ in r.calls
                          if out is not None for t in _tensors(out)]

    @contextmanager
    def replaying(self, answers: Mapping[EntryCall, Callable[..., Any]] | None = None
                  ) -> Iterator[None]:
        """Answer the recorded calls from the record while the body runs (the modules'
        ``forward`` attributes are restored afterwards, also after an exception).

        Args:
            answers: for some `entries`, ``answer(forward, *args)`` giving the call's output
                (called instead of the module's ``forward``, which it receives, when the
                input shapes are the recorded ones).
        """
        self.deviated = None
        answers = answers or {}
        saved = {m: m.__dict__.get("forward") for m in self._replays}
        try:
            for module, replay in self._replays.items():
                replay.position = 0
                module.forward = self._answering(module, replay, module.forward, answers)
            yield
        finally:
            for module, own in saved.items():
                if own is None:
                    del module.forward
                else:
                    module.forward = own
        for module, replay in self._replays.items():
            if replay.position != len(replay.calls):
                self.deviated = (f"{type(module).__name__} was called {replay.position} times, "
                                 f"not {len(replay.calls)}")
        if any(t._version != v for t, v in self._versions):
            self.deviated = "the model modified a reused output in place"

    def _answering(self, module: nn.Module, replay: _Replay, forward: Callable[..., Any],
                   answers: Mapping[EntryCall, Callable[..., Any]]) -> Callable[..., Any]:
        def answer(*args: Any, **kwargs: Any) -> Any:
            i = replay.position
            replay.position += 1
            if i < len(replay.calls):
                output, shapes = replay.calls[i]
                given = answers.get((module, i))
                if output is not None or given is not None:
                    if _shapes(args, kwargs) != shapes:
                        self.deviated = f"{type(module).__name__} got inputs of other shapes"
                    elif output is not None:
                        return output
                    else:
                        return given(forward, *args, **kwargs)
            return forward(*args, **kwargs)

        return answer


def record(model: nn.Module, run: Callable[[], Any]) -> FrozenCalls | None:
    """Run ``run()`` (one evaluation at θ₀ with θ requiring grad) and record the outermost
    submodule calls that do not depend on θ; None when there are none."""
    root = _Frame(model, None)
    stack = [root]

    def before(module: nn.Module, args: Any, kwargs: Any) -> None:
        frame = _Frame(module, stack[-1], _shapes(args, kwargs))
        stack[-1].children.append(frame)
        stack.append(frame)

    def after(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        frame = stack.pop()
        outputs, inputs = _tensors(output), _tensors(args, kwargs)
        plain = (torch._C._functorch.peek_interpreter_stack() is None
                 and all(_plain(t) for t in (*outputs, *inputs)))
        # a container pytree cannot see is never reused
        frame.frozen = plain and bool(outputs) and not any(
            t.requires_grad for t in (*outputs, *inputs))
        frame.entry = (plain and not kwargs and len(args) == 1 and len(inputs) == 1
                       and isinstance(output, torch.Tensor) and output.requires_grad
                       and not inputs[0].requires_grad and module in linear)
        if frame.frozen:  # outermost so far: its children's outputs are not needed
            frame.output = tree_map(lambda t: t.detach().clone()
                                    if isinstance(t, torch.Tensor) else t, output)
            for child in frame.children:
                child.output = None

    modules = [m for m in model.modules() if m is not model]
    linear = {m for m in modules if _linear_in_parameters(m)}  # before our hooks are added
    handles = [h for m in modules for h in (
        m.register_forward_pre_hook(before, with_kwargs=True),
        m.register_forward_hook(after, with_kwargs=True))]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    replays: dict[nn.Module, _Replay] = {}
    entries: list[EntryCall] = []
    reused = 0

    def visit(frame: _Frame) -> None:
        nonlocal reused
        for child in frame.children:
            replay = replays.setdefault(child.module, _Replay([]))
            if child.entry:
                entries.append((child.module, len(replay.calls)))
            replay.calls.append((child.output if child.frozen else None, child.shapes))
            if child.frozen:
                reused += 1
            else:
                visit(child)

    visit(root)
    named = {m for m, _ in entries}
    replays = {m: r for m, r in replays.items()
               if m in named or any(out is not None for out, _ in r.calls)}
    if not replays:
        return None
    nbytes = sum(t.numel() * t.element_size() for r in replays.values() for out, _ in r.calls
                 if out is not None for t in _tensors(out))
    return FrozenCalls(replays, nbytes, reused, entries)
