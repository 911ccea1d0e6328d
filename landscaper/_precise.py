"""Inner products and norms of long vectors, accumulated in float64.

On the CPU, float32 BLAS products (``a @ b``, ``torch.dot``) and ``Tensor.norm`` reduce a long
vector in a few long float32 runs: over 5·10⁷ entries an inner product of unit vectors came
out 1e-4 off and a norm 4e-3 off (measured, torch 2.13), which caps how orthogonal a Lanczos
basis can be kept and shifts the eigenvalues of a large model by as much. Here vectors are cut
into chunks of `CHUNK` entries, each reduced by the same kernels (errors near 1e-8), and the
chunks' results are summed in float64, at the same speed. On a GPU, whose reductions are trees,
and in float64, the plain kernels are accurate and kept.
"""

from __future__ import annotations

import math

import torch

#: Entries reduced by one float32 kernel call before the float64 sum.
CHUNK = 2**16


def _chunked(vector: torch.Tensor) -> bool:
    return (vector.device.type == "cpu" and vector.dtype != torch.float64
            and vector.shape[-1] > CHUNK)


def rows_dot(rows: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``rows @ vector`` for rows of shape (n, P) and a vector of length P, in float64."""
    if not _chunked(vector):
        return (rows @ vector).double()
    out = torch.zeros(rows.shape[0], dtype=torch.float64)
    for start in range(0, vector.shape[0], CHUNK):
        out += (rows[:, start:start + CHUNK] @ vector[start:start + CHUNK]).double()
    return out


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """``aᵀb`` of two flat vectors."""
    return float(rows_dot(a[None], b)[0])


def norm(vector: torch.Tensor) -> float:
    """‖vector‖₂ of a flat vector (inf or NaN where an entry is)."""
    if not _chunked(vector):
        return float(vector.norm())
    squares = dot(vector, vector)
    if math.isfinite(squares):
        return math.sqrt(squares)
    largest = float(vector.abs().max())  # squares past float32's range, or a NaN/inf entry
    if not math.isfinite(largest) or largest == 0.0:
        return largest
    scaled = vector / largest
    return largest * math.sqrt(dot(scaled, scaled))


def row_norms(rows: torch.Tensor) -> torch.Tensor:
    """‖row‖₂ of each row of an (n, P) matrix, as a float64 tensor."""
    return torch.tensor([norm(row) for row in rows], dtype=torch.float64)
