"""Physics-informed networks: the 1-D convection benchmark as an `Objective` loss.

The convection equation ``u_t + β u_x = 0`` on ``x ∈ [0, 2π)`` (periodic), ``t ∈ [0, 1]``, with
``u(x, 0) = sin(x)`` has the exact solution ``u(x, t) = sin(x − β t)``. A PINN trained on it
fits well for small β and fails for large β (Krishnapriyan et al., *Characterizing possible
failure modes in physics-informed neural networks*, NeurIPS 2021), which makes it a standard
test bed for asking how the loss landscape changes as the PDE gets harder.

This module provides the problem (`ConvectionProblem`), the physics-informed loss in the
``batch_loss(call_model, batch)`` form that `landscaper.Objective` accepts
(`convection_loss`), a small trainer (`train_pinn`) and the usual error metric
(`relative_l2_error`)::

    problem = ConvectionProblem(beta=10.0)
    model = make_mlp()
    model, info = train_pinn(model, problem, epochs=2000, lr=1e-3)
    objective = Objective(model, problem.batch(), batch_loss=convection_loss(problem.beta))

The residual ``u_t + β u_x`` is the derivative of the network output along the direction
``(β, 1)`` of its inputs. Each output row depends on its own input row only, so one
vector-Jacobian product (`torch.func.vjp` of the outputs' sum) gives every row's slopes
``(u_x, u_t)`` at once: about two forward passes. It works under `torch.func.vmap` (a grid
evaluates many parameter vectors in one call) and under `torch.no_grad`, and
Hessian-vector products differentiate through it. (A forward-mode `torch.func.jvp` along
``(β, 1)`` gives the same residual, but under vmap PyTorch 2.13 also multiplies every layer's
input by a zero tangent of its batched weight: 20–25% slower on the convection grid.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .._utils import Stopwatch, seeded_cuda_devices

logger = logging.getLogger(__name__)

__all__ = [
    "ConvectionProblem",
    "convection_loss",
    "make_mlp",
    "relative_l2_error",
    "train_pinn",
]

TWO_PI = 2.0 * math.pi
#: Keys of the dict batch built by `ConvectionProblem.batch` and read by `convection_loss`.
BATCH_KEYS = ("x_f", "t_f", "x_0", "u_0", "t_b")


def make_mlp(
    width: int = 50, depth: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32
) -> nn.Sequential:
    """A tanh MLP mapping rows ``(x, t)`` to ``u``, as in the convection PINN benchmark.

    Args:
        width: neurons per hidden layer.
        depth: number of hidden layers (the benchmark uses 4 of width 50).
        seed: seed of the Xavier-normal weight initialisation (biases start at zero); the
            global random state is left untouched.
        dtype: parameter dtype.

    Returns:
        ``nn.Sequential`` taking an ``(N, 2)`` tensor and returning ``(N, 1)``.
    """
    if width < 1 or depth < 1:
        raise ValueError(f"width and depth must be positive, got width={width}, depth={depth}")
    sizes = [2] + [width] * depth + [1]
    layers: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            linear = nn.Linear(n_in, n_out, dtype=dtype)
            nn.init.xavier_normal_(linear.weight)
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class ConvectionProblem:
    """The convection problem ``u_t + β u_x = 0`` with its sampled training points.

    Points are drawn once, reproducibly from ``seed``, and kept in float64: collocation points
    uniform in ``[0, 2π) × [0, 1]``, initial points ``(x, 0)`` with ``x`` uniform in
    ``[0, 2π)``, and boundary times ``t`` uniform in ``[0, 1]`` (each pairs ``(0, t)`` with
    ``(2π, t)`` for the periodic condition).

    Args:
        beta: convection speed β (the benchmark sweeps 1 … 40; larger is harder).
        n_collocation: points where the PDE residual is penalised.
        n_initial: points on ``t = 0`` where ``u = sin(x)`` is enforced.
        n_boundary: times where ``u(0, t) = u(2π, t)`` is enforced.
        seed: seed of the point sampler.
    """

    beta: float
    n_collocation: int = 1000
    n_initial: int = 100
    n_boundary: int = 100
    seed: int = 0
    x_f: np.ndarray = field(init=False, repr=False, compare=False)
    t_f: np.ndarray = field(init=False, repr=False, compare=False)
    x_0: np.ndarray = field(init=False, repr=False, compare=False)
    t_b: np.ndarray = field(init=False, repr=False, compare=False)

    #: `make_mlp`, reachable from the problem for convenience.
    make_mlp = staticmethod(make_mlp)

    def __post_init__(self) -> None:
        if not math.isfinite(self.beta):
            raise ValueError(f"beta must be finite, got {self.beta}")
        for name in ("n_collocation", "n_initial", "n_boundary"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        rng = np.random.default_rng(self.seed)
        points = {
            "x_f": rng.uniform(0.0, TWO_PI, self.n_collocation),
            "t_f": rng.uniform(0.0, 1.0, self.n_collocation),
            "x_0": rng.uniform(0.0, TWO_PI, self.n_initial),
            "t_b": rng.uniform(0.0, 1.0, self.n_boundary),
        }
        for name, values in points.items():
            values.setflags(write=False)
            object.__setattr__(self, name, values)

    def exact(self, x: Any, t: Any) -> Any:
        """The exact solution ``sin(x − β t)`` (tensors in, tensor out; otherwise NumPy)."""
        if isinstance(x, torch.Tensor) or isinstance(t, torch.Tensor):
            x, t = torch.as_tensor(x), torch.as_tensor(t)
            return torch.sin(x - self.beta * t.to(x.device))
        return np.sin(np.asarray(x) - self.beta * np.asarray(t))

    def batch(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """The training points as one dict batch for `Objective` and `convection_loss`.

        Args:
            dtype: floating dtype of every tensor; match the model's parameters.
            device: device of every tensor (CPU by default).

        Returns:
            ``{"x_f", "t_f"}``: collocation points, ``{"x_0", "u_0"}``: initial points and
            ``sin(x_0)``, ``"t_b"``: boundary times; each an ``(N, 1)`` column. Fresh tensors
            on every call, none requiring grad.
        """
        values = {
            "x_f": self.x_f,
            "t_f": self.t_f,
            "x_0": self.x_0,
            "u_0": np.sin(self.x_0),
            "t_b": self.t_b,
        }
        return {
            key: torch.tensor(values[key], dtype=dtype, device=device).reshape(-1, 1)
            for key in BATCH_KEYS
        }

    def test_grid(
        self, n: int | tuple[int, int] = (256, 100)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """An evaluation grid: ``x`` (n_x points on ``[0, 2π)``) × ``t`` (n_t on ``[0, 1]``).

        Returns:
            Flattened ``x``, ``t`` and the exact ``u`` on the grid, float64.
        """
        n_x, n_t = (n, n) if isinstance(n, int) else n
        if n_x < 1 or n_t < 1:
            raise ValueError(f"the test grid needs at least one point per axis, got {n}")
        x, t = np.meshgrid(np.linspace(0.0, TWO_PI, n_x, endpoint=False),
                           np.linspace(0.0, 1.0, n_t), indexing="ij")
        x, t = x.ravel(), t.ravel()
        return x, t, self.exact(x, t)


def _one_per_row(u: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The model output as an ``(N, 1)`` column, refusing anything but one value per row."""
    if u.numel() != points.shape[0]:
        raise ValueError(f"the model must return one value per (x, t) row; got shape "
                         f"{tuple(u.shape)} for {points.shape[0]} rows")
    return u.reshape(-1, 1)


def convection_loss(
    beta: float, *, weights: Sequence[float] = (1.0, 1.0, 1.0)
) -> Callable[[Callable[..., Any], Mapping[str, torch.Tensor]], torch.Tensor]:
    """The physics-informed loss of the convection problem, as an `Objective` ``batch_loss``.

    ``L = w_r·mean((u_t + β u_x)²) + w_0·mean((u(x_0, 0) − u_0)²) + w_b·mean((u(0, t) −
    u(2π, t))²)`` over the points of a `ConvectionProblem.batch`. The residual ``u_t + β u_x``
    is ``(β, 1)`` times each collocation point's input gradient, all of them from one
    vector-Jacobian product of the outputs' sum (`torch.func.vjp`; the batch is never
    modified), so the loss is vmappable, works under `torch.no_grad` and is differentiable
    twice in the parameters (Hessian-vector products).

    The model must act on each row ``(x, t)`` independently (an MLP does): the collocation
    points go through one forward call, and the gradient of the outputs' sum with respect to
    a row is then that row's own slope.

    Args:
        beta: convection speed β.
        weights: ``(w_r, w_0, w_b)``, the weights of residual, initial and boundary terms.

    Returns:
        ``batch_loss(call_model, batch) -> scalar tensor``; ``call_model`` maps an ``(N, 2)``
        tensor of ``(x, t)`` rows to ``N`` outputs (``(N,)`` or ``(N, 1)``). It can also be
        called directly with the model itself as ``call_model``.
    """
    beta = float(beta)
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    w_r, w_0, w_b = (float(w) for w in weights)

    def loss(call_model: Callable[..., Any], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [key for key in BATCH_KEYS if key not in batch]
        if missing:
            raise KeyError(f"the batch lacks {missing}; build it with ConvectionProblem.batch()")
        x_f, t_f = batch["x_f"], batch["t_f"]
        x_0, u_0, t_b = batch["x_0"], batch["u_0"], batch["t_b"]
        collocation = torch.cat([x_f, t_f], dim=1)
        u, pullback = torch.func.vjp(lambda points: _one_per_row(call_model(points), points),
                                     collocation)
        (slopes,) = pullback(torch.ones_like(u))  # row i: ∂u_i/∂(x_i, t_i)
        residual = beta * slopes[:, :1] + slopes[:, 1:]
        others = torch.cat([
            torch.cat([x_0, torch.zeros_like(x_0)], dim=1),
            torch.cat([torch.zeros_like(t_b), t_b], dim=1),
            torch.cat([torch.full_like(t_b, TWO_PI), t_b], dim=1),
        ])
        u = _one_per_row(call_model(others), others)
        n_0, n_b = x_0.shape[0], t_b.shape[0]
        u_init, u_left, u_right = u[:n_0], u[n_0 : n_0 + n_b], u[n_0 + n_b :]
        return (w_r * residual.square().mean()
                + w_0 * (u_init - u_0).square().mean()
                + w_b * (u_left - u_right).square().mean())

    loss.beta = beta  # type: ignore[attr-defined]
    loss.weights = (w_r, w_0, w_b)  # type: ignore[attr-defined]
    return loss


def _dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    first = next(model.parameters(), None)
    if first is None:
        return torch.get_default_dtype(), torch.device("cpu")
    return first.dtype, first.device


def relative_l2_error(
    model: nn.Module, problem: ConvectionProblem, n: int | tuple[int, int] = (256, 100)
) -> float:
    """``‖u_model − u_exact‖₂ / ‖u_exact‖₂`` on a regular test grid (see `test_grid`).

    The model is evaluated without gradients in its own dtype and on its own device; its
    training/eval mode is left as it is.
    """
    dtype, device = _dtype_device(model)
    x, t, exact = problem.test_grid(n)
    inputs = torch.tensor(np.stack([x, t], axis=1), dtype=dtype, device=device)
    with torch.no_grad():
        pred = model(inputs).reshape(-1).double().cpu().numpy()
    return float(np.linalg.norm(pred - exact) / np.linalg.norm(exact))


def train_pinn(
    model: nn.Module,
    problem: ConvectionProblem,
    *,
    epochs: int = 1000,
    lr: float = 1e-3,
    optimizer: Literal["adam", "lbfgs"] = "adam",
    seed: int = 0,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    log_every: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` in place on the full batch of ``problem`` with `convection_loss`.

    Args:
        model: a network mapping ``(x, t)`` rows to ``u`` (e.g. from `make_mlp`).
        problem: the PDE and its training points (cast to the model's dtype and device).
        epochs: optimizer steps (for L-BFGS, outer steps of up to 20 inner iterations each).
        lr: learning rate (the benchmark uses 1e-3 for Adam, 1.0 for L-BFGS).
        optimizer: ``"adam"`` or ``"lbfgs"`` (strong-Wolfe line search).
        seed: seeds torch inside a forked random state (the global state is untouched), so
            any randomness in the model's forward is reproducible.
        weights: ``(w_r, w_0, w_b)`` as in `convection_loss`.
        log_every: log the loss every this many epochs at INFO level (0: only at the end).

    Returns:
        The model, now in eval mode, and ``{"loss", "relative_l2", "epochs", "seconds",
        "optimizer", "beta"}`` with the final training loss and the test-grid error.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {epochs}")
    dtype, device = _dtype_device(model)
    batch = problem.batch(dtype=dtype, device=device)
    loss_fn = convection_loss(problem.beta, weights=weights)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr)
    elif optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=20, history_size=50,
                                line_search_fn="strong_wolfe")
    else:
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        value = loss_fn(model, batch)
        value.backward()
        return value

    cuda = seeded_cuda_devices(device)
    watch = Stopwatch()
    model.train()
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            value = opt.step(closure)
            if not torch.isfinite(value):
                logger.warning("training diverged at epoch %d (loss %s)", epoch, float(value))
                break
            if log_every and epoch % log_every == 0:
                logger.info("epoch %d: loss %.4g", epoch, float(value))
    model.eval()
    for p in params:
        p.grad = None
    with torch.no_grad():
        final = float(loss_fn(model, batch))
    info = {
        "loss": final,
        "relative_l2": relative_l2_error(model, problem),
        "epochs": epochs,
        "seconds": watch.seconds,
        "optimizer": optimizer,
        "beta": problem.beta,
    }
    logger.info("beta=%g: trained %d %s epochs in %.1f s, loss %.3g, relative L2 error %.3g",
                problem.beta, epochs, optimizer, info["seconds"], final, info["relative_l2"])
    return model, info


@dataclass(frozen=True)
class TrainedPINN:
    """A convection PINN trained for the demo: what `landscaper.pipeline.run_analysis` needs
    (model, batch, ``batch_loss``, J&R's optimiser) and how well it fits."""

    name: str
    model: nn.Module
    batch: dict[str, torch.Tensor]
    batch_loss: Callable[..., torch.Tensor]
    optimizer_factory: Callable[..., torch.optim.Optimizer]
    info: dict[str, Any]
    #: J&R's retraining epoch: `RETRAIN_STEPS_PER_EPOCH` full-batch Adam steps between samples
    train_epoch: Callable[[nn.Module, torch.optim.Optimizer, int], None] | None = None


def demo_pair(quick: bool = False, betas: Sequence[float] = (1.0, 30.0)
              ) -> list[TrainedPINN]:
    """Two convection PINNs with the same network, points and training budget, one at an easy
    β (it fits: relative L2 error about 0.02) and one at a hard β (it fails: about 1.0), as
    in Krishnapriyan et al.: the demo's pair whose landscapes differ.

    Full: a 3×32 tanh MLP, 1,000 collocation points, 1,500 Adam steps (lr 2e-3, about 5 s
    each on 2 cores); ``quick``: 500 points and 300 steps.
    """
    pair = []
    for beta in betas:
        problem = ConvectionProblem(beta, n_collocation=500 if quick else 1000, seed=0)
        model, info = train_pinn(make_mlp(width=32, depth=3, seed=0), problem,
                                 epochs=300 if quick else 1500, lr=2e-3, seed=0)
        batch, loss = problem.batch(), convection_loss(beta)
        pair.append(TrainedPINN(
            f"β = {beta:g}", model, batch, loss, lambda ps: torch.optim.Adam(ps, lr=2e-3), info,
            retraining_epoch(loss, batch)))
    return pair


#: Full-batch optimiser steps per recorded J&R epoch of the demo's PINNs.
RETRAIN_STEPS_PER_EPOCH = 25


def retraining_epoch(loss: Callable[..., torch.Tensor], batch: Mapping[str, torch.Tensor],
                     steps: int = RETRAIN_STEPS_PER_EPOCH
                     ) -> Callable[[nn.Module, torch.optim.Optimizer, int], None]:
    """A J&R ``train_epoch`` of ``steps`` full-batch optimiser steps on ``loss``.

    Jump & retrain records one sample per epoch; on a classifier an epoch is a pass of many
    mini-batch steps, but on a full-batch PINN a pass is one step, and 10 "epochs" of one
    Adam step barely leave the jump point (measured on the demo pair: the β = 1 net's
    trajectories end at losses 0.10-3.0, its trained loss being about 2e-4). With 25 steps
    an epoch, β = 1 retrains back to 7e-4-0.07 and its 176 samples form 2 basins of the kNN
    graph, 2.4e-4 apart in loss (total persistence 6e-8), while β = 30's end at 0.15-0.64
    in 14 basins with barriers up to 0.21 (total persistence 0.17).
    """

    def epoch(model: nn.Module, optimizer: torch.optim.Optimizer, _epoch: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss(model, batch).backward()
            optimizer.step()

    return epoch
