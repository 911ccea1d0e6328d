"""Top-3 Hessian eigenpairs of the whole all-MiniLM-L6-v2 (22.7M parameters in 105 tensors):
float32 products against a float64 reference run, timed.

    .venv/bin/python benchmarks/bench_full_minilm.py [--sentences 24] [--max-length 32]

The model and data are bench_hf's (`load_minilm`, eager attention, a fitted 3-class head);
θ is every parameter. Reported per precision: products, seconds, eigenvalues, and for float32
the relative errors against float64. Results go to benchmarks/results/bench_full_minilm.json
(``--out``). A checkout on PYTHONPATH runs its own landscaper, e.g. the previous release into
``--out bench_full_minilm_previous.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from bench_hf import load_minilm

import landscaper
from landscaper import Objective, top_eigenpairs

RESULTS = Path(__file__).resolve().parent / "results"


def checkout() -> str:
    """The commit of the landscaper that runs (its checkout's HEAD)."""
    where = Path(landscaper.__file__).parent
    return subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--out", default="bench_full_minilm.json",
                        help="file name under benchmarks/results/")
    args = parser.parse_args()
    model, batch, info = load_minilm(args.sentences, args.max_length)
    rows = {}
    for dtype in (torch.float64, torch.float32):
        objective = Objective(model, batch, compute_dtype=dtype)
        start = time.perf_counter()
        eig = top_eigenpairs(objective, k=3, verify=False)
        seconds = time.perf_counter() - start
        name = str(dtype).removeprefix("torch.")
        rows[name] = {"n_hvp": eig.n_hvp, "converged": bool(eig.converged),
                      "seconds": seconds, "eigenvalues": eig.eigenvalues.tolist()}
        print(f"{name}: {eig.n_hvp} products, {seconds:.1f} s, eigenvalues "
              f"{np.array2string(eig.eigenvalues, precision=8)}", flush=True)
    reference = np.array(rows["float64"]["eigenvalues"])
    errors = np.abs(np.array(rows["float32"]["eigenvalues"]) - reference) / np.abs(reference)
    rows["float32"]["relative_errors"] = errors.tolist()
    print(f"float32 relative errors {np.array2string(errors, precision=2)}; "
          f"{rows['float32']['seconds'] / rows['float32']['n_hvp']:.2f} s per product")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(
        {"landscaper_commit": checkout(), "parameters": info["params_total"],
         "sentences": info["sentences"], **rows}, indent=2))


if __name__ == "__main__":
    main()
