"""The data an `~landscaper.objective.Objective` accepts: batches, their sample counts, dtypes.

A batch is a tuple ``(inputs..., targets)``, a dict (HuggingFace style) or whatever a
``batch_loss`` reads. The loss over several batches is their mean weighted by the loss terms in
each, so that it equals the loss of one batch holding all the data for mean-reduced losses;
the count must be right: it is read from the targets (tuple batches) or the ``labels`` (dict
batches), never from the first tensor, whose first dimension is the sequence length for
sequence-first models. Where no rule applies and the tensors disagree, the caller says how to
count (``sample_count=``) instead of landscaper guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

Batch = Any
#: ``sample_count``: a function of one batch, or one count per batch.
SampleCount = Callable[[Batch], int] | Sequence[int]

#: Dict keys holding a dict batch's targets, in order of preference.
LABEL_KEYS = ("labels", "label")


def all_tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) batch, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in all_tensors(item)]
    return []


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The batch with ``fn`` applied to every tensor (containers rebuilt, others kept)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def _first_dim(tensors: Iterable[torch.Tensor]) -> int | None:
    return next((int(t.shape[0]) for t in tensors if t.ndim >= 1), None)


def _leading_sizes(batch: Batch) -> list[int]:
    return [int(t.shape[0]) for t in all_tensors(batch) if t.ndim >= 1]


#: Integer targets equal to this are left out of mean-reduced losses (PyTorch, HuggingFace).
IGNORE_INDEX = -100


def _target_terms(targets: Any) -> int | None:
    """Loss terms of one batch's targets: for one tensor of integer labels, its entries other
    than `IGNORE_INDEX` (so token labels ``(B, T)`` with padding weigh what a mean-reduced loss
    averages over), for one tensor of values its first dimension; the shared first dimension
    of several target tensors (multi-task); None when they disagree (CTC targets, per-image
    detection dicts)."""
    tensors = [t for t in all_tensors(targets) if t.ndim >= 1]
    if len(tensors) == 1:
        t = tensors[0]
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            return int(t.shape[0])
        return int((t != IGNORE_INDEX).sum())
    sizes = {int(t.shape[0]) for t in tensors}
    return sizes.pop() if len(sizes) == 1 else None


def count_samples(batch: Batch, *, supervised: bool = True) -> int | None:
    """Loss terms in one batch by the documented rule, or None where the rule cannot tell.

    - Tuple/list batches ``(inputs..., targets)`` with ``supervised``: integer labels count
      their entries other than −100, value targets their first dimension (so inputs shaped
      ``(T, B, F)`` with targets ``(B,)`` count ``B``, and padded token labels ``(B, T)``
      count their real tokens); several target tensors count their shared first dimension.
    - Dict batches: the same for ``labels`` (else ``label``); else the first dimension of
      ``input_ids``.
    - Otherwise (``batch_loss`` batches, dicts without those keys): the first dimension that
      every tensor shares.

    None when the tensors disagree (collocation and boundary points, CTC targets). A batch
    without any tensor of at least one dimension counts as one.
    """
    if isinstance(batch, Mapping):
        for key in LABEL_KEYS:
            if key in batch and all_tensors(batch[key]):
                return _target_terms(batch[key])
        if "input_ids" in batch:
            size = _first_dim(all_tensors(batch["input_ids"]))
            if size is not None:
                return size
    elif supervised and isinstance(batch, (tuple, list)) and len(batch) >= 2:
        if any(t.ndim >= 1 for t in all_tensors(batch[-1])):
            return _target_terms(batch[-1])
    sizes = set(_leading_sizes(batch))
    if not sizes:
        return 1
    return sizes.pop() if len(sizes) == 1 else None


def _describe_sizes(batch: Batch) -> str:
    if isinstance(batch, Mapping):
        parts = [f"{k}: {tuple(v.shape)}" for k, v in batch.items() if isinstance(v, torch.Tensor)]
    else:
        parts = [str(tuple(t.shape)) for t in all_tensors(batch)]
    return ", ".join(parts[:6]) + (", ..." if len(parts) > 6 else "")


def sample_counts(batches: Sequence[Batch], sample_count: SampleCount | None, *,
                  supervised: bool) -> list[int] | None:
    """The number of samples of each batch, checked.

    Args:
        batches: the batches.
        sample_count: None for `count_samples`' rule, a function ``batch -> int``, or one
            count per batch.
        supervised: whether tuple batches end with targets (False for ``batch_loss``).

    Returns:
        One positive count per batch, or None for a single batch whose count the rule cannot
        tell (its weight is 1 whatever the count).

    Raises:
        ValueError: counts that are not positive integers, the wrong number of counts, or
            several batches the rule cannot count (naming ``sample_count=``).
    """
    if sample_count is None:
        counts = [count_samples(b, supervised=supervised) for b in batches]
        unknown = [i for i, c in enumerate(counts) if c is None]
        if unknown and len(batches) == 1:
            return None
        if unknown:
            i = unknown[0]
            raise ValueError(
                f"cannot tell how many samples batch {i} holds: its targets (or, without "
                f"targets, its tensors) disagree on the first dimension "
                f"({_describe_sizes(batches[i])}), and the mean over several batches is "
                "weighted by their sample counts; pass sample_count=lambda batch: ... (or one "
                "count per batch)")
        empty = [i for i, c in enumerate(counts) if c == 0]
        if empty:
            raise ValueError(f"batch {empty[0]} has no target entries to average (every label "
                             f"is {IGNORE_INDEX}); drop it, or pass sample_count=...")
        return counts
    if callable(sample_count):
        counts = [sample_count(b) for b in batches]
        source = "sample_count(batch)"
    else:
        counts = list(sample_count)
        source = "sample_count"
        if len(counts) != len(batches):
            raise ValueError(f"sample_count has {len(counts)} entries for {len(batches)} "
                             "batches; give one count per batch, or a function of the batch")
    for i, count in enumerate(counts):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{source} gave {count!r} for batch {i}; each count must be a "
                             "positive int")
    return counts


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
    elif isinstance(data, (str, bytes)):
        raise TypeError(f"data is a {type(data).__name__}; pass (inputs, targets), a dict batch, "
                        "a list of batches or a DataLoader")
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
    if any(_first_dim(all_tensors(b)) == 0 for b in batches):
        raise ValueError("data holds an empty batch (batch size 0); drop it before building "
                         "the Objective")
    if any(t.device.type == "meta" for b in batches for t in all_tensors(b)):
        raise ValueError("data holds tensors on the meta device, which have no values; pass "
                         "real tensors (they are moved to the model's device)")
    return batches


def check_consistent_dtypes(batches: Sequence[Batch]) -> None:
    """Refuse batches that hold floating tensors of other dtypes than the first batch in the
    same places: only one batch is evaluated when the Objective is built."""
    first = [t.dtype for t in all_tensors(batches[0])]
    for i, batch in enumerate(batches[1:], start=1):
        dtypes = [t.dtype for t in all_tensors(batch)]
        if len(dtypes) != len(first):
            continue  # another structure (optional keys): nothing to compare position-wise
        for j, (a, b) in enumerate(zip(first, dtypes, strict=True)):
            if a != b and (a.is_floating_point or b.is_floating_point):
                raise ValueError(f"batch {i} holds a {str(b).removeprefix('torch.')} tensor "
                                 f"(tensor {j}) where batch 0 holds "
                                 f"{str(a).removeprefix('torch.')}; give every batch the same "
                                 "dtypes")


def floating_dtypes(batches: Sequence[Batch]) -> set[torch.dtype]:
    """The floating dtypes of the data's tensors."""
    return {t.dtype for b in batches for t in all_tensors(b) if t.dtype.is_floating_point}


def prepare(batch: Batch, device: torch.device, model_dtype: torch.dtype,
            compute_dtype: torch.dtype) -> Batch:
    """The batch on ``device``, with floating tensors of the model's dtype in ``compute_dtype``.

    Only tensors in the model's own precision are converted (exactly, when it is upcast):
    integer tensors and floating tensors of other dtypes are left as they are.
    """
    def convert(t: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype if t.dtype == model_dtype else t.dtype
        return t.to(device=device, dtype=dtype)

    return map_tensors(batch, convert)
