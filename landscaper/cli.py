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
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("landscaper.cli")


class UsageError(Exception):
    """Bad arguments or inputs: exit code 2."""


def _stage(name: str, quiet: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def done(summary: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - start:6.1f} s] {name}: {summary}", flush=True)

    return done


def run_analysis(model: Any, data: Any, loss_fn: Any, args: argparse.Namespace,
                 accuracy_fn: Any = None, train: dict[str, Any] | None = None) -> Path:
    """Spectrum, landscape, topology and (optionally) J&R, written as a report.

    In a distributed run every rank computes the spectrum and its share of the grid; only rank
    0 goes on to topology and J&R and writes the report.
    """
    import numpy as np

    from . import Landscape, Objective, spectral_density, top_eigenpairs, trace
    from . import distributed as dist_utils
    from .report import Report, Spectrum, add_jump_retrain, add_landscape, add_spectrum

    out = Path(args.out)
    leader = dist_utils.rank() == 0
    quiet = args.quiet or not leader
    progress = not quiet
    # the CLI built this model itself; batches follow it
    model = model.to(dist_utils.local_device(args.device))
    objective = Objective(model, data, loss_fn, args.params or None)
    report = Report(out)
    report.metrics["settings"] = {
        "dims": args.dims, "steps": args.steps, "extent": args.extent,
        "extent_unit": args.extent_unit, "params": args.params, "k": args.k,
        "num_params": objective.num_params, "num_samples": objective.num_samples,
        "device": str(objective.device),
    }
    done = _stage("Hessian spectrum", quiet)
    eig = top_eigenpairs(objective, k=max(args.k, args.dims), seed=args.seed)
    tr = trace(objective, n_probes=args.trace_probes, seed=args.seed)
    slq = spectral_density(objective, n_probes=args.slq_probes, n_steps=args.slq_steps,
                           seed=args.seed)
    grid = np.linspace(slq.nodes.min() - 0.05 * abs(slq.nodes.min()) - 1e-6,
                       slq.nodes.max() * 1.05 + 1e-6, 400)
    if leader:
        add_spectrum(report, Spectrum(eig.eigenvalues, eig.n_hvp + tr.n_hvp + slq.n_hvp,
                                      tr.estimate, tr.std_error, grid, slq.density(grid)))
    done(f"top eigenvalue {eig.eigenvalues[0]:.4g}, trace {tr.estimate:.4g} ± "
         f"{tr.std_error:.2g}")

    done = _stage(f"{args.dims}-D Hessian landscape", quiet)
    directions = eig.eigenvectors[: args.dims]
    land = Landscape.compute(objective=objective, directions=directions, steps=args.steps,
                             extent=args.extent, extent_unit=args.extent_unit,
                             checkpoint=args.checkpoint, progress=progress,
                             description={"model": type(model).__name__},
                             distributed=None)  # every rank runs this: shard under torchrun
    land.metadata["directions"]["eigenvalues"] = eig.eigenvalues[: args.dims].tolist()
    land.metadata["directions"]["kind"] = "hessian"
    if not leader:  # the other ranks' part ends with the grid
        return out
    land.save(out / "landscape.npz")
    done(f"{land.loss.size} points, loss {np.nanmin(land.loss):.4g}..{np.nanmax(land.loss):.4g}")

    done = _stage("topology", quiet)
    add_landscape(report, land)
    lm = report.metrics["landscape"]
    done(f"{lm['minima']} minima, SMAD {lm['smad']:.4g} (normalized {lm['smad_normalized']:.4g})")

    if train is not None:
        from .jump_retrain import JumpRetrain

        done = _stage("jump & retrain", quiet)
        embedding = "phate" if importlib.util.find_spec("phate") else "pca"
        jr = JumpRetrain(model, data, loss_fn, train["optimizer_factory"],
                         accuracy_fn=accuracy_fn, params=args.params or None,
                         seeds=tuple(range(args.jr_seeds)), step_sizes=tuple(args.jr_steps),
                         epochs=args.jr_epochs, embedding=embedding, k=args.jr_k,
                         progress=progress)
        jr.fit()
        add_jump_retrain(report, jr)
        jm = report.metrics["jump_retrain"]
        done(f"{jm['samples']} samples ({embedding}), total persistence D0 "
             f"{jm['total_persistence_d0']:.4g}, D1 {jm['total_persistence_d1']:.4g}")
    report.write()
    return out


def _demo(args: argparse.Namespace) -> int:
    import torch

    from .examples import digits_cnn, digits_data, train_classifier

    done = _stage("train a digits CNN", args.quiet)
    x, y = digits_data()
    if args.quick:
        x, y = x[:600], y[:600]
    model = train_classifier(digits_cnn(), x, y, epochs=12 if args.quick else 20, lr=0.05)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    done(f"{sum(p.numel() for p in model.parameters())} parameters, train accuracy {acc:.3f}")
    batches = [(x[i : i + 256], y[i : i + 256]) for i in range(0, len(y), 256)]
    factory = lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)  # noqa: E731
    out = run_analysis(model, batches, torch.nn.functional.cross_entropy, args,
                       train={"optimizer_factory": factory},
                       accuracy_fn=lambda o, t: (o.argmax(1) == t).float().mean())
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
        raise UsageError(f"{option}: {spec}() raised {type(err).__name__}: {err}") from err


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
        raise UsageError("--hf needs the transformers package: pip install transformers") from err
    config = transformers.AutoConfig.from_pretrained(path)
    name = (config.architectures or ["AutoModel"])[0]
    model_class = getattr(transformers, name, transformers.AutoModel)
    return model_class.from_pretrained(path, attn_implementation="eager")


def _analyze(args: argparse.Namespace) -> int:
    import torch

    if args.hf:
        if not args.data:
            raise UsageError("--hf needs --data path/to/file.py:make_batches returning dict "
                             "batches with labels (the loss is outputs.loss)")
        made: Any = (_load_hf(args.hf), None, None)
    else:
        made = _call_factory("--model", args.model)
        if not (isinstance(made, (tuple, list)) and len(made) in (3, 4)):
            raise UsageError(f"--model: {args.model}() must return (model, data, loss_fn) or "
                             "(model, data, loss_fn, optimizer_factory)")
    model, data, loss_fn = made[:3]
    if args.data:
        data = _call_factory("--data", args.data)
    if args.weights:
        try:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
        except Exception as err:
            raise UsageError(f"--weights: cannot load {args.weights} with weights_only=True: "
                             f"{err}") from err
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except Exception as err:
            raise UsageError(f"--weights do not fit the model: {err}") from err
    model.eval()
    train = {"optimizer_factory": made[3]} if len(made) == 4 and args.jr_seeds > 0 else None
    out = run_analysis(model, data, loss_fn, args, train=train)
    if not args.quiet:
        print(f"report: {out / 'index.html'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .io import LandscapeFileError
    from .landscape import Landscape
    from .report import report_for_landscape

    try:
        land = Landscape.load(args.landscape)
    except (FileNotFoundError, LandscapeFileError) as err:
        raise UsageError(str(err)) from err
    out = report_for_landscape(land, args.out)
    if not args.quiet:
        print(f"report: {out / 'index.html'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .io import LandscapeFileError
    from .landscape import Landscape
    from .report import landscape_metrics
    from .topology import bottleneck_distance

    try:
        lands = [Landscape.load(p) for p in (args.a, args.b)]
    except (FileNotFoundError, LandscapeFileError) as err:
        raise UsageError(str(err)) from err
    rows = [landscape_metrics(land) for land in lands]
    keys = ["shape", "loss_min", "loss_max", "minima", "smad", "smad_normalized",
            "total_persistence_d0", "eigenvalues_of_axes"]
    result = {"a": str(args.a), "b": str(args.b), "metrics": {k: [r[k] for r in rows]
                                                             for k in keys},
              "bottleneck_distance_d0": bottleneck_distance(lands[0].persistence(),
                                                            lands[1].persistence())}
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    print(f"{'':<22} {'A':>24} {'B':>24}")
    for key in keys:
        a, b = (json.dumps(v, default=lambda o: f"{o:.4g}") if not isinstance(v, float)
                else f"{v:.6g}" for v in result["metrics"][key])
        print(f"{key:<22} {a[:24]:>24} {b[:24]:>24}")
    print(f"{'bottleneck distance D0':<22} {result['bottleneck_distance_d0']:>24.6g}")
    return 0


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="landscaper-report", help="report folder")
    parser.add_argument("--dims", type=int, default=3, help="landscape dimensions (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="points per axis")
    parser.add_argument("--extent", type=float, default=0.05,
                        help="half-width per axis (default 0.05)")
    parser.add_argument("--extent-unit", choices=["relative", "absolute"], default="relative",
                        help="relative: fraction of ‖θ₀‖ (default); absolute: direction units")
    parser.add_argument("--params", nargs="*", default=None,
                        help="parameter names or shell patterns forming θ (default: all)")
    parser.add_argument("-k", type=int, default=5, help="top Hessian eigenvalues (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu",
                        help="torch device, e.g. cpu or cuda:0 (under torchrun: cuda:LOCAL_RANK)")
    parser.add_argument("--checkpoint", default=None, help="folder making the grid resumable")
    parser.add_argument("--jr-seeds", type=int, default=None, help="J&R seeds (0: skip J&R)")
    parser.add_argument("--jr-epochs", type=int, default=None, help="J&R retraining epochs")
    parser.add_argument("--jr-steps", type=float, nargs="+", default=None,
                        help="J&R step sizes")
    parser.add_argument("--jr-k", type=int, default=20, help="kNN graph neighbours")


def _fill_defaults(args: argparse.Namespace) -> None:
    quick = getattr(args, "quick", False)
    full_steps = 15 if args.command == "demo" else 21  # the demo stays under 3 minutes
    defaults = {"steps": 7 if quick else full_steps, "jr_seeds": 2 if quick else 4,
                "jr_epochs": 3 if quick else 10,
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
    if not args.extent > 0:
        raise UsageError(f"--extent must be positive, got {args.extent}; e.g. --extent 0.05")
    if args.dims > args.k:
        args.k = args.dims


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log every stage")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser = argparse.ArgumentParser(prog="landscaper", description=__doc__.splitlines()[0],
                                     epilog="exit codes: 0 ok, 1 failure, 2 bad arguments")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common],
                              epilog="exit codes: 0 ok, 1 failure, 2 bad arguments")

    demo = add("demo", "train a small digits CNN and write its full report")
    demo.add_argument("--quick", action="store_true", help="small settings (< 30 s)")
    _add_analysis_options(demo)
    demo.set_defaults(func=_demo)
    analyze = add("analyze", "analyse your own model")
    source = analyze.add_mutually_exclusive_group(required=True)
    source.add_argument("--model",
                        help="path/to/file.py:factory returning (model, data, loss_fn[, "
                             "optimizer_factory]); J&R runs when an optimizer factory is given")
    source.add_argument("--hf", metavar="DIR",
                        help="a local HuggingFace model directory (loaded offline, eager "
                             "attention); needs --data")
    analyze.add_argument("--data", default=None,
                         help="path/to/file.py:factory returning the data (for --hf: dict "
                              "batches with labels; with --model it replaces the factory's)")
    analyze.add_argument("--weights", default=None,
                         help="a state_dict/checkpoint (loaded with weights_only=True)")
    _add_analysis_options(analyze)
    analyze.set_defaults(func=_analyze)
    report = add("report", "rebuild a report from a saved landscape")
    report.add_argument("landscape", help="a .npz written by Landscape.save")
    report.add_argument("--out", default="landscaper-report")
    report.set_defaults(func=_report)
    compare = add("compare", "two saved landscapes side by side")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--json", action="store_true", help="print JSON")
    compare.set_defaults(func=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``landscaper`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ranked = int(os.environ.get("WORLD_SIZE", "1")) > 1
    where = f" [rank {os.environ.get('RANK', '?')}]" if ranked else ""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"%(asctime)s{where} %(name)s %(levelname)s %(message)s")
    joined = False
    try:
        if hasattr(args, "dims"):
            _fill_defaults(args)
            if ranked:  # launched by torchrun: shard the grid over the ranks
                from .distributed import init_from_env, rank

                joined = init_from_env(args.device)
                args.quiet = args.quiet or rank() != 0
        return args.func(args)
    except UsageError as err:
        if args.verbose:
            logger.exception("bad input")
        print(f"landscaper {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"landscaper {args.command}: interrupted", file=sys.stderr)
        return 1
    except Exception as err:  # a failed analysis: one line, the traceback with --verbose
        if args.verbose:
            logger.exception("failed")
        print(f"landscaper {args.command}: failed: {type(err).__name__}: {err} "
              "(rerun with --verbose for the traceback)", file=sys.stderr)
        return 1
    finally:
        if joined:
            import torch.distributed

            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
