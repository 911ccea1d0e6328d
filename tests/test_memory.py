"""Peak memory of grid evaluation and of topology against the budget the caller sets.

Grid evaluation is measured in a fresh interpreter as the growth of the resident set's
high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) over the resident set
after imports, model construction and a warm-up evaluation: torch's CPU tensors are not seen
by tracemalloc, the resident set sees everything. glibc is told to return freed blocks of
64 KiB or more to the system at once (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``),
so the high-water mark measures memory in use, not memory the allocator keeps cached after a
free (with the default settings it keeps up to ~2 θ-chunks of freed blocks, measured).

Topology (pure numpy) takes no budget argument; its peak is measured with tracemalloc, which
numpy reports to, against the bound documented in docs/bad_inputs.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from landscaper import topology
from landscaper.topology.merge_tree import BYTES_PER_BASIN_EDGE, BYTES_PER_POINT

MiB = 2**20
BUDGET = 64 * MiB
#: Python objects, index and coefficient arrays of a chunk that the per-point estimate leaves
#: out, plus page rounding: measured below 1.2 MiB on the grids here.
ALLOWANCE = 2 * MiB

GRID_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, torch.nn.functional as F
    from torch import nn
    from landscaper import Landscape, Objective
    from landscaper.directions import random_directions
    from landscaper.sampling import grid_axes, sample_grid

    torch.set_num_threads(1)

    def rss():
        fields = {}
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) * 1024
        return fields

    def peak_growth(run):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current resident set
        start = rss()
        assert start["VmHWM"] - start["VmRSS"] < 1 << 20, "VmHWM was not reset"
        run()
        return rss()["VmHWM"] - start["VmRSS"]

    budget, steps = int(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    width = 1024
    model = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10)).eval()
    x, y = torch.randn(32, width), torch.randint(0, 10, (32,))
    obj = Objective(model, (x, y), F.cross_entropy, memory_budget=budget)
    directions = random_directions(obj, 2).vectors
    axes = grid_axes(steps, 0.5, 2)
    n_points = steps**2
    obj()
    obj.batch(obj.theta0.expand(2, -1).clone())  # warm-up: vmap and its lazy imports
    largest = obj.chunk_size(budget - 8 * n_points)
    out = {
        "theta_bytes": obj.num_params * obj.theta0.element_size(),
        "bytes_per_point": obj.bytes_per_point(),
        "largest_chunk": largest,
        "n_points": n_points,
        "largest": peak_growth(lambda: sample_grid(obj, directions, axes, chunk_size=largest,
                                                   memory_budget=budget, progress=False)),
        "auto": peak_growth(lambda: sample_grid(obj, directions, axes, memory_budget=budget,
                                                progress=False)),
        "compute": peak_growth(lambda: Landscape.compute(
            objective=obj, directions=directions, steps=steps, extent=0.01,
            memory_budget=budget, store_directions=False, progress=False)),
        "control": peak_growth(lambda: sample_grid(obj, directions, axes, chunk_size=64,
                                                   memory_budget=2**31, progress=False)),
    }
    print(json.dumps(out))
    """
)


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset_peak(), reason="needs Linux /proc/self/clear_refs to reset "
                    "the resident-set high-water mark")
def test_grid_evaluation_peak_stays_within_the_memory_budget(tmp_path):
    script = tmp_path / "grid_memory.py"
    script.write_text(GRID_SCRIPT)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536",
           "OMP_NUM_THREADS": "1"}
    steps = 15
    result = subprocess.run([sys.executable, str(script), str(BUDGET), str(steps)], env=env,
                            capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads(result.stdout.strip().splitlines()[-1])
    # the budget matters: every θ at once would take 14x the budget, a chunk of θ vectors fits
    assert m["n_points"] * m["theta_bytes"] > 10 * BUDGET
    assert m["largest_chunk"] == BUDGET // m["bytes_per_point"] >= 10
    for case in ("largest", "auto", "compute"):
        assert m[case] <= BUDGET + ALLOWANCE, (case, m[case] / MiB)
    # with the largest chunk the budget allows the peak really approaches the budget ...
    assert m["largest"] > 0.8 * BUDGET, m["largest"] / MiB
    # ... and the measurement sees an evaluation that ignores it (64 θ per vmapped call)
    assert m["control"] > 64 * m["theta_bytes"] > 3 * BUDGET


# ---------------------------------------------------------------------------- topology
#: Documented working memory of merge tree + basins + SMAD + persistence on a grid, beyond the
#: input array: bytes per grid point, plus bytes per edge of the basin adjacency graph (many
#: only on noisy landscapes with a local minimum every few points). docs/bad_inputs.md.
TOPOLOGY_BYTES_PER_POINT = BYTES_PER_POINT
TOPOLOGY_BYTES_PER_BASIN_EDGE = BYTES_PER_BASIN_EDGE


def _topology_peak(values: np.ndarray, connectivity: str, memory_budget: int | None = None
                   ) -> tuple[int, topology.MergeTree]:
    tracemalloc.start()
    try:
        tree = topology.merge_tree(values, connectivity=connectivity,
                                   memory_budget=memory_budget)
        topology.simplify(tree, 0.5)
        topology.basins(values, connectivity=connectivity)
        topology.smad(tree)
        tree.persistence()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, tree


def _bound(values: np.ndarray, tree: topology.MergeTree) -> int:
    return (TOPOLOGY_BYTES_PER_POINT * values.size
            + TOPOLOGY_BYTES_PER_BASIN_EDGE * tree.basin_edges[0].size)


@pytest.mark.parametrize("connectivity", ["full", "axis"])
def test_topology_of_a_two_million_point_grid_within_documented_bound(connectivity):
    axes = np.meshgrid(np.linspace(-3, 3, 1414), np.linspace(-3, 3, 1415), indexing="ij")
    values = sum(np.sin(2 * a) + 0.1 * a**2 for a in axes)  # 9 minima, like a real landscape
    peak, tree = _topology_peak(values, connectivity)
    assert values.size > 2_000_000 and tree.n_minima == 9
    assert peak <= _bound(values, tree), peak / values.size
    assert peak > 8 * values.size  # the measurement sees the work (ranks alone are 8 B/point)


@pytest.mark.parametrize(("shape", "connectivity"),
                         [((300, 300), "full"), ((40, 40, 40), "axis"), ((12,) * 4, "full")])
def test_topology_of_noise_within_documented_bound(shape, connectivity):
    """The worst case: i.i.d. noise, a local minimum every few points."""
    values = np.random.default_rng(0).standard_normal(shape)
    peak, tree = _topology_peak(values, connectivity)
    assert tree.n_minima > values.size / 60
    assert peak <= _bound(values, tree), (peak / values.size, tree.basin_edges[0].size)


def _budget_estimate(values: np.ndarray, tree: topology.MergeTree, connectivity: str) -> int:
    slots = 3 ** values.ndim - 1 if connectivity == "full" else 2 * values.ndim
    m = tree.n_minima
    return (TOPOLOGY_BYTES_PER_POINT * values.size
            + TOPOLOGY_BYTES_PER_BASIN_EDGE * min(m * slots, m * (m - 1) // 2))


@pytest.mark.parametrize(("shape", "connectivity"),
                         [((300, 300), "axis"), ((40, 40, 40), "axis"), ((12,) * 4, "axis"),
                          ((12,) * 4, "full")])
def test_topology_within_the_budget_the_caller_sets(shape, connectivity):
    """A budget just at the up-front estimate is accepted and the measured peak stays under it;
    a budget one byte lower is refused before the basin graph is built."""
    values = np.random.default_rng(1).standard_normal(shape)
    n_minima = topology.merge_tree(values, connectivity=connectivity).n_minima
    reference = topology.merge_tree(values, connectivity=connectivity)
    budget = _budget_estimate(values, reference, connectivity)
    peak, tree = _topology_peak(values, connectivity, memory_budget=budget)
    assert tree.n_minima == n_minima
    assert peak <= budget, (peak, budget)
    with pytest.raises(MemoryError, match=r"with \d+ minima.*raise memory_budget"):
        topology.merge_tree(values, connectivity=connectivity, memory_budget=budget - 1)
    with pytest.raises(MemoryError, match="coarser grid"):
        topology.merge_tree(values, connectivity=connectivity,
                            memory_budget=TOPOLOGY_BYTES_PER_POINT * values.size - 1)
