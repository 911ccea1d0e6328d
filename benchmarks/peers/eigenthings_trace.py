"""Stochastic Hessian traces with hessian-eigenthings 1.0.0a5 (run inside the ``eigenthings``
peer env): ``trace(H, num_matvecs=m, method=..., seed=s)`` for every m and seed asked.

usage: eigenthings_trace.py CASE.npz [--matvecs 30 60 99] [--seeds 20] [--first-seed 0]
                            [--method hutch++|hutchinson] [--curvature hessian|ggn]
                            [--threads N] [--float64]

Prints one JSON line last: for each m the estimates over seeds ``first_seed ..
first_seed + seeds - 1``, the matvecs each call used (counted on the operator's ``matvec``;
Hutch++ spends 3·(m // 3)), and the seconds.
"""

from __future__ import annotations

import argparse

import _common as C  # fixes sys.path: the peer's packages, never our checkout
from eigenthings_eigs import build_operator, counted


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case")
    ap.add_argument("--matvecs", type=int, nargs="+", default=[30, 60, 99])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--method", choices=["hutch++", "hutchinson"], default="hutch++")
    ap.add_argument("--curvature", choices=["hessian", "ggn"], default="hessian")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--float64", action="store_true")
    a = ap.parse_args(argv)

    threads = C.set_threads(a.threads)
    with C.Timer() as t_imp:
        import hessian_eigenthings as he
    C.check_peer_module(he)
    import torch

    case, model, crit, X, y = C.load_eig_case(a.case, a.float64)
    model.eval()
    op = build_operator(he, a.curvature, model, crit, X, y)
    calls = counted(op)
    out = []
    for m in a.matvecs:
        estimates, used, seconds = [], [], []
        for s in range(a.first_seed, a.first_seed + a.seeds):
            before = calls["matvec"]
            with C.Timer() as t:
                res = he.trace(op, num_matvecs=m, method=a.method, seed=s)
            estimates.append(float(res.estimate))
            used.append(calls["matvec"] - before)
            seconds.append(t.seconds)
        out.append({"m": m, "estimates": estimates, "matvecs": used, "seconds": seconds})
    C.emit({
        "peer": "hessian-eigenthings",
        "peer_version": C.dist_version("hessian-eigenthings"),
        "torch_version": torch.__version__,
        "torch_threads": threads,
        "model": case["model_name"],
        "method": a.method,
        "curvature": a.curvature,
        "dtype": str(X.dtype).replace("torch.", ""),
        "first_seed": a.first_seed,
        "results": out,
        "import_seconds": t_imp.seconds,
    })


if __name__ == "__main__":
    main()
