"""The command line: demo, analyze, report, compare and bad invocations."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from landscaper import Landscape
from landscaper.cli import main

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make_model():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        x = torch.randn(60, 4)
        y = torch.randint(0, 3, (60,))
        return model, (x, y), nn.functional.cross_entropy

    def with_optimizer():
        model, data, loss = make_model()
        return model, data, loss, lambda ps: torch.optim.SGD(ps, lr=0.1)

    def broken():
        raise RuntimeError("cannot build")
    """
)


def finite_numbers(value):
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "user_model.py"
    path.write_text(FACTORY)
    return path


def test_demo_quick_compares_a_pinn_that_fits_with_one_that_fails(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["models"]) == ["β = 1", "β = 30"]
    minima = []
    for i, (name, model) in enumerate(metrics["models"].items()):
        assert set(model) >= {"settings", "hessian", "landscape", "scale", "jump_retrain"}
        assert finite_numbers(model["hessian"]) and finite_numbers(model["landscape"])
        assert model["landscape"]["shape"] == [7, 7, 7]
        assert model["settings"]["extent"] == "auto" and model["settings"]["extent_factor"] == 100
        assert model["jump_retrain"]["samples"] == 2 * 2 * 4
        folder = out / metrics["folders"][name]
        assert folder == out / f"model_{i + 1}"
        land = Landscape.load(folder / "landscape.npz")
        assert land.smad() == pytest.approx(model["landscape"]["smad"])
        assert land.metadata["extent_auto"]["target"] == pytest.approx(
            100 * land.loss_at_theta0, rel=1e-6)
        minima.append(model["landscape"]["minima"])
        for fig in ("spectrum", "landscape", "surface", "merge_tree", "profile", "persistence",
                    "scale", "trajectories", "jr_persistence"):
            assert (folder / f"{fig}.png").stat().st_size > 1000
    assert max(minima) >= 2  # the failing PINN's landscape has structure to show
    jr = [model["jump_retrain"] for model in metrics["models"].values()]
    assert [j["settings"]["k"] for j in jr] == [5, 5]  # 16 samples: 20 neighbours join all
    # retraining epochs of 25 steps: the failing net's runs end in more than one basin
    assert max(j["total_persistence_d0"] for j in jr) > 0
    rows = {row["headline"]: row for row in metrics["comparison"]}
    assert rows["minima on the grid"]["β = 30"] == minima[1]
    assert rows["top Hessian eigenvalue"]["β = 30"] > rows["top Hessian eigenvalue"]["β = 1"]
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 * 9 and "http" not in page
    assert page.index("Summary") < page.index("<details>")  # headlines first, settings last
    assert "settings and all metrics" in page


def test_analyze_report_and_compare(tmp_path, factory_file, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--dims", "2", "--steps", "5", "--jr-seeds", "0", "-q"]
    assert main(["analyze", "--model", f"{factory_file}:make_model", "--out", str(a),
                 *common]) == 0
    assert main(["analyze", "--model", f"{factory_file}:with_optimizer", "--out", str(b),
                 "--dims", "2", "--steps", "5", "--jr-seeds", "1", "--jr-epochs", "4",
                 "--jr-steps", "0.5", "1.0", "--jr-k", "3", "-q"]) == 0
    assert "jump_retrain" in json.loads((b / "metrics.json").read_text())
    assert main(["report", str(a / "landscape.npz"), "--out", str(tmp_path / "rebuilt"),
                 "-q"]) == 0
    rebuilt = json.loads((tmp_path / "rebuilt" / "metrics.json").read_text())
    original = json.loads((a / "metrics.json").read_text())
    assert rebuilt["landscape"] == original["landscape"]
    capsys.readouterr()
    assert main(["compare", str(a / "landscape.npz"), str(b / "landscape.npz"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bottleneck_distance_d0"] >= 0
    assert main(["compare", str(a / "landscape.npz"), str(a / "landscape.npz")]) == 0
    assert "bottleneck distance D0" in capsys.readouterr().out


def test_weights_are_loaded_without_pickle(tmp_path, factory_file):
    import torch

    sys.path.insert(0, str(factory_file.parent))
    try:
        import user_model
    finally:
        sys.path.remove(str(factory_file.parent))
    model = user_model.make_model()[0]
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pt")
    assert main(["analyze", "--model", f"{factory_file}:make_model", "--weights",
                 str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "w"), "--dims", "1",
                 "--steps", "3", "--jr-seeds", "0", "-q"]) == 0
    torch.save({"state_dict": model.state_dict(), "extra": np.float64}, tmp_path / "bad.pt")
    assert main(["analyze", "--model", f"{factory_file}:make_model", "--weights",
                 str(tmp_path / "bad.pt"), "--out", str(tmp_path / "x"), "-q"]) == 2


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["report", "missing.npz"], 2, "no landscape file"),
        (["analyze", "--model", "nofile.py:make"], 2, "no file"),
        (["analyze", "--model", "no-colon"], 2, "file.py:make_model"),
        (["analyze", "--model", "{factory}:broken"], 2, "cannot build"),
        (["analyze", "--model", "{factory}:make_model", "--extent", "0"], 2, "--extent"),
        (["analyze", "--model", "{factory}:make_model", "--dims", "5", "--steps", "2",
          "--jr-seeds", "0", "-k", "60"], 2, "pass -k <= 51"),
    ],
)
def test_bad_invocations_exit_with_one_line(argv, code, message, factory_file, capsys,
                                            tmp_path):
    argv = [a.replace("{factory}", str(factory_file)) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "analyze" else argv) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_script_help_and_exit_code():
    proc = subprocess.run([sys.executable, "-m", "landscaper", "demo", "--help"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "exit codes" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "landscaper", "frobnicate"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2


HF_DATA = textwrap.dedent(
    """
    import torch

    def batches():
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(5, 60, (12, 10), generator=gen)
        mask = torch.ones_like(ids)
        labels = torch.randint(0, 2, (12,), generator=gen)
        return [{"input_ids": ids[:6], "attention_mask": mask[:6], "labels": labels[:6]},
                {"input_ids": ids[6:], "attention_mask": mask[6:], "labels": labels[6:]}]
    """
)


def test_analyze_a_local_huggingface_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "tiny-bert")
    data_file = tmp_path / "hf_data.py"
    data_file.write_text(HF_DATA)
    out = tmp_path / "hf"
    assert main(["analyze", "--hf", str(tmp_path / "tiny-bert"), "--data",
                 f"{data_file}:batches", "--params", "classifier.*",
                 "bert.encoder.layer.1.output.*", "--dims", "2", "--steps", "3", "-k", "2",
                 "--out", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert finite_numbers(metrics["hessian"]) and finite_numbers(metrics["landscape"])
    assert metrics["settings"]["num_samples"] == 12
    assert main(["analyze", "--hf", str(tmp_path), "--data", f"{data_file}:batches",
                 "--out", str(out)]) == 2  # no config.json there
