"""Grid topology: our merge tree + basins + SMAD against Landscaper 1.3.1 (topopy / nglpy).

    .venv/bin/python benchmarks/bench_topology.py [--quick] [--peer-timeout 600]

Landscapes: Rastrigin on [-2.5, 2.5]^d (known minima: one per integer point). Landscaper runs
in its own virtual environment (benchmarks/.peer-envs/landscaper131), each case capped at
``--peer-timeout`` seconds and reported as "> 600 s" when it does not finish. Our cases run in
a fresh subprocess each so peak memory (ru_maxrss) is that of the case alone. Results go to
benchmarks/results/bench_topology.json.

Targets (issue 4): 41x41 < 0.05 s, 41^3 < 1 s, 10^7 points < 60 s and < 8 GiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from peers.envs import PeerEnvError, run_peer

RESULTS = Path(__file__).resolve().parent / "results"
PEER_CASES = [(41, 2), (81, 2), (21, 3), (41, 3)]
OURS_ONLY = [(1000, 2), (25, 5)]  # 10^6 and 9.8 * 10^6 points


def rastrigin(n: int, d: int) -> tuple[np.ndarray, list[np.ndarray]]:
    axis = np.linspace(-2.5, 2.5, n)
    grids = np.meshgrid(*([axis] * d), indexing="ij")
    return sum(g**2 - 10 * np.cos(2 * np.pi * g) + 10 for g in grids), [axis] * d


def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss survives exec on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(n: int, d: int, connectivity: str) -> dict:
    """Merge tree + basins + SMAD in this process; returns times and peak RSS."""
    from landscaper import topology

    values, _ = rastrigin(n, d)
    rss_before = peak_rss_gib()
    start = time.perf_counter()
    tree = topology.merge_tree(values, connectivity=connectivity)
    t_tree = time.perf_counter() - start
    basins = topology.Basins.from_tree(tree)
    value = topology.smad(tree)
    value_norm = topology.smad(tree, normalize=True)
    total = time.perf_counter() - start
    return {
        "grid": f"{n}^{d}", "points": int(values.size), "connectivity": connectivity,
        "seconds": total, "tree_seconds": t_tree, "minima": int(tree.n_minima),
        "basins": int(basins.n_basins), "smad": value, "smad_normalized": value_norm,
        "peak_rss_gib": peak_rss_gib(),
        "rss_before_gib": rss_before,
    }


def ours_in_subprocess(n: int, d: int, connectivity: str) -> dict:
    cmd = [sys.executable, __file__, "--one", str(n), str(d), connectivity]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_landscaper(n: int, d: int, timeout: float, tmp: Path) -> dict:
    values, axes = rastrigin(n, d)
    grid = tmp / f"rastrigin_{n}_{d}.npz"
    with open(grid, "wb") as handle:
        np.savez(handle, loss=values, coordinates=np.stack(axes))
    try:
        return run_peer("landscaper131", "landscaper_topology.py",
                        [grid, "--ops", "sublevel_tree,ms_complex,smad,smad_normalized"],
                        timeout_s=timeout)
    except PeerEnvError as err:  # e.g. nglpy's all-pairs kNN runs out of memory on 41^3
        return {"failed": str(err).strip().splitlines()[-1]}


def peer_columns(row: dict, timeout: float) -> tuple[str, str, str, str]:
    """Landscaper's time, our speed-up, its minima count and SMAD as table cells."""
    if "landscaper" not in row:
        return "-", "-", "-", "-"
    peer, ours_s = row["landscaper"], row["ours"]["seconds"]
    partial = peer.get("partial") or {}
    leaves = (peer.get("sublevel_tree") or partial.get("sublevel_tree") or {}).get("n_leaves")
    smad = peer.get("smad")
    if peer.get("failed"):
        time_cell, speed_cell = "failed", "-"
    elif row["landscaper_seconds"] is None:
        time_cell, speed_cell = f"> {timeout:.0f} s", f"> {timeout / ours_s:.0f}x"
    else:
        time_cell = f"{row['landscaper_seconds']:.4g} s"
        speed_cell = f"{row['landscaper_seconds'] / ours_s:.0f}x"
    return (time_cell, speed_cell, "-" if leaves is None else str(leaves),
            "-" if smad is None else f"{smad:.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="41x41 and 21^3 only, no big grids")
    parser.add_argument("--peer-timeout", type=float, default=None,
                        help="cap per Landscaper case in seconds (default 600, 60 with --quick)")
    parser.add_argument("--one", nargs=3, metavar=("N", "D", "CONNECTIVITY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_ours(int(args.one[0]), int(args.one[1]), args.one[2])))
        return 0
    peer_cases = [(41, 2), (21, 3)] if args.quick else PEER_CASES
    if args.peer_timeout is None:
        args.peer_timeout = 60.0 if args.quick else 600.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, d in peer_cases:
            ours = ours_in_subprocess(n, d, "full")
            ours_axis = ours_in_subprocess(n, d, "axis")
            peer = run_landscaper(n, d, args.peer_timeout, Path(tmp))
            peer_total = None if peer.get("timed_out") or peer.get("failed") else sum(
                peer["seconds"][k] for k in ("sublevel_tree", "ms_complex", "smad"))
            rows.append({"case": f"{n}^{d}", "ours": ours, "ours_axis": ours_axis,
                         "landscaper": peer, "landscaper_seconds": peer_total})
    if not args.quick:
        for n, d in OURS_ONLY:
            rows.append({"case": f"{n}^{d}", "ours": ours_in_subprocess(n, d, "full"),
                         "ours_axis": ours_in_subprocess(n, d, "axis")})

    print(f"{'grid':>8} {'points':>9} {'ours full':>10} {'ours axis':>10} {'Landscaper':>11} "
          f"{'speed-up':>9} {'minima':>6} {'L131 min':>8} {'SMAD ours':>10} {'SMAD L131':>10} "
          f"{'peak GiB':>8}")
    for row in rows:
        ours, axis = row["ours"], row["ours_axis"]
        peer_time, speed, peer_minima, peer_smad = peer_columns(row, args.peer_timeout)
        print(f"{row['case']:>8} {ours['points']:>9} {ours['seconds']:>9.4f}s "
              f"{axis['seconds']:>9.4f}s {peer_time:>11} {speed:>9} {ours['minima']:>6} "
              f"{peer_minima:>8} {ours['smad']:>10.4f} {peer_smad:>10} "
              f"{ours['peak_rss_gib']:>8.2f}")
    print("\nSMAD: ours pairs every merge-tree leaf with its parent saddle on the grid's own "
          "3^d-1 adjacency\n(Landscaper's GitHub main definition); Landscaper 1.3.1 pairs "
          "minima on a patched contour tree\nover an nglpy beta-skeleton of the coordinates, so "
          "values differ where the trees differ.")
    for row in rows:
        if row.get("landscaper", {}).get("failed"):
            print(f"Landscaper on {row['case']} failed: {row['landscaper']['failed']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_topology.json").write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
