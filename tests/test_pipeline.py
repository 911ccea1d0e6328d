"""The analysis pipeline used from Python: a config in, a report folder and its pieces out."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from landscaper import Landscape
from landscaper.cli import UsageError, config_from_args
from landscaper.cli import run_analysis as cli_run_analysis
from landscaper.pipeline import AnalysisConfig, run_analysis

SMALL = dict(dims=1, steps=3, k=1, trace_probes=4, slq_probes=1, slq_steps=5)


def problem():
    torch.manual_seed(0)
    return nn.Linear(2, 1), (torch.randn(12, 2), torch.randn(12, 1)), nn.functional.mse_loss


def test_config_in_result_out_with_a_line_per_stage(tmp_path):
    model, data, loss = problem()
    seen = []
    config = AnalysisConfig(**SMALL, out=tmp_path / "r", memory_budget="1GiB", progress=False)
    assert config.memory_budget == 2 ** 30
    result = run_analysis(model, data, loss, config,
                          on_stage=lambda name, seconds, summary: seen.append((name, summary)))
    assert [name for name, _ in seen] == ["Hessian spectrum", "1-D Hessian landscape",
                                          "topology"]
    smad = result.report.metrics["landscape"]["smad_normalized"]
    assert seen[2][1].endswith(f"(normalized {smad:.4g})")
    assert result.out == tmp_path / "r" and result.jump_retrain is None
    metrics = json.loads((result.out / "metrics.json").read_text())
    assert metrics["settings"]["dims"] == 1 and metrics["landscape"]["shape"] == [3]
    assert Landscape.load(result.out / "landscape.npz").shape == result.landscape.shape


def test_the_ggn_spectrum_and_directions_are_the_ggn_eigenpairs(tmp_path):
    from landscaper import Objective, top_eigenpairs

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    data = (torch.randn(12, 2, dtype=torch.float64), torch.randn(12, 1, dtype=torch.float64))
    loss = nn.functional.mse_loss
    seen = []
    result = run_analysis(model, data, loss, AnalysisConfig(
        **SMALL, curvature="ggn", out=tmp_path / "r", progress=False),
        on_stage=lambda name, seconds, summary: seen.append(name))
    assert seen[:2] == ["GGN spectrum", "1-D GGN landscape"]
    expected = top_eigenpairs(Objective(model, data, loss), k=1, curvature="ggn").eigenvalues
    metrics = result.report.metrics["hessian"]
    assert metrics["curvature"] == "ggn"
    assert metrics["top_eigenvalues"] == pytest.approx(list(expected), rel=1e-9)
    assert result.landscape.direction_kind == "ggn"
    assert result.landscape.axis_label(0).startswith("direction 0 (λ=")
    with pytest.raises(ValueError, match="curvature must be"):
        AnalysisConfig(curvature="newton")
    from landscaper.cli import _fill_defaults, build_parser

    args = build_parser().parse_args(["demo", "--curvature", "fisher"])
    _fill_defaults(args)
    assert config_from_args(args).curvature == "fisher"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--curvature", "newton"])


def test_bad_input_is_a_library_error(tmp_path):
    model, data, loss = problem()
    with pytest.raises(ValueError, match=r"^dims=4 exceeds the 3 parameters"):
        run_analysis(model, data, loss, AnalysisConfig(dims=4, out=tmp_path))
    with pytest.raises(MemoryError, match="memory_budget is"):
        run_analysis(model, data, loss, AnalysisConfig(**SMALL, memory_budget=1, out=tmp_path))


def test_the_old_cli_entry_point_still_runs_but_warns(tmp_path):
    model, data, loss = problem()
    args = argparse.Namespace(**SMALL, extent=0.05, extent_unit="relative", seed=0, params=None,
                              device="cpu", memory_budget=2 ** 30, checkpoint=None, jr_seeds=0,
                              jr_epochs=1, jr_steps=[1.0], jr_k=3, out=str(tmp_path / "r"),
                              quiet=True)
    assert config_from_args(args).out == tmp_path / "r"
    with pytest.warns(DeprecationWarning, match="landscaper.pipeline.run_analysis"):
        assert cli_run_analysis(model, data, loss, args) == tmp_path / "r"
    args.dims = 4
    with pytest.warns(DeprecationWarning), pytest.raises(UsageError, match="exceeds the 3"):
        cli_run_analysis(model, data, loss, args)
