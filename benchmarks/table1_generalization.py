"""Table 1 of Horoi et al. (2022), scaled down to the digits data: which samples predict what?

    python benchmarks/table1_generalization.py [--quick] [--out PATH] [--jobs N] [--progress]

A population of small networks is trained from ONE shared initialisation with every
combination of batch size {32, 128, 512} × weight decay {0, 1e-4, 1e-3} × data augmentation
{off, on} (random ±1-pixel shifts of the 8×8 images, drawn per batch) × ``repeats`` training
seeds (the seed of the data order and of the augmentation draws; 6 by default, giving 108
networks as in the paper). Every network is the 64-64-10 digits MLP
(`landscaper.examples.digits_mlp`, seed 0), trained for 200 epochs with SGD (momentum 0.9,
constant learning rate 0.05) on 80% of the 1,797 digits; the other 20% give its test
loss/accuracy.

Each trained network is then sampled three ways, with the same number of points n:

* J&R (`jump_and_retrain`): seeds × step sizes × epochs points, ordered by seed, step,
  epoch. As in the paper (4 × 4 × 40 = 640 points) the loss is recorded after each retraining
  epoch; the jump point itself (epoch 0) is left out unless ``jr_include_jump``. Retraining
  uses the network's own optimiser settings, batch size and augmentation ("the original
  optimiser", constant learning rate).
* grid (`grid_samples`, extent 1): the smallest k×k×k grid with at least n points besides
  the centre; the centre (the optimum, excluded as in the paper) is dropped and the n points
  nearest the centre are kept, in the grid's natural order.
* naive (`naive_samples`): the same seeds and step sizes as J&R with per_step = epochs.

So all three give exactly n points (320 by default: 4 seeds × 4 steps × 20 epochs). The features
of one network for one sampler are its n train losses followed by its n train accuracies.
The "randomized" control is the paper's "scrambled versions of the best performing features"
(the J&R ones): every feature column is permuted independently across networks (seeded), which
keeps each feature's distribution but breaks its link to the network, so a classifier that
does not overfit can only reach chance.

Targets: (a) the generalisation class, the test-loss quintile (5 near-equal classes, class 0
= lowest test loss), (b) the weight decay (3 classes), (c) data augmentation (2 classes).
Eleven scikit-learn classifiers (see `classifiers`), each in a Pipeline after a
StandardScaler and with fixed seeds, are scored by stratified k-fold CV (10 folds, fewer when
the smallest class has fewer members); the table gives mean ± standard error over the 11
classifiers of their CV accuracy, beside the paper's numbers (WResNets on CIFAR10, 108
networks, 640 points, so the comparison is of the ranking, not of the values).

Results go to benchmarks/results/table1_generalization[_quick].json (and the features to a
.npz beside it); the table is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from itertools import product
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import (
    AdaBoostClassifier,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier
from torch import nn

from landscaper import Objective
from landscaper.examples import digits_data, digits_mlp
from landscaper.trajectories import Samples, grid_samples, jump_and_retrain, naive_samples

logger = logging.getLogger("table1")

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLERS = ("jump_retrain", "grid", "naive")
#: table rows, top to bottom as in the paper
ROWS = ("randomized", "grid", "naive", "jump_retrain")
ROW_LABELS = {
    "randomized": "Randomized J&R retrain loss and accuracy values",
    "grid": "Grid sampling, train loss and accuracy values",
    "naive": "Naive sampling, train loss and accuracy values",
    "jump_retrain": "J&R sampling, retrain loss and accuracy values",
}
TASKS = ("generalization", "weight_decay", "augmentation")
TASK_LABELS = {"generalization": "5 class gen.", "weight_decay": "Weight decay",
               "augmentation": "Data augmentation"}
#: Horoi et al. (2022), Table 1: mean ± standard error (%) over their 11 classifiers.
PAPER = {
    "randomized": {"generalization": (20.7, 1.1), "weight_decay": (38.9, 1.5),
                   "augmentation": (52.7, 1.9)},
    "grid": {"generalization": (30.1, 2.7), "weight_decay": (51.1, 2.9),
             "augmentation": (62.3, 5.1)},
    "naive": {"generalization": (31.8, 4.0), "weight_decay": (55.7, 3.9),
              "augmentation": (67.6, 5.2)},
    "jump_retrain": {"generalization": (39.2, 4.3), "weight_decay": (58.2, 3.6),
                     "augmentation": (72.1, 5.4)},
}


@dataclass(frozen=True)
class Config:
    """Everything that decides the result (stored in the JSON)."""

    batch_sizes: tuple[int, ...] = (32, 128, 512)
    weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-3)
    augmentations: tuple[bool, ...] = (False, True)
    repeats: int = 6  # training seeds (data order + augmentation draws), same initialisation
    hidden: int = 64
    init_seed: int = 0
    lr: float = 0.05
    momentum: float = 0.9
    train_epochs: int = 200
    test_fraction: float = 0.2
    data_seed: int = 0
    jr_seeds: tuple[int, ...] = (0, 1, 2, 3)
    step_sizes: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    jr_epochs: int = 20
    jr_include_jump: bool = False
    grid_extent: float = 1.0
    grid_seed: int = 0
    n_classes_generalization: int = 5
    folds: int = 10
    cv_seed: int = 0
    scramble_seed: int = 0
    classifier_seed: int = 0

    @property
    def n_networks(self) -> int:
        return (len(self.batch_sizes) * len(self.weight_decays) * len(self.augmentations)
                * self.repeats)

    @property
    def n_points(self) -> int:
        """Points per sampler per network (the J&R count; grid and naive are matched to it)."""
        per_run = self.jr_epochs + int(self.jr_include_jump)
        return len(self.jr_seeds) * len(self.step_sizes) * per_run


FULL = Config()
#: 12 networks (batch sizes 128/512 only, one training seed), 16 points, 3-fold CV at most.
QUICK = Config(batch_sizes=(128, 512), repeats=1, train_epochs=60, jr_seeds=(0, 1),
               step_sizes=(0.5, 1.0), jr_epochs=4, folds=3)


# ------------------------------------------------------------------------------ population
def shift_images(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift every flattened 8×8 image by a random (dy, dx) ∈ {-1, 0, 1}², zero-filled."""
    b = x.shape[0]
    padded = F.pad(x.view(b, 8, 8), (1, 1, 1, 1))
    shifts = torch.randint(0, 3, (b, 2), generator=generator)
    rows = torch.arange(8).view(1, 8, 1) + shifts[:, 0].view(b, 1, 1)
    cols = torch.arange(8).view(1, 1, 8) + shifts[:, 1].view(b, 1, 1)
    return padded[torch.arange(b).view(b, 1, 1), rows, cols].reshape(b, 64)


def make_epoch(x: torch.Tensor, y: torch.Tensor, batch_size: int, augment: bool,
               generator: torch.Generator | None = None):
    """One SGD epoch over shuffled mini-batches (augmented per batch when ``augment``).

    With ``generator=None`` the shuffling and shifts draw from torch's global RNG, which
    `jump_and_retrain` seeds before each retraining run.
    """

    def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        perm = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            idx = perm[start : start + batch_size]
            inputs = shift_images(x[idx], generator) if augment else x[idx]
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), y[idx]).backward()
            optimizer.step()

    return train_epoch


def population_settings(cfg: Config) -> list[dict[str, Any]]:
    """The networks' hyperparameters, in a fixed order."""
    return [{"index": i, "batch_size": bs, "weight_decay": wd, "augmentation": aug,
             "train_seed": rep}
            for i, (bs, wd, aug, rep) in enumerate(product(
                cfg.batch_sizes, cfg.weight_decays, cfg.augmentations, range(cfg.repeats)))]


def _optimizer_factory(cfg: Config, weight_decay: float):
    def factory(params):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=weight_decay)

    return factory


@torch.no_grad()
def _metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    out = model(x)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def train_network(cfg: Config, setting: dict[str, Any], data: Sequence[torch.Tensor]
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Train one network from the shared initialisation; returns it (eval mode) and metrics."""
    x_tr, y_tr, x_te, y_te = data
    start = time.perf_counter()
    model = digits_mlp(cfg.hidden, seed=cfg.init_seed)
    gen = torch.Generator().manual_seed(1000 + setting["train_seed"])
    epoch_fn = make_epoch(x_tr, y_tr, setting["batch_size"], setting["augmentation"], gen)
    optimizer = _optimizer_factory(cfg, setting["weight_decay"])(model.parameters())
    model.train()
    for epoch in range(cfg.train_epochs):
        epoch_fn(model, optimizer, epoch)
    model.eval()
    train_loss, train_acc = _metrics(model, x_tr, y_tr)
    test_loss, test_acc = _metrics(model, x_te, y_te)
    return model, {**setting, "train_loss": train_loss, "train_accuracy": train_acc,
                   "test_loss": test_loss, "test_accuracy": test_acc,
                   "train_seconds": time.perf_counter() - start}


def _grid_matched(objective: Objective, accuracy: Objective, n: int, cfg: Config) -> Samples:
    """Grid samples: the n points nearest the centre of the smallest cube holding n + centre."""
    k = 2
    while k**3 - (k % 2) < n:
        k += 1
    full = grid_samples(objective, k**3, accuracy=accuracy, extent=cfg.grid_extent,
                        seed=cfg.grid_seed)
    norm = full.step_size.copy()
    norm[norm < 1e-12] = np.inf  # the optimum itself is never a sample
    keep = np.sort(np.argsort(norm, kind="stable")[:n])
    return _subset(full, keep, {"kept": int(n), "of": int(len(full))})


def _subset(s: Samples, rows: np.ndarray, info: dict[str, Any]) -> Samples:
    return Samples(s.params[rows], s.loss[rows], s.accuracy[rows], s.seed[rows],
                   s.step_size[rows], s.epoch[rows], s.sampler, {**s.info, **info})


def sample_network(model: nn.Module, cfg: Config, setting: dict[str, Any],
                   data: Sequence[torch.Tensor], progress: bool = False
                   ) -> tuple[dict[str, Samples], dict[str, float]]:
    """J&R, grid and naive samples (n points each) of one trained network, with timings."""
    x_tr, y_tr = data[0], data[1]
    objective = Objective(model, (x_tr, y_tr), F.cross_entropy)
    accuracy = Objective(model, (x_tr, y_tr),
                         lambda out, t: (out.argmax(1) == t).float().mean())
    n = cfg.n_points
    samples, seconds = {}, {}
    start = time.perf_counter()
    samples["jump_retrain"] = jump_and_retrain(
        model, objective, _optimizer_factory(cfg, setting["weight_decay"]),
        make_epoch(x_tr, y_tr, setting["batch_size"], setting["augmentation"]),
        accuracy=accuracy, seeds=cfg.jr_seeds, step_sizes=cfg.step_sizes,
        epochs=cfg.jr_epochs, progress=progress)
    if not cfg.jr_include_jump:  # the paper records the retraining epochs only
        jr = samples["jump_retrain"]
        samples["jump_retrain"] = _subset(jr, np.flatnonzero(jr.epoch > 0),
                                          {"jump_points": "excluded"})
    seconds["jump_retrain"] = time.perf_counter() - start
    start = time.perf_counter()
    samples["grid"] = _grid_matched(objective, accuracy, n, cfg)
    seconds["grid"] = time.perf_counter() - start
    start = time.perf_counter()
    samples["naive"] = naive_samples(objective, accuracy=accuracy, seeds=cfg.jr_seeds,
                                     step_sizes=cfg.step_sizes,
                                     per_step=n // (len(cfg.jr_seeds) * len(cfg.step_sizes)))
    seconds["naive"] = time.perf_counter() - start
    return samples, seconds


def _feature_vector(samples: Samples) -> np.ndarray:
    """n losses then n accuracies, in the sampler's order (J&R: seed, step, epoch)."""
    return np.concatenate([samples.loss, samples.accuracy]).astype(np.float64)


def _one_network(cfg: Config, setting: dict[str, Any], progress: bool
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train and sample one network (also the unit of work for ``--jobs``)."""
    torch.set_num_threads(1)
    data = digits_data(test_fraction=cfg.test_fraction, seed=cfg.data_seed)
    model, record = train_network(cfg, setting, data)
    samples, seconds = sample_network(model, cfg, setting, data, progress)
    record["sample_seconds"] = seconds
    record["points"] = {name: len(s) for name, s in samples.items()}
    record["mean_sampled_loss"] = {name: float(np.mean(s.loss)) for name, s in samples.items()}
    return record, {name: _feature_vector(s) for name, s in samples.items()}


def train_population(cfg: Config, jobs: int = 1, progress: bool = False
                     ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Train and sample every network; returns per-network records and (N, 2n) features."""
    settings = population_settings(cfg)
    records: list[dict[str, Any]] = []
    rows: list[dict[str, np.ndarray]] = []
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_one_network, cfg, s, False) for s in settings]
            for future in futures:
                record, feats = future.result()
                records.append(record)
                rows.append(feats)
                _log_network(record, len(settings))
    else:
        for s in settings:
            record, feats = _one_network(cfg, s, progress)
            records.append(record)
            rows.append(feats)
            _log_network(record, len(settings))
    features = {name: np.stack([r[name] for r in rows]) for name in SAMPLERS}
    return records, features


def _log_network(r: dict[str, Any], total: int) -> None:
    logger.info("network %d/%d bs=%d wd=%g aug=%s seed=%d: train acc %.3f, test loss %.3f "
                "acc %.3f (%.1fs train, %.1fs J&R)", r["index"] + 1, total, r["batch_size"],
                r["weight_decay"], r["augmentation"], r["train_seed"], r["train_accuracy"],
                r["test_loss"], r["test_accuracy"], r["train_seconds"],
                r["sample_seconds"]["jump_retrain"])


# ------------------------------------------------------------------------------ classifiers
def build_features(features: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """The four feature sets of the table; "randomized" scrambles the J&R columns."""
    out = {}
    for name, matrix in features.items():
        bad = ~np.isfinite(matrix)
        if bad.any():
            logger.warning("%s: %d non-finite feature values replaced by the column maximum",
                           name, int(bad.sum()))
            finite_max = np.nanmax(np.where(bad, np.nan, matrix), axis=0)
            matrix = np.where(bad, np.nan_to_num(finite_max, nan=0.0)[None, :], matrix)
        out[name] = matrix
    rng = np.random.default_rng(cfg.scramble_seed)
    jr = out["jump_retrain"]
    out["randomized"] = np.stack([rng.permutation(col) for col in jr.T], axis=1)
    return out


def build_targets(records: list[dict[str, Any]], cfg: Config) -> dict[str, np.ndarray]:
    """Generalisation quintile of the test loss, weight-decay index, augmentation flag."""
    n = len(records)
    test_loss = np.array([r["test_loss"] for r in records])
    gen = np.empty(n, dtype=int)
    gen[np.argsort(test_loss, kind="stable")] = (np.arange(n) * cfg.n_classes_generalization
                                                 ) // n
    wd = np.array([cfg.weight_decays.index(r["weight_decay"]) for r in records])
    aug = np.array([int(r["augmentation"]) for r in records])
    return {"generalization": gen, "weight_decay": wd, "augmentation": aug}


def classifiers(seed: int = 0) -> dict[str, BaseEstimator]:
    """The 11 simple classifiers (untuned, near scikit-learn defaults)."""
    return {
        "logistic_regression": LogisticRegression(max_iter=2000),
        "linear_svm": LinearSVC(max_iter=5000, random_state=seed),
        "rbf_svm": SVC(kernel="rbf", random_state=seed),
        "knn": KNeighborsClassifier(n_neighbors=3),
        "decision_tree": DecisionTreeClassifier(random_state=seed),
        "random_forest": RandomForestClassifier(n_estimators=100, random_state=seed),
        "extra_trees": ExtraTreesClassifier(n_estimators=100, random_state=seed),
        "gradient_boosting": GradientBoostingClassifier(n_estimators=50, random_state=seed),
        "adaboost": AdaBoostClassifier(n_estimators=50, random_state=seed),
        "gaussian_nb": GaussianNB(),
        "lda": LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
    }


def n_splits_for(y: np.ndarray, folds: int) -> int:
    """Stratified folds: at most ``folds``, at most the smallest class size, at least 2."""
    return max(2, min(folds, int(np.bincount(y).min())))


def evaluate_classifiers(features: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                         cfg: Config) -> dict[str, dict[str, dict[str, Any]]]:
    """CV accuracy (%) of every classifier for every feature set and task."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for row in ROWS:
        results[row] = {}
        for task in TASKS:
            y = targets[task]
            splits = n_splits_for(y, cfg.folds)
            if int(np.bincount(y).min()) < splits:
                logger.warning("%s: smallest class has %d members, fewer than %d folds", task,
                               int(np.bincount(y).min()), splits)
            cv = StratifiedKFold(splits, shuffle=True, random_state=cfg.cv_seed)
            per_clf = {}
            for name, clf in classifiers(cfg.classifier_seed).items():
                pipe = make_pipeline(StandardScaler(), clf)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    warnings.filterwarnings("ignore", message=".*least populated class.*")
                    # LDA's covariance estimate on a fold holding one member of a class
                    warnings.filterwarnings("ignore", category=UserWarning,
                                            module="sklearn.covariance")
                    scores = cross_val_score(pipe, features[row], y, cv=cv,
                                             scoring="accuracy", error_score=np.nan)
                per_clf[name] = {"mean": 100 * float(np.mean(scores)),
                                 "folds": [100 * float(s) for s in scores]}
            means = np.array([v["mean"] for v in per_clf.values()])
            results[row][task] = {
                "mean": float(np.nanmean(means)),
                "se": float(np.nanstd(means, ddof=1) / math.sqrt(np.isfinite(means).sum())),
                "n_splits": splits, "classifiers": per_clf}
            logger.info("%-12s %-14s %5.1f ± %4.1f (%d folds)", row, task,
                        results[row][task]["mean"], results[row][task]["se"], splits)
    return results


def format_table(results: dict[str, dict[str, dict[str, Any]]], targets: dict[str, np.ndarray]
                 ) -> str:
    """The table in the paper's layout; each cell "ours (paper)", mean ± s.e. in %."""
    label_w, cell_w = 50, 27
    lines = [f"{'Features':<{label_w}}" + "".join(f"{TASK_LABELS[t]:>{cell_w}}" for t in TASKS)]
    chance = "".join(f"{100 / len(np.unique(targets[t])):>{cell_w}.1f}" for t in TASKS)
    lines.append(f"{'Theoretical random (1/#classes)':<{label_w}}" + chance)
    for row in ROWS:
        cells = []
        for task in TASKS:
            r, (pm, ps) = results[row][task], PAPER[row][task]
            cells.append(f"{r['mean']:5.1f} ± {r['se']:4.1f} ({pm:.1f} ± {ps:.1f})")
        lines.append(f"{ROW_LABELS[row]:<{label_w}}" + "".join(f"{c:>{cell_w}}" for c in cells))
    lines.append("ours (paper: 108 WResNets on CIFAR10, 640 points): mean ± s.e. over 11 "
                 "classifiers of their CV accuracy, %")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ driver
def run(cfg: Config, out: Path, jobs: int = 1, progress: bool = False) -> dict[str, Any]:
    """The whole benchmark; writes ``out`` (JSON) and ``out`` with suffix .npz (features)."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    logger.info("training and sampling %d networks, %d points per sampler", cfg.n_networks,
                cfg.n_points)
    records, raw = train_population(cfg, jobs=jobs, progress=progress)
    t_pop = time.perf_counter() - t0
    features = build_features(raw, cfg)
    targets = build_targets(records, cfg)
    t1 = time.perf_counter()
    results = evaluate_classifiers(features, targets, cfg)
    t_clf = time.perf_counter() - t1
    table = format_table(results, targets)
    points = {name: int(raw[name].shape[1] // 2) for name in SAMPLERS}
    test_acc = np.array([r["test_accuracy"] for r in records])
    payload = {
        "benchmark": "table1_generalization",
        "config": asdict(cfg),
        "n_networks": len(records),
        "points_per_sampler": points,
        "classifiers": list(classifiers()),
        "chance": {t: 100 / len(np.unique(targets[t])) for t in TASKS},
        "class_counts": {t: np.bincount(targets[t]).tolist() for t in TASKS},
        "table": {row: {task: {"mean": results[row][task]["mean"],
                               "se": results[row][task]["se"],
                               "paper_mean": PAPER[row][task][0],
                               "paper_se": PAPER[row][task][1],
                               "n_splits": results[row][task]["n_splits"]}
                        for task in TASKS} for row in ROWS},
        "scores": {row: {task: results[row][task]["classifiers"] for task in TASKS}
                   for row in ROWS},
        "population": records,
        "population_summary": {"test_accuracy_min": float(test_acc.min()),
                               "test_accuracy_max": float(test_acc.max()),
                               "test_loss_by_class": {
                                   int(c): float(np.mean([r["test_loss"] for r, g in
                                                          zip(records, targets["generalization"],
                                                              strict=True) if g == c]))
                                   for c in np.unique(targets["generalization"])}},
        "timings_s": {"population": t_pop, "classifiers": t_clf,
                      "total": time.perf_counter() - t0,
                      "sampling_mean": {name: float(np.mean([r["sample_seconds"][name]
                                                             for r in records]))
                                        for name in SAMPLERS}},
        "table_text": table,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "numpy": np.__version__, "jobs": jobs},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    np.savez_compressed(out.with_suffix(".npz"), allow_pickle=False,
                        **{f"features_{k}": v for k, v in features.items()},
                        **{f"target_{k}": v for k, v in targets.items()})
    logger.info("wrote %s in %.1fs", out, payload["timings_s"]["total"])
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="12 networks, 16 points per sampler, ≤3 CV folds (under a minute)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    parser.add_argument("--jobs", type=int, default=1,
                        help="networks trained/sampled in parallel processes")
    parser.add_argument("--progress", action="store_true", help="J&R progress bars")
    parser.add_argument("--repeats", type=int, default=None,
                        help="training seeds per hyperparameter combination (override)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    cfg = QUICK if args.quick else FULL
    if args.repeats is not None:
        cfg = replace(cfg, repeats=args.repeats)
    out = args.out or RESULTS / ("table1_generalization_quick.json" if args.quick
                                 else "table1_generalization.json")
    payload = run(cfg, out, jobs=args.jobs, progress=args.progress)
    print(payload["table_text"])
    print(f"{payload['n_networks']} networks, points per sampler {payload['points_per_sampler']}"
          f", {payload['timings_s']['total']:.0f}s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
