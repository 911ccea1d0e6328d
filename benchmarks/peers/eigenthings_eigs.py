"""Top-K eigenpairs of the Hessian or the GGN with hessian-eigenthings 1.0.0a5 (run inside the
``eigenthings`` peer env).

usage: eigenthings_eigs.py CASE.npz --out EIGS.npz [--curvature hessian|ggn] [--top-n 3]
                           [--max-iter 0] [--tol 1e-4] [--until-converged]
                           [--reorthogonalize auto|on|off] [--seed 0] [--threads N] [--float64]
                           [--repeat 1] [--seed-runs 1]

The peer's ``lanczos(H, k=, max_iter=None, tol=1e-4, reorthogonalize=None, which="LM",
seed=)`` runs a fixed number of Lanczos steps (``max_iter``, default ``min(2k, n-1)``) and
never restarts: ``tol`` only sets the ``converged`` flags (|β_m s_m,i| < tol·|λ_i|), it does
not change the work. ``--max-iter 0`` keeps the library default. With ``--until-converged``
the script reruns with max_iter doubled (2k, 4k, 8k, ...; at most n-1) until every pair is
flagged converged at ``tol``; it reports the matvecs of the final run (``hvp_count``, as if
that max_iter had been known in advance) and of all runs (``hvp_count_search``). With
``--repeat R`` the final run is repeated R-1 more times; ``final_seconds`` is the median.
With ``--seed-runs S`` the final setting is also run from the start vectors of seeds
seed+1 … seed+S-1 (``eigenvalues_by_seed``, seed first): at a fixed number of steps the start
vector decides the accuracy, so a fair comparison looks at the spread over seeds.

Prints one JSON line last: eigenvalues, timings, exact matvec count (every call of the
operator's ``matvec`` is counted).  Writes EIGS.npz with ``eigenvalues`` (K,) and
``eigenvectors`` (K, P) flattened in ``model.parameters()`` order.
"""

from __future__ import annotations

import _common as C  # fixes sys.path: the peer's packages, never our checkout
import numpy as np


def counted(op) -> dict:
    """Wrap ``op.matvec`` (the one entry point of every algorithm) with a call counter."""
    calls = {"matvec": 0}
    orig = op.matvec

    def matvec(v):
        calls["matvec"] += 1
        return orig(v)

    op.matvec = matvec
    return calls


def build_operator(he, curvature: str, model, crit, X, y):
    data = [(X, y)]  # one full batch: the operator averages over the batches it is given
    if curvature == "hessian":
        return he.HessianOperator(model, data, he.supervised_loss(crit))
    if curvature == "ggn":
        return he.GGNOperator(model, data, he.supervised_forward,
                              he.supervised_loss_of_output(crit))
    raise ValueError(curvature)


def main(argv: list[str] | None = None) -> None:
    ap = C.eig_argument_parser(__doc__.splitlines()[0])
    ap.set_defaults(max_iter=0, tol=1e-4)  # the peer's defaults (0: min(2k, n-1))
    ap.add_argument("--curvature", choices=["hessian", "ggn"], default="hessian")
    ap.add_argument("--until-converged", action="store_true")
    ap.add_argument("--reorthogonalize", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed-runs", type=int, default=1)
    a = ap.parse_args(argv)

    threads = C.set_threads(a.threads)
    with C.Timer() as t_imp:
        import hessian_eigenthings as he
    C.check_peer_module(he)

    case, model, crit, X, y = C.load_eig_case(a.case, a.float64)
    model.eval()
    reorth = {"auto": None, "on": True, "off": False}[a.reorthogonalize]
    with C.Timer() as t_init:
        op = build_operator(he, a.curvature, model, crit, X, y)
        calls = counted(op)
    n = op.size
    max_iter = a.max_iter or None
    runs = []
    with C.Timer() as t_eig:
        while True:
            before = calls["matvec"]
            with C.Timer() as t_run:
                res = he.lanczos(op, k=a.top_n, max_iter=max_iter, tol=a.tol,
                                 reorthogonalize=reorth, which="LM", seed=a.seed)
            used = calls["matvec"] - before
            runs.append({"max_iter": max_iter, "matvecs": used, "iterations": res.iterations,
                         "seconds": t_run.seconds,
                         "n_converged": int(res.converged.sum())})
            limit = min(2 * a.top_n, n - 1) if max_iter is None else max_iter
            if not a.until_converged or bool(res.converged.all()) or limit >= n - 1:
                break
            max_iter = min(2 * limit, n - 1)
        final_times = [runs[-1]["seconds"]]
        for _ in range(max(1, a.repeat) - 1):  # same seed, same products
            with C.Timer() as t_run:
                he.lanczos(op, k=a.top_n, max_iter=max_iter, tol=a.tol,
                           reorthogonalize=reorth, which="LM", seed=a.seed)
            final_times.append(t_run.seconds)

    by_seed = [res.eigenvalues.detach().double().cpu().tolist()]
    for seed in range(a.seed + 1, a.seed + max(1, a.seed_runs)):
        other = he.lanczos(op, k=a.top_n, max_iter=max_iter, tol=a.tol,
                           reorthogonalize=reorth, which="LM", seed=seed)
        by_seed.append(other.eigenvalues.detach().double().cpu().tolist())

    evals = res.eigenvalues.detach().double().cpu().numpy()
    V = res.eigenvectors.detach().double().cpu().numpy()  # the GGN's carry autograd history
    C.save_npz(a.out, eigenvalues=evals, eigenvectors=V)
    timers = {"import": t_imp, "init": t_init, "eigen": t_eig}
    record = C.eig_record(
        "hessian-eigenthings", a, case, X, evals, V, threads, timers,
        curvature=a.curvature,
        hvp_count=runs[-1]["matvecs"],
        hvp_count_search=sum(r["matvecs"] for r in runs),
        lanczos_iterations=res.iterations,
        final_max_iter=runs[-1]["max_iter"],
        final_seconds=float(np.median(final_times)),
        final_seconds_all=final_times,
        converged=[bool(c) for c in res.converged],
        residuals=[float(r) for r in res.residuals.detach()],
        runs=runs,
        reorthogonalize=a.reorthogonalize,
        eigenvalues_by_seed=by_seed,
        notes="fixed-length Lanczos (tol only flags convergence); ranks by |eigenvalue|; "
              "model put in eval()",
    )
    record["max_iter"] = a.max_iter or None
    C.emit(record)


if __name__ == "__main__":
    main()
