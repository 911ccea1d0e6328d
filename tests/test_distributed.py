"""torch.distributed: sharded grids, the data-parallel Hessian, fault tolerance and torchrun.

Ranks are separate processes started with ``spawn`` that meet over gloo on loopback, each
with a short process-group timeout and a join timeout, so a dead peer fails a test in seconds
instead of hanging. Every process, the in-process reference included, runs with one intra-op
thread: a thread count changes how reductions (matmul blocks, the mean over a batch) are split,
hence the last bits of a float loss, and the grid comparisons here are bit for bit.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from landscaper import Landscape, Objective, random_directions, sampling, top_eigenpairs
from landscaper.distributed import DistributedError, DistributedObjective
from landscaper.grid import execute as grid_execute
from landscaper.grid import plan as grid_plan
from landscaper.grid import store as grid_store

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this torch build has no torch.distributed with gloo")

STEPS = (9, 7)  # 63 points in chunks of 10: 7 chunks, the last one short
CHUNKING = {"chunk_size": 4, "points_per_chunk": 10}
# 800 points on 2 ranks: default chunks of 50 points rounded up to a multiple of the vmap chunk,
# i.e. 50, 52 or 64 for rank 0's measured 1, 4 or 16, and 51 for rank 1's forced 3
TUNED_STEPS = (40, 20)
PG_TIMEOUT = datetime.timedelta(seconds=15)
JOIN_TIMEOUT_S = 60


# ---------------------------------------------------------------------- cases (every process)
def grid_case() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A float32 MLP and its data, bit-identical in every process."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    return model, (torch.randn(50, 4), torch.randint(0, 3, (50,)))


def grid_directions(objective: Objective) -> torch.Tensor:
    return random_directions(objective, k=2, seed=0).vectors


def spiky_loss(call_model, batch):
    """NaN where the mean output is negative, +inf (exp overflow) where it exceeds ~0.71."""
    x, _ = batch
    m = call_model(x).mean()
    return torch.log(m) + torch.exp(1000.0 * m)


def spiky_case() -> tuple[Objective, torch.Tensor, list[np.ndarray]]:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double().eval()
    with torch.no_grad():
        model[2].bias.fill_(0.05)
    objective = Objective(model, (torch.randn(30, 3, dtype=torch.float64), torch.zeros(30)),
                          batch_loss=spiky_loss)
    directions = torch.eye(objective.num_params, dtype=torch.float64)[-2:]  # w2[-1] and b2
    return objective, directions, sampling.grid_axes((11, 9), [0.2, 1.0], 2)


def hessian_case() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A float64 MLP and 40 samples in batches of 7, 13, 5 and 15 (shards of 25 and 15)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()
    x = torch.randn(40, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    cuts = [0, 7, 20, 25, 40]
    return model, [(x[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


SHARDS = {0: slice(0, 3), 1: slice(3, 4)}  # rank 0: 25 samples in 3 batches; rank 1: 15


def compute_landscape(directions: torch.Tensor, **kwargs) -> Landscape:
    model, data = grid_case()
    return Landscape.compute(model, data, F.cross_entropy, directions=directions, steps=STEPS,
                             extent=0.3, progress=False, distributed=None, **kwargs)


def save_array(path: Path, array: np.ndarray) -> None:
    np.save(path, np.asarray(array), allow_pickle=False)


# ---------------------------------------------------------------------- launching ranks
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_entry(target, rank: int, world: int, port: int, out: str, *args) -> None:
    """Body of one spawned rank: join the group, run ``target``, report errors to a file."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=PG_TIMEOUT)
    try:
        target(rank, Path(out), *args)
    except BaseException:
        Path(out, f"error_{rank}.txt").write_text(traceback.format_exc())
        os._exit(3)  # skip the group's teardown, which may wait for a dead peer
    dist.destroy_process_group()


def launch(target, world: int, out: Path, *args) -> list[int]:
    """Run ``target(rank, out, *args)`` on ``world`` spawned ranks; their exit codes."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=rank_entry, args=(target, rank, world, port, str(out), *args))
             for rank in range(world)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for proc in procs:
        proc.join(max(0.1, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    return [proc.exitcode for proc in procs]


def assert_ok(codes: list[int], out: Path) -> None:
    errors = "\n".join(p.read_text() for p in sorted(out.glob("error_*.txt")))
    assert codes == [0] * len(codes), f"exit codes {codes}\n{errors}"


@pytest.fixture
def one_thread():
    """The reference runs with one intra-op thread, like every rank (see the module doc)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


# ---------------------------------------------------------------------- 1. sharded grids + Hessian
def grids_and_hessian_rank(rank: int, out: Path) -> None:
    # (a) Landscape.compute: rank 1 is handed other directions and must use rank 0's
    model, data = grid_case()
    directions = grid_directions(Objective(model, data, F.cross_entropy))
    if rank == 1:
        directions = directions + 1e-3
    land = compute_landscape(directions, **CHUNKING)
    save_array(out / f"landscape_{rank}.npy", land.loss)
    # (b) NaN/inf losses survive the combination
    objective, spiky_dirs, axes = spiky_case()
    save_array(out / f"spiky_{rank}.npy", sampling.sample_grid(
        objective, spiky_dirs, axes, chunk_size=3, points_per_chunk=9, progress=False,
        distributed=True))
    # (c) auto-tuned chunking: rank 1 would choose vmaps of 3 (rank 0 measures powers of 4)
    objective = Objective(model, data, F.cross_entropy)
    if rank == 1:
        grid_plan.tune_chunk_size = lambda objective, most, max_points=512: (3, 1.0)
    loss = sampling.sample_grid(objective, grid_directions(objective),
                                sampling.grid_axes(TUNED_STEPS, 0.3, 2), progress=False,
                                checkpoint=out / "tuned.ckpt", distributed=True)
    save_array(out / f"tuned_{rank}.npy", loss)
    # (d) ranks holding different data are refused, on every rank
    x, y = data
    objective = Objective(model, (x + rank, y), F.cross_entropy)
    try:
        sampling.sample_grid(objective, grid_directions(objective),
                             sampling.grid_axes((3, 3), 0.3, 2), progress=False,
                             distributed=True)
    except (ValueError, DistributedError) as err:
        (out / f"refused_{rank}.txt").write_text(f"{type(err).__name__}: {err}")
    # (e) data-parallel Hessian over shards of 25 and 15 samples
    model, batches = hessian_case()
    shard = DistributedObjective(model, batches[SHARDS[rank]], F.cross_entropy)
    eig = top_eigenpairs(shard, k=3)
    save_array(out / f"eig_{rank}.npy", eig.eigenvalues)
    save_array(out / f"grad_{rank}.npy", shard.gradient().numpy())
    save_array(out / f"value_{rank}.npy", np.array([float(shard())]))
    theta = shard.theta0.clone().requires_grad_(True)
    shard(theta).backward()  # differentiable like Objective.__call__ (a collective backward)
    save_array(out / f"autograd_{rank}.npy", theta.grad.numpy())
    save_array(out / f"batch_{rank}.npy",
               shard.batch(shard.theta0 + 0.1 * torch.ones(2, shard.num_params)).numpy())
    json.dump({"num_samples": shard.num_samples, "n_hvp": eig.n_hvp},
              open(out / f"info_{rank}.json", "w"))
    # (f) a grid computed on rank 0 alone (distributed=False, the default) enters no collective
    if rank == 0:
        objective, spiky_dirs, axes = spiky_case()
        save_array(out / "alone_0.npy", sampling.sample_grid(
            objective, spiky_dirs, axes, chunk_size=3, points_per_chunk=9, progress=False))
    # (g) one rank's empty shard stops both ranks at construction
    try:
        DistributedObjective(model, [] if rank == 1 else batches, F.cross_entropy)
    except (ValueError, DistributedError) as err:
        (out / f"empty_shard_{rank}.txt").write_text(f"{type(err).__name__}: {err}")
    # (h) a failure inside one rank's HVP is raised on both before the reduction

    armed = []  # fails only once built (its construction records with gradients on)

    def failing_loss(outputs, targets):
        if rank == 1 and armed and torch.is_grad_enabled():
            raise RuntimeError("out of memory on rank 1")
        return F.cross_entropy(outputs, targets)

    failing = DistributedObjective(model, batches[SHARDS[rank]], failing_loss)
    armed.append(True)
    try:
        top_eigenpairs(failing, k=1)
    except (RuntimeError, DistributedError) as err:
        (out / f"hvp_failed_{rank}.txt").write_text(f"{type(err).__name__}: {err}")


def test_two_ranks_equal_one_process(tmp_path, one_thread):
    out = tmp_path / "ranks"
    assert_ok(launch(grids_and_hessian_rank, 2, out), out)

    model, data = grid_case()
    objective = Objective(model, data, F.cross_entropy)
    reference = compute_landscape(grid_directions(objective), **CHUNKING).loss
    spiky_obj, spiky_dirs, axes = spiky_case()
    spiky = sampling.sample_grid(spiky_obj, spiky_dirs, axes, chunk_size=3, points_per_chunk=9,
                                 progress=False)
    assert np.isnan(spiky).any() and np.isposinf(spiky).any() and np.isfinite(spiky).any()
    meta = json.loads((out / "tuned.ckpt" / "meta.json").read_text())
    assert meta["chunk_size"] != 3  # rank 0's measurement
    tuned = sampling.sample_grid(objective, grid_directions(objective),
                                 sampling.grid_axes(TUNED_STEPS, 0.3, 2), progress=False,
                                 chunk_size=meta["chunk_size"],
                                 points_per_chunk=meta["points_per_chunk"])
    starts = sorted(int(p.name.split("_")[1]) for p in (out / "tuned.ckpt").glob("chunk_*.npy"))
    assert starts == list(range(0, 800, meta["points_per_chunk"])) and len(starts) > 1
    for rank in range(2):
        assert same_bits(np.load(out / f"landscape_{rank}.npy"), reference)
        got = np.load(out / f"spiky_{rank}.npy")
        assert np.array_equal(got, spiky, equal_nan=True) and same_bits(got, spiky)
        assert same_bits(np.load(out / f"tuned_{rank}.npy"), tuned)
    assert (out / "refused_1.txt").read_text().startswith(
        "ValueError: rank 1 has a different grid fingerprint")
    assert (out / "refused_0.txt").read_text().startswith(
        "DistributedError: rank 1 failed: ValueError: rank 1 has a different grid fingerprint")

    # data-parallel Hessian: equal on both ranks, equal to the full data's
    model, batches = hessian_case()
    full = Objective(model, batches, F.cross_entropy)
    expected = top_eigenpairs(full, k=3).eigenvalues
    eigs = [np.load(out / f"eig_{rank}.npy") for rank in range(2)]
    assert same_bits(eigs[0], eigs[1])
    np.testing.assert_allclose(eigs[0], expected, rtol=1e-6)
    dense = torch.autograd.functional.hessian(full, full.theta0).numpy()
    np.testing.assert_allclose(eigs[0], np.linalg.eigvalsh(dense)[::-1][:3], rtol=1e-6)
    # weighting by sample counts matters here: the plain mean of the two shards' Hessians
    # has other eigenvalues
    halves = [Objective(model, batches[s], F.cross_entropy) for s in SHARDS.values()]
    naive = sum(torch.autograd.functional.hessian(h, h.theta0) for h in halves) / 2
    assert not np.allclose(np.linalg.eigvalsh(naive.numpy())[::-1][:3], expected, rtol=1e-3)
    thetas = full.theta0 + 0.1 * torch.ones(2, full.num_params)
    for rank in range(2):
        np.testing.assert_allclose(np.load(out / f"grad_{rank}.npy"), full.gradient().numpy(),
                                   rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(np.load(out / f"value_{rank}.npy"), [float(full())],
                                   rtol=1e-12)
        np.testing.assert_allclose(np.load(out / f"autograd_{rank}.npy"),
                                   full.gradient().numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(np.load(out / f"batch_{rank}.npy"), full.batch(thetas),
                                   rtol=1e-12)
        assert json.loads((out / f"info_{rank}.json").read_text())["num_samples"] == 40
    assert same_bits(np.load(out / "alone_0.npy"), spiky)
    assert (out / "empty_shard_1.txt").read_text().startswith("ValueError: data holds no")
    assert (out / "empty_shard_0.txt").read_text().startswith(
        "DistributedError: rank 1 failed: ValueError: data holds no")
    assert (out / "hvp_failed_1.txt").read_text() == "RuntimeError: out of memory on rank 1"
    assert (out / "hvp_failed_0.txt").read_text() == (
        "DistributedError: rank 1 failed: RuntimeError: out of memory on rank 1")


# ---------------------------------------------------------------------- 2. a rank dies mid-grid
def killed_rank(rank: int, out: Path) -> None:
    if rank == 1:  # die (SIGKILL, no cleanup) right after this rank's first chunk is on disk
        save = sampling.GridCheckpoint.save

        def save_then_die(self, start, stop, values):
            save(self, start, stop, values)
            os.kill(os.getpid(), signal.SIGKILL)

        sampling.GridCheckpoint.save = save_then_die
    model, data = grid_case()
    compute_landscape(grid_directions(Objective(model, data, F.cross_entropy)),
                      checkpoint=out / "ckpt", **CHUNKING)


def resumed_ranks(rank: int, out: Path) -> None:
    evaluated = []
    evaluate = grid_execute.evaluate_chunk

    def recording(objective, spec, vectors, start, stop, vmap_chunk):
        evaluated.append(start)
        return evaluate(objective, spec, vectors, start, stop, vmap_chunk)

    grid_execute.evaluate_chunk = recording
    model, data = grid_case()
    directions = grid_directions(Objective(model, data, F.cross_entropy))
    try:  # a checkpoint of another grid is refused on every rank
        Landscape.compute(model, data, F.cross_entropy, directions=directions, steps=(9, 8),
                          extent=0.3, progress=False, checkpoint=out / "ckpt", distributed=True,
                          **CHUNKING)
    except (ValueError, DistributedError) as err:
        (out / f"refused_{rank}.txt").write_text(f"{type(err).__name__}: {err}")
    land = compute_landscape(directions, checkpoint=out / "ckpt", **CHUNKING)
    save_array(out / f"resumed_{rank}.npy", land.loss)
    (out / f"evaluated_{rank}.json").write_text(json.dumps(evaluated))


def test_killed_rank_loses_one_chunk_and_any_rank_count_resumes(tmp_path, one_thread,
                                                                monkeypatch):
    out = tmp_path / "killed"
    codes = launch(killed_rank, 2, out)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] == 3  # rank 0 finished its chunks, then its peer was gone: an error
    # rank 0 owns chunks 0, 2, 4, 6 and finished them; rank 1 finished chunk 1 only
    written = sorted(int(p.name.split("_")[1]) for p in (out / "ckpt").glob("chunk_*.npy"))
    assert written == [0, 10, 20, 40, 60]

    model, data = grid_case()
    directions = grid_directions(Objective(model, data, F.cross_entropy))
    reference = compute_landscape(directions, **CHUNKING).loss

    # resume with one process, from a copy
    single = tmp_path / "single"
    shutil.copytree(out, single)
    evaluated = []
    evaluate = grid_execute.evaluate_chunk
    monkeypatch.setattr(grid_execute, "evaluate_chunk",
                        lambda *a: evaluated.append(a[3]) or evaluate(*a))
    resumed = compute_landscape(directions, checkpoint=single / "ckpt", **CHUNKING).loss
    assert same_bits(resumed, reference) and evaluated == [30, 50]
    monkeypatch.undo()

    # resume with two ranks (after a refused foreign grid), from another copy
    out = tmp_path / "two"
    shutil.copytree(tmp_path / "killed" / "ckpt", out / "ckpt")
    assert_ok(launch(resumed_ranks, 2, out), out)
    assert "different grid" in (out / "refused_0.txt").read_text()
    assert "rank 0 failed: CheckpointMismatchError" in (out / "refused_1.txt").read_text()
    starts = [json.loads((out / f"evaluated_{rank}.json").read_text()) for rank in range(2)]
    assert starts == [[30], [50]]
    for rank in range(2):
        assert same_bits(np.load(out / f"resumed_{rank}.npy"), reference)


# ---------------------------------------------------------------------- 3. single-process paths
def test_distributed_options_without_a_process_group(mlp_case):
    model, x, y, _ = mlp_case
    objective = Objective(model, (x, y), F.cross_entropy)
    directions = grid_directions(objective)
    axes = sampling.grid_axes((3, 3), 0.1, 2)
    with pytest.raises(ValueError, match="init_process_group"):
        sampling.sample_grid(objective, directions, axes, distributed=True, progress=False)
    with pytest.raises(ValueError, match="DistributedObjective needs an initialised"):
        DistributedObjective(model, (x, y), F.cross_entropy)
    opted_out = sampling.sample_grid(objective, directions, axes, distributed=False,
                                     progress=False)
    assert same_bits(opted_out, sampling.sample_grid(objective, directions, axes,
                                                     progress=False))


# ---------------------------------------------------------------------- 4. torchrun + the CLI
from test_cli import FACTORY  # noqa: E402 - the same model factory file as the CLI tests


def test_torchrun_analyze_shards_the_grid_and_rank0_writes(tmp_path, one_thread):
    from landscaper.cli import main

    factory = tmp_path / "user_model.py"
    factory.write_text(FACTORY)
    # a fixed extent: the 1-D scans of --extent auto are sharded too and would log their own
    # chunk shares
    args = ["analyze", "--model", f"{factory}:make_model", "--dims", "2", "--steps", "25",
            "--jr-seeds", "0", "-k", "2", "--extent", "0.05"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "landscaper",
         *args, "--out", str(tmp_path / "dist"), "--checkpoint", str(tmp_path / "ckpt"),
         "--verbose"],
        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Hessian spectrum:") == 1  # only rank 0 prints
    assert proc.stdout.count("report: ") == 1
    # 625 points, default chunking: at least 8 chunks per rank, here of ceil(625 / 16) = 40
    # points rounded up to a multiple of the tuned vmap chunk (1, 4 or 16): 16 or 14 chunks
    shares = sorted(re.findall(r"rank (\d) of 2 evaluates (\d+) of (\d+) missing chunks",
                               proc.stderr))
    assert [r for r, _, _ in shares] == ["0", "1"], shares
    (_, mine0, total), (_, mine1, _) = shares
    assert mine0 == mine1 and int(mine0) + int(mine1) == int(total) >= 14
    sharded = Landscape.load(tmp_path / "dist" / "landscape.npz")
    assert sharded.metadata["world_size"] == 2
    # bit for bit one process's grid with the same directions and chunking
    namespace: dict = {}
    exec(FACTORY, namespace)
    model, data, loss_fn = namespace["make_model"]()
    meta = json.loads((tmp_path / "ckpt" / "meta.json").read_text())
    reference = sampling.sample_grid(Objective(model.eval(), data, loss_fn),
                                     torch.from_numpy(sharded.directions), sharded.axes,
                                     chunk_size=meta["chunk_size"],
                                     points_per_chunk=meta["points_per_chunk"], progress=False)
    assert same_bits(sharded.loss, reference)
    # the same command in one process writes the same report (its chunking is measured anew,
    # so the last bits of float32 losses may differ)
    assert main([*args, "--out", str(tmp_path / "single"), "-q"]) == 0
    single = Landscape.load(tmp_path / "single" / "landscape.npz")
    np.testing.assert_allclose(sharded.loss, single.loss, rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(
        p.name for p in (tmp_path / "single").iterdir())


def test_other_ranks_wait_briefly_for_rank0_checkpoint_meta(tmp_path, monkeypatch):
    """A rank that does not see meta.json yet (NFS attribute caching) polls before giving up."""
    import threading

    monkeypatch.setattr(grid_store, "META_WAIT_S", 2.0)
    folder = tmp_path / "ckpt"
    args = ("f" * 64, 4, 8, 63)
    writer = threading.Timer(0.5, lambda: sampling.GridCheckpoint(folder, *args))
    writer.start()
    try:
        late = sampling.GridCheckpoint(folder, *args, create=False)  # appears after 0.5 s
    finally:
        writer.join()
    assert (late.chunk_size, late.points_per_chunk) == (4, 8)
    monkeypatch.setattr(grid_store, "META_WAIT_S", 0.3)
    with pytest.raises(FileNotFoundError, match="shared by all ranks"):
        sampling.GridCheckpoint(tmp_path / "never", *args, create=False)
