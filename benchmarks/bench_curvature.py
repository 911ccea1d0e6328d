"""Curvature beyond the Hessian (issue 16): top-k of the Hessian and the GGN against
hessian-eigenthings 1.0.0a5 and pyhessian 0.1, Hutchinson vs Hutch++ traces, SDPA vs eager.

    .venv/bin/python benchmarks/bench_curvature.py [--ks 1 3 10 20]
        [--models digits_mlp digits_cnn] [--seeds 20] [--quick]

Models: the 64-64-10 digits MLP of bench_hessian (4,810 parameters) and the digits CNN of
``landscaper.examples.digits_cnn()`` (1,898 parameters), each trained here for a few epochs on
all 1,797 standardised digits; everything runs in float32, each peer in its own virtual
environment (benchmarks/.peer-envs/), and accuracy is measured against dense float64
references built here: the Hessian by ``torch.func`` (jacrev of the gradient), the GGN as
G = (1/N) Σₙ Jₙᵀ (diag(pₙ) − pₙpₙᵀ) Jₙ from per-sample Jacobians.

1. Hessian top-k: hessian-eigenthings' ``lanczos`` and pyhessian's power iteration, each at
   its defaults and at a tight tolerance; for every peer run, the fewest HVPs of our
   ``top_eigenpairs(which="LM")`` (loosest tolerance first) reaching at least the peer's
   accuracy (largest relative eigenvalue error over the top k, eigenvalues ranked by |λ|).
   hessian-eigenthings' default runs a fixed 2k steps and never converges: there both run
   at that budget from 10 start vectors each and their median errors are compared.
2. GGN top-k: the same against hessian-eigenthings' ``GGNOperator`` + ``lanczos``.
3. Traces: Hutchinson vs Hutch++ (ours, and the peer's Hutch++) at equal matvecs, over seeds:
   the empirical variance and the relative RMS error against the dense trace.
4. all-MiniLM-L6-v2 (bench_hf's model, θ subset and data): top-3 with SDPA vs eager attention.

Results go to benchmarks/results/bench_curvature.json (bench_curvature_quick.json with
--quick); the printed tables also to benchmarks/results/bench_curvature.txt
(bench_curvature_quick.txt).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import bench_hessian
import bench_models
import numpy as np
import torch
from peers.envs import run_peer
from torch.func import functional_call

from landscaper import Objective, top_eigenpairs, trace

RESULTS = Path(__file__).resolve().parent / "results"
#: our tolerances, loosest first (bench_hessian's, continued down to float32's limit)
TOLS = [*bench_hessian.TOLS, 5e-6, 2e-6, 1e-6]
#: a run this fast (seconds) is repeated twice more and its median time reported
CHEAP_S = 3.0
#: (env, script, label, [(setting label, extra argv)])
HESSIAN_PEERS = [
    ("eigenthings", "eigenthings_eigs.py", "eigenthings 1.0.0a5", [
        ("default (2k steps)", []),
        ("tol 1e-6 until conv", ["--tol", 1e-6, "--until-converged", "--reorthogonalize", "on"]),
    ]),
    ("pyhessian", "pyhessian_eigs.py", "pyhessian 0.1", [
        ("default tol 1e-3", ["--max-iter", 100, "--tol", 1e-3]),
        ("tight tol 1e-6", ["--max-iter", 1000, "--tol", 1e-6]),
    ]),
]
#: peer settings that run a fixed number of steps whatever the accuracy: there the start vector
#: decides the error, so both are also run from SPREAD_SEEDS start vectors at that budget
FIXED_STEPS = {"default (2k steps)"}
SPREAD_SEEDS = 10
GGN_PEERS = [(env, script, label, [(s, [*a, "--curvature", "ggn"]) for s, a in settings])
             for env, script, label, settings in HESSIAN_PEERS if env == "eigenthings"]


# --------------------------------------------------------------------------- models, references


def _functional(model: torch.nn.Module):
    """(float64 copy of ``model``, θ₀ flat in parameters() order, θ -> parameter dict)."""
    model64 = copy.deepcopy(model).double().eval()
    named = list(model64.named_parameters())
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    def unflatten(t: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for name, p in named:
            out[name] = t[i: i + p.numel()].view_as(p)
            i += p.numel()
        return out

    return model64, theta, unflatten


def dense_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The float64 Hessian of the mean cross-entropy, one row per backward pass through the
    retained graph of the gradient (vmapped double backward through float64 convolutions is
    several times slower on CPU)."""
    model64, theta, unflatten = _functional(model)
    theta = theta.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(
        functional_call(model64, unflatten(theta), (x.double(),)), y)
    (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
    p = theta.numel()
    hess = torch.empty(p, p, dtype=torch.float64)
    unit = torch.zeros(p, dtype=torch.float64)
    for i in range(p):
        unit[i] = 1.0
        hess[i] = torch.autograd.grad(grad, theta, grad_outputs=unit, retain_graph=True)[0]
        unit[i] = 0.0
    return (0.5 * (hess + hess.T)).numpy()


def dense_ggn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 128
              ) -> np.ndarray:
    """G = (1/N) Σₙ Jₙᵀ (diag(pₙ) − pₙpₙᵀ) Jₙ in float64, Jₙ = ∂ logits(xₙ) / ∂θ."""
    model64, theta, unflatten = _functional(model)
    x64 = x.double()

    def logits(t: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model64, unflatten(t), (xi.unsqueeze(0),)).squeeze(0)

    per_sample = torch.func.vmap(torch.func.jacrev(logits), in_dims=(None, 0))
    p = theta.numel()
    ggn = torch.zeros(p, p, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(x64), chunk):
            xs = x64[start: start + chunk]
            jac = per_sample(theta, xs)  # (c, C, P)
            prob = torch.softmax(functional_call(model64, unflatten(theta), (xs,)), dim=1)
            a = torch.diag_embed(prob) - prob[:, :, None] * prob[:, None, :]  # (c, C, C)
            ggn += jac.reshape(-1, p).T @ torch.bmm(a, jac).reshape(-1, p)
    ggn /= len(x64)
    return (0.5 * (ggn + ggn.T)).numpy()


def by_magnitude(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Eigenvalues ranked by |λ| (descending), their eigenvectors (columns), the trace."""
    vals, vecs = np.linalg.eigh(matrix)
    order = np.argsort(-np.abs(vals), kind="stable")
    return vals[order], vecs[:, order], float(np.trace(matrix))


def max_rel_error(values, ref: np.ndarray) -> float:
    """Largest relative error of ``values`` ranked by |λ| against the reference's top ones."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.argsort(-np.abs(values), kind="stable")]
    return float(bench_hessian.rel_errors(values, ref).max())


def min_cos(vectors: np.ndarray, values, ref_vecs: np.ndarray) -> float:
    order = np.argsort(-np.abs(np.asarray(values)), kind="stable")
    return min(bench_hessian.cosines(np.asarray(vectors)[order], ref_vecs))


# --------------------------------------------------------------------------- ours, memoised
class Ours:
    """Our top_eigenpairs at each tolerance of TOLS, run lazily and memoised (results are
    deterministic for a seed); times are medians of 3 where a run is cheap."""

    def __init__(self, obj: Objective, ref_vals: np.ndarray, ref_vecs: np.ndarray,
                 curvature: str, repeat: bool, verify: bool = True) -> None:
        self.obj, self.ref_vals, self.ref_vecs = obj, ref_vals, ref_vecs
        self.curvature, self.repeat, self.verify = curvature, repeat, verify
        self.cache: dict[tuple[int, float | None], dict] = {}

    def run(self, k: int, tol: float | None) -> dict:
        key = (k, tol)
        if key not in self.cache:
            start = time.perf_counter()
            res = top_eigenpairs(self.obj, k=k, which="LM", tol=tol, curvature=self.curvature,
                                 verify=self.verify)
            seconds = time.perf_counter() - start
            vecs = res.eigenvectors.double().numpy()
            self.cache[key] = {
                "tol": tol, "n_hvp": res.n_hvp, "seconds_all": [seconds],
                "converged": bool(res.converged),
                "eigenvalues": res.eigenvalues.tolist(),
                "max_rel_error": max_rel_error(res.eigenvalues, self.ref_vals),
                "min_cos": min_cos(vecs, res.eigenvalues, self.ref_vecs),
            }
        return self.cache[key]

    def timed(self, entry: dict) -> float:
        """Median seconds of ``entry``, first timing it twice more if it is cheap."""
        times = entry["seconds_all"]
        if self.repeat and len(times) == 1 and times[0] < CHEAP_S:
            for _ in range(2):
                start = time.perf_counter()
                top_eigenpairs(self.obj, k=len(entry["eigenvalues"]), which="LM",
                               tol=entry["tol"], curvature=self.curvature, verify=self.verify)
                times.append(time.perf_counter() - start)
        entry["seconds"] = float(np.median(times))
        return entry["seconds"]

    def at_budget(self, k: int, n_products: int) -> dict:
        """Ours capped at ``n_products`` Lanczos steps (max_iter, verify=False): the accuracy
        at the peer's budget, for the rows where ours needs more products."""
        quiet = logging.getLogger("landscaper")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "Lanczos stopped after ..." is the point here
        try:
            res = top_eigenpairs(self.obj, k=k, which="LM", max_iter=max(k, n_products),
                                 verify=False, curvature=self.curvature)
        finally:
            quiet.setLevel(level)
        return {"n_hvp": res.n_hvp, "max_rel_error": max_rel_error(res.eigenvalues,
                                                                   self.ref_vals)}

    def seed_spread(self, k: int, n_products: int, seeds: int) -> list[float]:
        """Errors of ours capped at ``n_products`` steps (verify=False) from the start vectors
        of seeds 0 … seeds-1."""
        quiet = logging.getLogger("landscaper")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            return [max_rel_error(top_eigenpairs(
                self.obj, k=k, which="LM", max_iter=max(k, n_products), verify=False,
                curvature=self.curvature, seed=seed).eigenvalues, self.ref_vals)
                for seed in range(seeds)]
        finally:
            quiet.setLevel(level)

    def matching(self, k: int, target_err: float) -> tuple[dict | None, dict]:
        """(our loosest-tolerance run at least as accurate as ``target_err`` or None, and the
        most accurate run tried)."""
        best = None
        for tol in TOLS:
            entry = self.run(k, tol)
            if best is None or entry["max_rel_error"] < best["max_rel_error"]:
                best = entry
            if entry["max_rel_error"] <= target_err:
                return entry, best
        return None, best


# --------------------------------------------------------------------------- eigen rows
def peer_eigs(env: str, script: str, case: Path, out: Path, k: int, extra: list,
              repeat: int) -> dict:
    res = run_peer(env, script, [case, "--out", out, "--top-n", k, *extra,
                                 "--threads", torch.get_num_threads(), "--repeat", repeat],
                   timeout_s=1200)
    if res.get("timed_out"):
        return res
    with np.load(out, allow_pickle=False) as z:
        res["vectors"] = z["eigenvectors"]
    res["seconds"] = res.get("final_seconds", res["eigen_seconds"])
    return res


def eigen_rows(model_name: str, curvature: str, peers: list, ks: list[int], case: Path,
               tmp: Path, ours: Ours, quick: bool, log_lines: list[str]) -> tuple[list, list]:
    """Rows against each peer run. The HVP and time ratios compare ours without the
    repeated-eigenvalue check (``verify=False``: the peers' guarantee, one start vector); the
    verified run's products and time sit beside them (see `repeated_rows` for what the check
    finds that one start vector cannot)."""
    plain = Ours(ours.obj, ours.ref_vals, ours.ref_vecs, ours.curvature, ours.repeat,
                 verify=False)
    rows, defaults = [], []
    for k in ks:
        for env, script, peer_name, settings in peers:
            for label, extra in (settings[:1] if quick else settings):
                out = tmp / f"{env}_{model_name}_{curvature}_{k}_{len(rows)}.npz"
                spread = label in FIXED_STEPS and not quick
                first = peer_eigs(env, script, case, out, k,
                                  [*extra, "--seed-runs", SPREAD_SEEDS] if spread else extra,
                                  repeat=1)
                row = {"model": model_name, "curvature": curvature, "k": k, "peer": peer_name,
                       "peer_setting": label, "notes": []}
                if first.get("timed_out"):
                    row.update(peer_hvp=None, notes=[f"peer timed out after "
                                                     f"{first['timeout_s']:.0f} s"])
                    rows.append(row)
                    continue
                peer = first
                if not quick and first["seconds"] < CHEAP_S:  # median of 3 (in the peer)
                    peer = peer_eigs(env, script, case, out, k, extra, repeat=3)
                peer_err = max_rel_error(peer["eigenvalues"], ours.ref_vals)
                row.update(
                    peer_hvp=peer["hvp_count"], peer_hvp_search=peer.get("hvp_count_search"),
                    peer_seconds=peer["seconds"], peer_max_rel_error=peer_err,
                    peer_min_cos=min_cos(peer["vectors"], peer["eigenvalues"], ours.ref_vecs),
                    peer_eigenvalues=peer["eigenvalues"],
                    peer_converged=peer.get("converged"))
                if peer.get("converged") is not None and not all(peer["converged"]):
                    row["notes"].append(f"peer flags {sum(peer['converged'])}/{k} converged")
                if peer.get("hvp_count_search") not in (None, peer["hvp_count"]):
                    row["notes"].append(f"peer max_iter search used "
                                        f"{peer['hvp_count_search']} matvecs")
                verified, _ = ours.matching(k, peer_err)
                if verified is not None:
                    row.update(ours_verified_hvp=verified["n_hvp"],
                               ours_verified_seconds=ours.timed(verified) if not quick else
                               verified["seconds_all"][0])
                match, best = plain.matching(k, peer_err)
                if match is None:
                    row.update(ours_hvp=None, ours_best_error=best["max_rel_error"],
                               ours_best_tol=best["tol"], ours_best_hvp=best["n_hvp"])
                    row["notes"].append(f"ours never reaches {peer_err:.1e}: best "
                                        f"{best['max_rel_error']:.1e} at tol {best['tol']:g} "
                                        f"({best['n_hvp']} HVPs)")
                else:
                    row.update(ours_hvp=match["n_hvp"], ours_tol=match["tol"],
                               ours_seconds=plain.timed(match) if not quick else
                               match["seconds_all"][0],
                               ours_max_rel_error=match["max_rel_error"],
                               ours_min_cos=match["min_cos"],
                               ours_converged=match["converged"])
                    row["hvp_ratio"] = row["ours_hvp"] / row["peer_hvp"]
                    row["time_ratio"] = row["ours_seconds"] / row["peer_seconds"]
                    if row["hvp_ratio"] > 1:
                        cap = plain.at_budget(k, row["peer_hvp"])
                        row.update(ours_at_peer_budget_hvp=cap["n_hvp"],
                                   ours_at_peer_budget_error=cap["max_rel_error"])
                        row["notes"].append(f"ours needs MORE products; capped at the peer's "
                                            f"budget ({cap['n_hvp']} HVPs, no verify) ours "
                                            f"err {cap['max_rel_error']:.1e}")
                if spread:
                    add_seed_spread(row, first, plain, k, ours.ref_vals)
                rows.append(row)
                log_lines.append(f"  {model_name} {curvature} k={k} {peer_name} {label}: done")
        # ours at its default tolerance, and whether any peer run reached that accuracy
        entry = ours.run(k, None)
        seconds = ours.timed(entry) if not quick else entry["seconds_all"][0]
        peer_errs = [(r["peer_max_rel_error"], f"{r['peer']} {r['peer_setting']}")
                     for r in rows if r["k"] == k and r.get("peer_hvp") is not None]
        best_peer = min(peer_errs) if peer_errs else (None, None)
        defaults.append({"model": model_name, "curvature": curvature, "k": k,
                         "ours_hvp": entry["n_hvp"], "ours_seconds": seconds,
                         "ours_max_rel_error": entry["max_rel_error"],
                         "ours_min_cos": entry["min_cos"], "ours_converged": entry["converged"],
                         "best_peer_error": best_peer[0], "best_peer_run": best_peer[1],
                         "peer_reaches": (None if best_peer[0] is None
                                          else best_peer[0] <= entry["max_rel_error"])})
    return rows, defaults


def add_seed_spread(row: dict, peer: dict, plain: Ours, k: int, ref_vals: np.ndarray) -> None:
    """The errors of the peer's fixed-step run and ours at the same number of products, each
    from SPREAD_SEEDS start vectors (their generators differ, so seeds are not paired)."""
    peer_errs = [max_rel_error(values, ref_vals) for values in peer["eigenvalues_by_seed"]]
    ours_errs = plain.seed_spread(k, peer["hvp_count"], len(peer_errs))
    row.update(seed_errors_peer=peer_errs, seed_errors_ours=ours_errs,
               seed_median_peer=float(np.median(peer_errs)),
               seed_median_ours=float(np.median(ours_errs)))
    row["notes"].append(f"at {peer['hvp_count']} HVPs over {len(peer_errs)} start vectors: "
                        f"median err ours {row['seed_median_ours']:.1e}, peer "
                        f"{row['seed_median_peer']:.1e}")


# --------------------------------------------------------------------------- repeated
def repeated_rows(tmp: Path, ks: list[int], quick: bool) -> dict:
    """Top-k of a Hessian whose every eigenvalue is repeated 10 times (`digits_linear`: a
    10-output least-squares head, as in multi-output linear heads): one start vector's Krylov
    space holds one copy of each, so a method without a check returns the top distinct
    values, which here are wrong from the second on. Ours with and without the check, and
    each peer at its defaults and until converged."""
    x, labels = bench_models.digits_data()
    x = torch.from_numpy(x)
    y = torch.nn.functional.one_hot(torch.from_numpy(labels), 10).float()
    model = bench_models.make_model("digits_linear", seed=0).eval()
    obj = Objective(model, (x, y), torch.nn.functional.mse_loss)
    dense = torch.autograd.functional.hessian(
        lambda t: Objective.__call__(obj, t), obj.theta0.double())
    ref, _, _ = by_magnitude(dense.numpy())
    case = bench_models.save_case(tmp / "digits_linear.npz", "digits_linear", model, x, y)
    # a returned value is a copy of λ1 when nearer to it than to the next distinct eigenvalue
    half_gap = 0.5 * (abs(ref[0]) - abs(ref[10]))
    out = {"n_params": obj.num_params, "reference_top": ref[:12].tolist(), "rows": []}
    for k in ks:
        runs = []
        for verify in (True, False):
            start = time.perf_counter()
            res = top_eigenpairs(obj, k=k, which="LM", verify=verify)
            runs.append((f"ours, verify={verify}", res.eigenvalues.tolist(), res.n_hvp,
                         time.perf_counter() - start))
        for env, script, peer_name, settings in HESSIAN_PEERS:
            for label, extra in (settings[:1] if quick else settings):
                res = peer_eigs(env, script, case, tmp / f"rep_{env}_{k}.npz", k, extra, 1)
                if not res.get("timed_out"):
                    runs.append((f"{peer_name}, {label}", list(res["eigenvalues"]),
                                 res["hvp_count"], res["seconds"]))
        for method, values, hvps, seconds in runs:
            values = sorted(values, key=abs, reverse=True)
            out["rows"].append({
                "k": k, "method": method, "eigenvalues": values, "n_hvp": hvps,
                "seconds": seconds, "max_rel_error": max_rel_error(values, ref),
                "copies_of_top": int(np.sum(np.abs(np.asarray(values) - ref[0]) < half_gap))})
    return out


def repeated_table(res: dict) -> list[str]:
    top = res["reference_top"]
    lines = [f"digits_linear ({res['n_params']} params): dense top |λ| {top[0]:.5g} (10 "
             f"times), then {top[10]:.5g} (10 times)",
             f"{'k':>2} {'method':<44} {'HVP':>5} {'s':>7} {'copies of λ1':>12} "
             f"{'max rel err':>11}"]
    for r in res["rows"]:
        lines.append(f"{r['k']:>2} {r['method']:<44} {r['n_hvp']:>5} {r['seconds']:>7.3f} "
                     f"{r['copies_of_top']:>5} of {min(r['k'], 10):<4} "
                     f"{r['max_rel_error']:>11.1e}")
    return lines


# --------------------------------------------------------------------------- traces
def trace_rows(model_name: str, obj: Objective, exact: float, case: Path, ms: list[int],
               seeds: int) -> list[dict]:
    peer = run_peer("eigenthings", "eigenthings_trace.py",
                    [case, "--matvecs", *ms, "--seeds", seeds, "--method", "hutch++",
                     "--threads", torch.get_num_threads()], timeout_s=1800)
    peer_by_m = {} if peer.get("timed_out") else {r["m"]: r for r in peer["results"]}
    rows = []
    for m in ms:
        runs = {"hutchinson": [], "hutch++": []}
        for s in range(seeds):  # interleave the two methods seed by seed
            for method, out in runs.items():
                start = time.perf_counter()
                res = trace(obj, n_probes=m, method=method, seed=s)
                out.append((res.estimate, res.n_hvp, time.perf_counter() - start))
        stats = {f"ours {name}": (np.array([e for e, _, _ in out]), [n for _, n, _ in out],
                                  [t for _, _, t in out]) for name, out in runs.items()}
        if m in peer_by_m:
            r = peer_by_m[m]
            stats["eigenthings hutch++"] = (np.array(r["estimates"]), r["matvecs"],
                                            r["seconds"])
        for name, (est, hvps, secs) in stats.items():
            rows.append({
                "model": model_name, "m": m, "estimator": name, "seeds": len(est),
                "matvecs": sorted(set(hvps)), "exact_trace": exact,
                "mean": float(est.mean()), "variance": float(est.var(ddof=1)),
                "rel_rms_error": float(np.sqrt(np.mean((est - exact) ** 2)) / abs(exact)),
                "rel_bias": float((est.mean() - exact) / abs(exact)),
                "median_seconds": float(np.median(secs)), "estimates": est.tolist()})
    return rows


# --------------------------------------------------------------------------- MiniLM
def minilm_rows(repeats: int, sentences: int, max_length: int) -> dict:
    """Top-3 of bench_hf's θ subset with SDPA and with eager attention (same weights, head
    and batch), plus a subset reaching into layer 5's attention (its query projection), whose
    products differentiate twice through the attention kernel."""
    import bench_hf  # needs transformers and the packaged all-MiniLM-L6-v2 weights

    eager, batch, info_e = bench_hf.load_minilm(sentences, max_length,
                                                attn_implementation="eager")
    sdpa, batch_s, info_s = bench_hf.load_minilm(sentences, max_length,
                                                 attn_implementation=None)
    sdpa.head.load_state_dict(eager.head.state_dict())  # one θ: the fitted head of the eager
    for key in batch:
        assert torch.equal(batch[key], batch_s[key]), key
    subsets = {"bench_hf subset": bench_hf.PARAMS,
               "+ layer-5 query": ["encoder.encoder.layer.5.attention.self.query.*", "head.*"]}
    out = {"attn": {"eager": info_e["attn_implementation"], "sdpa": info_s["attn_implementation"]},
           "sentences": info_e["sentences"], "max_length": max_length, "rows": []}
    for label, params in subsets.items():
        runs = {"eager": [], "sdpa": []}
        for _ in range(repeats):  # interleaved
            for name, model in (("eager", eager), ("sdpa", sdpa)):
                start = time.perf_counter()
                obj = Objective(model, batch, params=params)
                res = top_eigenpairs(obj, k=3)
                runs[name].append((res, time.perf_counter() - start, obj.num_params))
        ev_e, ev_s = runs["eager"][0][0].eigenvalues, runs["sdpa"][0][0].eigenvalues
        t_e = float(np.median([t for _, t, _ in runs["eager"]]))
        t_s = float(np.median([t for _, t, _ in runs["sdpa"]]))
        out["rows"].append({
            "subset": label, "params": params, "n_params": runs["eager"][0][2],
            "eigenvalues_eager": ev_e.tolist(), "eigenvalues_sdpa": ev_s.tolist(),
            "n_hvp_eager": runs["eager"][0][0].n_hvp, "n_hvp_sdpa": runs["sdpa"][0][0].n_hvp,
            "max_rel_diff": float(np.max(np.abs(ev_s - ev_e) / np.abs(ev_e))),
            "seconds_eager": t_e, "seconds_sdpa": t_s, "time_ratio_sdpa_over_eager": t_s / t_e,
            "repeats": repeats})
    return out


# --------------------------------------------------------------------------- printing
def _f(value, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def eigen_table(rows: list[dict], defaults: list[dict]) -> list[str]:
    lines = ["ours: without the repeated-eigenvalue check, as the peers (ratios); +verify: "
             "the default, with it",
             f"{'model':<10} {'curv':<7} {'k':>2} {'peer':<19} {'peer setting':<19} "
             f"{'HVP peer':>8} {'HVP ours':>8} {'ratio':>6} {'+verify':>7} {'err peer':>8} "
             f"{'err ours':>8} {'tol ours':>8} {'s peer':>7} {'s ours':>7} {'ratio':>6} "
             f"{'s +ver':>7}  notes"]
    for r in rows:
        lines.append(
            f"{r['model']:<10} {r['curvature']:<7} {r['k']:>2} {r['peer']:<19} "
            f"{r['peer_setting']:<19} {_f(r.get('peer_hvp'), 'd', 8)} "
            f"{_f(r.get('ours_hvp'), 'd', 8)} {_f(r.get('hvp_ratio'), '.3f', 6)} "
            f"{_f(r.get('ours_verified_hvp'), 'd', 7)} "
            f"{_f(r.get('peer_max_rel_error'), '.1e', 8)} "
            f"{_f(r.get('ours_max_rel_error'), '.1e', 8)} {_f(r.get('ours_tol'), 'g', 8)} "
            f"{_f(r.get('peer_seconds'), '.3f', 7)} {_f(r.get('ours_seconds'), '.3f', 7)} "
            f"{_f(r.get('time_ratio'), '.3f', 6)} "
            f"{_f(r.get('ours_verified_seconds'), '.3f', 7)}  {'; '.join(r['notes'])}")
    spread = [r for r in rows if r.get("seed_errors_peer")]
    if spread:
        lines += ["", f"fixed-step peer settings: both at the peer's products, from "
                  f"{SPREAD_SEEDS} start vectors each (max relative error over the top k)",
                  f"{'model':<10} {'curv':<7} {'k':>2} {'HVP':>4} {'peer median':>11} "
                  f"{'ours median':>11} {'ratio':>6} {'peer min-max':>17} {'ours min-max':>17}"]
        for r in spread:
            pe, oe = r["seed_errors_peer"], r["seed_errors_ours"]
            lines.append(
                f"{r['model']:<10} {r['curvature']:<7} {r['k']:>2} {r['peer_hvp']:>4} "
                f"{r['seed_median_peer']:>11.1e} {r['seed_median_ours']:>11.1e} "
                f"{r['seed_median_ours'] / r['seed_median_peer']:>6.2f} "
                f"{min(pe):>8.1e}-{max(pe):>8.1e} {min(oe):>8.1e}-{max(oe):>8.1e}")
    lines += ["", "ours at its default tolerance (1e-4 in float32) and the most accurate peer run",
              f"{'model':<10} {'curv':<7} {'k':>2} {'HVP ours':>8} {'err ours':>8} "
              f"{'s ours':>7}  {'best peer err':>13}  best peer run / reaches ours?"]
    for d in defaults:
        reach = {None: "-", True: "yes", False: "NO: no peer run reaches this accuracy"}[
            d["peer_reaches"]]
        lines.append(f"{d['model']:<10} {d['curvature']:<7} {d['k']:>2} {d['ours_hvp']:>8} "
                     f"{d['ours_max_rel_error']:>8.1e} {d['ours_seconds']:>7.3f}  "
                     f"{_f(d['best_peer_error'], '.1e', 13)}  {d['best_peer_run']} / {reach}")
    return lines


def trace_table(rows: list[dict]) -> list[str]:
    lines = [f"{'model':<10} {'m':>3} {'estimator':<20} {'matvecs':>7} {'seeds':>5} "
             f"{'exact tr':>9} {'mean':>9} {'variance':>9} {'rel RMS':>8} {'var/Hutch':>9} "
             f"{'s/call':>7}"]
    base = {(r["model"], r["m"]): r["variance"] for r in rows
            if r["estimator"] == "ours hutchinson"}
    for r in rows:
        mv = "/".join(str(v) for v in r["matvecs"])
        lines.append(
            f"{r['model']:<10} {r['m']:>3} {r['estimator']:<20} {mv:>7} {r['seeds']:>5} "
            f"{r['exact_trace']:>9.4f} {r['mean']:>9.4f} {r['variance']:>9.2e} "
            f"{r['rel_rms_error']:>8.2e} {r['variance'] / base[(r['model'], r['m'])]:>9.3f} "
            f"{r['median_seconds']:>7.3f}")
    return lines


def minilm_table(res: dict) -> list[str]:
    lines = [f"attention: eager={res['attn']['eager']} vs default={res['attn']['sdpa']}; "
             f"{res['sentences']} sentences x {res['max_length']} tokens; top-3, median of "
             f"{res['rows'][0]['repeats']} (Objective + top_eigenpairs)",
             f"{'subset':<16} {'params':>8} {'eigenvalues (eager)':<30} {'max rel diff':>12} "
             f"{'HVP e/s':>7} {'s eager':>8} {'s sdpa':>8} {'sdpa/eager':>10}"]
    for r in res["rows"]:
        ev = np.array2string(np.asarray(r["eigenvalues_eager"]), precision=5)
        lines.append(f"{r['subset']:<16} {r['n_params']:>8} {ev:<30} {r['max_rel_diff']:>12.2e} "
                     f"{r['n_hvp_eager']:>3}/{r['n_hvp_sdpa']:<3} {r['seconds_eager']:>8.2f} "
                     f"{r['seconds_sdpa']:>8.2f} {r['time_ratio_sdpa_over_eager']:>10.3f}")
    ok = all(r["max_rel_diff"] <= 1e-5 for r in res["rows"])
    lines.append(f"target (eigenvalues agree to <= 1e-5 relative): {'met' if ok else 'NOT met'}")
    return lines


# --------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 10, 20])
    parser.add_argument("--models", nargs="+", default=["digits_mlp", "digits_cnn"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--matvecs", type=int, nargs="+", default=[30, 60, 99])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--sentences", type=int, default=96)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["hessian", "ggn", "trace", "minilm", "repeated"],
                        help="sections to skip")
    parser.add_argument("--quick", action="store_true",
                        help="k=3, default peer settings only, 5 seeds at m=30, no repeats")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    ks, ms, seeds = ([3], [30], 5) if args.quick else (args.ks, args.matvecs, args.seeds)
    lines: list[str] = []
    progress: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    eig_rows, eig_defaults, tr_rows, models_info = [], [], [], {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in args.models:
            model, x, y = bench_hessian.trained_case(args.epochs, name)
            with torch.no_grad():
                loss = float(torch.nn.functional.cross_entropy(model(x), y))
                acc = float((model(x).argmax(1) == y).float().mean())
            obj = Objective(model, (x, y), torch.nn.functional.cross_entropy)
            case = bench_models.save_case(tmp / f"{name}.npz", name, model, x, y)
            start = time.perf_counter()
            h_vals, h_vecs, h_trace = by_magnitude(dense_hessian(model, x, y))
            g_vals, g_vecs, g_trace = (by_magnitude(dense_ggn(model, x, y))
                                       if "ggn" not in args.skip else (None, None, None))
            dense_s = time.perf_counter() - start
            models_info[name] = {
                "n_params": obj.num_params, "n_samples": len(y), "train_loss": loss,
                "train_accuracy": acc, "dense_seconds": dense_s,
                "hessian_top_by_magnitude": h_vals[:20].tolist(), "hessian_trace": h_trace,
                "hessian_min": float(h_vals.min()),
                "ggn_top": None if g_vals is None else g_vals[:20].tolist(),
                "ggn_trace": g_trace}
            say(f"{name}: {obj.num_params} params, {len(y)} samples, loss {loss:.4f}, "
                f"accuracy {acc:.3f}; dense float64 references in {dense_s:.1f} s")
            say(f"  Hessian |λ|-top {np.array2string(h_vals[:5], precision=5)}, "
                f"min {h_vals.min():.4g}, trace {h_trace:.5g}")
            if g_vals is not None:
                say(f"  GGN top {np.array2string(g_vals[:5], precision=5)}, trace {g_trace:.5g}")
            if "hessian" not in args.skip:
                ours = Ours(obj, h_vals, h_vecs, "hessian", repeat=not args.quick)
                r, d = eigen_rows(name, "hessian", HESSIAN_PEERS, ks, case, tmp, ours,
                                  args.quick, progress)
                eig_rows += r
                eig_defaults += d
            if "ggn" not in args.skip:
                ours = Ours(obj, g_vals, g_vecs, "ggn", repeat=not args.quick)
                r, d = eigen_rows(name, "ggn", GGN_PEERS, ks, case, tmp, ours, args.quick,
                                  progress)
                eig_rows += r
                eig_defaults += d
            if "trace" not in args.skip:
                tr_rows += trace_rows(name, obj, h_trace, case, ms, seeds)
            print(f"  [{name} done, {time.perf_counter() - t0:.0f} s so far]", flush=True)
        repeated = (None if "repeated" in args.skip else
                    repeated_rows(tmp, [3] if args.quick else [3, 10], args.quick))
    minilm = None
    if "minilm" not in args.skip:
        minilm = minilm_rows(1 if args.quick else 3, args.sentences, args.max_length)

    say()
    if eig_rows:
        say("== top-k eigenpairs (LM) in float32 vs dense float64: fewest HVPs of ours "
            "reaching the peer's accuracy ==")
        for line in eigen_table(eig_rows, eig_defaults):
            say(line)
        say()
    if tr_rows:
        say(f"== Hessian trace at equal matvecs, {seeds} seeds: Hutchinson vs Hutch++ ==")
        for line in trace_table(tr_rows):
            say(line)
        say()
    if repeated is not None:
        say("== a Hessian with every eigenvalue repeated 10 times: top-k ==")
        for line in repeated_table(repeated):
            say(line)
        say()
    if minilm is not None:
        say("== all-MiniLM-L6-v2: SDPA vs eager attention ==")
        for line in minilm_table(minilm):
            say(line)
    say(f"\ntotal {time.perf_counter() - t0:.0f} s, torch threads {torch.get_num_threads()}")

    RESULTS.mkdir(exist_ok=True)
    stem = "bench_curvature_quick" if args.quick else "bench_curvature"
    (RESULTS / f"{stem}.json").write_text(json.dumps({
        "args": vars(args), "models": models_info, "eigen_rows": eig_rows,
        "ours_default_tol": eig_defaults, "trace_rows": tr_rows, "repeated": repeated,
        "minilm": minilm,
        "torch_threads": torch.get_num_threads()}, indent=2, default=_jsonable))
    (RESULTS / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return 0


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
