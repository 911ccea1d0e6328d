"""`JumpRetrain`: Horoi et al.'s jump & retrain analysis as one estimator for notebooks.

Three stages, each cached until a parameter it depends on changes (as PHATE does):

1. ``sample``: jump & retrain trajectories (`landscaper.trajectories.jump_and_retrain`);
2. ``embed``: PHATE with cosine distances (or PCA), exposing the diffusion potential;
3. ``topology``: a kNN graph on the potential distances, a loss-level (lower-star)
   filtration on its clique complex, persistence diagrams D0 and D1 and total persistence.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._utils import check_count, timed
from .directions import Normalization
from .objective import Objective, normalize_data
from .topology.plotting import plot_persistence_diagram
from .trajectories import (
    DEFAULT_MEMORY_BUDGET,
    PAPER_SEEDS,
    PAPER_STEP_SIZES,
    Samples,
    batch_loss_epoch,
    jump_and_retrain,
    standard_epoch,
)

logger = logging.getLogger(__name__)

_STAGE_PARAMS = {
    "sample": {"seeds", "step_sizes", "epochs", "normalization"},
    "embed": {"embedding", "n_components", "phate_knn", "seed"},
    "topology": {"k", "fill_triangles"},
}
_STAGES = ("sample", "embed", "topology")


_EMBEDDINGS = ("phate", "pca")


def _check_settings(settings: dict[str, Any]) -> None:
    """Refuse bad J&R settings before any retraining (each message names the fix)."""
    for name in ("seeds", "step_sizes"):
        values = settings[name]
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{name} must be a non-empty sequence, got {values!r}")
    for seed in settings["seeds"]:
        check_count("seeds entry", seed, minimum=0)
    for step in settings["step_sizes"]:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not (
                math.isfinite(step) and step > 0):
            raise ValueError(f"step_sizes must be positive finite numbers, got {step!r}")
    check_count("epochs", settings["epochs"])
    for name in ("n_components", "phate_knn", "k"):
        check_count(name, settings[name])
    check_count("seed", settings["seed"], minimum=0)
    if settings["normalization"] not in {n.value for n in Normalization}:
        raise ValueError(f"normalization must be one of {[n.value for n in Normalization]}, "
                         f"got {settings['normalization']!r}")
    embedding = settings["embedding"]
    if embedding not in _EMBEDDINGS:
        raise ValueError(f"embedding must be 'phate' or 'pca', got {embedding!r}")
    if embedding == "phate" and importlib.util.find_spec("phate") is None:
        raise ImportError('embedding="phate" needs the phate package (GPL-2): pip install '
                          'phate, or pass embedding="pca"')
    if not isinstance(settings["fill_triangles"], bool):
        raise TypeError(f"fill_triangles must be True or False, got "
                        f"{settings['fill_triangles']!r}")


def _class_targets(batches: Sequence[Any]) -> bool:
    """Whether every batch ends in integer class labels (what argmax accuracy needs)."""
    return all(isinstance(b, (tuple, list)) and len(b) >= 2 and isinstance(b[-1], torch.Tensor)
               and not b[-1].dtype.is_floating_point for b in batches)


def _accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(dim=-1) == targets).float().mean()


class JumpRetrain:
    """Jump & retrain sampling, embedding and kNN-graph loss persistence.

    Args:
        model: the trained model (never modified).
        data: training data as for `Objective` (a tuple, a list of batches or a DataLoader);
            it is also the loop retraining runs over unless ``train_epoch`` is given.
        loss_fn: ``loss_fn(outputs, targets)`` (None with ``batch_loss``).
        optimizer_factory: builds the original optimiser, e.g.
            ``lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)``.
        train_epoch: optional ``train_epoch(model, optimizer, epoch)``; default: one pass over
            the batches of ``data``.
        accuracy_fn: ``accuracy_fn(outputs, targets)``; default: argmax accuracy where the
            targets are integer class labels (none otherwise), None to skip.
        params: parameters recorded and embedded (names or patterns; default all trainable).
        seeds: retraining seeds (paper: 4 seeds).
        step_sizes: jump lengths along normalised random directions (paper: 4 steps).
        epochs: retraining epochs after each jump (paper: 40).
        normalization: normalisation of the jump directions (see
            `landscaper.directions.Normalization`; default ``"filter"``).
        embedding: ``"phate"`` (cosine, needs the ``phate`` extra) or ``"pca"``.
        n_components: dimensions of the embedding.
        phate_knn: PHATE's own neighbour count (capped by the number of samples).
        k: neighbours of the kNN graph (paper: 20).
        fill_triangles: fill graph cycles with the clique complex's triangles so that
            1-dimensional classes can die (the authors' code never kills them).
        seed: seed of the embedding.
        memory_budget: above it, the sampled parameter vectors go to ``memmap_path``.
        memmap_path: ``.npy`` file for the samples, needed when they exceed ``memory_budget``.
        progress: show progress bars.
        batch_loss: ``batch_loss(call_model, batch)`` for a loss that is not
            ``loss_fn(model(x), y)`` (a PINN's residual, as for `Objective`); retraining then
            steps on ``batch_loss(model, batch)`` for each batch, and no accuracy is recorded.

    Examples:
        Two seeds × two jump lengths × three retraining epochs on a copy of a small model,
        embedded with PCA (``embedding="phate"``, the default, needs the ``phate`` extra):

        >>> import torch
        >>> from torch import nn
        >>> from landscaper import JumpRetrain
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> before = [p.clone() for p in model.parameters()]
        >>> jr = JumpRetrain(model, [(x[:16], y[:16]), (x[16:], y[16:])],
        ...                  nn.functional.cross_entropy, lambda ps: torch.optim.SGD(ps, lr=0.1),
        ...                  seeds=(0, 1), step_sizes=(0.5, 1.0), epochs=3, embedding="pca",
        ...                  k=4, progress=False).fit()
        >>> len(jr.sample())  # 2 × 2 × (3 epochs + the jump point)
        16
        >>> jr.embed().embedding.shape
        (16, 2)
        >>> sorted(jr.total_persistence())  # total persistence of D0 and D1
        [0, 1]
        >>> all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        True
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        loss_fn: Callable[..., torch.Tensor] | None,
        optimizer_factory: Callable[..., torch.optim.Optimizer],
        train_epoch: Callable[..., Any] | None = None,
        *,
        accuracy_fn: Callable[..., torch.Tensor] | None = _accuracy,
        params: str | Sequence[str] | None = None,
        seeds: Sequence[int] = PAPER_SEEDS,
        step_sizes: Sequence[float] = PAPER_STEP_SIZES,
        epochs: int = 40,
        normalization: str = "filter",
        embedding: str = "phate",
        n_components: int = 2,
        phate_knn: int = 5,
        k: int = 20,
        fill_triangles: bool = True,
        seed: int = 0,
        memory_budget: int | str = DEFAULT_MEMORY_BUDGET,
        memmap_path: str | None = None,
        progress: bool = True,
        batch_loss: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        for name, fn, optional in (("optimizer_factory", optimizer_factory, False),
                                   ("train_epoch", train_epoch, True),
                                   ("accuracy_fn", accuracy_fn, True)):
            if not callable(fn) and not (optional and fn is None):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}; e.g. "
                                "optimizer_factory=lambda ps: torch.optim.SGD(ps, lr=0.05)")
        settings: dict[str, Any] = {
            "seeds": tuple(seeds) if isinstance(seeds, Sequence) else seeds,
            "step_sizes": (tuple(step_sizes) if isinstance(step_sizes, Sequence)
                           else step_sizes),
            "epochs": epochs, "normalization": normalization, "embedding": embedding,
            "n_components": n_components, "phate_knn": phate_knn, "k": k,
            "fill_triangles": fill_triangles, "seed": seed,
        }
        _check_settings(settings)
        self.model = model
        self.batches = normalize_data(data)
        self.objective = Objective(model, self.batches, loss_fn, params,
                                   memory_budget=memory_budget, batch_loss=batch_loss)
        if batch_loss is not None and accuracy_fn is _accuracy:
            accuracy_fn = None
        if accuracy_fn is _accuracy and not _class_targets(self.batches):
            logger.info("the targets are not class labels, so no argmax accuracy is recorded "
                        "(pass accuracy_fn= for another one)")
            accuracy_fn = None
        self.accuracy = (None if accuracy_fn is None else
                         Objective(model, self.batches, accuracy_fn, params,
                                   memory_budget=memory_budget))
        self.optimizer_factory = optimizer_factory
        self.train_epoch = train_epoch or (
            standard_epoch(self.batches, loss_fn) if batch_loss is None
            else batch_loss_epoch(self.batches, batch_loss))
        self.memory_budget, self.memmap_path, self.progress = memory_budget, memmap_path, progress
        self.settings = settings
        self.samples_: Samples | None = None
        self.embedding_: Any = None
        self.persistence_: Any = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ parameters
    def set_params(self, **changes: Any) -> JumpRetrain:
        """Change settings; only the stages that depend on them are recomputed next time."""
        unknown = set(changes) - set(self.settings)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(self.settings)}")
        changes = {k: tuple(v) if k in ("seeds", "step_sizes") and isinstance(v, Sequence)
                   and not isinstance(v, (str, bytes)) else v for k, v in changes.items()}
        _check_settings({**self.settings, **changes})
        changed = {name for name, value in changes.items() if self.settings[name] != value}
        self.settings.update(changes)
        for i, stage in enumerate(_STAGES):
            if changed & _STAGE_PARAMS[stage]:
                for stale in _STAGES[i:]:
                    self._reset(stale)
                break
        return self

    def _reset(self, stage: str) -> None:
        attr = {"sample": "samples_", "embed": "embedding_", "topology": "persistence_"}[stage]
        if getattr(self, attr) is not None:
            logger.info("settings changed: recomputing the %s stage", stage)
        setattr(self, attr, None)

    # ------------------------------------------------------------------ stages
    def sample(self) -> Samples:
        """Stage 1: jump & retrain samples (cached)."""
        if self.samples_ is None:
            s = self.settings
            with timed(logger, "jump & retrain") as record:
                self.samples_ = jump_and_retrain(
                    self.model, self.objective, self.optimizer_factory, self.train_epoch,
                    accuracy=self.accuracy, seeds=s["seeds"], step_sizes=s["step_sizes"],
                    epochs=s["epochs"], normalization=s["normalization"],
                    memory_budget=self.memory_budget, memmap_path=self.memmap_path,
                    progress=self.progress)
            self.timings["sample_s"] = record["seconds"]
        return self.samples_

    def embed(self) -> Any:
        """Stage 2: PHATE (cosine) or PCA embedding of the samples (cached)."""
        if self.embedding_ is None:
            from . import embedding

            samples, s = self.sample(), self.settings
            with timed(logger, f"{s['embedding']} embedding") as record:
                if s["embedding"] == "phate":
                    knn = min(s["phate_knn"], len(samples) - 2)
                    if knn < s["phate_knn"]:
                        logger.warning("only %d samples: PHATE uses knn=%d instead of %d",
                                       len(samples), knn, s["phate_knn"])
                    self.embedding_ = embedding.phate_embedding(
                        samples.params, n_components=s["n_components"], knn=knn,
                        seed=s["seed"])
                else:  # "pca" (the settings are checked)
                    self.embedding_ = embedding.pca_embedding(samples.params, s["n_components"])
            self.timings["embed_s"] = record["seconds"]
        return self.embedding_

    def graph_distances(self) -> np.ndarray:
        """Distances the kNN graph uses: PHATE potential distances (PCA: embedding distances)."""
        result = self.embed()
        distances = getattr(result, "potential_distances", None)
        if distances is None:
            coords = np.asarray(result.embedding, dtype=np.float64)
            distances = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
        return distances

    def topology(self) -> Any:
        """Stage 3: persistence of the loss filtration on the kNN graph (cached)."""
        if self.persistence_ is None:
            from .topology import graph_persistence, knn_graph_from_distances

            s, distances, loss = self.settings, self.graph_distances(), self.sample().loss
            with timed(logger, "kNN-graph persistence") as record:
                edges = knn_graph_from_distances(distances, k=s["k"])
                self.persistence_ = graph_persistence(loss, edges,
                                                      fill_triangles=s["fill_triangles"])
            self.timings["topology_s"] = record["seconds"]
        return self.persistence_

    def fit(self) -> JumpRetrain:
        """Run every stage that is not cached."""
        self.topology()
        return self

    def total_persistence(self, p: float = 2.0) -> dict[int, float]:
        """pers(D) = Σ|d − c|^p of D0 and D1 (finite pairs), as in the paper (p = 2)."""
        result = self.topology()
        return {dim: float(result.total_persistence(dim, p=p)) for dim in (0, 1)}

    # ------------------------------------------------------------------ plots
    def plot_embedding(self, ax: Any = None) -> Any:
        """The paper's Fig. 2: embedding coloured by log loss, trajectories by seed."""
        from .jr_plots import plot_trajectories

        return plot_trajectories(self.embed().embedding, self.sample(), ax=ax)

    def plot_persistence(self, ax: Any = None, dim: int | None = None) -> Any:
        """Persistence diagram(s) with total persistence in the title (Fig. 3 A style)."""
        result = self.topology()
        dims = (0, 1) if dim is None else (dim,)
        ax = plot_persistence_diagram(
            {f"D{i} ({len(result.diagrams[i])})": result.diagrams[i] for i in dims}, ax=ax)
        totals = self.total_persistence()
        ax.set_title(", ".join(f"pers(D{i}) = {totals[i]:.3g}" for i in dims), fontsize="small")
        ax.set_xlabel("birth (loss)")
        ax.set_ylabel("death (loss; open circles: never)")
        return ax
