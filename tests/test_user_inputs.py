"""Inputs users really bring that used to give wrong numbers or late refusals (docs/bad_inputs.md
rows 15-26). Each test checks the right answer against a reference computed here, or the
refusal, its message and that it comes before any expensive work, with the model intact."""

from __future__ import annotations

import logging
import re
import time
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_bad_inputs import data, intact, mlp
from torch import nn

from landscaper import HessianOperator, JumpRetrain, Landscape, Objective, top_eigenpairs
from landscaper.hessian import DoubleBackwardError, spectral_density
from landscaper.report import landscape_metrics
from landscaper.sampling import CheckpointMismatchError, grid_axes

P = 26  # parameters of test_bad_inputs.mlp()


def dense_eigenvalues(objective: Objective) -> np.ndarray:
    """Descending eigenvalues of the float64 Hessian of the objective's loss, by autograd."""
    theta = objective.theta0.double()

    def loss(t: torch.Tensor) -> torch.Tensor:
        return Objective.__call__(objective, t)  # the loss itself, in the objective's dtype

    hessian = torch.autograd.functional.hessian(loss, theta.to(objective.dtype)).double()
    return torch.linalg.eigvalsh(hessian).flip(0).numpy()


class Forbidden:
    """Counts calls of a patched function and fails the test if any happens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        def refuse(*args, **kwargs):
            raise AssertionError(f"{name} was called: the refusal came too late")

        monkeypatch.setattr(owner, name, refuse)


# ---------------------------------------------------------------------------- row 15
def half_mlp(dtype: torch.dtype) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=gen).to(dtype)
    return model, (x, torch.randint(0, 3, (64,), generator=gen))


def float64_reference(model: nn.Module, batch: tuple) -> np.ndarray:
    """Top eigenvalues of the float64 Hessian of the same (upcast) weights, built by hand."""
    double = Objective(model, batch, F.cross_entropy, compute_dtype=torch.float64)
    return dense_eigenvalues(double)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_models_get_curvature_in_float32_copies(dtype):
    model, batch = half_mlp(dtype)
    with intact(model):
        objective = Objective(model, batch, F.cross_entropy)
        assert objective.dtype == torch.float32 and objective.model_dtype == dtype
        assert objective.describe()["model_dtype"] == str(dtype).removeprefix("torch.")
        assert torch.equal(objective.theta0, torch.cat([p.detach().float().reshape(-1)
                                                        for p in model.parameters()]))
        eig = top_eigenpairs(objective, k=3)
    want = float64_reference(model, batch)[:3]
    assert eig.converged
    np.testing.assert_allclose(eig.eigenvalues, want, rtol=1e-4)
    assert np.all(eig.residuals > 0)  # bounds, never zeros standing in for "converged"
    assert all(p.dtype == dtype for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hessians_in_low_precision_arithmetic_are_refused_naming_compute_dtype(dtype):
    model, batch = half_mlp(dtype)
    with intact(model):
        objective = Objective(model, batch, F.cross_entropy, compute_dtype=dtype)
        assert objective.dtype == dtype
        with pytest.raises(ValueError, match="compute_dtype=torch.float32"):
            top_eigenpairs(objective, k=2)
        land = Landscape.compute(objective=objective, directions="random", steps=3,
                                 extent=0.1, progress=False)  # grids work in the model's dtype
    stored = np.float32 if dtype == torch.bfloat16 else np.float16  # NumPy has no bfloat16
    assert land.loss.dtype == np.float64 and land.directions.dtype == stored


class Quadratic(nn.Module):
    """L(w) = ½ Σ cᵢ wᵢ²: the Hessian is diag(c), known exactly."""

    def __init__(self, curvatures, dtype=torch.float64) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(len(curvatures), dtype=dtype))
        self.register_buffer("c", torch.tensor(curvatures, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.c * self.w**2).sum() + 0 * x.sum()


def quadratic_objective(curvatures, dtype=torch.float64) -> Objective:
    model = Quadratic(curvatures, dtype)
    return Objective(model, (torch.zeros(1, 1, dtype=dtype),),
                     batch_loss=lambda call, batch: call(batch[0]))


def test_lanczos_breakdown_restarts_instead_of_reporting_convergence():
    """Curvatures {3, 2, 1, 0 (x4)}: one start vector's Krylov space has 4 dimensions, so k=6
    needs a restart; the repeated zero is found, and residual bounds stay honest."""
    objective = quadratic_objective([3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    eig = top_eigenpairs(objective, k=6)
    np.testing.assert_allclose(eig.eigenvalues, [3, 2, 1, 0, 0, 0], atol=1e-12)
    assert eig.converged
    vectors = eig.eigenvectors
    np.testing.assert_allclose((vectors @ vectors.T).numpy(), np.eye(6), atol=1e-12)
    zero = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    np.testing.assert_allclose((vectors[3:] @ zero).numpy(), 0, atol=1e-12)


def test_eigenvalues_below_float32_resolution_are_flagged(caplog):
    """A spectrum spanning 1 to 3e-5 in float32: the small eigenvalues are accurate only to the
    rounding of the products, and the result says so instead of claiming tol."""
    curvatures = [1.0, *np.linspace(3e-5, 1e-5, 30)]
    with caplog.at_level(logging.WARNING):
        eig = top_eigenpairs(quadratic_objective(curvatures, torch.float32), k=3)
    assert "below what float32 Hessian-vector products resolve" in caplog.text
    assert "compute_dtype=torch.float64" in caplog.text
    np.testing.assert_allclose(eig.eigenvalues, sorted(curvatures, reverse=True)[:3],
                               atol=2e-6, rtol=1e-5)
    exact = top_eigenpairs(quadratic_objective(curvatures, torch.float64), k=3)
    np.testing.assert_allclose(exact.eigenvalues, sorted(curvatures, reverse=True)[:3],
                               rtol=1e-9)


# ---------------------------------------------------------------------------- row 16
class FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(F.dropout(torch.tanh(self.a(x)), 0.3, training=self.training))


class NoisyForward(FunctionalDropout):
    def forward(self, x):
        noise = 0.01 * torch.rand_like(x) if self.training else 0
        return self.b(torch.tanh(self.a(x + noise)))


class StochasticDepth(FunctionalDropout):
    """Skips its hidden layer with probability 0.05: two calls usually agree, yet it is random."""

    def forward(self, x):
        h = torch.tanh(self.a(x))
        if self.training and bool(torch.rand(()) < 0.05):
            h = torch.zeros_like(h)
        return self.b(h)


@pytest.mark.parametrize("make", [FunctionalDropout, NoisyForward, StochasticDepth],
                         ids=["functional-dropout", "torch.rand", "stochastic-depth"])
def test_randomness_in_forward_is_refused_like_dropout_modules(make):
    torch.manual_seed(0)
    model = make().double().train()
    x, y = data()
    state = torch.random.get_rng_state()
    with intact(model), pytest.raises(ValueError, match=r"model\.eval\(\).*allow_train_mode=True"):
        Objective(model, (x, y), F.cross_entropy)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream untouched
    with intact(model):
        Objective(model, (x, y), F.cross_entropy, allow_train_mode=True)  # analysed on request
    Objective(model.eval(), (x, y), F.cross_entropy)  # eval mode: deterministic


def test_construction_leaves_the_global_random_stream_alone():
    model, (x, y) = mlp(), data()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    Objective(model, (x, y), F.cross_entropy)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------- row 17
class SequenceFirstGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru, self.head = nn.GRU(3, 4), nn.Linear(4, 3)

    def forward(self, x):  # x: (T, B, F)
        return self.head(self.gru(x)[0][-1])


def test_sequence_first_batches_are_weighted_by_their_targets():
    torch.manual_seed(0)
    model = SequenceFirstGRU().double().eval()
    x = torch.randn(10, 8, 3, dtype=torch.float64)  # T=10 steps, 8 samples
    y = torch.randint(0, 3, (8,))
    batches = [(x[:, :6], y[:6]), (x[:, 6:], y[6:])]
    with intact(model):
        objective = Objective(model, batches, F.cross_entropy)
    with torch.no_grad():
        true_mean = float(F.cross_entropy(model(x), y))
    assert objective.num_samples == 8 and objective.sample_counts == [6, 2]
    assert float(objective()) == pytest.approx(true_mean, rel=1e-12)


def test_sample_count_can_be_given_and_is_checked():
    model, (x, y) = mlp(), data()
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    by_hand = Objective(model, batches, F.cross_entropy, sample_count=[8, 4])
    by_function = Objective(model, batches, F.cross_entropy,
                            sample_count=lambda batch: len(batch[1]))
    assert by_hand.weights == by_function.weights == [8 / 12, 4 / 12]
    for bad, message in (([8], "2 batches"), ([8, 0], "positive int"), ([8, 4.0], "positive int"),
                         (lambda batch: -1, "positive int")):
        with pytest.raises(ValueError, match=message):
            Objective(model, batches, F.cross_entropy, sample_count=bad)


def test_batches_that_do_not_say_how_many_samples_they_hold_are_refused():
    """Unsupervised batches whose tensors disagree on dim 0: refused when it matters (several
    batches), accepted with weight 1 for one batch."""
    model, (x, _) = mlp(), data()

    def loss(call, batch):
        points, anchors = batch
        return call(points).pow(2).mean() + call(anchors).pow(2).mean()

    batches = [(x[:8], x[:3]), (x[8:], x[3:5])]
    with pytest.raises(ValueError, match=r"cannot tell how many samples.*sample_count="):
        Objective(model, batches, batch_loss=loss)
    single = Objective(model, batches[0], batch_loss=loss)
    assert single.num_samples is None and single.weights == [1.0]
    counted = Objective(model, batches, batch_loss=loss, sample_count=lambda b: len(b[0]))
    assert counted.weights == [8 / 12, 4 / 12]


# ---------------------------------------------------------------------------- row 18
@pytest.mark.parametrize("steps", [1, 5, 4])
def test_the_loss_at_theta0_is_theta0s_own(steps):
    model, (x, y) = mlp(), data()
    objective = Objective(model, (x, y), F.cross_entropy)
    own = float(objective())
    land = Landscape.compute(objective=objective, directions="random", steps=steps,
                             extent=0.5, progress=False)
    assert land.loss_at_theta0 == pytest.approx(own, rel=1e-12)
    assert land.metadata["theta0"]["loss"] == land.loss_at_theta0
    metrics = landscape_metrics(land)
    assert metrics["loss_at_theta0"] == land.loss_at_theta0
    if steps % 2:  # odd: θ₀ is the exact centre of the grid
        centre = (steps // 2,) * 2
        assert land.theta0_index == centre and metrics["theta0_on_grid"]
        assert all(axis[steps // 2] == 0.0 for axis in land.axes)
        assert land.loss[centre] == pytest.approx(own, rel=1e-12)
    else:  # even: no grid point is θ₀, and nothing claims one is
        assert land.theta0_index is None and not metrics["theta0_on_grid"]
        assert all(np.all(axis != 0) for axis in land.axes)
        assert not np.any(np.isclose(land.loss, own, rtol=1e-12, atol=0))


def test_even_steps_report_says_the_grid_misses_theta0(tmp_path):
    from landscaper.report import report_for_landscape

    land = Landscape.compute(mlp(), data(), F.cross_entropy, directions="random", steps=4,
                             extent=0.5, progress=False)
    html = (report_for_landscape(land, tmp_path) / "index.html").read_text()
    assert "does not contain it" in html and "evaluated at θ₀ itself" in html


# ---------------------------------------------------------------------------- row 19
def test_each_extent_form_has_one_meaning_and_is_recorded():
    common = dict(unit="absolute")
    assert [list(a) for a in grid_axes(3, 0.5, 3, **common)] == [[-0.5, 0.0, 0.5]] * 3
    assert [list(a) for a in grid_axes(3, (0.1, 0.3), 2, **common)] == [[-0.1, 0.0, 0.1],
                                                                       [-0.3, 0.0, 0.3]]
    assert [list(a) for a in grid_axes(3, [(0.1, 0.3)] * 3, 3, **common)] == [[0.1, 0.2, 0.3]] * 3
    assert [list(a) for a in grid_axes(3, [1.0, (-2.0, 0.0)], 2, **common)] == [
        [-1.0, 0.0, 1.0], [-2.0, -1.0, 0.0]]
    model, batch = mlp(), data()
    land = Landscape.compute(model, batch, F.cross_entropy, directions="random", dims=3,
                             steps=3, extent=[(0.1, 0.3)] * 3, extent_unit="absolute",
                             progress=False)
    assert land.metadata["extent_ranges"] == [[0.1, 0.3]] * 3
    assert land.metadata["extent"] == [[0.1, 0.3]] * 3
    assert land.theta0_index is None  # the range excludes 0: θ₀ evaluated on its own
    assert land.loss_at_theta0 == pytest.approx(float(Objective(model, batch, F.cross_entropy)()))


SUGGESTION = re.compile(r"extent=(\[\(-?[0-9.]+, -?[0-9.]+\)\] \* \d|[0-9.]+)")


@pytest.mark.parametrize(("extent", "dims"), [((0.1, 0.3), 3), ((0.1, 0.3), 1), (0, 2),
                                               ([(0.3, 0.1), 0.5], 2), ([(1, 2, 3), 1], 2),
                                               ((-0.5, 1.0), 2)])
def test_extent_refusals_suggest_values_that_are_accepted(extent, dims):
    with pytest.raises(ValueError) as info:
        grid_axes(5, extent, dims)
    suggestions = SUGGESTION.findall(str(info.value))
    assert suggestions, str(info.value)
    for text in suggestions:
        grid_axes(5, eval(text), dims)  # noqa: S307 - the library's own suggestion


# ---------------------------------------------------------------------------- row 20
@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_topology_of_a_landscape_without_finite_values_is_refused(fill):
    land = Landscape.from_arrays(np.full((5, 5), fill), [np.linspace(-1, 1, 5)] * 2)
    for call in (land.minima, land.smad, land.persistence, land.merge_tree,
                 lambda: landscape_metrics(land)):
        with pytest.raises(ValueError, match=r"only 0 of 25 values are finite"):
            call()
    one = np.full((5, 5), np.nan)
    one[2, 2] = 1.0
    with pytest.raises(ValueError, match="only 1 of 25"):
        Landscape.from_arrays(one, [np.linspace(-1, 1, 5)] * 2).smad()


# ---------------------------------------------------------------------------- rows 21-22
@pytest.mark.parametrize("steps", [10**8, 10**9])
def test_huge_grids_are_refused_by_arithmetic_before_any_work(steps, monkeypatch):
    Forbidden(monkeypatch, HessianOperator, "matvec")
    model, batch = mlp(), data()
    tracemalloc.start()
    start = time.perf_counter()
    with intact(model), pytest.raises(MemoryError, match="for its loss array alone"):
        Landscape.compute(model, batch, F.cross_entropy, steps=steps, progress=False)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 16 * 2**20


BAD_CALLS = {
    "extent=0": dict(extent=0),
    "extent<0": dict(extent=-0.1),
    "extent=inf": dict(extent=float("inf")),
    "steps=0": dict(steps=0),
    "steps=2.7": dict(steps=2.7),
    "dims=2.5": dict(dims=2.5),
    "unit=meters": dict(extent_unit="meters"),
    "dims5-steps1000": dict(dims=5, steps=1000),
    "which=XX": dict(which="XX"),
    "directions=foo": dict(directions="foo"),
}


@pytest.mark.parametrize("kwargs", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_grid_arguments_fail_before_any_hessian_work(kwargs, monkeypatch):
    Forbidden(monkeypatch, HessianOperator, "matvec")
    model, batch = mlp(), data()
    start = time.perf_counter()
    with intact(model), pytest.raises((ValueError, TypeError, MemoryError)):
        Landscape.compute(model, batch, F.cross_entropy, progress=False, **kwargs)
    assert time.perf_counter() - start < 0.5


def optimizer(params):
    return torch.optim.SGD(params, lr=0.05)


BAD_JR = {
    "embedding=umap": (dict(embedding="umap"), "embedding must be 'phate' or 'pca'"),
    "factory-not-callable": (dict(optimizer_factory=0.05), "optimizer_factory must be callable"),
    "seeds=()": (dict(seeds=()), "seeds must be a non-empty sequence"),
    "epochs=-1": (dict(epochs=-1), "epochs must be at least 1"),
    "step_sizes=(0,)": (dict(step_sizes=(0.0,)), "positive finite"),
    "k=0": (dict(k=0), "k must be at least 1"),
    "normalization": (dict(normalization="l2"), "normalization must be one of"),
}


@pytest.mark.parametrize(("kwargs", "message"), BAD_JR.values(), ids=BAD_JR.keys())
def test_bad_jump_retrain_settings_fail_at_construction(kwargs, message, monkeypatch):
    Forbidden(monkeypatch, Objective, "__init__")  # refused before the objectives are built
    settings = {"optimizer_factory": optimizer, **kwargs}
    factory = settings.pop("optimizer_factory")
    with pytest.raises((ValueError, TypeError), match=message):
        JumpRetrain(mlp(), data(), F.cross_entropy, factory, progress=False, **settings)


def test_bad_jump_retrain_changes_are_refused_by_set_params():
    jr = JumpRetrain(mlp(), data(), F.cross_entropy, optimizer, embedding="pca", seeds=(0,),
                     step_sizes=(0.5,), epochs=1, progress=False)
    with pytest.raises(ValueError, match="embedding must be"):
        jr.set_params(embedding="umap")
    assert jr.settings["embedding"] == "pca"


def test_bad_spectral_counts_are_refused():
    objective = Objective(mlp(), data(), F.cross_entropy)
    for kwargs in (dict(n_steps=0), dict(n_probes=0), dict(n_steps=2.5)):
        with pytest.raises(ValueError, match="n_steps|n_probes"):
            spectral_density(objective, **kwargs)
    with pytest.raises(ValueError, match="k must be a whole number"):
        top_eigenpairs(objective, k=1.5)


def test_a_foreign_checkpoint_is_refused_before_the_hessian(tmp_path, monkeypatch):
    model, batch = mlp(), data()
    Landscape.compute(model, batch, F.cross_entropy, directions="random", steps=3,
                      checkpoint=tmp_path / "ckpt", progress=False)
    Forbidden(monkeypatch, HessianOperator, "matvec")
    other = mlp(seed=7)
    for kwargs in (dict(model=other, steps=3), dict(model=model, steps=5)):
        with pytest.raises(CheckpointMismatchError, match="different grid, model"):
            Landscape.compute(kwargs["model"], batch, F.cross_entropy, steps=kwargs["steps"],
                              checkpoint=tmp_path / "ckpt", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointMismatchError, match="is a file, not a folder"):
        Landscape.compute(model, batch, F.cross_entropy, checkpoint=tmp_path / "file",
                          progress=False)


# ---------------------------------------------------------------------------- row 23
class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.layer(x).mean(1))


def test_transformer_layers_get_second_derivatives_without_a_context():
    """nn.TransformerEncoderLayer's fused attention has no double backward on CPU; HVPs run
    the math kernel themselves, and agree with an explicit sdpa_kernel(MATH) run."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    model = TinyTransformer().eval()
    batch = (torch.randn(4, 5, 8), torch.randint(0, 2, (4,)))
    eig = top_eigenpairs(Objective(model, batch, F.cross_entropy), k=1)
    with sdpa_kernel(SDPBackend.MATH):
        explicit = top_eigenpairs(Objective(model, batch, F.cross_entropy), k=1)
    assert eig.converged and eig.eigenvalues[0] > 0
    np.testing.assert_allclose(eig.eigenvalues, explicit.eigenvalues, rtol=1e-5)


def test_compiled_modules_get_a_double_backward_error_naming_the_uncompiled_module():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model[0] = torch.compile(model[0], backend="aot_eager")
    batch = (torch.randn(6, 3), torch.randint(0, 2, (6,)))
    objective = Objective(model, batch, F.cross_entropy)
    assert float(objective()) > 0  # losses and grids work compiled
    with pytest.raises(DoubleBackwardError, match=r"torch\.compile'd module.*_orig_mod"):
        top_eigenpairs(objective, k=1)


# ---------------------------------------------------------------------------- row 24
class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Embedding(7, 3), nn.Linear(3, 7)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.embed(tokens))).flatten(0, 1)


def test_a_tied_weight_can_be_selected_by_either_name(caplog):
    torch.manual_seed(0)
    model = TiedLM().double().eval()
    tokens = torch.randint(0, 7, (4, 5))
    batch = (tokens, tokens.flatten())
    by_first = Objective(model, batch, F.cross_entropy, params=["embed.weight"])
    with caplog.at_level(logging.INFO):
        by_alias = Objective(model, batch, F.cross_entropy, params=["head.weight"])
    assert by_alias.param_names == by_first.param_names == ("embed.weight",)
    assert "head.weight is tied to embed.weight" in caplog.text
    assert torch.equal(by_alias.theta0, model.embed.weight.detach().reshape(-1))
    np.testing.assert_allclose(top_eigenpairs(by_alias, k=2).eigenvalues,
                               dense_eigenvalues(by_first)[:2], rtol=1e-8)
    with pytest.raises(ValueError, match=r"\['tail\.\*'\] match no parameter"):
        Objective(model, batch, F.cross_entropy, params=["tail.*"])


def test_repeated_or_parallel_directions_are_refused():
    objective = Objective(mlp(), data(), F.cross_entropy)
    d = torch.randn(P, dtype=torch.float64)
    e = torch.randn(P, dtype=torch.float64)
    for rows, what in (([d, d], "0 and 1 are parallel"), ([d, e, -2 * d], "0 and 2 are parallel"),
                       ([d, e, d + e], "linearly dependent")):
        with pytest.raises(ValueError, match=what):
            Landscape.compute(objective=objective, directions=torch.stack(rows), steps=3,
                              progress=False)


def test_data_in_another_dtype_than_the_model_is_refused_at_construction():
    model = nn.Linear(3, 2)  # float32
    x, y = data()  # float64 inputs
    with pytest.raises(ValueError, match=r"data hold float64.*x\.to\(torch\.float32\)"):
        Objective(model, (x, y), F.cross_entropy)
    regression = (x.float(), torch.randn(12, 2, dtype=torch.float64))  # float64 targets:
    assert Objective(model, regression, F.mse_loss)().dtype == torch.float64  # torch promotes


# ---------------------------------------------------------------------------- rows 15d-e
def kron_head(outputs: int = 4, features: int = 24, seed: int = 0):
    """A linear regression head with several outputs and MSE: H = (2/(N·o)) I_o ⊗ XᵀX, every
    eigenvalue repeated ``outputs`` times."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 2.0, features, dtype=torch.float64)
    x = torch.randn(200, features, generator=gen, dtype=torch.float64) * scales
    y = torch.randn(200, outputs, generator=gen, dtype=torch.float64)
    model = nn.Linear(features, outputs, bias=False).double()
    gram = 2 * x.T @ x / (200 * outputs)
    exact = np.sort(np.repeat(torch.linalg.eigvalsh(gram).numpy(), outputs))[::-1]
    return Objective(model, (x, y), F.mse_loss), exact


@pytest.mark.parametrize("k", [2, 3, 6])
def test_repeated_eigenvalues_are_all_found(k):
    objective, exact = kron_head()
    eig = top_eigenpairs(objective, k=k)
    assert eig.converged
    np.testing.assert_allclose(eig.eigenvalues, exact[:k], rtol=1e-9)
    vectors = eig.eigenvectors
    np.testing.assert_allclose((vectors @ vectors.T).numpy(), np.eye(k), atol=1e-8)
    unchecked = top_eigenpairs(objective, k=k, verify=False)  # one start vector: one copy each
    assert not np.allclose(unchecked.eigenvalues, exact[:k], rtol=1e-3)


def test_weight_norm_whose_second_derivative_is_wrong_is_refused():
    """torch's weight-norm kernel has a wrong second derivative on CPU (its gradgradcheck
    fails): the products are not symmetric, which Lanczos sees for free and refuses."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(3, 4)), nn.Tanh(),
                          nn.Linear(4, 2)).double().eval()
    with intact(model), pytest.raises(DoubleBackwardError, match="not symmetric.*weight_norm"):
        top_eigenpairs(Objective(model, data(), F.cross_entropy), k=2)


def test_half_model_with_a_hard_coded_cast_names_compute_dtype():
    class HardCast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x.half())

    model, (x, y) = HardCast().half().eval(), half_mlp(torch.float16)[1]
    with pytest.raises(ValueError, match=r"to float16 itself.*compute_dtype=torch\.float16"):
        Objective(model, (x, y), F.cross_entropy)
    assert float(Objective(model, (x, y), F.cross_entropy, compute_dtype=torch.float16)()) > 0


# ---------------------------------------------------------------------------- rows 25a-b
class CountingEMA(nn.Module):
    """Eval-mode forward that updates buffers in place (as observers and counters do)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("calls", torch.zeros((), dtype=torch.float64))
        self.register_buffer("ema", torch.zeros(3, dtype=torch.float64))

    def forward(self, x):
        self.calls.add_(1)
        self.ema.mul_(0.9).add_(0.1 * x.mean(0))
        return self.lin(x)


def test_buffers_updated_in_place_never_reach_the_model():
    model, (x, y) = CountingEMA().double().eval(), data()
    with intact(model):
        objective = Objective(model, (x, y), F.cross_entropy)
        land = Landscape.compute(objective=objective, directions="random", steps=3,
                                 progress=False)
    assert objective._reset_buffers == {"calls", "ema"}
    with torch.no_grad():
        own = float(F.cross_entropy(nn.functional.linear(x, model.lin.weight, model.lin.bias), y))
    assert land.loss_at_theta0 == pytest.approx(own, rel=1e-12)


def test_spectral_norm_in_train_mode_is_a_function_of_theta():
    """spectral_norm's power iteration updates u in place at every training-mode forward:
    each evaluation starts from the model's u, so the grid equals fresh copies point by point
    and the same call gives the same grid twice."""
    import copy

    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(3, 4)), nn.Tanh(),
                          nn.Linear(4, 2)).double().train()
    x, y = data()
    directions = torch.randn(2, sum(p.numel() for p in model.parameters()),
                             generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kwargs = dict(directions=directions * 0.1, steps=3, extent=1.0, extent_unit="absolute",
                  progress=False)
    with intact(model):
        land = Landscape.compute(model, (x, y), F.cross_entropy, **kwargs)
        again = Landscape.compute(model, (x, y), F.cross_entropy, **kwargs)
    assert np.array_equal(land.loss, again.loss)
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for i, j in ((0, 0), (1, 2), (2, 1)):
        fresh = copy.deepcopy(model)
        theta = theta0 + land.axes[0][i] * kwargs["directions"][0] + land.axes[1][j] * \
            kwargs["directions"][1]
        torch.nn.utils.vector_to_parameters(theta, fresh.parameters())
        with torch.no_grad():
            assert land.loss[i, j] == pytest.approx(float(F.cross_entropy(fresh(x), y)),
                                                    rel=1e-10)


class InPlaceInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x.div_(2))


def test_forward_that_modifies_its_inputs_never_changes_the_data():
    model, (x, y) = InPlaceInputs().double().eval(), data()
    original = x.clone()
    objective = Objective(model, (x, y), F.cross_entropy)
    values = [float(objective()) for _ in range(3)]
    assert torch.equal(x, original) and objective._copy_inputs
    with torch.no_grad():
        want = float(F.cross_entropy(model(original.clone()), y))
    assert values == [pytest.approx(want, rel=1e-12)] * 3


# ---------------------------------------------------------------------------- rows 17c-d, 24d
def test_padded_token_labels_weigh_their_tokens():
    """Token labels (B, T) with -100 padding, in two batches: the objective equals the token
    mean over all the data, i.e. the same data given as one batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(9, 4), nn.Linear(4, 5)).double().eval()
    tokens = torch.randint(0, 9, (6, 7))
    labels = torch.randint(0, 5, (6, 7))
    labels[0, 2:] = -100  # a short first sequence
    labels[4:, 5:] = -100

    def loss(logits, target):
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    split = Objective(model, [(tokens[:2], labels[:2]), (tokens[2:], labels[2:])], loss)
    whole = Objective(model, (tokens, labels), loss)
    assert split.sample_counts == [int((labels[:2] != -100).sum()),
                                   int((labels[2:] != -100).sum())]
    assert float(split()) == pytest.approx(float(whole()), rel=1e-12)


def test_targets_that_do_not_say_how_many_samples_they_hold_are_refused():
    """CTC-style targets (concatenated labels, lengths): tensors of different lengths."""
    model, (x, _) = mlp(), data()

    def loss(out, targets):
        labels, lengths = targets
        return out.pow(2).mean() + 0 * labels.sum() + 0 * lengths.sum()

    batches = [(x[:8], (torch.arange(20), torch.full((8,), 2))),
               (x[8:], (torch.arange(9), torch.full((4,), 2)))]
    with pytest.raises(ValueError, match=r"targets .* disagree.*sample_count="):
        Objective(model, batches, loss)
    counted = Objective(model, batches, loss, sample_count=lambda b: len(b[0]))
    assert counted.sample_counts == [8, 4]


def test_batches_of_different_dtypes_are_refused_at_construction():
    model, (x, y) = mlp(), data()
    with pytest.raises(ValueError, match="batch 1 holds a float32 tensor .* float64"):
        Objective(model, [(x[:4], y[:4]), (x[4:].float(), y[4:])], F.cross_entropy)


# ---------------------------------------------------------------------------- rows 22e-f
def test_a_zero_parameter_norm_is_refused_before_any_work(monkeypatch):
    Forbidden(monkeypatch, HessianOperator, "matvec")
    model = mlp()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    batch = data()
    for directions in ("hessian", "random"):
        with pytest.raises(ValueError, match=r"‖θ₀‖, which is 0 .*extent_unit=\"absolute\""):
            Landscape.compute(model, batch, F.cross_entropy, params=["*.bias"],
                              directions=directions, steps=301, progress=False)
    with pytest.raises(ValueError, match="norms of θ₀, which are zero.*normalization='unit'"):
        Landscape.compute(model, batch, F.cross_entropy, params=["*.bias"], directions="random",
                          extent_unit="absolute", progress=False)


@pytest.mark.parametrize("kwargs", [dict(seed=1.5), dict(chunk_size=0), dict(chunk_size=2.5),
                                    dict(points_per_chunk=-1), dict(store_directions="no"),
                                    dict(steps=(1, 1), extent=[(-1, 1), (0.5, 1.0)])],
                         ids=["seed", "chunk=0", "chunk=2.5", "points<0", "store=no",
                              "1-step-range"])
def test_other_arguments_are_checked_before_any_hessian_work(kwargs, monkeypatch):
    Forbidden(monkeypatch, HessianOperator, "matvec")
    with pytest.raises((ValueError, TypeError)):
        Landscape.compute(mlp(), data(), F.cross_entropy, progress=False, **kwargs)


def test_a_zero_dimensional_array_extent_is_a_number():
    land = Landscape.compute(mlp(), data(), F.cross_entropy, directions="random", steps=3,
                             extent=np.array(0.1), progress=False)
    assert land.metadata["extent"] == 0.1


# ---------------------------------------------------------------------------- row 26
class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x1, x2):
        return self.a(x1) + self.b(x2)


def test_jump_retrain_trains_multi_input_batches_and_leaves_the_random_stream():
    torch.manual_seed(0)
    model = TwoInputs().double().eval()
    x, y = data()
    torch.manual_seed(11)
    expected = torch.rand(2)
    torch.manual_seed(11)
    with intact(model):
        jr = JumpRetrain(model, [(x, x.flip(0), y)], F.cross_entropy, optimizer, seeds=(0,),
                         step_sizes=(0.5,), epochs=2, embedding="pca", k=2,
                         progress=False).fit()
    assert torch.equal(torch.rand(2), expected)
    samples = jr.samples_
    assert np.all(np.diff(samples.loss) < 0)  # retraining lowers the loss from the jump point
    assert np.all(np.isfinite(samples.accuracy))


def test_jump_retrain_on_regression_records_no_made_up_accuracy():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen), torch.randn(20, 1, generator=gen)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).eval()
    jr = JumpRetrain(model, (x, y), F.mse_loss, optimizer, seeds=(0,), step_sizes=(0.5,),
                     epochs=1, embedding="pca", k=2, progress=False)
    assert jr.accuracy is None and np.all(np.isnan(jr.sample().accuracy))


def test_spectral_density_smoothing_ignores_the_padding_of_short_probes():
    from landscaper.hessian import SpectralDensity

    nodes = np.array([[10.0, 12.0, 0.0, 0.0], [11.0, 13.0, 14.0, 0.0]])
    weights = np.array([[0.5, 0.5, 0.0, 0.0], [0.3, 0.3, 0.4, 0.0]])
    sd = SpectralDensity(nodes, weights, 0)
    grid = np.linspace(5, 20, 301)
    np.testing.assert_allclose(sd.density(grid), sd.density(grid, sigma=0.04), rtol=1e-12)
