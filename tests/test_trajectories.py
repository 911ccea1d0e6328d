"""Jump & retrain, grid and naive samplers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, snapshot
from torch import nn

from landscaper import Objective, random_directions
from landscaper.trajectories import (
    grid_samples,
    jump_and_retrain,
    naive_samples,
    standard_epoch,
)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(64, 6)
    y = torch.randint(0, 3, (64,))
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    objective = Objective(model, (x, y), F.cross_entropy)
    accuracy = Objective(model, (x, y), lambda out, t: (out.argmax(1) == t).float().mean())
    factory = lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)  # noqa: E731
    return model, objective, accuracy, factory, standard_epoch(loader, F.cross_entropy)


def test_jump_retrain_shape_labels_and_jump_distance(setup):
    model, obj, acc, factory, epoch_fn = setup
    before = snapshot(model)
    samples = jump_and_retrain(model, obj, factory, epoch_fn, accuracy=acc, seeds=(0, 1),
                               step_sizes=(0.5, 1.0), epochs=3, progress=False)
    assert len(samples) == 2 * 2 * 4 and samples.params.shape == (16, obj.num_params)
    assert list(samples.epoch[:4]) == [0, 1, 2, 3]
    assert set(samples.seed) == {0, 1} and set(samples.step_size) == {0.5, 1.0}
    for seed in (0, 1):
        v = random_directions(obj, 1, seed=seed).vectors[0].numpy()
        for step in (0.5, 1.0):
            row = np.flatnonzero((samples.seed == seed) & (samples.step_size == step)
                                 & (samples.epoch == 0))[0]
            jump = samples.params[row] - obj.theta0.numpy()
            np.testing.assert_allclose(jump, step * v, atol=1e-6)
    # recorded losses are the objective's at the recorded parameters
    np.testing.assert_allclose(samples.loss[5], float(obj(torch.from_numpy(samples.params[5]))),
                               rtol=1e-6)
    assert np.all((samples.accuracy >= 0) & (samples.accuracy <= 1))
    assert_unchanged(model, before)


def test_retraining_equals_a_plain_training_loop_bit_for_bit(setup):
    model, obj, _, factory, epoch_fn = setup
    samples = jump_and_retrain(model, obj, factory, epoch_fn, seeds=(3,), step_sizes=(0.75,),
                               epochs=4, progress=False)
    manual = copy.deepcopy(model)
    start = obj.theta0 + 0.75 * random_directions(obj, 1, seed=3).vectors[0]
    torch.nn.utils.vector_to_parameters(start, manual.parameters())
    torch.manual_seed(3)
    optimizer = factory(manual.parameters())
    for epoch in range(1, 5):
        epoch_fn(manual, optimizer, epoch)
        flat = torch.nn.utils.parameters_to_vector(manual.parameters()).detach().numpy()
        assert np.array_equal(flat, samples.params[epoch])


def test_same_seeds_same_samples_and_out_of_core(setup, tmp_path):
    model, obj, _, factory, epoch_fn = setup
    kwargs = dict(seeds=(0,), step_sizes=(0.25, 1.0), epochs=2, progress=False)
    a = jump_and_retrain(model, obj, factory, epoch_fn, **kwargs)
    b = jump_and_retrain(model, obj, factory, epoch_fn, memory_budget=100,
                         memmap_path=tmp_path / "params.npy", **kwargs)
    assert isinstance(b.params, np.memmap)
    np.testing.assert_array_equal(a.params, np.asarray(b.params))
    np.testing.assert_array_equal(a.loss, b.loss)
    with pytest.raises(MemoryError, match="memmap_path"):
        jump_and_retrain(model, obj, factory, epoch_fn, memory_budget=100, **kwargs)


def test_grid_and_naive_baselines(setup):
    _, obj, acc, _, _ = setup
    grid = grid_samples(obj, 64, accuracy=acc)
    assert len(grid) == 64 and grid.sampler == "grid"
    # 7^3 = 343 points: built and evaluated in two blocks, equal to the direct construction
    big = grid_samples(obj, 343, extent=0.5, seed=3, normalization="layer")
    coords = np.stack(np.meshgrid(*[np.linspace(-0.5, 0.5, 7)] * 3, indexing="ij"), -1)
    dirs = random_directions(obj, 3, seed=3, normalization="layer").vectors.numpy()
    expected = obj.theta0.numpy() + coords.reshape(-1, 3) @ dirs
    np.testing.assert_allclose(big.params, expected, atol=1e-6)
    rows = torch.from_numpy(big.params[[0, 200, 342]])
    np.testing.assert_allclose(big.loss[[0, 200, 342]], obj.batch(rows).numpy(), rtol=1e-5)
    assert big.info["normalization"] == "layer" and np.isnan(big.accuracy).all()
    naive = naive_samples(obj, accuracy=acc, seeds=(0, 1), step_sizes=(0.5, 1.0), per_step=5)
    assert len(naive) == 20 and set(naive.step_size) == {0.5, 1.0}
    dirs = random_directions(obj, 5, seed=10_000 + 1).vectors.numpy()  # seed 1's directions
    rows = (naive.seed == 1) & (naive.step_size == 0.5)
    np.testing.assert_allclose(naive.params[rows] - obj.theta0.numpy(), 0.5 * dirs, atol=1e-6)
    thetas = torch.from_numpy(naive.params[:3])
    np.testing.assert_allclose(naive.loss[:3], obj.batch(thetas).numpy(), rtol=1e-6)
    assert naive.features().shape == (20, 2)
