"""Top-K Hessian eigenpairs with pyhessian 0.1 (run inside the ``pyhessian`` peer env).

usage: pyhessian_eigs.py CASE.npz --out EIGS.npz [--top-n 3] [--max-iter 100] [--tol 1e-3]
                         [--seed 0] [--threads N] [--float64] [--repeat 1]

Prints one JSON line last: eigenvalues, timings, exact HVP count.  With ``--repeat R`` the
eigensolve runs R times from the same seed (same HVPs every time); ``eigen_seconds`` is then
the median and ``eigen_seconds_all`` lists them all.  Writes EIGS.npz with
``eigenvalues`` (K,) and ``eigenvectors`` (K, P) flattened in ``model.parameters()`` order.
"""

from __future__ import annotations

import sys

import _common as C  # fixes sys.path: the peer's packages, never our checkout
import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    ap = C.eig_argument_parser(__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args(argv)

    threads = C.set_threads(a.threads)
    with C.Timer() as t_imp:
        import pyhessian

    # pyhessian/__init__ rebinds the attribute `pyhessian.hessian` to the class, so reach the
    # module through sys.modules; hessian.eigenvalues() calls the module-global
    # `hessian_vector_product` (imported by name from pyhessian.utils) once per HVP.
    hmod = sys.modules["pyhessian.hessian"]
    C.check_peer_module(pyhessian)

    case, model, crit, X, y = C.load_eig_case(a.case, a.float64)

    calls = {"hessian_vector_product": 0}
    orig_hvp = hmod.hessian_vector_product

    def counted_hvp(*args, **kwargs):
        calls["hessian_vector_product"] += 1
        return orig_hvp(*args, **kwargs)

    hmod.hessian_vector_product = counted_hvp
    torch.manual_seed(a.seed)
    eig_timers = []
    with C.GradCounter() as gc:
        with C.Timer() as t_init:  # forward + loss.backward(create_graph=True), once
            H = pyhessian.hessian(model, crit, data=(X, y), cuda=False)
        for _ in range(max(1, a.repeat)):
            calls["hessian_vector_product"] = 0
            gc.with_grad_outputs = gc.without_grad_outputs = 0
            torch.manual_seed(a.seed)  # eigenvalues() draws its start vectors with randn
            with C.Timer() as t_eig:
                evals, evecs = H.eigenvalues(top_n=a.top_n, maxIter=a.max_iter, tol=a.tol)
            eig_timers.append(t_eig)
    hmod.hessian_vector_product = orig_hvp
    t_eig.seconds = float(np.median([t.seconds for t in eig_timers]))

    V = C.flatten_vectors(evecs)
    C.save_npz(a.out, eigenvalues=np.asarray(evals, dtype=np.float64), eigenvectors=V)
    timers = {"import": t_imp, "init": t_init, "eigen": t_eig}
    C.emit(C.eig_record(
        "pyhessian", a, case, X, evals, V, threads, timers,
        hvp_count=calls["hessian_vector_product"],
        autograd_grad_calls=gc.with_grad_outputs + gc.without_grad_outputs,
        gradient_evaluations=1,  # __init__: one loss.backward(create_graph=True)
        eigen_seconds_all=[t.seconds for t in eig_timers],
        notes="power iteration + deflation; ranks by |eigenvalue|; model put in eval()",
    ))


if __name__ == "__main__":
    main()
