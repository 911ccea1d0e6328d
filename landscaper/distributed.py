"""Running landscaper on several processes with `torch.distributed`.

Two kinds of parallelism, both opt-in by initialising a process group (``torchrun`` or
`torch.distributed.init_process_group`):

- **Grid sharding** (`landscaper.grid.sample_grid`, `Landscape.compute`): every rank holds
  the same model and the full data; the grid's chunks are split across ranks and the result is
  combined so that every rank returns the full array, bit for bit the array one process
  computes with the same chunking and thread count.
- **Data-parallel Hessian** (`DistributedObjective`): every rank holds a different shard of the
  data; losses, gradients and Hessian-vector products are all-reduced, weighted by sample
  counts, so they equal those of the mean loss over the union of the shards, and Lanczos runs
  identically on every rank.

Collectives never use pickle: small values travel as JSON bytes in uint8 tensors. An error on
one rank is raised on every rank (`raise_together`), so no rank waits for a peer that has given
up; a rank that dies outright is detected by the backend (closed connection) or the process
group's timeout.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ._utils import to_numpy
from .objective import Objective

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DistributedError(RuntimeError):
    """Another rank failed, so this rank stops too (the message names the rank and its error)."""


# ---------------------------------------------------------------------- process group state
def is_initialized() -> bool:
    """Whether a torch.distributed process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def use_distributed(distributed: bool | None) -> bool:
    """Resolve a ``distributed=`` option.

    Args:
        distributed: None (auto: on when a process group with more than one rank is
            initialised), False (opt out: this rank works alone) or True (require a group).
    """
    if distributed is None:
        return is_initialized() and dist.get_world_size() > 1
    if distributed and not is_initialized():
        raise ValueError("distributed=True but torch.distributed is not initialised: launch "
                         "with torchrun or call torch.distributed.init_process_group(...) first, "
                         "or pass distributed=None")
    return bool(distributed)


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def comm_device() -> torch.device:
    """Where tensors for collectives must live: the current CUDA device for NCCL, else CPU.

    With a process group you create yourself, call ``torch.cuda.set_device(local_rank)`` before
    `torch.distributed.init_process_group` (as `init_from_env` does), or every rank's NCCL
    collectives land on ``cuda:0``.
    """
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_from_env(device: str | torch.device | None = None,
                  timeout: datetime.timedelta | None = None) -> bool:
    """Initialise the process group from torchrun's environment when it names several ranks.

    Uses NCCL when ``device`` is a CUDA device (each rank then uses ``cuda:LOCAL_RANK``) and
    gloo otherwise. Returns True when this call initialised the group (the caller then calls
    `torch.distributed.destroy_process_group` at the end), False when there is nothing to do.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_initialized():
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed; "
                           "run a single process or install a torch with distributed support")
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    kwargs = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group("nccl" if cuda else "gloo", **kwargs)
    logger.info("rank %d of %d initialised (%s)", dist.get_rank(), dist.get_world_size(),
                dist.get_backend())
    return True


def local_device(device: str | torch.device) -> torch.device:
    """``device`` with a CUDA device replaced by ``cuda:LOCAL_RANK`` under torchrun."""
    device = torch.device(device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ and world_size() > 1:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


# ---------------------------------------------------------------------- small collectives
def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s tensor on every rank (same shape and dtype on all ranks required),
    returned on the device and dtype of the local ``tensor``."""
    buffer = tensor.detach().to(comm_device()).contiguous().clone()
    dist.broadcast(buffer, src)
    return buffer.to(device=tensor.device)


def broadcast_json(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s JSON-serialisable ``value`` on every rank (the others pass anything)."""
    device = comm_device()
    if rank() == src:
        payload = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
        size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    else:
        size = torch.zeros(1, dtype=torch.int64, device=device)
    dist.broadcast(size, src)
    if rank() != src:
        payload = torch.empty(int(size.item()), dtype=torch.uint8)
    payload = payload.to(device)
    dist.broadcast(payload, src)
    return json.loads(bytes(payload.cpu().numpy()).decode())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks, returned on the device of ``tensor``."""
    buffer = tensor.detach().to(comm_device()).contiguous().clone()
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(device=tensor.device)


def raise_together(error: Exception | None) -> None:
    """A collective error check: if any rank passes an error, every rank raises.

    The failing rank (the lowest, if several) re-raises its own error; the others raise
    `DistributedError` quoting it. Every rank must call this at the same point.
    """
    world = world_size()
    failed = torch.tensor([rank() if error is not None else world], dtype=torch.int64,
                          device=comm_device())
    dist.all_reduce(failed, op=dist.ReduceOp.MIN)
    first = int(failed.item())
    if first == world:
        return
    text = f"{type(error).__name__}: {error}" if error is not None else None
    message = broadcast_json(text, src=first)
    if error is not None:
        raise error
    raise DistributedError(f"rank {first} failed: {message}")


def on_rank0(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only; an exception there is raised on every rank.

    Returns ``fn()``'s value on rank 0 and None elsewhere (broadcast it if the others need it).
    """
    value, error = None, None
    if rank() == 0:
        try:
            value = fn()
        except Exception as err:  # propagated to every rank just below
            error = err
    raise_together(error)
    return value


def check_agree(value: str, what: str) -> None:
    """Raise on every rank unless every rank passes the same ``value`` (e.g. a digest)."""
    reference = broadcast_json(value, src=0)
    error = None
    if value != reference:
        error = ValueError(f"rank {rank()} has a different {what} than rank 0; every rank must "
                           "hold the same model weights, data and directions")
    raise_together(error)


def chunks_for_rank(items: Sequence[T], rank_: int | None = None,
                    world: int | None = None) -> list[T]:
    """This rank's share of ``items``: every ``world``-th item starting at ``rank`` (so costly
    regions of a grid are spread over all ranks)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return list(items[rank_::world])


# ---------------------------------------------------------------------- data-parallel objective
class _SumOverRanks(torch.autograd.Function):
    """Σ over ranks in forward; each rank's term enters with weight 1, so backward passes the
    gradient on unchanged."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(local)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _SumGradientOverRanks(torch.autograd.Function):
    """The identity on θ, whose backward sums the gradient over ranks: θ is the same on every
    rank, so its gradient is the sum of every rank's part."""

    @staticmethod
    def forward(ctx: Any, theta: torch.Tensor) -> torch.Tensor:
        return theta.view_as(theta)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(grad)


class DistributedObjective(Objective):
    """An `Objective` over this rank's shard of the data, reduced over all ranks.

    Every rank builds one from the same model and its own shard (shards may differ in size).
    Losses, gradients, batched losses and Hessian-vector products (`HessianOperator`, and so
    `top_eigenpairs`, `trace`, `spectral_density`) are the weighted sums over ranks, weighted
    by sample counts, so they equal those of one `Objective` on the union of the shards up to
    rounding, and they are the same on every rank. Every method that evaluates the loss is a
    collective: all ranks must call it together with the same arguments.

    Args:
        *args: as for `Objective`, with ``data`` this rank's shard.
        **kwargs: as for `Objective`.

    Attributes:
        local_num_samples: samples on this rank.
        num_samples: samples over all ranks.

    Grids are sharded by grid point, which needs the full data on every rank, so
    `sample_grid` refuses a `DistributedObjective`: build a plain `Objective` for the grid.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not is_initialized():
            raise ValueError("DistributedObjective needs an initialised process group: launch "
                             "with torchrun or call torch.distributed.init_process_group(...), or "
                             "use Objective for a single process")
        error = None
        try:
            super().__init__(*args, **kwargs)
            if self.num_samples is None:
                raise ValueError("ranks are weighted by their sample counts, but this rank's "
                                 "batch does not say how many samples it holds (no targets or "
                                 "labels, tensors of different lengths); pass "
                                 "sample_count=lambda batch: ...")
        except Exception as err:  # noqa: BLE001 - re-raised on every rank
            error = err
        raise_together(error)  # e.g. one rank's empty shard: all ranks stop, none waits
        self.local_num_samples = self.num_samples
        total = all_reduce_sum(torch.tensor([self.local_num_samples], dtype=torch.int64))
        self.num_samples = int(total.item())
        self._share = self.local_num_samples / self.num_samples
        theta = self.theta0.detach().cpu().contiguous()
        layout = json.dumps([self.param_names, [list(s) for s in self.layout.shapes],
                             str(self.dtype)])
        payload = layout.encode() + to_numpy(theta, exact_bits=True).tobytes()
        digest = hashlib.sha256(payload).hexdigest()
        check_agree(digest, "parameter layout or θ₀")

    holds_all_data = False

    def reduce_mean(self, local: torch.Tensor) -> torch.Tensor:
        """Turn a mean over this rank's samples into the mean over all samples (collective)."""
        return all_reduce_sum(local.detach() * self._share)

    def together(self, compute: Callable[[], T]) -> T:
        """Run ``compute`` on every rank; an error on one rank is raised on all of them."""
        error, value = None, None
        try:
            value = compute()
        except Exception as err:  # noqa: BLE001 - re-raised on every rank
            error = err
        raise_together(error)
        return value

    def lockstep(self, values: torch.Tensor) -> torch.Tensor:
        """Rank 0's values on every rank (collective)."""
        return broadcast_tensor(values)

    def __call__(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over all ranks' samples at θ (collective), differentiable as the
        `Objective`'s: ``backward`` is a collective too, and gives every rank the gradient of
        the mean over all ranks' samples."""
        theta = self.theta0 if theta is None else self._check_theta(theta)
        if theta.requires_grad:
            theta = _SumGradientOverRanks.apply(theta)
        return _SumOverRanks.apply(super().__call__(theta) * self._share)

    def gradient(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """∇L(θ) of the mean loss over all ranks' samples."""
        return self.reduce_mean(super().gradient(theta))

    def batch(self, thetas: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Mean losses over all ranks' samples at a (B, P) batch (see `Objective.batch`)."""
        return self.reduce_mean(super().batch(thetas, **kwargs))

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary; ``num_samples`` counts every rank's samples."""
        return {**super().describe(), "world_size": world_size(),
                "local_num_samples": self.local_num_samples}
