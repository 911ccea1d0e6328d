"""The ``landscaper`` command line.

Commands: ``demo`` (the embedded default analysis), ``analyze`` (your own model), ``report``
(rebuild a report from a saved landscape) and ``compare`` (two saved landscapes).
Exit codes: 0 success, 1 the analysis failed, 2 bad arguments or inputs. Errors are one line;
``--verbose`` adds the traceback.

Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1), ``demo`` and ``analyze`` join a
process group (NCCL for a CUDA ``--device``, each rank on ``cuda:LOCAL_RANK``; gloo otherwise),
every rank computes the spectrum, the grid is sharded across ranks with rank 0's directions,
and only rank 0 prints and writes files (see ``docs/distributed.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import __version__, pipeline
from ._files import dumps
from ._utils import Stopwatch
from .pipeline import AnalysisConfig, _one_line

logger = logging.getLogger("landscaper.cli")

_DESCRIPTION = ("Loss-landscape analysis of PyTorch models: the Hessian spectrum, the loss on a "
                "grid along its top eigenvectors, the topology of that grid and jump & retrain, "
                "written as a self-contained HTML report.")
_EPILOG = ("exit codes: 0 ok, 1 the analysis failed on good input, 2 bad arguments or input. "
           "Errors are one line; --verbose adds the traceback.")


class UsageError(Exception):
    """Bad arguments or inputs: exit code 2."""


# ---------------------------------------------------------------------- one-line errors
#: Library hints that name Python keyword arguments, in the CLI's options (applied in order).
_CLI_HINTS: list[tuple[re.Pattern[str], str]] = [(re.compile(a), b) for a, b in [
    (r"^device (\S+): cannot move the model there", r"--device \1: cannot move the model there"),
    (r"^dims=(\d+) exceeds the (\d+) parameters in θ; pass dims <=",
     r"--dims \1 exceeds the \2 parameters in θ; pass --dims <="),
    (r"^k=(\d+) asks for more eigenvalues than the (\d+) parameters in θ; pass k <=",
     r"-k \1 asks for more eigenvalues than the \2 parameters in θ; pass -k <="),
    (r"but memory_budget is (.+?); raise memory_budget, pass smaller batches,",
     r"but --memory-budget is \1; raise --memory-budget, give the factory smaller batches,"),
    (r'use method="arpack" with a small ncv, raise memory_budget, or lower max_iter',
     "raise --memory-budget, or ask for fewer eigenvalues with a smaller -k"),
    (r"pass 1 <= dims \(k\) <= (\d+), or select more parameters with params=\[\.\.\.\]",
     r"pass --dims and -k of at most \1, or select more parameters with --params"),
    (r"use fewer steps or dims, or raise memory_budget",
     "use fewer --steps or --dims, or raise --memory-budget"),
    (r"^Hutch\+\+ with n_probes=(\d+) keeps", r"Hutch++ with \1 trace probes keeps"),
    (r"use fewer n_probes, method='hutchinson', or a larger memory_budget",
     "pass --trace-method hutchinson or raise --memory-budget"),
    (r"pass chunk_size<=\d+ or raise memory_budget", "raise --memory-budget"),
    (r"raise memory_budget", "raise --memory-budget"),
    (r"with params=\[\.\.\.\]", "with --params"),
    (r"params=\[\.\.\.\]", "--params"),
    (r'pass extent_unit="absolute" with extents in direction units',
     "pass --extent-unit absolute with --extent in direction units"),
    (r"Call model\.eval\(\) before building the Objective, or pass allow_train_mode=True to "
     r"analyse the training-mode loss\.",
     "The CLI has called model.eval() already, so the randomness is in the model's forward "
     "itself: make it deterministic in eval mode."),
    (r", or use batch_loss=\.\.\. for an unsupervised loss", ""),
    (r"pass sample_count=lambda batch: \.\.\. \(or one count per batch\)",
     "give every batch its targets (or labels)"),
    (r"choose another checkpoint path", "choose another --checkpoint folder"),
]]


def _for_cli(text: str, args: argparse.Namespace) -> str:
    """A library message as one line naming CLI options instead of keyword arguments."""
    text = _one_line(text)
    hf = bool(getattr(args, "hf", None))
    if text.startswith("loss_fn is required for (inputs, targets) batches"):
        if hf:
            return ("--hf takes the loss from outputs.loss, so --data must return dict batches "
                    "with labels (e.g. [{'input_ids': ..., 'attention_mask': ..., 'labels': "
                    "...}]), not (inputs, targets) tuples")
        return ("the --model factory returned loss_fn None (element 2) for (inputs, targets) "
                "batches; return a loss function as element 2, e.g. "
                "torch.nn.functional.cross_entropy")
    if text.startswith("the model output has no .loss"):
        if hf:
            return ("--hf takes the loss from outputs.loss, but the model output has none: "
                    "--data must return dict batches with labels")
        return ("the model output has no .loss: include labels in the dict batches, or return a "
                "loss function loss_fn(outputs, batch) as the factory's element 2")
    if text.startswith("parameter pattern(s)"):
        text = f"--params: {text}"
    for pattern, replacement in _CLI_HINTS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def _input_errors() -> Iterator[None]:
    """Turn the library's refusals of bad input into `UsageError` (exit 2); a mismatched
    checkpoint is passed on as it is (main gives it exit 2 as well)."""
    from .grid import CheckpointMismatchError

    try:
        yield
    except (UsageError, CheckpointMismatchError):
        raise
    except (ValueError, TypeError, MemoryError, ImportError) as err:
        raise UsageError(str(err)) from err


# ---------------------------------------------------------------------- --quiet
@contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """With ``--quiet``: no warnings (python ``warnings``, any library's logging below ERROR,
    transformers' and phate's included) and no tqdm progress bars, whoever creates them."""
    if not quiet:
        yield
        return
    env = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "TQDM_DISABLE": "1"}
    saved_env = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    previous_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)
    tqdm_class, saved_init = None, None
    try:
        import tqdm.std

        tqdm_class, saved_init = tqdm.std.tqdm, tqdm.std.tqdm.__dict__["__init__"]
        original = tqdm_class.__init__

        def silent_init(self: Any, *a: Any, **kw: Any) -> None:
            kw["disable"] = True
            original(self, *a, **kw)

        tqdm_class.__init__ = silent_init
    except ImportError:  # pragma: no cover - tqdm is a dependency
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if tqdm_class is not None:
            tqdm_class.__init__ = saved_init
        logging.disable(previous_disable)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _print_stage(name: str, seconds: float, summary: str) -> None:
    """A finished stage as the line "[  1.2 s] name: summary"."""
    print(f"[{seconds:6.1f} s] {name}: {summary}", flush=True)


def _stage(name: str, quiet: bool) -> Callable[[str], None]:
    """Start timing stage ``name``; the returned ``done(summary)`` prints its line."""
    watch = Stopwatch()

    def done(summary: str) -> None:
        if not quiet:
            _print_stage(name, watch.seconds, summary)

    return done


# ---------------------------------------------------------------------- checks of the request
def _check_folder(option: str, path: str) -> None:
    """Refuse a folder path that names an existing file or lies below one."""
    folder = Path(path)
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = ("is a file, not a folder" if candidate == folder
                        else f"lies inside {candidate}, which is a file")
                raise UsageError(f"{option} {folder} {what}; pass a folder path (it is created "
                                 "when missing)")
            return


def _check_device(spec: str, ranked: bool) -> None:
    """Refuse a device torch does not know or this machine does not have."""
    import torch

    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"--device {spec!r} is not a torch device; use cpu, cuda, cuda:N or mps"
                         f"{' (for a GPU: --device cuda)' if spec.lower() == 'gpu' else ''}"
                         ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine "
                             "(torch.cuda.is_available() is False); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and not ranked and device.index >= count:
            raise UsageError(f"--device {spec}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {spec}: MPS is not available on this machine; use --device "
                         "cpu")


def _check_request(args: argparse.Namespace, ranked: bool) -> None:
    """Everything about an analysis that can be checked before a model exists."""
    from .grid import check_checkpoint_path, check_grid_size

    _check_device(args.device, ranked)
    _check_folder("--out", args.out)
    if args.checkpoint is not None:
        check_checkpoint_path(args.checkpoint)
        _check_folder("--checkpoint", args.checkpoint)
    with _input_errors():
        check_grid_size([args.steps] * args.dims, args.memory_budget)


def config_from_args(args: argparse.Namespace) -> AnalysisConfig:
    """The `AnalysisConfig` of parsed ``demo``/``analyze`` arguments (defaults filled in)."""
    return AnalysisConfig(
        dims=args.dims, steps=args.steps, extent=args.extent, extent_unit=args.extent_unit,
        extent_factor=getattr(args, "extent_factor", 10.0),
        extent_rise=getattr(args, "extent_rise", 1.0),
        k=args.k, curvature=getattr(args, "curvature", "hessian"), seed=args.seed,
        trace_probes=args.trace_probes, trace_method=getattr(args, "trace_method", "hutch++"),
        slq_probes=args.slq_probes, slq_steps=args.slq_steps,
        params=args.params, device=args.device,
        memory_budget=args.memory_budget, checkpoint=args.checkpoint, jr_seeds=args.jr_seeds,
        jr_epochs=args.jr_epochs, jr_steps=args.jr_steps, jr_k=args.jr_k, out=Path(args.out),
        progress=not args.quiet)


def _run(model: Any, data: Any, loss_fn: Any, args: argparse.Namespace, *,
         accuracy_fn: Any = None, train: dict[str, Any] | None = None,
         batch_loss: Any = None, out: Path | None = None, result: bool = False) -> Any:
    """The pipeline with the CLI's progress lines; its refusals of bad input (before any
    Hessian work) become `UsageError` (exit 2). Returns the report folder (``out``, default
    ``--out``), or the whole `AnalysisResult` with ``result=True``."""
    config = config_from_args(args)
    if out is not None:
        config = dataclasses.replace(config, out=out)
    with _input_errors():
        objective = pipeline.prepare_objective(model, data, loss_fn, config,
                                               batch_loss=batch_loss)
    analysis = pipeline.run_analysis(model, data, loss_fn, config, accuracy_fn=accuracy_fn,
                                     train=train, on_stage=None if args.quiet else _print_stage,
                                     objective=objective, batch_loss=batch_loss)
    return analysis if result else analysis.out


def run_analysis(model: Any, data: Any, loss_fn: Any, args: argparse.Namespace,
                 accuracy_fn: Any = None, train: dict[str, Any] | None = None) -> Path:
    """Deprecated: use `landscaper.pipeline.run_analysis` with an `AnalysisConfig`
    (`config_from_args` turns parsed arguments into one).

    Runs the analysis of parsed ``demo``/``analyze`` arguments as the CLI does, bad input
    raised as `UsageError`; returns the report folder.
    """
    warnings.warn("landscaper.cli.run_analysis is deprecated; use "
                  "landscaper.pipeline.run_analysis(model, data, loss_fn, AnalysisConfig(...))",
                  DeprecationWarning, stacklevel=2)
    return _run(model, data, loss_fn, args, accuracy_fn=accuracy_fn, train=train)


def _demo(args: argparse.Namespace) -> int:
    from .examples.pinn import demo_pair
    from .report import write_comparison

    done = _stage("train two convection PINNs (β = 1 fits, β = 30 fails)", args.quiet)
    pair = demo_pair(quick=args.quick)
    done(", ".join(f"{p.name}: relative L2 error {p.info['relative_l2']:.3f}" for p in pair))
    reports = []
    for i, trained in enumerate(pair):
        if not args.quiet:
            print(f"-- {trained.name}")
        result = _run(trained.model, trained.batch, None, args,
                      train={"optimizer_factory": trained.optimizer_factory,
                             "train_epoch": trained.train_epoch},
                      batch_loss=trained.batch_loss, out=Path(args.out) / f"model_{i + 1}",
                      result=True)
        reports.append((trained.name, result.report))
    out = write_comparison(args.out, reports)
    if not args.quiet:
        print(f"report: {out / 'index.html'}")
    return 0


def _load_factory(option: str, spec: str) -> Callable[[], Any]:
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise UsageError(f"{option} {spec!r} must look like path/to/file.py:make_model")
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{option}: no file {file}")
    module_spec = importlib.util.spec_from_file_location(f"_landscaper_user_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        raise UsageError(f"{option}: importing {file} failed: {type(err).__name__}: {err}"
                         ) from err
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"{option}: {file} has no callable {name!r}")
    return factory


def _call_factory(option: str, spec: str) -> Any:
    factory = _load_factory(option, spec)
    try:
        return factory()
    except Exception as err:
        raise UsageError(f"{option}: {spec}() raised {type(err).__name__}: "
                         f"{_one_line(str(err), 300)}") from err


def _kind(value: Any) -> str:
    """What a value is, with its article: "a tuple", "an nn.Module (Sequential)"."""
    if _is_module(value):
        return f"an nn.Module ({type(value).__name__})"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _is_module(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)


_ELEMENTS = ("the model (an nn.Module)", "the data", "the loss function (or None for dict "
             "batches)", "the optimizer factory (parameters -> optimizer, e.g. lambda ps: "
             "torch.optim.SGD(ps, lr=0.1))")


def _unpack(made: Any, spec: str, data_given: bool) -> tuple[Any, Any, Any, Any]:
    """The factory's (model, data, loss_fn[, optimizer_factory]), each element checked for
    what it must be, so that a wrong order is named element by element."""
    where = f"--model: {spec}()"
    if not (isinstance(made, (tuple, list)) and len(made) in (3, 4)):
        got = (f"a {len(made)}-tuple" if isinstance(made, (tuple, list))
               else f"a {type(made).__name__}")
        raise UsageError(f"{where} must return (model, data, loss_fn) or (model, data, loss_fn, "
                         f"optimizer_factory), got {got}")
    model, data, loss_fn = made[:3]
    optimizer_factory = made[3] if len(made) == 4 else None
    shown = f"({', '.join(type(v).__name__ for v in made)})"
    if not _is_module(model):
        modules = [i for i, v in enumerate(made) if _is_module(v) and any(
            True for _ in v.parameters())]
        hint = (f"; element {modules[0]} is the nn.Module: return (model, data, loss_fn) in that "
                "order" if modules else "; wrap a function in an nn.Module whose parameters it "
                "uses")
        raise UsageError(f"{where} returned {shown}: element 0 should be {_ELEMENTS[0]} but is "
                         f"{_kind(model)}{hint}")
    if not data_given and _is_module(data):
        raise UsageError(f"{where} returned {shown}: element 1 should be {_ELEMENTS[1]} but is "
                         f"{_kind(data)}; return (model, data, loss_fn) in that order")
    if loss_fn is not None and not callable(loss_fn):
        raise UsageError(f"{where} returned {shown}: element 2 should be {_ELEMENTS[2]} but is "
                         f"{_kind(loss_fn)}")
    if optimizer_factory is not None and (not callable(optimizer_factory)
                                          or _is_module(optimizer_factory)):
        raise UsageError(f"{where} returned {shown}: element 3 should be {_ELEMENTS[3]} but is "
                         f"{_kind(optimizer_factory)}")
    return model, data, loss_fn, optimizer_factory


def _check_data(data: Any, source: str, hf: bool) -> None:
    """Refuse data forms whose mistake the CLI can name better than the library."""
    import torch

    forms = ("dict batches with labels (a dict or a list of dicts)" if hf
             else "(inputs, targets), a list of such tuples, or dict batches")
    if isinstance(data, torch.Tensor):
        raise UsageError(f"{source} is a bare tensor; return {forms}")
    if data is None:
        raise UsageError(f"{source} is None; return {forms}")
    if _is_module(data):
        raise UsageError(f"{source} is an nn.Module ({type(data).__name__}), not data; return "
                         f"{forms}")


def _load_hf(directory: str) -> Any:
    """A local HuggingFace model directory, loaded offline with eager attention (SDPA has no
    double backward on CPU); the class is the one named in its config."""
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise UsageError(f"--hf: {path} has no config.json, so it is not a HuggingFace model "
                         "directory (save one with model.save_pretrained(path))")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError as err:
        raise UsageError('--hf needs the transformers package: pip install '
                         '"transformers>=4.40" "accelerate>=1.1" (in a checkout of landscaper: '
                         'pip install -e ".[hf]")') from err
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        name = (config.architectures or ["AutoModel"])[0]
        model_class = getattr(transformers, name, transformers.AutoModel)
        return model_class.from_pretrained(path, attn_implementation="eager")
    except (OSError, ValueError, TypeError, KeyError, ImportError) as err:
        raise UsageError(f"--hf: cannot load {path}: {type(err).__name__}: "
                         f"{_one_line(str(err), 300)}") from err


def _load_weights(model: Any, file: str) -> None:
    """Load a state dict (or {"state_dict": ...}) with ``weights_only=True``."""
    import pickle

    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise UsageError(f"--weights: no file {file}") from err
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        name = found.group(1) if found else None
        what = ("a whole pickled model" if name and ".nn.modules." in name
                else "pickled Python objects")
        seen = f" ({name})" if name else ""
        raise UsageError(f"--weights: {file} holds {what}{seen} rather than a state dict of "
                         "tensors, and the CLI loads with weights_only=True; save "
                         "model.state_dict() instead (torch.save(model.state_dict(), path)), or "
                         "load the model inside the --model factory") from err
    except Exception as err:
        raise UsageError(f"--weights: cannot load {file} with weights_only=True "
                         f"({type(err).__name__}: {_one_line(str(err), 300)})") from err
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UsageError(f"--weights: {file} holds a {type(state).__name__}, not a state dict; "
                         "save model.state_dict()")
    try:
        model.load_state_dict(state)
    except Exception as err:
        raise UsageError(f"--weights {file} do not fit the model: {_one_line(str(err), 600)}"
                         ) from err


def _analyze(args: argparse.Namespace) -> int:
    hf = bool(args.hf)
    if hf:
        if not args.data:
            raise UsageError("--hf needs --data path/to/file.py:make_batches returning dict "
                             "batches with labels (the loss is outputs.loss)")
        model, data, loss_fn, optimizer_factory = _load_hf(args.hf), None, None, None
    else:
        made = _call_factory("--model", args.model)
        model, data, loss_fn, optimizer_factory = _unpack(made, args.model, bool(args.data))
    if args.data:
        data = _call_factory("--data", args.data)
        _check_data(data, f"--data: {args.data}() returned data that", hf)
    else:
        _check_data(data, f"--model: {args.model}() returned data (element 1) that", hf)
    if args.weights:
        _load_weights(model, args.weights)
    # the CLI owns the model its factory built: analyse it as it predicts
    model.eval()
    logger.info("called model.eval() on the %s from %s (the CLI owns the model it built; "
                "the Python API never does this)", type(model).__name__,
                args.hf or args.model)
    train = ({"optimizer_factory": optimizer_factory}
             if optimizer_factory is not None and args.jr_seeds > 0 else None)
    out = _run(model, data, loss_fn, args, train=train)
    if not args.quiet:
        print(f"report: {out / 'index.html'}")
    return 0


def _load_landscape(path: str) -> Any:
    """A saved landscape whose topology is defined (enough finite losses); any other file
    is refused naming it."""
    from .io import LandscapeFileError
    from .landscape import Landscape

    try:
        land = Landscape.load(path)
    except (FileNotFoundError, LandscapeFileError) as err:
        raise UsageError(str(err)) from err
    try:
        land.merge_tree()  # cached for the report or comparison
    except ValueError as err:  # e.g. no finite values: topology undefined
        raise UsageError(f"{path}: {_one_line(str(err))}") from err
    return land


def _report(args: argparse.Namespace) -> int:
    from .report import report_for_landscape

    land = _load_landscape(args.landscape)
    out = report_for_landscape(land, args.out)
    if not args.quiet:
        print(f"report: {out / 'index.html'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .summaries import names, summarize
    from .topology import bottleneck_distance

    lands = [_load_landscape(p) for p in (args.a, args.b)]
    rows = [summarize(land, "compare") for land in lands]
    keys = names("compare")
    result = {"a": str(args.a), "b": str(args.b), "metrics": {k: [r[k] for r in rows]
                                                             for k in keys},
              "bottleneck_distance_d0": bottleneck_distance(lands[0].persistence(),
                                                            lands[1].persistence())}
    if args.json:
        print(dumps(result))  # strict JSON: NaN/inf as "nan"/"inf", as in every file we write
        return 0
    print(f"{'':<22} {'A':>24} {'B':>24}")
    for key in keys:
        a, b = (json.dumps(v, default=lambda o: f"{o:.4g}") if not isinstance(v, float)
                else f"{v:.6g}" for v in result["metrics"][key])
        print(f"{key:<22} {a[:24]:>24} {b[:24]:>24}")
    print(f"{'bottleneck distance D0':<22} {result['bottleneck_distance_d0']:>24.6g}")
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default where it has one (not None/False noise)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or not action.option_strings or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, exit code 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _byte_size(text: str) -> int:
    from ._utils import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as a size; write e.g. 4GiB, "
                                         "500MB or 2000000000 (bytes)") from None


def _optional_float(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor none") from None


def _extent(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a number; write e.g. "
                                         "--extent auto or --extent 0.05") from None


def _add_analysis_options(parser: argparse.ArgumentParser, command: str) -> None:
    steps = "15, 7 with --quick" if command == "demo" else "21"
    jr = {"seeds": "4, 2 with --quick", "epochs": "10, 3 with --quick",
          "steps": "0.25 0.5 0.75 1.0; 0.5 1.0 with --quick"} if command == "demo" else {
          "seeds": "4", "epochs": "10", "steps": "0.25 0.5 0.75 1.0"}
    parser.add_argument("--out", default="landscaper-report", metavar="DIR",
                        help="report folder, created when missing")
    parser.add_argument("--dims", type=int, default=3, help="landscape dimensions, 1 to 5")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"points per axis (default: {steps})")
    parser.add_argument("--extent", type=_extent, default="auto",
                        help="half-width per axis, or auto: where 1-D scans see the loss first "
                             "reach the lower of --extent-factor x and --extent-rise above "
                             "θ₀'s loss")
    factor, rise = (100.0, None) if command == "demo" else (10.0, 1.0)
    parser.add_argument("--extent-factor", type=_optional_float, default=factor,
                        help="with --extent auto: the multiple of θ₀'s loss to reach (none: "
                             f"only --extent-rise; default {factor:g})")
    parser.add_argument("--extent-rise", type=_optional_float, default=rise,
                        help="with --extent auto: the rise above θ₀'s loss to reach (none: "
                             f"only --extent-factor; default {rise})")
    parser.add_argument("--extent-unit", choices=["relative", "absolute"], default="relative",
                        help="relative: fraction of ‖θ₀‖; absolute: direction units")
    parser.add_argument("--params", nargs="*", default=None,
                        help="parameter names or shell patterns forming θ (default: all "
                             "trainable parameters)")
    parser.add_argument("-k", type=int, default=5, help="top Hessian eigenvalues")
    parser.add_argument("--curvature", choices=["hessian", "ggn", "fisher"], default="hessian",
                        help="curvature matrix of the spectrum and the landscape's directions: "
                             "the Hessian, the generalised Gauss-Newton or the empirical Fisher "
                             "(these two need (inputs, targets) batches and a loss_fn)")
    parser.add_argument("--trace-method", choices=["hutch++", "hutchinson"], default="hutch++",
                        help="trace estimator: Hutch++ (lower variance at equal products when a "
                             "few eigenvalues dominate) or plain Hutchinson")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the Lanczos start vectors and trace/SLQ probes")
    parser.add_argument("--device", default="cpu",
                        help="torch device, e.g. cpu, cuda or cuda:0 (under torchrun: "
                             "cuda:LOCAL_RANK)")
    parser.add_argument("--memory-budget", type=_byte_size, default="2GiB", metavar="SIZE",
                        help="bytes the Lanczos basis and the batched grid evaluation may use, "
                             "e.g. 4GiB or 500MB")
    parser.add_argument("--checkpoint", default=None, metavar="DIR",
                        help="folder making the grid resumable, created when missing")
    parser.add_argument("--jr-seeds", type=int, default=None,
                        help=f"J&R seeds, 0 skips J&R (default: {jr['seeds']})")
    parser.add_argument("--jr-epochs", type=int, default=None,
                        help=f"J&R retraining epochs (default: {jr['epochs']})")
    parser.add_argument("--jr-steps", type=float, nargs="+", default=None,
                        help=f"J&R step sizes (default: {jr['steps']})")
    parser.add_argument("--jr-k", type=int, default=None,
                        help="kNN graph neighbours of J&R (default: 20, as the paper; 5 with "
                             "--quick, whose 16 samples 20 neighbours would join completely)")


def _fill_defaults(args: argparse.Namespace) -> None:
    quick = getattr(args, "quick", False)
    full_steps = 15 if args.command == "demo" else 21  # the demo stays under 3 minutes
    defaults = {"steps": 7 if quick else full_steps, "jr_seeds": 2 if quick else 4,
                "jr_epochs": 3 if quick else 10, "jr_k": 5 if quick else 20,
                "jr_steps": [0.5, 1.0] if quick else [0.25, 0.5, 0.75, 1.0]}
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.trace_probes = 10 if quick else 30
    args.slq_probes = 2 if quick else 3
    args.slq_steps = 20 if quick else 40
    if args.dims < 1 or args.dims > 5:
        raise UsageError(f"--dims must be between 1 and 5, got {args.dims}")
    if args.steps < 2:
        raise UsageError(f"--steps must be at least 2, got {args.steps}")
    if args.extent != "auto" and not args.extent > 0:
        raise UsageError(f"--extent must be positive, got {args.extent}; e.g. --extent 0.05")
    if args.extent == "auto":
        if args.extent_factor is None and args.extent_rise is None:
            raise UsageError("--extent auto needs --extent-factor or --extent-rise (not both "
                             "none)")
        for name in ("extent_factor", "extent_rise"):
            value = getattr(args, name)
            if value is not None and not value > (1 if name == "extent_factor" else 0):
                bound = "above 1" if name == "extent_factor" else "positive"
                raise UsageError(f"--{name.replace('_', '-')} must be {bound}, got {value}")
    if args.dims > args.k:
        args.k = args.dims


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = _Parser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="log every stage; errors come with their traceback")
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="print nothing but errors: no progress bars, no warnings (of "
                                "landscaper or any other library)")
    parser = _Parser(prog="landscaper", description=_DESCRIPTION, epilog=_EPILOG,
                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"landscaper {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common],
                              epilog=_EPILOG, formatter_class=_HelpFormatter)

    demo = add("demo", "train two convection PINNs, one that fits (β = 1) and one that fails "
                       "(β = 30), and write a report comparing their landscapes")
    demo.add_argument("--quick", action="store_true", help="small settings (< 30 s)")
    _add_analysis_options(demo, "demo")
    demo.set_defaults(func=_demo)
    analyze = add("analyze", "analyse your own model (its factory's model is put in eval mode)")
    source = analyze.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="FILE.py:FACTORY",
                        help="a factory returning (model, data, loss_fn[, optimizer_factory]); "
                             "J&R runs when an optimizer factory is given")
    source.add_argument("--hf", metavar="DIR",
                        help="a local HuggingFace model directory (loaded offline, eager "
                             "attention); needs --data")
    analyze.add_argument("--data", default=None, metavar="FILE.py:FACTORY",
                         help="a factory returning the data (for --hf: dict batches with "
                              "labels; with --model it replaces the factory's data)")
    analyze.add_argument("--weights", default=None, metavar="FILE.pt",
                         help="a state dict, or {'state_dict': ...}, loaded with "
                              "weights_only=True (not a whole pickled model)")
    _add_analysis_options(analyze, "analyze")
    analyze.set_defaults(func=_analyze)
    report = add("report", "rebuild a report from a saved landscape")
    report.add_argument("landscape", help="a .npz written by Landscape.save")
    report.add_argument("--out", default="landscaper-report", metavar="DIR",
                        help="report folder, created when missing")
    report.set_defaults(func=_report)
    compare = add("compare", "two saved landscapes side by side")
    compare.add_argument("a", help="a .npz written by Landscape.save")
    compare.add_argument("b", help="another one")
    compare.add_argument("--json", action="store_true", help="print JSON")
    compare.set_defaults(func=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``landscaper`` console script."""
    from .grid import CheckpointMismatchError

    parser = build_parser()
    args = parser.parse_args(argv)
    ranked = int(os.environ.get("WORLD_SIZE", "1")) > 1
    where = f" [rank {os.environ.get('RANK', '?')}]" if ranked else ""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"%(asctime)s{where} %(name)s %(levelname)s %(message)s")
    prefix = f"landscaper {args.command}"
    joined = False
    try:
        with _silenced(args.quiet):
            if hasattr(args, "dims"):
                _fill_defaults(args)
                _check_request(args, ranked)  # before a model is built or a group joined
                if ranked:  # launched by torchrun: shard the grid over the ranks
                    from .distributed import init_from_env, rank

                    joined = init_from_env(args.device)
                    args.quiet = args.quiet or rank() != 0
            elif getattr(args, "out", None):
                _check_folder("--out", args.out)
            return args.func(args)
    except (UsageError, CheckpointMismatchError) as err:
        if args.verbose:
            logger.exception("bad input")
        message = _for_cli(str(err), args)
        if isinstance(err, CheckpointMismatchError):
            message = (f"--{message}" if message.startswith("checkpoint ")
                       else f"--checkpoint: {message}")
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 1
    except Exception as err:  # a failed analysis: one line, the traceback with --verbose
        if args.verbose:
            logger.exception("failed")
        print(f"{prefix}: failed: {type(err).__name__}: {_for_cli(str(err), args)} "
              "(rerun with --verbose for the traceback)", file=sys.stderr)
        return 1
    finally:
        if joined:
            import torch.distributed

            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
