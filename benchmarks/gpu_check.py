"""One command for a GPU machine: CUDA results checked against the CPU path, then timed.

    python benchmarks/gpu_check.py [--device cuda] [--quick]

1. Checks (float64, small cases, CUDA against CPU on the same model, data and directions):
   loss, gradient, a Hessian-vector product, Lanczos top-3 eigenvalues and an 11×11 grid for
   an MLP and a BatchNorm CNN; the same for a tiny HuggingFace BERT over a layer subset (reuse
   of the frozen encoder on); the convection PINN's loss and HVP; one jump & retrain run
   (finite and of the right shape: its random draws differ between devices).
2. Timings on the device: grid throughput and top-5 Lanczos of the 1.15M-parameter wide CNN,
   the real all-MiniLM-L6-v2 subset (top-3 + 21×21, reuse on), and the 4-D PINN
   (`bench_pinn4d.py`, 41⁴ points; 11⁴ with ``--quick``).

Writes ``benchmarks/results/gpu_check.json``; exits 1 if a check fails. ``--device cpu``
runs the same code on the CPU against itself (a dry run of the script, not a GPU check),
written to ``gpu_check_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_models  # noqa: E402

from landscaper import HessianOperator, Landscape, Objective, top_eigenpairs  # noqa: E402
from landscaper.directions import random_directions  # noqa: E402
from landscaper.examples.pinn import ConvectionProblem, convection_loss, make_mlp  # noqa: E402

RESULTS = HERE / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mlp_case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()
    x = torch.randn(64, 5, dtype=torch.float64)
    return model, (x, torch.randint(0, 3, (64,))), F.cross_entropy, None


def bn_cnn_case():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(24, 1, 8, 8, dtype=torch.float64)
    return model.eval(), (x, torch.randint(0, 5, (24,))), F.cross_entropy, None


def bert_case():
    import transformers

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=24,
                                     max_position_embeddings=16, num_labels=2,
                                     attn_implementation="eager")
    torch.manual_seed(3)
    model = transformers.BertForSequenceClassification(config).double().eval()
    ids = torch.randint(0, 50, (6, 9))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.randint(0, 2, (6,))}
    return model, batch, None, ["bert.encoder.layer.1.output.dense.*", "classifier.*"]


def on(device: torch.device, data):
    if isinstance(data, dict):
        return {k: v.to(device) for k, v in data.items()}
    return tuple(t.to(device) for t in data)


def quantities(model, data, loss_fn, params, device, directions=None) -> dict:
    """The numbers a CPU run and a device run must agree on, as float64 numpy arrays."""
    model = model.to(device)
    objective = Objective(model, on(device, data), loss_fn, params)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(objective.num_params, generator=gen, dtype=torch.float64)
    if directions is None:
        directions = torch.as_tensor(random_directions(objective, 2, seed=0).vectors).cpu()
    land = Landscape.compute(objective=objective, directions=directions.to(device), steps=11,
                             extent=0.3, progress=False)
    out = {"loss": objective().detach(), "gradient": objective.gradient(),
           "hvp": HessianOperator(objective) @ v.to(device),
           "top3": torch.as_tensor(top_eigenpairs(objective, k=3).eigenvalues),
           "grid": torch.as_tensor(land.loss.copy())}
    return {k: np.atleast_1d(t.double().cpu().numpy()) for k, t in out.items()}, directions


def check_against_cpu(name: str, make, device: torch.device) -> dict:
    model, data, loss_fn, params = make()
    reference, directions = quantities(model, data, loss_fn, params, torch.device("cpu"))
    model, data, loss_fn, params = make()
    ours, _ = quantities(model, data, loss_fn, params, device, directions)
    gaps = {k: float(np.max(np.abs(ours[k] - reference[k]))
                     / max(float(np.max(np.abs(reference[k]))), 1e-300)) for k in reference}
    ok = all(g < 1e-8 for g in gaps.values())
    print(f"[check] {name}: {'ok' if ok else 'FAILED'} (largest relative gap "
          f"{max(gaps.values()):.1e})")
    return {"ok": ok, "relative_gaps": gaps}


def check_pinn(device: torch.device) -> dict:
    problem = ConvectionProblem(beta=20.0, n_collocation=200, n_initial=50, n_boundary=50)
    values = {}
    for where in (torch.device("cpu"), device):
        model = make_mlp(width=20, depth=2, dtype=torch.float64).to(where)
        objective = Objective(model, problem.batch(torch.float64, where),
                              batch_loss=convection_loss(problem.beta))
        v = torch.linspace(-1, 1, objective.num_params, dtype=torch.float64, device=where)
        values[where.type] = (float(objective()), (HessianOperator(objective) @ v).cpu())
    (l_cpu, h_cpu), (l_dev, h_dev) = values["cpu"], values[device.type]
    gap = max(abs(l_dev - l_cpu) / abs(l_cpu),
              float((h_dev - h_cpu).abs().max() / h_cpu.abs().max()))
    print(f"[check] convection PINN loss and HVP: {'ok' if gap < 1e-8 else 'FAILED'} "
          f"({gap:.1e})")
    return {"ok": gap < 1e-8, "relative_gap": gap}


def check_jump_retrain(device: torch.device) -> dict:
    from landscaper.trajectories import jump_and_retrain

    model, (x, y), loss_fn, _ = mlp_case()
    model = model.to(device)
    x, y = x.to(device), y.to(device)

    def train_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, _epoch: int) -> None:
        optimizer.zero_grad()
        loss_fn(net(x), y).backward()
        optimizer.step()

    samples = jump_and_retrain(model, Objective(model, (x, y), loss_fn),
                               lambda ps: torch.optim.SGD(ps, lr=0.05), train_epoch,
                               seeds=[0], step_sizes=[0.5], epochs=3, progress=False)
    ok = bool(np.isfinite(samples.params).all() and np.isfinite(samples.loss).all())
    print(f"[check] jump & retrain on {device}: {'ok' if ok else 'FAILED'} "
          f"{tuple(samples.params.shape)}")
    return {"ok": ok, "shape": list(samples.params.shape)}


def time_wide_cnn(device: torch.device, quick: bool) -> dict:
    model = bench_models.make_model("wide_cnn").to(device).eval()
    x, y = bench_models.random_data("wide_cnn", n=1797)
    objective = Objective(model, (torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)),
                          F.cross_entropy, memory_budget="16GiB")
    steps = 21 if quick else 51
    sync(device)
    start = time.perf_counter()
    land = Landscape.compute(objective=objective, directions="random", steps=steps,
                             progress=False, memory_budget="16GiB")
    sync(device)
    grid_s = time.perf_counter() - start
    start = time.perf_counter()
    eig = top_eigenpairs(objective, k=5)
    sync(device)
    eig_s = time.perf_counter() - start
    print(f"[time] wide CNN ({objective.num_params:,} params, 1,797 samples): {steps}x{steps} "
          f"grid {grid_s:.2f} s ({land.loss.size / grid_s:.0f} points/s); top-5 {eig_s:.2f} s "
          f"({eig.n_hvp} HVPs)")
    return {"params": objective.num_params, "steps": steps, "grid_s": grid_s,
            "points_per_s": land.loss.size / grid_s, "top5_s": eig_s, "n_hvp": eig.n_hvp}


def time_minilm(device: torch.device) -> dict:
    import bench_hf

    model, batch, info = bench_hf.load_minilm(device=str(device))
    sync(device)
    start = time.perf_counter()
    objective = Objective(model, batch, params=bench_hf.PARAMS)
    eig = top_eigenpairs(objective, k=3)
    sync(device)
    eig_s = time.perf_counter() - start
    start = time.perf_counter()
    land = Landscape.compute(objective=objective, directions=eig.eigenvectors[:2], steps=21,
                             extent=0.05, progress=False)
    sync(device)
    grid_s = time.perf_counter() - start
    print(f"[time] MiniLM subset: top-3 {eig_s:.2f} s, 21x21 grid {grid_s:.2f} s")
    return {"top3_s": eig_s, "grid_s": grid_s, "eigenvalues": eig.eigenvalues.tolist(),
            "points_per_s": land.loss.size / grid_s, "load_s": info["load_s"]}


def time_pinn4d(device: torch.device, quick: bool) -> dict:
    steps = 11 if quick else 41
    out = RESULTS / f"gpu_check_pinn4d_{device.type}.json"
    cmd = [sys.executable, str(HERE / "bench_pinn4d.py"), "--steps", str(steps), "--device",
           str(device), "--memory-budget", "32GiB" if device.type == "cuda" else "2GiB",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    print("[time] " + "\n[time] ".join(proc.stdout.strip().splitlines()[-3:]))
    if proc.returncode != 0:
        return {"ok": False, "stderr": proc.stderr[-2000:]}
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="smaller timing cases")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here (torch.cuda.is_available() is False); run this on "
                         "a GPU machine, or pass --device cpu for a dry run of the script")
    result: dict = {"device": str(device), "torch": torch.__version__,
                    "name": torch.cuda.get_device_name(device) if device.type == "cuda" else
                    "cpu", "checks": {}, "timings": {}}
    for name, make in (("MLP", mlp_case), ("BatchNorm CNN", bn_cnn_case),
                       ("tiny BERT subset", bert_case)):
        result["checks"][name] = check_against_cpu(name, make, device)
    result["checks"]["convection PINN"] = check_pinn(device)
    result["checks"]["jump & retrain"] = check_jump_retrain(device)
    result["timings"]["wide_cnn"] = time_wide_cnn(device, args.quick)
    result["timings"]["minilm_subset"] = time_minilm(device)
    result["timings"]["pinn4d"] = time_pinn4d(device, args.quick)
    RESULTS.mkdir(exist_ok=True)
    name = "gpu_check.json" if device.type == "cuda" else f"gpu_check_{device.type}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2, default=float))
    failed = [k for k, v in result["checks"].items() if not v["ok"]]
    print(f"checks: {len(result['checks']) - len(failed)} ok" + (f", FAILED: {failed}"
                                                                  if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
