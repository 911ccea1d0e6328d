"""Top-K Hessian eigenpairs with landscaper 1.3.1's PyHessian (run in the ``landscaper131`` env).

usage: landscaper_eigs.py CASE.npz --out EIGS.npz [--top-n 3] [--max-iter 100] [--tol 1e-3]
                          [--seed 0] [--threads N] [--float64] [--try-cache]

Prints one JSON line last: eigenvalues, timings, exact HVP count.  Writes EIGS.npz with
``eigenvalues`` (K,) and ``eigenvectors`` (K, P) flattened in ``model.parameters()`` order.
"""

from __future__ import annotations

import _common as C  # fixes sys.path: the peer's packages, never our checkout
import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    ap = C.eig_argument_parser(__doc__.splitlines()[0])
    ap.add_argument(
        "--try-cache",
        action="store_true",
        help="PyHessian(try_cache=True): keep the gradient graph instead of recomputing it per HVP",
    )
    a = ap.parse_args(argv)

    threads = C.set_threads(a.threads)
    with C.Timer() as t_imp:
        import landscaper
    C.check_peer_module(landscaper)

    case, model, crit, X, y = C.load_eig_case(a.case, a.float64)
    # 1.3.1 iterates `for sample, target in data`: data must be an iterable of batches (a
    # DataLoader or a list), NOT an (X, y) tuple.  It also prints a line when the model is in
    # train mode, so switch to eval first (it would do the same).
    model.eval()
    data = [(X, y)]

    cls = landscaper.PyHessian
    calls = {"hv_product": 0}
    orig_hv = cls.hv_product

    def counted_hv(self, v):
        calls["hv_product"] += 1
        return orig_hv(self, v)

    cls.hv_product = counted_hv
    torch.manual_seed(a.seed)
    with C.GradCounter() as gc:
        with C.Timer() as t_init:
            H = cls(model, crit, data, "cpu", try_cache=a.try_cache)
        with C.Timer() as t_eig:
            evals, evecs = H.eigenvalues(maxIter=a.max_iter, tol=a.tol, top_n=a.top_n)
    cls.hv_product = orig_hv

    V = C.flatten_vectors(evecs)
    C.save_npz(a.out, eigenvalues=np.asarray(evals, dtype=np.float64), eigenvectors=V)
    timers = {"import": t_imp, "init": t_init, "eigen": t_eig}
    C.emit(C.eig_record(
        "landscaper", a, case, X, evals, V, threads, timers,
        try_cache=a.try_cache,
        # one hv_product = one full-data Hessian-vector product (one batch here)
        hvp_count=calls["hv_product"],
        autograd_hvp_calls=gc.with_grad_outputs,
        # without try_cache every HVP recomputes forward + create_graph gradient first
        gradient_evaluations=gc.without_grad_outputs,
        notes=("power iteration + deflation (copied from pyhessian); ranks by |eigenvalue|; "
               "each HVP re-runs forward and a create_graph gradient unless try_cache"),
    ))


if __name__ == "__main__":
    main()
