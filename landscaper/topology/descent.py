"""Steepest-descent basins and the reduced basin adjacency graph (whole-array numpy).

Given ranks (see `landscaper.topology.order`), every point's lowest-ranked neighbour (itself
included) is found by array shifts over the grid offsets (or ``np.minimum.at`` over a graph's
edges); pointer jumping then labels every point with the minimum its steepest descent reaches.

The boundary edges between different basins, keyed by ``max(rank u, rank v)``, are reduced to
the lowest key per basin pair, one offset at a time, so all grid edges are never held at once.
"""

from __future__ import annotations

import logging

import numpy as np

from .neighbours import half_offsets, offset_slices

logger = logging.getLogger(__name__)

_INT64_MAX = np.iinfo(np.int64).max


def lowest_neighbour_grid(
    rank: np.ndarray, shape: tuple[int, ...], connectivity: str
) -> np.ndarray:
    """Rank of the lowest-ranked point among each grid point and its neighbours (flat)."""
    r = rank.reshape(shape)
    best = r.copy()
    for off in half_offsets(len(shape), connectivity):
        src, dst = offset_slices(off)
        bs, bd = best[src], best[dst]
        np.minimum(bs, r[dst], out=bs)
        np.minimum(bd, r[src], out=bd)
    return best.reshape(-1)


def lowest_neighbour_graph(rank: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rank of the lowest-ranked point among each vertex and its graph neighbours."""
    best = rank.copy()
    if len(edges):
        u, v = edges[:, 0], edges[:, 1]
        np.minimum.at(best, u, rank[v])
        np.minimum.at(best, v, rank[u])
    return best


def descent_labels(best: np.ndarray, order: np.ndarray, rank: np.ndarray):
    """Label each point with the minimum its steepest descent reaches.

    Args:
        best: Rank of each point's lowest neighbour (itself included), by flat index.
        order: Flat index of each rank.
        rank: Rank of each flat index.

    Returns:
        ``(labels, minima)``: basin label per flat index (0 = global minimum, numbered by
        minimum rank) and the flat indices of the minima sorted by rank.
    """
    dt = rank.dtype
    # Work in rank space: p[r] = rank of the lowest neighbour of the point of rank r (p[r] <= r).
    p = best[order]
    is_min = p == np.arange(p.size, dtype=dt)
    min_ranks = np.flatnonzero(is_min).astype(dt)
    n_iter = 0
    while True:
        q = p[p]
        n_iter += 1
        if np.array_equal(q, p):
            break
        p = q
    logger.debug("pointer jumping converged after %d iterations", n_iter)
    lut = np.full(p.size, -1, dtype=dt) if p.size else np.zeros(0, dtype=dt)
    lut[min_ranks] = np.arange(min_ranks.size, dtype=dt)
    labels_by_rank = lut[p]
    del p, lut
    labels = labels_by_rank[rank]
    return labels, order[min_ranks].astype(np.int64)


class PairReducer:
    """Keep the lowest key per unordered basin pair, fed in chunks.

    When ``m * m * n`` fits in int64 a pair and its key are packed into one int64 and a plain
    sort does the reduction; otherwise a lexsort on (key, pair code) is used.
    """

    def __init__(self, m: int, n: int, flush_size: int):
        self.m = int(m)
        self.n = max(int(n), 1)
        self.packed = self.m * self.m * self.n < _INT64_MAX // 2
        self.flush_size = max(int(flush_size), 1 << 16)
        self.parts: list = []
        self.size = 0

    def _reduce(self, code: np.ndarray, key: np.ndarray):
        if self.packed:
            code *= self.n
            code += key
            return self._reduce_packed(code)
        idx = np.lexsort((key, code))
        code, key = code[idx], key[idx]
        first = np.ones(code.size, dtype=bool)
        first[1:] = code[1:] != code[:-1]
        return code[first], key[first]

    def add(self, a: np.ndarray, b: np.ndarray, key: np.ndarray) -> None:
        """Add edges between basins ``a`` and ``b`` (arrays, ``a != b``) with their keys."""
        if a.size == 0:
            return
        code = np.minimum(a, b).astype(np.int64)
        code *= self.m
        code += np.maximum(a, b)
        key = key.astype(np.int64)
        # Cheap linear pre-reduction: runs of equal pairs are common along boundary surfaces.
        if code.size > 1:
            change = np.flatnonzero(code[1:] != code[:-1]) + 1
            if change.size < code.size // 2:
                starts = np.concatenate([[0], change])
                key = np.minimum.reduceat(key, starts)
                code = code[starts]
        red = self._reduce(code, key)
        self.parts.append(red)
        self.size += red.size if self.packed else red[0].size
        if self.size > self.flush_size and len(self.parts) > 1:
            self._flush()

    def _flush(self) -> None:
        if self.packed:
            c = np.concatenate(self.parts)
            self.parts = [self._reduce_packed(c)]
            self.size = self.parts[0].size
        else:
            code = np.concatenate([p[0] for p in self.parts])
            key = np.concatenate([p[1] for p in self.parts])
            self.parts = [self._reduce(code, key)]
            self.size = self.parts[0][0].size

    def _reduce_packed(self, c: np.ndarray) -> np.ndarray:
        c.sort()
        pc = c // self.n
        first = np.ones(c.size, dtype=bool)
        first[1:] = pc[1:] != pc[:-1]
        return c[first]

    def result(self):
        """Return ``(lo, hi, key)`` int64 arrays: one entry per basin pair, sorted by key."""
        if not self.parts:
            z = np.zeros(0, dtype=np.int64)
            return z, z.copy(), z.copy()
        if len(self.parts) > 1:
            self._flush()
        if self.packed:
            c = self.parts[0]
            code, key = c // self.n, c % self.n
        else:
            code, key = self.parts[0]
        idx = np.argsort(key, kind="stable")
        code, key = code[idx], key[idx]
        return code // self.m, code % self.m, key


def basin_edges_grid(
    labels: np.ndarray, rank: np.ndarray, shape: tuple[int, ...], connectivity: str, m: int
):
    """Reduced basin adjacency of a grid: lowest max-rank boundary edge per basin pair."""
    n = rank.size
    red = PairReducer(m, n, flush_size=max(n // 2, 1))
    lab = labels.reshape(shape)
    r = rank.reshape(shape)
    for off in half_offsets(len(shape), connectivity):
        src, dst = offset_slices(off)
        la, lb = lab[src], lab[dst]
        mask = la != lb
        if not mask.any():
            continue
        key = np.maximum(r[src][mask], r[dst][mask])
        red.add(la[mask], lb[mask], key)
    return red.result()


def basin_edges_graph(labels: np.ndarray, rank: np.ndarray, edges: np.ndarray, m: int):
    """Reduced basin adjacency of a graph given by an ``(E, 2)`` edge array."""
    red = PairReducer(m, rank.size, flush_size=max(rank.size, 1))
    if len(edges):
        u, v = edges[:, 0], edges[:, 1]
        la, lb = labels[u], labels[v]
        mask = la != lb
        key = np.maximum(rank[u[mask]], rank[v[mask]])
        red.add(la[mask], lb[mask], key)
    return red.result()
