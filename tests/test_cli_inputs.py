"""The command line on the inputs users really bring: bad input exits 2 with one line naming
the fix, before any Hessian work; hints name CLI options; --quiet, --version and --help."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import landscaper
from landscaper import Landscape
from landscaper.cli import _one_line, build_parser, main

FACTORIES = textwrap.dedent(
    """
    import logging
    import sys
    import warnings

    import torch
    from torch import nn

    def make_model(seed=0):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        x = torch.randn(60, 4)
        y = torch.randint(0, 3, (60,))
        return model, (x, y), nn.functional.cross_entropy

    def other_model():
        return make_model(seed=1)

    def wrong_order():
        model, data, loss = make_model()
        return data, model, loss

    def a_lambda():
        model, data, loss = make_model()
        return (lambda x: model(x)), data, loss

    def bare_tensor():
        model, (x, y), loss = make_model()
        return model, x, loss

    def no_loss():
        model, data, _ = make_model()
        return model, data, None

    def optimizer_instance():
        model, data, loss = make_model()
        return model, data, loss, torch.optim.SGD(model.parameters(), lr=0.1)

    def wrong_features():
        model, (x, y), loss = make_model()
        return model, (x[:, :3], y), loss

    def coloured_failure():
        raise RuntimeError("\\x1b[31mcannot build\\x1b[0m the model\\n  second line\\n")

    def with_dropout():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 3))
        x = torch.randn(60, 4)
        return model.train(), (x, torch.randint(0, 3, (60,))), nn.functional.cross_entropy

    def noisy():
        from tqdm import tqdm

        warnings.warn("noisy third-party warning", RuntimeWarning)
        chatty = logging.getLogger("chatty_third_party")
        chatty.propagate = False
        chatty.handlers = [logging.StreamHandler(sys.stderr)]
        chatty.warning("noisy third-party log record")
        for _ in tqdm(range(3), desc="noisy bar", mininterval=0):
            pass
        return make_model()
    """
)

TINY = ["--dims", "1", "--steps", "3", "--jr-seeds", "0"]


@pytest.fixture
def factories(tmp_path):
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    return path


@pytest.fixture
def no_hessian(monkeypatch):
    """Any Hessian work fails loudly: bad input must be refused before it."""

    def boom(*args, **kwargs):
        raise AssertionError("Hessian work started before the input was checked")

    for name in ("top_eigenpairs", "trace", "spectral_density"):
        monkeypatch.setattr(landscaper, name, boom)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "\x1b[" not in err and "Traceback" not in err
    return err.strip()


@pytest.fixture
def other_checkpoint(tmp_path, factories):
    """A checkpoint folder of make_model's 1-D grid of 3 points (the library writes it)."""
    namespace: dict = {}
    exec(FACTORIES, namespace)
    model, data, loss_fn = namespace["make_model"]()
    folder = tmp_path / "ckpt"
    Landscape.compute(model.eval(), data, loss_fn, dims=1, steps=3, extent=0.05,
                      checkpoint=folder, progress=False)
    return folder


@pytest.mark.parametrize(
    ("factory", "extra", "fragment"),
    [
        ("wrong_order", [], "element 0 should be the model (an nn.Module) but is a tuple; "
                            "element 1 is the nn.Module"),
        ("a_lambda", [], "element 0 should be the model (an nn.Module) but is a function"),
        ("bare_tensor", [], "element 1) that is a bare tensor; return (inputs, targets)"),
        ("no_loss", [], "loss_fn None (element 2) for (inputs, targets) batches; return a loss"),
        ("optimizer_instance", [], "element 3 should be the optimizer factory"),
        ("wrong_features", [], "mat1 and mat2 shapes cannot be multiplied"),
        ("make_model", ["--params", "nothing.*"], "--params: parameter pattern(s) ['nothing.*'] "
                                                  "match no parameter"),
        ("make_model", ["--device", "gpu"], "--device 'gpu' is not a torch device; use cpu"),
        ("make_model", ["-k", "60"], "pass -k <= 51 or select more parameters with --params"),
        ("make_model", ["--memory-budget", "16"], "raise --memory-budget"),
        ("make_model", ["--memory-budget", "1KiB"], "but --memory-budget is 1.0 KiB; raise "
                                                    "--memory-budget"),
        ("make_model", ["--memory-budget", "lots"], "argument --memory-budget: cannot read"),
        ("make_model", ["--steps", "x"], "argument --steps: invalid int value"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_hessian_work(factory, extra, fragment,
                                                            factories, tmp_path, capsys,
                                                            no_hessian):
    argv = ["analyze", "--model", f"{factories}:{factory}", *TINY, *extra, "--out",
            str(tmp_path / "out"), "-q"]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    err = one_line_error(capsys)
    assert fragment in err
    assert "memory_budget" not in err and "params=" not in err and "loss_fn=" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_exits_2(factories, tmp_path, capsys, no_hessian):
    assert main(["analyze", "--model", f"{factories}:make_model", *TINY, "--device", "cuda",
                 "--out", str(tmp_path / "out")]) == 2
    assert "CUDA is not available on this machine" in one_line_error(capsys)


def test_checkpoint_and_out_are_checked_up_front(factories, tmp_path, capsys, other_checkpoint,
                                                 no_hessian):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [
        (["--model", f"{factories}:other_model", "--checkpoint", str(other_checkpoint)],
         "--checkpoint: the checkpoint in"),  # another model
        (["--model", f"{factories}:make_model", "--checkpoint", str(other_checkpoint),
          "--steps", "5"], "choose another --checkpoint folder"),  # another grid size
        (["--model", f"{factories}:make_model", "--checkpoint", str(a_file)],
         f"--checkpoint {a_file} is a file, not a folder"),
        (["--model", f"{factories}:make_model", "--out", str(a_file)],
         f"--out {a_file} is a file, not a folder"),
        (["--model", f"{factories}:make_model", "--out", str(a_file / "report")],
         f"lies inside {a_file}, which is a file"),
    ]
    for extra, fragment in cases:
        argv = ["analyze", *TINY, "--out", str(tmp_path / "out"), *extra]
        assert main(argv) == 2, extra
        assert fragment in one_line_error(capsys)
    assert main(["report", str(tmp_path / "missing.npz"), "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)


def test_a_whole_pickled_model_as_weights(factories, tmp_path, capsys, no_hessian):
    namespace: dict = {}
    exec(FACTORIES, namespace)
    torch.save(namespace["make_model"]()[0], tmp_path / "whole.pt")
    assert main(["analyze", "--model", f"{factories}:make_model", "--weights",
                 str(tmp_path / "whole.pt"), *TINY, "--out", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert "holds a whole pickled model" in err and "model.state_dict()" in err
    assert "inside the --model factory" in err and "weights_only=False" not in err


def test_errors_lose_ansi_codes_and_extra_lines(factories, tmp_path, capsys):
    assert main(["analyze", "--model", f"{factories}:coloured_failure", "--out",
                 str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert "cannot build the model" in err and "second line" not in err
    assert _one_line("Error(s) in loading X:\n\tMissing key(s): a\n\tUnexpected: b") == (
        "Error(s) in loading X: Missing key(s): a; Unexpected: b")


def test_a_failed_analysis_on_good_input_exits_1_naming_cli_options(factories, tmp_path,
                                                                     capsys):
    # the grid and one evaluation fit 5 KiB; the Hutch++ sketch (10 of 30 probes) does not
    assert main(["analyze", "--model", f"{factories}:make_model", *TINY, "--memory-budget",
                 "5KiB", "--out", str(tmp_path / "out"), "-q"]) == 1
    err = one_line_error(capsys)
    assert "Hutch++" in err and "--trace-method hutchinson" in err
    assert "raise --memory-budget" in err and "n_probes" not in err
    # with Hutchinson's probes, one at a time, the Lanczos basis of SLQ (40 vectors) is next
    assert main(["analyze", "--model", f"{factories}:make_model", *TINY, "--memory-budget",
                 "5KiB", "--trace-method", "hutchinson", "--out", str(tmp_path / "out2"),
                 "-q"]) == 1
    err = one_line_error(capsys)
    assert "Lanczos basis" in err and "raise --memory-budget" in err and "smaller -k" in err
    for api_word in ("memory_budget", "max_iter", "arpack", "method="):
        assert api_word not in err


def test_hf_with_tuple_batches_asks_for_dict_batches(tmp_path, capsys, no_hessian):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=8,
                                     max_position_embeddings=8, num_labels=2)
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    capsys.readouterr()  # save_pretrained's own progress bar
    data = tmp_path / "tuples.py"
    data.write_text("import torch\n\ndef batches():\n    return [(torch.randint(5, 30, (4, 6)), "
                    "torch.randint(0, 2, (4,)))]\n")
    assert main(["analyze", "--hf", str(tmp_path / "bert"), "--data", f"{data}:batches", *TINY,
                 "--out", str(tmp_path / "out"), "-q"]) == 2
    err = one_line_error(capsys)
    assert "--data must return dict batches with labels" in err and "loss_fn" not in err


def test_compare_refuses_a_landscape_without_finite_values(tmp_path, capsys):
    axes = [np.linspace(-1, 1, 3)] * 2
    good, bad = tmp_path / "good.npz", tmp_path / "nan.npz"
    Landscape(np.arange(9.0).reshape(3, 3), axes, {}).save(good)
    Landscape(np.full((3, 3), np.nan), axes, {}).save(bad)
    assert main(["compare", str(good), str(bad)]) == 2
    err = one_line_error(capsys)
    assert f"{bad}: only 0 of 9 values are finite" in err
    assert main(["report", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert str(bad) in one_line_error(capsys)


def test_analyze_puts_the_model_in_eval_mode_and_says_so(factories, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="landscaper.cli")
    # in training mode its dropout would make the Objective refuse it
    assert main(["analyze", "--model", f"{factories}:with_dropout", *TINY, "--out",
                 str(tmp_path / "out")]) == 0
    assert any("called model.eval()" in r.getMessage() for r in caplog.records)


def test_quiet_silences_warnings_logs_and_progress_bars(factories, tmp_path, capsys, recwarn):
    argv = ["analyze", "--model", f"{factories}:noisy", *TINY, "--out", str(tmp_path / "out")]
    assert main([*argv, "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert not [w for w in recwarn if "noisy" in str(w.message)]
    assert main(argv) == 0  # the same run without --quiet shows them all
    captured = capsys.readouterr()
    assert "noisy bar" in captured.err and "noisy third-party log record" in captured.err
    assert "report:" in captured.out
    assert [w for w in recwarn if "noisy" in str(w.message)]


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"landscaper {landscaper.__version__}"
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    pages = {"": parser.format_help(), **{n: p.format_help() for n, p in commands.items()}}
    for name, page in pages.items():
        assert "``" not in page and "default: None" not in page and "default: False" not in page
        assert "exit codes" in page, name
    assert "(default: 2GiB)" in pages["analyze"] and "(default: 21)" in pages["analyze"]
    assert "(default: 15, 7 with --quick)" in pages["demo"]


def test_console_script_prints_one_line(factories, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "landscaper", "analyze", "--model",
                           f"{factories}:wrong_order", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "element 0 should be the model" in proc.stderr
