"""A zoo of small models a real user would bring, each checked against a direct evaluation.

Every case is checked independently of landscaper's own code paths:

- the objective at θ₀ against ``model(x)`` and the loss evaluated by hand, the mean over all
  samples however the data is batched, and θ₀'s layout against the model's parameters;
- the top Hessian eigenvalues against a dense float64 Hessian of a double-precision copy,
  built with ``torch.autograd.functional.hessian`` through ``functional_call``;
- 2-D and 3-D grids against deep copies of the model whose parameters are set to
  θ₀ + Σ aᵢ dᵢ by hand;
- the user's model bit for bit unchanged after every landscaper call.

Some cases must be refused with an error naming the fix instead; some may be (`Refusal`).
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_bad_inputs import assert_intact, capture, with_grads
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader, TensorDataset

from landscaper import Landscape, Objective, top_eigenpairs
from landscaper.hessian import DoubleBackwardError, EigenResult

Forward = Callable[..., Any]
DirectLoss = Callable[[Forward, Any], torch.Tensor]

#: Every case selects at most this many parameters, so that a dense Hessian is cheap.
MAX_DENSE = 300
STEPS = 5
LABEL_SMOOTHING = 0.1
#: Relative tolerance of a loss value in the model's dtype (direct evaluation vs objective).
VALUE_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2,
              torch.bfloat16: 3e-2}
#: Tolerance of eigenvalues relative to the top one (float64 reference of the same weights).
EIGEN_RTOL = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 1e-3,
              torch.bfloat16: 1e-3}


# ---------------------------------------------------------------------------- case records
@dataclass(frozen=True)
class Refusal:
    """An error a case is refused with instead of being computed.

    Attributes:
        error: the exception type.
        fragments: each must occur in the message; a tuple item means any one of its strings.
        stage: ``"objective"`` (at construction), ``"hessian"`` (at the first Hessian call)
            or ``"either"``.
        required: False when computing the case correctly is just as acceptable.
    """

    error: type[Exception]
    fragments: tuple[str | tuple[str, ...], ...]
    stage: str
    required: bool = True

    def allows(self, stage: str) -> bool:
        """Whether the refusal may happen at ``stage``."""
        return self.stage in (stage, "either")

    def check(self, err: BaseException) -> None:
        """Assert that ``err`` is this refusal."""
        assert isinstance(err, self.error), f"expected {self.error.__name__}, got {err!r}"
        text = str(err)
        for fragment in self.fragments:
            options = (fragment,) if isinstance(fragment, str) else fragment
            assert any(o in text for o in options), f"none of {options} in: {text}"


@dataclass
class Setup:
    """One built case.

    Attributes:
        model: the user's module (never to be modified).
        data: what the Objective receives.
        loss_fn: the Objective's ``loss_fn``.
        reference: one batch holding every sample, for the direct evaluation.
        num_samples: the number of samples in ``data``.
        kwargs: further Objective arguments (``params=...``).
    """

    model: nn.Module
    data: Any
    loss_fn: Callable[..., torch.Tensor] | None
    reference: Any
    num_samples: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating dtype."""
        return next(self.model.parameters()).dtype


@dataclass(frozen=True)
class Case:
    """One zoo entry.

    Attributes:
        name: the test id.
        build: a fresh `Setup` (seeded).
        direct: the true loss of ``forward`` (the model, or a functional call of it) on the
            reference batch, written without landscaper.
        refusal: the error the case is (or may be) refused with.
        k: eigenpairs to compare.
        math_sdpa: the dense reference needs PyTorch's math attention kernel.
    """

    name: str
    build: Callable[[], Setup]
    direct: DirectLoss
    refusal: Refusal | None = None
    k: int = 2
    math_sdpa: bool = False


# ---------------------------------------------------------------------------- direct losses
def mean_cross_entropy(forward: Forward, batch: Any) -> torch.Tensor:
    """Mean cross-entropy of ``forward(x)`` against class targets."""
    x, y = batch
    return F.cross_entropy(forward(x), y)


def next_token_nll(forward: Forward, batch: Any) -> torch.Tensor:
    """Mean negative log-likelihood over every token, by hand."""
    tokens, targets = batch
    log_p = torch.log_softmax(forward(tokens), dim=-1)
    return -log_p.gather(-1, targets[..., None]).mean()


def smoothed_nll(forward: Forward, batch: Any) -> torch.Tensor:
    """Label-smoothed cross-entropy by hand: (1−ε)·NLL + ε·mean over classes of −log p."""
    x, y = batch
    log_p = torch.log_softmax(forward(x), dim=-1)
    nll = -log_p.gather(1, y[:, None]).squeeze(1)
    return ((1 - LABEL_SMOOTHING) * nll - LABEL_SMOOTHING * log_p.mean(dim=1)).mean()


def squared_error_sum(forward: Forward, batch: Any) -> torch.Tensor:
    """Sum over samples and outputs of the squared error."""
    x, y = batch
    return ((forward(x) - y) ** 2).sum()


def mean_squared_error(forward: Forward, batch: Any) -> torch.Tensor:
    """Mean over samples and outputs of the squared error."""
    x, y = batch
    return ((forward(x) - y) ** 2).mean()


def outputs_loss(forward: Forward, batch: Any) -> torch.Tensor:
    """HuggingFace style: the model computes its loss from the labels in the batch."""
    return forward(**batch).loss


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The language model's ``loss_fn`` as a user writes it."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


# ---------------------------------------------------------------------------- models
class TinyResNet(nn.Module):
    """Conv stem and two residual blocks with batch norm, global pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn0(self.stem(x)))
        h = F.relu(h + self.bn1(self.conv1(h)))
        h = F.relu(h + self.bn2(self.conv2(h)))
        return self.head(h.mean(dim=(2, 3)))


class RNNClassifier(nn.Module):
    """A GRU/LSTM whose last output feeds a linear head."""

    def __init__(self, rnn: nn.RNNBase, classes: int = 3) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1] if self.rnn.batch_first else out[-1])


class TiedLM(nn.Module):
    """A tiny language model whose output layer shares the embedding matrix."""

    def __init__(self, vocab: int = 12, dim: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


class SharedLinear(nn.Module):
    """One `Linear` applied twice in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 4)
        self.shared = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.shared(h))
        return self.head(torch.tanh(self.shared(h)))


class PooledEmbedding(nn.Module):
    """Token embeddings averaged per sequence (`EmbeddingBag` or `Embedding` + mean), a head."""

    def __init__(self, bag: bool, vocab: int = 20, dim: int = 5) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab, dim, mode="mean") if bag else nn.Embedding(vocab, dim)
        self.bag = bag
        self.head = nn.Linear(dim, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled = self.embed(tokens) if self.bag else self.embed(tokens).mean(dim=1)
        return self.head(pooled)


class StatefulForward(nn.Module):
    """Eval-mode forward that counts its calls and keeps an input EMA in buffers (as
    observers do) and clamps its input in place."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = nn.Linear(4, 6)
        self.lin2 = nn.Linear(6, 3)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("ema", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        self.ema.mul_(0.9).add_(0.1 * x.mean(0))
        return self.lin2(torch.tanh(self.lin1(x.clamp_(min=-1.0))))


class FunctionalDropoutMLP(nn.Module):
    """Dropout through ``F.dropout(..., training=self.training)``: no dropout module to see."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 6)
        self.l2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(torch.tanh(self.l1(x)), 0.3, training=self.training)
        return self.l2(h)


class TinyTransformer(nn.Module):
    """One `nn.TransformerEncoderLayer`, mean pooling, a linear head."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, 2, dim_feedforward=16, dropout=0.0,
                                                batch_first=True)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x).mean(dim=1))


def mlp(*sizes: int, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Linear layers of ``sizes`` with tanh in between."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).to(dtype)


# ---------------------------------------------------------------------------- builders
def features(n: int, *shape: int, seed: int = 1, classes: int = 3,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs of shape (n, *shape) and class targets."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen).to(dtype)
    return x, torch.randint(0, classes, (n,), generator=gen)


def one_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              loss_fn: Callable[..., torch.Tensor] | None = F.cross_entropy,
              **kwargs: Any) -> Setup:
    """A single-batch setup of a model that has gradients, as in the middle of training."""
    return Setup(with_grads(model), (x, y), loss_fn, (x, y), len(y), kwargs)


def build_resnet() -> Setup:
    """The residual CNN in eval mode with trained-looking batch-norm statistics."""
    torch.manual_seed(0)
    model = TinyResNet()
    with torch.no_grad():  # trained-looking batch-norm statistics and affine parameters
        for bn in (model.bn0, model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.num_batches_tracked.fill_(7)
    return one_batch(model.eval(), *features(16, 1, 6, 6))


def build_gru_batch_first() -> Setup:
    """A GRU classifier on (B, T, F) inputs."""
    torch.manual_seed(0)
    return one_batch(RNNClassifier(nn.GRU(3, 4, batch_first=True)).eval(), *features(10, 5, 3))


def build_gru_two_batches() -> Setup:
    """A sequence-first GRU on (T, B, F) inputs, in batches of 6 and 2 samples."""
    torch.manual_seed(0)
    model = with_grads(RNNClassifier(nn.GRU(3, 4)).eval())
    x, y = features(8, 4, 3)
    x = x.transpose(0, 1).contiguous()  # (T=4, B=8, F=3): sequence first
    batches = [(x[:, :6], y[:6]), (x[:, 6:], y[6:])]
    return Setup(model, batches, F.cross_entropy, (x, y), 8)


def build_lstm_seq_first() -> Setup:
    """A sequence-first LSTM classifier on (T, B, F) inputs."""
    torch.manual_seed(0)
    x, y = features(9, 5, 3)
    model = RNNClassifier(nn.LSTM(3, 3)).eval()
    return one_batch(model, x.transpose(0, 1).contiguous(), y)


def tied_lm_setup(params: list[str] | None) -> Callable[[], Setup]:
    """Builder of the tied language model with θ chosen by ``params``."""

    def build() -> Setup:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, 12, (8, 6), generator=gen)
        kwargs = {} if params is None else {"params": params}
        setup = one_batch(TiedLM().eval(), tokens[:, :-1], tokens[:, 1:], token_cross_entropy,
                          **kwargs)
        setup.num_samples = tokens[:, 1:].numel()  # integer token labels count each token
        return setup

    return build


def build_shared_linear() -> Setup:
    """The MLP applying one Linear twice."""
    torch.manual_seed(0)
    return one_batch(SharedLinear().eval(), *features(12, 5))


def build_frozen() -> Setup:
    """An MLP whose first layer has requires_grad=False."""
    torch.manual_seed(0)
    model = mlp(5, 6, 6, 3).eval()
    model[0].requires_grad_(False)
    return one_batch(model, *features(12, 5))


def pooled_embedding_setup(bag: bool) -> Callable[[], Setup]:
    """Builder of the pooled-embedding classifier on integer tokens."""

    def build() -> Setup:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, 20, (10, 4), generator=gen)
        return one_batch(PooledEmbedding(bag).eval(), tokens,
                         torch.randint(0, 3, (10,), generator=gen))

    return build


def build_label_smoothing() -> Setup:
    """Cross-entropy with label smoothing."""
    torch.manual_seed(0)
    return one_batch(mlp(4, 6, 3).eval(), *features(12, 4),
                     functools.partial(F.cross_entropy, label_smoothing=LABEL_SMOOTHING))


def build_sum_reduction() -> Setup:
    """A regression MLP with a sum-reduced squared error."""
    torch.manual_seed(0)
    x, _ = features(12, 4)
    y = torch.randn(12, 2, generator=torch.Generator().manual_seed(2))
    return one_batch(mlp(4, 6, 2).eval(), x, y, functools.partial(F.mse_loss, reduction="sum"))


def build_dataloader() -> Setup:
    """A shuffled DataLoader whose last batch is smaller."""
    torch.manual_seed(0)
    x, y = features(22, 4)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(3))  # batches of 8, 8 and 6
    return Setup(with_grads(mlp(4, 6, 3).eval()), loader, F.cross_entropy, (x, y), 22)


def dtype_mlp_setup(dtype: torch.dtype) -> Callable[[], Setup]:
    """Builder of an MLP whose weights and data are in ``dtype``."""

    def build() -> Setup:
        torch.manual_seed(0)
        return one_batch(mlp(4, 8, 3, dtype=dtype).eval(), *features(16, 4, dtype=dtype))

    return build


def build_multi_output_head() -> Setup:
    """A 3-output linear regression head under MSE: every Hessian eigenvalue is repeated
    three times, which one Lanczos start vector cannot see."""
    torch.manual_seed(0)
    x, _ = features(40, 8)
    x = x * torch.linspace(0.3, 2.0, 8)
    y = torch.randn(40, 3, generator=torch.Generator().manual_seed(2))
    return one_batch(nn.Linear(8, 3).eval(), x, y, F.mse_loss)


def build_stateful() -> Setup:
    """A forward that updates buffers and its input in place."""
    torch.manual_seed(0)
    return one_batch(StatefulForward().eval(), *features(12, 4))


def build_weight_norm() -> Setup:
    """torch's weight norm, whose second derivative is wrong on CPU."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(4, 5)), nn.Tanh(),
                          nn.Linear(5, 3)).eval()
    return one_batch(model, *features(12, 4))


def build_functional_dropout() -> Setup:
    """Functional dropout with the model in training mode."""
    torch.manual_seed(0)
    return one_batch(FunctionalDropoutMLP().train(), *features(12, 4))


def build_transformer() -> Setup:
    """A TransformerEncoderLayer; θ is its attention input projection and the head."""
    torch.manual_seed(0)
    return one_batch(TinyTransformer().eval(), *features(6, 5, 8),
                     params=["layer.self_attn.in_proj_*", "head.*"])


def bert_setup(attn: str) -> Callable[[], Setup]:
    """Builder of a tiny random BERT classifier with the given attention implementation."""

    def build() -> Setup:
        transformers = pytest.importorskip("transformers")
        config = transformers.BertConfig(vocab_size=32, hidden_size=12, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=24,
                                         max_position_embeddings=16, num_labels=2)
        torch.manual_seed(0)
        model = transformers.AutoModelForSequenceClassification.from_config(
            config, attn_implementation=attn)
        gen = torch.Generator().manual_seed(1)
        mask = torch.ones(6, 8, dtype=torch.long)
        mask[-1, 5:] = 0  # one padded sequence
        batch = {"input_ids": torch.randint(0, 32, (6, 8), generator=gen),
                 "attention_mask": mask,
                 "labels": torch.randint(0, 2, (6,), generator=gen)}
        params = ["bert.encoder.layer.1.attention.self.query.*", "classifier.*"]
        return Setup(with_grads(model.eval()), batch, None, batch, 6, {"params": params})

    return build


HALF_REFUSAL = Refusal(ValueError, ("compute_dtype",), "either", required=False)
BERT_SDPA_REFUSAL = Refusal(DoubleBackwardError, ('attn_implementation="eager"',), "hessian",
                            required=False)

CASES = [
    Case("resnet_batchnorm_eval", build_resnet, mean_cross_entropy),
    Case("gru_batch_first", build_gru_batch_first, mean_cross_entropy),
    Case("gru_seq_first_two_batches", build_gru_two_batches, mean_cross_entropy),
    Case("lstm_seq_first", build_lstm_seq_first, mean_cross_entropy),
    Case("tied_lm", tied_lm_setup(None), next_token_nll, k=3),
    Case("tied_lm_params_first_name", tied_lm_setup(["embed.weight", "head.bias"]),
         next_token_nll),
    Case("tied_lm_params_tied_name", tied_lm_setup(["head.weight", "head.bias"]),
         next_token_nll),
    Case("linear_used_twice", build_shared_linear, mean_cross_entropy, k=3),
    Case("frozen_first_layer", build_frozen, mean_cross_entropy),
    Case("embedding_mean_pool", pooled_embedding_setup(bag=False), mean_cross_entropy),
    Case("embedding_bag", pooled_embedding_setup(bag=True), mean_cross_entropy,
         Refusal(DoubleBackwardError, ("_embedding_bag_backward", "params=["), "hessian")),
    Case("label_smoothing", build_label_smoothing, smoothed_nll),
    Case("sum_reduction", build_sum_reduction, squared_error_sum),
    Case("shuffled_dataloader", build_dataloader, mean_cross_entropy),
    Case("float64_mlp", dtype_mlp_setup(torch.float64), mean_cross_entropy, k=3),
    Case("float16_mlp", dtype_mlp_setup(torch.float16), mean_cross_entropy, HALF_REFUSAL),
    Case("bfloat16_mlp", dtype_mlp_setup(torch.bfloat16), mean_cross_entropy, HALF_REFUSAL),
    Case("functional_dropout_train", build_functional_dropout, mean_cross_entropy,
         Refusal(ValueError, ("model.eval()", "allow_train_mode=True"), "objective")),
    Case("transformer_encoder_layer", build_transformer, mean_cross_entropy,
         Refusal(DoubleBackwardError, (("sdpa_kernel", "SDPBackend.MATH"),), "hessian",
                 required=False), math_sdpa=True),
    Case("multi_output_mse_head", build_multi_output_head, mean_squared_error, k=4),
    Case("buffers_and_input_in_place", build_stateful, mean_cross_entropy),
    Case("weight_norm", build_weight_norm, mean_cross_entropy,
         Refusal(DoubleBackwardError, ("not symmetric", "weight_norm"), "hessian")),
    Case("bert_eager", bert_setup("eager"), outputs_loss),
    Case("bert_sdpa", bert_setup("sdpa"), outputs_loss, BERT_SDPA_REFUSAL, math_sdpa=True),
]


def _refused_at_construction(case: Case) -> bool:
    refusal = case.refusal
    return refusal is not None and refusal.required and refusal.stage == "objective"


def params_of(cases: Sequence[Case]) -> list[Any]:
    """Cases as pytest parameters named by the case."""
    return [pytest.param(case, id=case.name) for case in cases]


REFUSED = params_of([c for c in CASES if _refused_at_construction(c)])
COMPUTED = params_of([c for c in CASES if not _refused_at_construction(c)])


# ---------------------------------------------------------------------------- helpers
@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Assert on exit, also after an exception, that ``model`` is bit-identical."""
    before = capture(model)
    try:
        yield
    finally:
        assert_intact(model, before)


def make_objective(case: Case) -> tuple[Setup, Objective | None]:
    """Build the case and its Objective; None where it was refused as the case allows."""
    setup = case.build()
    with untouched(setup.model):
        try:
            objective = Objective(setup.model, setup.data, setup.loss_fn, **setup.kwargs)
        except Exception as err:
            if case.refusal is None or not case.refusal.allows("objective"):
                raise
            case.refusal.check(err)
            return setup, None
    return setup, objective


def selected_groups(model: nn.Module, params: Sequence[str] | None) -> list[tuple[str, ...]]:
    """The parameters θ should hold, as the tuple of every name of each (tied names too).

    All trainable parameters when ``params`` is None, else those with any name matching a
    pattern; each tensor once, in module order.
    """
    names_of: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(name)
    tensors = {id(p): p for p in model.parameters()}
    groups = []
    for key, names in names_of.items():
        if params is None:
            wanted = tensors[key].requires_grad
        else:
            wanted = any(fnmatch.fnmatchcase(n, pat) for n in names for pat in params)
        if wanted:
            groups.append(tuple(names))
    return groups


def to_double(obj: Any) -> Any:
    """Floating tensors of a (nested) batch in float64; integer tensors as they are."""
    if isinstance(obj, torch.Tensor):
        return obj.double() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: to_double(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_double(v) for v in obj)
    return obj


def dense_hessian(case: Case, setup: Setup) -> torch.Tensor:
    """The float64 Hessian of the true loss over the selected parameters, each tensor once."""
    model = copy.deepcopy(setup.model).double()
    batch = to_double(setup.reference)
    groups = selected_groups(model, setup.kwargs.get("params"))
    named = dict(model.named_parameters(remove_duplicate=False))
    shapes = [named[group[0]].shape for group in groups]
    theta0 = torch.cat([named[group[0]].detach().reshape(-1) for group in groups])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for group, shape in zip(groups, shapes, strict=True):
            piece = theta[offset:offset + math.prod(shape)].view(shape)
            params.update(dict.fromkeys(group, piece))  # tied names get the same tensor
            offset += math.prod(shape)

        def forward(*args: Any, **kwargs: Any) -> Any:
            return functional_call(model, params, args, kwargs, strict=False)

        return case.direct(forward, batch)

    with sdpa_kernel(SDPBackend.MATH) if case.math_sdpa else nullcontext():
        try:
            return torch.autograd.functional.hessian(loss, theta0, vectorize=True)
        except RuntimeError:  # some ops (RNNs) have no batching rule
            return torch.autograd.functional.hessian(loss, theta0)


def model_at(model: nn.Module, names: Sequence[str], theta: torch.Tensor) -> nn.Module:
    """A deep copy of ``model`` whose parameters ``names`` hold consecutive slices of θ."""
    clone = copy.deepcopy(model)
    named = dict(clone.named_parameters(remove_duplicate=False))
    offset = 0
    with torch.no_grad():
        for name in names:
            p = named[name]
            p.copy_(theta[offset:offset + p.numel()].view(p.shape))
            offset += p.numel()
    assert offset == theta.numel()
    return clone


def flat_parameters(model: nn.Module, names: Sequence[str]) -> torch.Tensor:
    """The model's own parameters ``names`` concatenated, in float64."""
    named = dict(model.named_parameters(remove_duplicate=False))
    return torch.cat([named[n].detach().double().reshape(-1) for n in names])


def grid_indices(dims: int, gen: torch.Generator) -> list[tuple[int, ...]]:
    """Every corner, the centre and two random points of a ``STEPS``^dims grid."""
    corners = list(itertools.product((0, STEPS - 1), repeat=dims))
    random = [tuple(torch.randint(0, STEPS, (dims,), generator=gen).tolist()) for _ in range(2)]
    return [*corners, (STEPS // 2,) * dims, *random]


def direct_loss(case: Case, model: nn.Module, batch: Any) -> float:
    """The case's true loss of ``model`` itself, without gradients."""
    with torch.no_grad():
        return float(case.direct(model, batch))


def eigenpairs_or_refusal(case: Case, objective: Objective) -> EigenResult | None:
    """Top eigenpairs, or None where the case's refusal was raised as it allows.

    A refusal over fused attention is followed by its fix, the math kernel, whose eigenpairs
    are returned.
    """
    refusal = case.refusal
    try:
        eig = top_eigenpairs(objective, k=case.k)
    except Exception as err:
        if refusal is None or not refusal.allows("hessian"):
            raise
        refusal.check(err)
        if not case.math_sdpa:
            return None
        with sdpa_kernel(SDPBackend.MATH):  # the math kernel has second derivatives
            return top_eigenpairs(objective, k=case.k)
    assert refusal is None or not refusal.required, f"expected {refusal.error.__name__}"
    return eig


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", REFUSED)
def test_refused_at_construction(case: Case) -> None:
    """The Objective refuses the case with an error naming the fix."""
    setup = case.build()
    with untouched(setup.model), pytest.raises(case.refusal.error) as info:
        Objective(setup.model, setup.data, setup.loss_fn, **setup.kwargs)
    case.refusal.check(info.value)


@pytest.mark.parametrize("case", COMPUTED)
def test_objective_matches_direct_evaluation(case: Case) -> None:
    """θ₀'s layout, the sample count and the loss at θ₀ against the model itself."""
    setup, objective = make_objective(case)
    if objective is None:
        return
    model = setup.model
    groups = selected_groups(model, setup.kwargs.get("params"))
    named = dict(model.named_parameters(remove_duplicate=False))
    assert [id(named[n]) for n in objective.param_names] == [id(named[g[0]]) for g in groups]
    assert objective.num_params == sum(named[g[0]].numel() for g in groups)
    assert torch.equal(objective.theta0.double(), flat_parameters(model, [g[0] for g in groups]))
    assert objective.num_samples == setup.num_samples

    with untouched(model):
        value = float(objective())
    want = direct_loss(case, model, setup.reference)
    assert value == pytest.approx(want, rel=VALUE_RTOL[setup.dtype])


@pytest.mark.parametrize("case", COMPUTED)
def test_top_eigenvalues_match_dense_float64_hessian(case: Case) -> None:
    """Lanczos eigenpairs against a dense float64 Hessian of a double copy."""
    setup, objective = make_objective(case)
    if objective is None:
        return
    assert objective.num_params <= MAX_DENSE
    with untouched(setup.model):
        eig = eigenpairs_or_refusal(case, objective)
    if eig is None:
        return

    hessian = dense_hessian(case, setup)
    assert hessian.shape == (objective.num_params,) * 2
    values, vectors = torch.linalg.eigh(hessian)
    want = values.flip(0)[: case.k].numpy()
    rtol = EIGEN_RTOL[setup.dtype]
    np.testing.assert_allclose(eig.eigenvalues, want, rtol=rtol, atol=rtol * abs(want[0]))
    assert eig.converged
    assert eig.eigenvectors.shape == (case.k, objective.num_params)
    if values[-1] - values[-2] > 0.05 * abs(values[-1]):  # a gap: the top vector is defined
        cosine = torch.dot(eig.eigenvectors[0].double(), vectors[:, -1]).abs()
        assert cosine > 1 - 10 * rtol, f"top eigenvector off the reference: |cos| = {cosine}"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("case", COMPUTED)
def test_grid_matches_model_copies(case: Case, dims: int) -> None:
    """Grid losses against copies of the model set to θ₀ + Σ aᵢ dᵢ by hand."""
    setup, objective = make_objective(case)
    if objective is None:
        return
    model = setup.model
    names = objective.param_names
    theta0 = flat_parameters(model, names)
    gen = torch.Generator().manual_seed(10 + dims)
    directions = torch.randn(dims, theta0.numel(), generator=gen, dtype=torch.float64)
    directions *= 0.3 * theta0.norm() / directions.norm(dim=1, keepdim=True)

    with untouched(model):
        land = Landscape.compute(objective=objective, directions=directions, steps=STEPS,
                                 extent=1.0, extent_unit="absolute", progress=False)
    axis = np.linspace(-1.0, 1.0, STEPS)
    assert land.loss.shape == (STEPS,) * dims
    for got in land.axes:
        np.testing.assert_allclose(got, axis, rtol=0, atol=1e-12)
    rtol = VALUE_RTOL[setup.dtype]
    np.testing.assert_allclose(land.directions, directions.numpy(), rtol=rtol)
    for index in grid_indices(dims, gen):
        coords = torch.tensor([axis[i] for i in index], dtype=torch.float64)
        moved = model_at(model, names, theta0 + coords @ directions)
        want = direct_loss(case, moved, setup.reference)
        assert land.loss[index] == pytest.approx(want, rel=rtol), f"at grid index {index}"
