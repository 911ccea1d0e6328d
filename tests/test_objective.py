"""The loss over flat parameters, checked against hand-written references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, snapshot
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscaper import Objective


def test_loss_matches_reference_and_leaves_model_alone(mlp_case):
    model, x, y, reference = mlp_case
    before = snapshot(model)
    obj = Objective(model, (x, y), F.cross_entropy)
    assert obj.num_params == 53
    theta = obj.theta0 + 0.1 * torch.randn(53, dtype=torch.float64)
    assert torch.allclose(obj(theta), reference(theta), rtol=1e-12, atol=0)
    assert torch.allclose(obj(), F.cross_entropy(model(x), y), rtol=1e-12, atol=0)
    obj.gradient(theta)
    obj.batch(torch.stack([theta, obj.theta0]))
    assert_unchanged(model, before)


def test_batches_are_weighted_by_size(mlp_case):
    model, x, y, reference = mlp_case
    uneven = [(x[:7], y[:7]), (x[7:30], y[7:30]), (x[30:], y[30:])]
    obj = Objective(model, uneven, F.cross_entropy)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    obj_loader = Objective(model, loader, F.cross_entropy)
    expected = reference(obj.theta0)
    assert torch.allclose(obj(), expected, rtol=1e-12)
    assert torch.allclose(obj_loader(), expected, rtol=1e-12)
    assert obj.num_samples == 40 and len(obj_loader.batches) == 3


def test_gradient_matches_autograd_of_reference(mlp_case):
    model, x, y, reference = mlp_case
    obj = Objective(model, [(x[:25], y[:25]), (x[25:], y[25:])], F.cross_entropy)
    theta = obj.theta0.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(reference(theta), theta)
    assert torch.allclose(obj.gradient(), expected, rtol=1e-10, atol=1e-14)


def test_batch_evaluation_vmap_equals_one_by_one(mlp_case):
    model, x, y, reference = mlp_case
    obj = Objective(model, (x, y), F.cross_entropy)
    thetas = obj.theta0 + 0.3 * torch.randn(13, 53, dtype=torch.float64)
    expected = torch.stack([reference(t) for t in thetas])
    for chunk in (None, 1, 4):
        assert torch.allclose(obj.batch(thetas, chunk_size=chunk), expected, rtol=1e-12)
    assert torch.allclose(obj.batch(thetas, vectorize=False), expected, rtol=1e-12)


def test_model_vmap_cannot_batch_falls_back(mlp_case, caplog):
    model, x, y, reference = mlp_case

    class ItemModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, inp):
            out = self.inner(inp)
            if out.sum().item() > 1e9:  # data-dependent control flow: vmap refuses it
                return out * 2
            return out

    obj = Objective(ItemModel(), (x, y), F.cross_entropy)
    thetas = obj.theta0 + 0.1 * torch.randn(3, 53, dtype=torch.float64)
    got = obj.batch(thetas)
    assert torch.allclose(got, torch.stack([reference(t) for t in thetas]), rtol=1e-12)
    assert "vmap cannot batch" in caplog.text


def test_parameter_subset_by_pattern(mlp_case):
    model, x, y, reference = mlp_case
    obj = Objective(model, (x, y), F.cross_entropy, params="2.*")
    assert obj.param_names == ("2.weight", "2.bias") and obj.num_params == 18
    full0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    sub = obj.theta0 + 0.5
    full = full0.clone()
    full[35:] = sub
    assert torch.allclose(obj(sub), reference(full), rtol=1e-12)
    with pytest.raises(ValueError, match="match no parameter"):
        Objective(model, (x, y), F.cross_entropy, params=["decoder.*"])


def test_theta_gets_its_gradient_from_one_node_whatever_the_parameter_count():
    """The per-parameter views of θ come from one split: a slice per parameter would make
    every backward pass to θ fill one zero vector of length P per parameter tensor (on
    all-MiniLM-L6-v2's 105 tensors, Hessian-vector products took 9.6 s instead of 1.2 s)."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(6, 6) for _ in range(12)]).eval()  # 24 tensors
    obj = Objective(model, (torch.randn(5, 6), torch.randn(5, 6)), F.mse_loss)
    theta = obj.theta0.detach().requires_grad_(True)
    loss = obj.loss_on(theta, obj.batches[0])
    into_theta, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None and getattr(child, "variable", None) is theta:
                into_theta.add(node)
            stack.append(child)
    assert len(into_theta) == 1
    assert torch.autograd.grad(loss, theta)[0].shape == theta.shape


def test_frozen_parameters_are_left_out(mlp_case):
    model, x, y, _ = mlp_case
    model[0].weight.requires_grad_(False)
    obj = Objective(model, (x, y), F.cross_entropy)
    assert "0.weight" not in obj.param_names and obj.num_params == 23


def test_dict_batches_use_outputs_loss():
    class HFLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, input_ids, labels=None):
            logits = self.lin(input_ids)
            return {"logits": logits, "loss": F.cross_entropy(logits, labels)}

    torch.manual_seed(0)
    model = HFLike().eval()
    batch = {"input_ids": torch.randn(10, 4), "labels": torch.randint(0, 2, (10,))}
    obj = Objective(model, batch)
    expected = F.cross_entropy(model.lin(batch["input_ids"]), batch["labels"])
    assert torch.allclose(obj(), expected)
    obj2 = Objective(model, [batch, batch], loss_fn=lambda out, b: out["logits"].square().mean())
    assert torch.allclose(obj2(), model.lin(batch["input_ids"]).square().mean())


def test_training_mode_with_dropout_is_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    data = (torch.randn(5, 3), torch.randint(0, 2, (5,)))
    with pytest.raises(ValueError, match=r"model.eval\(\)"):
        Objective(model, data, F.cross_entropy)
    assert model.training  # we never call .eval() behind the user's back
    Objective(model, data, F.cross_entropy, allow_train_mode=True)


def test_batchnorm_in_train_mode_keeps_running_stats():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    data = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
    before = snapshot(model)
    obj = Objective(model, data, F.cross_entropy, allow_train_mode=True)
    obj()
    obj.gradient()
    assert_unchanged(model, before)


def test_model_restored_after_exception_in_loss(mlp_case):
    model, x, y, _ = mlp_case
    before = snapshot(model)
    calls = {"n": None}  # counted from after construction (which evaluates θ₀ itself)

    def flaky_loss(out, target):
        if calls["n"] is not None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("boom")
        return F.cross_entropy(out, target)

    obj = Objective(model, [(x[:20], y[:20]), (x[20:], y[20:])], flaky_loss)
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="boom"):
        obj(obj.theta0 + 1.0)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "no batches"),
        ((torch.empty(0, 6), torch.empty(0, dtype=torch.long)), "empty batch"),
        ([torch.randn(3, 6), torch.randn(3, 6)], "tuple"),
    ],
)
def test_bad_data_is_named(mlp_case, data, message):
    model = mlp_case[0]
    with pytest.raises((ValueError, TypeError), match=message):
        Objective(model, data, F.cross_entropy)


def test_memory_budget_too_small_names_the_fix(mlp_case):
    model, x, y, _ = mlp_case
    obj = Objective(model, (x, y), F.cross_entropy, memory_budget=100)
    with pytest.raises(MemoryError, match="memory_budget"):
        obj.batch(obj.theta0[None])
    assert Objective(model, (x, y), F.cross_entropy, memory_budget="1MiB").chunk_size() >= 1


def test_mixed_dtypes_refused():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double())
    with pytest.raises(ValueError, match="dtype"):
        Objective(model, (torch.randn(2, 2), torch.zeros(2, dtype=torch.long)), F.cross_entropy)
