"""Helpers shared by the peer scripts (run inside a peer venv, never by our package).

Importing this module fixes ``sys.path`` so that ``import landscaper`` resolves to the peer's
installed release and never to our repository checkout, and makes ``bench_models`` importable.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

_PEERS = Path(__file__).resolve().parent
_BENCH = _PEERS.parent
_REPO = _BENCH.parent


def _fix_path() -> None:
    bad = {str(_REPO), "", "."}
    sys.path[:] = [p for p in sys.path if p not in bad and Path(p or ".").resolve() != _REPO]
    if str(_BENCH) not in sys.path:
        sys.path.insert(0, str(_BENCH))  # bench_models only; benchmarks/ has no landscaper/


_fix_path()


def bench_models():
    """Import ``benchmarks/bench_models.py`` (after the sys.path fix above)."""
    import bench_models as bm

    return bm


def check_peer_module(mod) -> str:
    """Refuse to run if ``mod`` was imported from our repository instead of the peer venv."""
    f = Path(mod.__file__).resolve()
    if _REPO in f.parents and ".peer-envs" not in f.parts:
        raise RuntimeError(f"{mod.__name__} imported from our repository ({f}), not the peer env")
    return str(f)


def dist_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def set_threads(n: int | None) -> int:
    import torch

    if n:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (VmHWM; ru_maxrss would include the
    high-water mark inherited from the parent across fork+exec on Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def emit(result: dict) -> None:
    """Print ``result`` as ONE JSON line (the line run_peer parses); flush so a timeout keeps it."""
    result = dict(result)
    result.setdefault("python", sys.version.split()[0])
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    sys.stdout.write("\n" + json.dumps(result, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


class GradCounter:
    """Count ``torch.autograd.grad`` calls while active (patched on the ``torch.autograd`` module).

    Calls passing ``grad_outputs`` are Hessian-vector products in pyhessian / landscaper 1.3.1
    (they differentiate a gradient against a vector); calls without are plain gradients.
    """

    def __init__(self) -> None:
        self.with_grad_outputs = 0
        self.without_grad_outputs = 0
        self._orig = None

    def __enter__(self) -> GradCounter:
        import torch

        orig = torch.autograd.grad
        self._orig = orig

        def counted(*args, **kwargs):
            go = kwargs.get("grad_outputs", args[2] if len(args) > 2 else None)
            if go is None:
                self.without_grad_outputs += 1
            else:
                self.with_grad_outputs += 1
            return orig(*args, **kwargs)

        torch.autograd.grad = counted
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.autograd.grad = self._orig


def flatten_vectors(vecs) -> np.ndarray:  # noqa: F821
    """list (K) of lists of tensors (model.parameters() order) -> (K, P) float64 array."""
    import numpy as np
    import torch

    return np.stack(
        [torch.cat([t.detach().reshape(-1) for t in v]).double().cpu().numpy() for v in vecs]
    )


def save_npz(path: str | os.PathLike, **arrays) -> None:
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0


def eig_argument_parser(description: str):
    """The arguments both power-iteration eigen scripts take."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("case")
    ap.add_argument("--out", required=True)
    ap.add_argument("--top-n", type=int, default=3)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--float64", action="store_true")
    return ap


def load_eig_case(path: str, float64: bool):
    """(case, model, criterion, X, y) of a case file, converted to float64 when asked."""
    case = bench_models().load_case(path)
    model, crit, X, y = case["model"], case["criterion"], case["X"], case["y"]
    if float64:
        model, X = model.double(), X.double()
        if y.is_floating_point():
            y = y.double()
    return case, model, crit, X, y


def eig_record(peer: str, a, case, X, evals, V, threads: int, timers: dict, **peer_fields
               ) -> dict:
    """The JSON record both eigen scripts print: settings, eigenvalues, timings, then the
    peer's own counters (``peer_fields``, e.g. its HVP count and notes)."""
    import torch

    return {
        "peer": peer,
        "peer_version": dist_version(peer),
        "torch_version": torch.__version__,
        "torch_threads": threads,
        "model": case["model_name"],
        "n_params": int(V.shape[1]),
        "n_samples": int(X.shape[0]),
        "dtype": str(X.dtype).replace("torch.", ""),
        "top_n": a.top_n,
        "max_iter": a.max_iter,
        "tol": a.tol,
        "seed": a.seed,
        "eigenvalues": [float(e) for e in evals],
        **peer_fields,
        "import_seconds": timers["import"].seconds,
        "init_seconds": timers["init"].seconds,
        "eigen_seconds": timers["eigen"].seconds,
        "wall_seconds": timers["init"].seconds + timers["eigen"].seconds,
        "out": a.out,
    }
