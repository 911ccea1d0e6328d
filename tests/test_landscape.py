"""Grid sampling and the Landscape object against analytic values."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, snapshot
from torch import nn

from landscaper import Landscape, Objective
from landscaper.io import LandscapeFileError
from landscaper.sampling import grid_axes


def quadratic_case(dtype=torch.float64):
    """Least squares: loss(w) = mean((X w - y)^2) is exactly quadratic in w."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Linear(5, 1, bias=False).to(dtype)
    x = torch.randn(30, 5, generator=gen, dtype=dtype)
    y = torch.randn(30, 1, generator=gen, dtype=dtype)
    return model, x, y


def analytic_quadratic(w, x, y):
    x, y = x.double().numpy(), y.double().numpy()[:, 0]
    residual = np.einsum("nf,...f->...n", x, w) - y
    return (residual**2).mean(axis=-1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grid_equals_analytic_quadratic(dtype):
    model, x, y = quadratic_case(dtype)
    before = snapshot(model)
    dirs = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=dtype)
    land = Landscape.compute(model, (x, y), F.mse_loss, directions=dirs, steps=(5, 4, 3),
                             extent=0.7, extent_unit="absolute", progress=False, chunk_size=7)
    w0 = model.weight.detach().double().numpy()[0]
    coeffs = land.coords()
    w = w0 + coeffs @ dirs.double().numpy()
    expected = analytic_quadratic(w, x, y).reshape(land.shape)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(land.loss, expected, rtol=tol, atol=0)
    assert land.shape == (5, 4, 3) and land.ndim == 3
    assert_unchanged(model, before)


class TwoParams(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.tensor([0.0, 0.0], dtype=torch.float64))


def asymmetric(a, b):
    return a + 3 * b**2 + a * b**3


def test_axis_convention_is_ij_on_asymmetric_function():
    def loss(call, batch):
        p = call()  # the model returns its own parameter vector at theta
        return asymmetric(p[0], p[1])

    class Expose(TwoParams):
        def forward(self):
            return self.p

    model = Expose()
    obj = Objective(model, (torch.zeros(1),), batch_loss=loss)
    land = Landscape.compute(objective=obj, directions=torch.eye(2, dtype=torch.float64),
                             steps=(5, 7), extent=[1.0, (-2.0, 1.0)], extent_unit="absolute",
                             progress=False)
    a, b = land.axes
    assert len(a) == 5 and len(b) == 7 and b[0] == -2.0 and b[-1] == 1.0
    for i in range(5):
        for j in range(7):
            assert land.loss[i, j] == pytest.approx(asymmetric(a[i], b[j]), abs=1e-12)
    # coords() follows loss.ravel()
    flat = land.loss.ravel()
    for n, (ca, cb) in enumerate(land.coords()):
        assert flat[n] == pytest.approx(asymmetric(ca, cb), abs=1e-12)
    # from_arrays keeps the same convention
    grid_a, grid_b = np.meshgrid(a, b, indexing="ij")
    same = Landscape.from_arrays(asymmetric(grid_a, grid_b), [a, b])
    np.testing.assert_allclose(same.loss, land.loss, atol=1e-12)
    with pytest.raises(ValueError, match="axes of lengths"):
        Landscape.from_arrays(asymmetric(grid_a, grid_b).T, [a, b])


def test_relative_extent_reaches_fraction_of_theta_norm():
    model, x, y = quadratic_case()
    dirs = torch.randn(2, 5, dtype=torch.float64) * 3.0
    land = Landscape.compute(model, (x, y), F.mse_loss, directions=dirs, steps=5, extent=0.25,
                             extent_unit="relative", progress=False)
    theta_norm = float(model.weight.detach().norm())
    for axis, d in zip(land.axes, dirs, strict=True):
        assert abs(axis).max() * float(d.norm()) == pytest.approx(0.25 * theta_norm)
    assert land.metadata["extent_unit"] == "relative"
    assert land.metadata["theta0_norm"] == pytest.approx(theta_norm)


def test_hessian_directions_are_default_and_recorded(mlp_case):
    model, x, y, reference = mlp_case
    land = Landscape.compute(model, (x, y), F.cross_entropy, steps=5, progress=False)
    dense = torch.autograd.functional.hessian(reference, torch.cat(
        [p.detach().reshape(-1) for p in model.parameters()]))
    top = torch.linalg.eigvalsh(dense).flip(0)[:2].numpy()
    np.testing.assert_allclose(land.eigenvalues, top, rtol=1e-6)
    assert land.metadata["directions"]["kind"] == "hessian"
    assert land.directions.shape == (2, 53)
    assert set(land.metadata["timings"]) >= {"grid_s", "directions_s"}
    assert land.metadata["objective"]["num_params"] == 53


def test_model_unchanged_when_loss_raises_half_way(mlp_case):
    model, x, y, _ = mlp_case
    before = snapshot(model)
    calls = {"n": 0}

    def loss(out, target):
        calls["n"] += 1
        if calls["n"] > 12:
            raise RuntimeError("fails half-way through the grid")
        return F.cross_entropy(out, target)

    with pytest.raises(RuntimeError, match="half-way"):
        Landscape.compute(model, (x, y), loss, directions="random", steps=9, progress=False,
                          chunk_size=4)
    assert_unchanged(model, before)


def test_nonfinite_losses_are_kept_and_reported(caplog):
    model, x, y = quadratic_case()

    def loss(out, target):
        value = F.mse_loss(out, target)
        return torch.where(value > 2.0, torch.full_like(value, float("nan")), value)

    land = Landscape.compute(model, (x, y), loss, directions=torch.eye(5)[:2].double(),
                             steps=9, extent=3.0, extent_unit="absolute", progress=False)
    expected_nan = analytic_quadratic(
        model.weight.detach().numpy()[0] + land.coords() @ np.eye(5)[:2], x, y) > 2.0
    assert np.array_equal(np.isnan(land.loss).ravel(), expected_nan)
    assert land.metadata["nonfinite"]["nan"] == int(expected_nan.sum()) > 0
    assert "non-finite" in caplog.text


def test_save_load_round_trips_every_field(tmp_path):
    model, x, y = quadratic_case()
    land = Landscape.compute(model, (x, y), F.mse_loss, directions="random", steps=(4, 3),
                             progress=False, description={"model": "least squares"})
    loss = land.loss.copy()
    loss[0, 0], loss[1, 2] = np.nan, np.inf
    land = Landscape(loss, land.axes, land.metadata, land.directions)
    path = land.save(tmp_path / "quad.npz")
    back = Landscape.load(path)
    np.testing.assert_array_equal(back.loss, land.loss)
    for a, b in zip(back.axes, land.axes, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.directions, land.directions)
    assert json.dumps(back.metadata, sort_keys=True, default=str) == json.dumps(
        land.metadata, sort_keys=True, default=str)
    slim = Landscape.load(land.save(tmp_path / "slim.npz", directions=False))
    assert slim.directions is None
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_bad_files_give_clear_errors(tmp_path):
    land = Landscape.from_arrays(np.arange(6.0).reshape(2, 3), [np.arange(2.0), np.arange(3.0)])
    good = land.save(tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, loss=np.zeros(3))
    pickled = tmp_path / "pickled.npz"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "unpickled",))

    pickled.write_bytes(pickle.dumps(Boom()))
    for bad in (truncated, foreign, pickled):
        with pytest.raises(LandscapeFileError):
            Landscape.load(bad)
    assert not (tmp_path / "unpickled").exists()
    with pytest.raises(FileNotFoundError):
        Landscape.load(tmp_path / "missing.npz")


def test_grid_too_large_for_budget_names_smaller_setting():
    model, x, y = quadratic_case()
    with pytest.raises(MemoryError, match="fewer steps"):
        Landscape.compute(model, (x, y), F.mse_loss, directions="random", steps=2000,
                          memory_budget=1_000_000, progress=False)


def test_bad_extents_and_dims():
    with pytest.raises(ValueError, match="extent"):
        grid_axes(5, 0.0, 2)
    model, x, y = quadratic_case()
    with pytest.raises(ValueError, match="dims=3"):
        Landscape.compute(model, (x, y), F.mse_loss, directions=torch.eye(5)[:2].double(),
                          dims=3, progress=False)


RESUME_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch, torch.nn.functional as F
    from torch import nn
    from landscaper import Landscape

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
        x = torch.randn(50, 4)
        y = torch.randint(0, 3, (50,))
        return model, x, y

    def run(checkpoint, kill_after=None):
        model, x, y = build()
        calls = {"n": 0}

        def loss(out, target):
            calls["n"] += 1
            if kill_after is not None and calls["n"] > kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return F.cross_entropy(out, target)

        return Landscape.compute(model, (x, y), loss, directions="random", dims=3, steps=6,
                                 extent=0.5, chunk_size=5, points_per_chunk=10,
                                 checkpoint=checkpoint, progress=False)

    if __name__ == "__main__":
        run(sys.argv[1], kill_after=int(sys.argv[2]))
    """
)


def test_interrupted_run_resumes_to_identical_array(tmp_path, caplog):
    script = tmp_path / "resume_case.py"
    script.write_text(RESUME_SCRIPT)
    checkpoint = tmp_path / "ckpt"
    # the vmapped loss is called once per 5 points (plus estimate calls): die mid-grid
    proc = subprocess.run([sys.executable, str(script), str(checkpoint), "20"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0  # killed
    finished = sorted(checkpoint.glob("chunk_*.npy"))
    assert 0 < len(finished) < 22  # 216 points in chunks of 10
    sys.path.insert(0, str(tmp_path))
    try:
        import resume_case
    finally:
        sys.path.remove(str(tmp_path))
    caplog.set_level("INFO")
    resumed = resume_case.run(checkpoint)
    assert "resumed" in caplog.text
    fresh = resume_case.run(None)
    np.testing.assert_array_equal(resumed.loss, fresh.loss)
    # a checkpoint written for another grid is refused
    model, x, y = resume_case.build()
    with pytest.raises(ValueError, match="different grid"):
        Landscape.compute(model, (x, y), F.cross_entropy, directions="random", dims=3, steps=5,
                          extent=0.5, chunk_size=5, points_per_chunk=10, checkpoint=checkpoint,
                          progress=False)


def test_plots_return_axes_without_touching_pyplot():
    import matplotlib.pyplot as plt

    rc_before = dict(matplotlib.rcParams)
    a = np.linspace(-1, 1, 21)
    grid = np.meshgrid(a, a, a, indexing="ij")
    loss3 = 10 ** (3 * (grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2) - 3)  # spans 1e-3..1e6
    land3 = Landscape.from_arrays(loss3, [a, a, a])
    land2 = Landscape.from_arrays(loss3[:, :, 10], [a, a])
    land1 = Landscape.from_arrays(loss3[:, 10, 10], [a])
    axes = [
        land1.plot(log=True),
        land2.plot(log=True),
        land2.plot(filled=False),
        land3.plot(dims=(0, 2), at={1: 3}),
        land2.plot_surface(log=True),
    ]
    for ax in axes:
        assert isinstance(ax, matplotlib.axes.Axes)
        ax.figure.savefig(Path("/dev/null"), format="png")
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == rc_before
    x, y, values = land3.slice((2, 0), at={1: 3})
    np.testing.assert_array_equal(values, loss3[:, 3, :].T)
    with pytest.raises(ValueError, match="log"):
        Landscape.from_arrays(-np.ones((3, 3)), [a[:3], a[:3]]).plot(log=True)
