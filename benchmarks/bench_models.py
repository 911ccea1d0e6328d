"""Models and data cases shared by our benchmarks and the peer scripts.

This module must import in *every* environment the benchmarks use (ours and the isolated peer
venvs), so it depends only on torch and numpy (scikit-learn is imported lazily, only by
:func:`digits_data`). That is why it keeps its own model definitions instead of importing
`landscaper.examples`: in a peer venv ``import landscaper`` is the peer's release. Its
``digits_mlp`` and ``digits_cnn`` have the layers of ``landscaper.examples.digits_mlp()`` and
``digits_cnn()``; ``wide_cnn``, ``pinn_mlp`` (2 hidden layers, PyTorch's default
initialisation) and the standardised :func:`digits_data` are deliberately different from the
example models.

A *case* is one ``.npz`` file (always written/read with ``allow_pickle=False``) holding

* ``model_name``             0-d unicode array, a key of :data:`MODELS`;
* ``param_names``            1-d unicode array, ``model.parameters()`` order (``named_parameters``);
* ``param/<state_dict key>`` one array per ``state_dict()`` entry (parameters and buffers);
* ``X``, ``y``               inputs and targets (float32 / int64 for classification);
* ``extra/<key>``            any further arrays (e.g. grid directions, flat in parameter order).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

PARAM_PREFIX = "param/"
EXTRA_PREFIX = "extra/"


# --------------------------------------------------------------------------- model builders
def digits_mlp() -> nn.Module:
    """64-64-10 ReLU MLP for 8x8 digits flattened to 64 features (4,810 parameters)."""
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


class _Unflatten8x8(nn.Module):
    """Accept digits either as (N, 64) or as (N, 1, 8, 8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 1, 8, 8)


def wide_cnn() -> nn.Module:
    """CNN for 1x8x8 digits with 1,146,890 parameters.

    Inputs may be (N, 64) or (N, 1, 8, 8).  About 3.5 M multiply-adds per sample, so on a
    grid the forward pass dominates the per-point cost (re-writing 1.15 M weights is ~1 ms;
    a forward pass over 1,797 digits is tens of ms on 2 CPU cores).
    """
    return nn.Sequential(
        _Unflatten8x8(),
        nn.Conv2d(1, 32, 3, padding=1),  # 320
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),  # 18,496
        nn.ReLU(),
        nn.MaxPool2d(2),  # 64 x 4 x 4
        nn.Conv2d(64, 128, 3, padding=1),  # 73,856
        nn.ReLU(),
        nn.Flatten(),  # 2,048
        nn.Linear(2048, 512),  # 1,049,088
        nn.ReLU(),
        nn.Linear(512, 10),  # 5,130
    )


def pinn_mlp() -> nn.Module:
    """2-50-50-1 tanh MLP (PINN-style, 2,751 parameters); trained with MSE to targets here."""
    return nn.Sequential(
        nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 50), nn.Tanh(), nn.Linear(50, 1)
    )


def digits_cnn() -> nn.Module:
    """The layers of ``landscaper.examples.digits_cnn()`` (8 channels; inputs (N, 64) are
    reshaped to 1x8x8 inside): 1,898 parameters, all trainable."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )


def digits_cnn_head() -> nn.Module:
    """The layers of ``landscaper.examples.digits_cnn()`` (8 channels, 8x8 digits) with every
    weight but the last Linear's stored as a buffer: ``model.parameters()`` is the classifier
    head alone (650 parameters), so a tool that perturbs all parameters (the peers) takes the
    landscape of the head while running the whole network at every point."""
    model = nn.Sequential(
        _Unflatten8x8(),
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )
    for layer in (model[1], model[4]):
        for name, param in list(layer.named_parameters(recurse=False)):
            delattr(layer, name)
            layer.register_buffer(name, param.detach())
    return model


def digits_linear() -> nn.Module:
    """A 64 -> 10 linear least-squares head: under the mean squared error against one-hot
    targets its Hessian is I₁₀ ⊗ (2 / (10 N)) X̃ᵀX̃ whatever its weights, every eigenvalue
    repeated 10 times (bench_curvature's repeated-eigenvalue case)."""
    return nn.Linear(64, 10)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "digits_mlp": digits_mlp,
    "digits_cnn": digits_cnn,
    "digits_cnn_head": digits_cnn_head,
    "digits_linear": digits_linear,
    "wide_cnn": wide_cnn,
    "pinn_mlp": pinn_mlp,
}

#: loss per model: "cross_entropy" (y int64 class labels) or "mse" (y float32, same shape as out)
LOSS_KIND: dict[str, str] = {
    "digits_mlp": "cross_entropy",
    "digits_cnn": "cross_entropy",
    "digits_cnn_head": "cross_entropy",
    "digits_linear": "mse",
    "wide_cnn": "cross_entropy",
    "pinn_mlp": "mse",
}


def make_model(name: str, seed: int | None = 0) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    if seed is not None:
        torch.manual_seed(seed)
    return MODELS[name]()


def make_criterion(name: str) -> nn.Module:
    """Mean-reduced loss module for model ``name``."""
    kind = LOSS_KIND[name]
    if kind == "cross_entropy":
        return nn.CrossEntropyLoss()
    if kind == "mse":
        return nn.MSELoss()
    raise ValueError(kind)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flat_params(model: nn.Module) -> np.ndarray:
    """All parameters concatenated in ``model.parameters()`` order (float64 copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()


def split_flat(model: nn.Module, vec: np.ndarray) -> list[torch.Tensor]:
    """Split a flat vector (``model.parameters()`` order) into tensors shaped like the params."""
    vec = np.asarray(vec).reshape(-1)
    total = n_params(model)
    if vec.size != total:
        raise ValueError(f"flat vector has {vec.size} entries, model has {total} parameters")
    out, i = [], 0
    for p in model.parameters():
        n = p.numel()
        out.append(torch.from_numpy(np.ascontiguousarray(vec[i : i + n])).to(p.dtype).view_as(p))
        i += n
    return out


# --------------------------------------------------------------------------- data
def random_data(name: str, n: int = 1797, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic inputs/targets of the right shapes for model ``name`` (no sklearn needed)."""
    rng = np.random.default_rng(seed)
    if name in ("digits_mlp", "digits_cnn", "wide_cnn", "digits_cnn_head"):
        X = rng.standard_normal((n, 64)).astype(np.float32)
        y = rng.integers(0, 10, size=n).astype(np.int64)
    elif name == "pinn_mlp":
        X = rng.uniform(-1.0, 1.0, size=(n, 2)).astype(np.float32)
        y = (np.sin(np.pi * X[:, :1]) * np.sin(np.pi * X[:, 1:])).astype(np.float32)
    else:
        raise KeyError(name)
    return X, y


def digits_data(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1,797 8x8 digits, standardised per feature (needs scikit-learn)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    if n is not None:
        X, y = X[:n], y[:n]
    return X.astype(np.float32), y.astype(np.int64)


# --------------------------------------------------------------------------- case files
def save_case(
    path: str | Path,
    model_name: str,
    model: nn.Module,
    X,
    y,
    extra_arrays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write model weights, data and extra arrays to ``path`` (npz, no pickles)."""
    if model_name not in MODELS:
        raise KeyError(f"unknown model {model_name!r}; known: {sorted(MODELS)}")
    arrays: dict[str, np.ndarray] = {
        "model_name": np.array(model_name),
        "param_names": np.array([n for n, _ in model.named_parameters()], dtype=str),
        "X": _to_np(X),
        "y": _to_np(y),
    }
    for k, v in model.state_dict().items():
        arrays[PARAM_PREFIX + k] = v.detach().cpu().numpy()
    for k, v in (extra_arrays or {}).items():
        arrays[EXTRA_PREFIX + k] = np.asarray(v)
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"array {k!r} has dtype object; npz cases are written without pickle")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # file handle: np.savez would append ".npz" to the name
        np.savez(fh, **arrays)
    return path


def load_case(path: str | Path) -> dict:
    """Read a case written by :func:`save_case`.

    Returns a dict with ``model_name``, ``model`` (built and loaded, in train mode),
    ``criterion``, ``X`` and ``y`` (torch tensors), ``extra`` (dict of numpy arrays),
    ``param_names`` (list) and ``state`` (dict of numpy arrays).
    """
    with np.load(path, allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    name = str(files["model_name"])
    model = make_model(name, seed=None)
    state = {k[len(PARAM_PREFIX) :]: v for k, v in files.items() if k.startswith(PARAM_PREFIX)}
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    names = [str(s) for s in files["param_names"]]
    if names != [n for n, _ in model.named_parameters()]:
        raise ValueError(f"case {path}: parameter names do not match model {name!r}")
    return {
        "model_name": name,
        "model": model,
        "criterion": make_criterion(name),
        "X": torch.from_numpy(np.array(files["X"])),
        "y": torch.from_numpy(np.array(files["y"])),
        "extra": {
            k[len(EXTRA_PREFIX) :]: v for k, v in files.items() if k.startswith(EXTRA_PREFIX)
        },
        "param_names": names,
        "state": state,
    }


def _to_np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


if __name__ == "__main__":
    for _name in MODELS:
        print(_name, n_params(make_model(_name)))
