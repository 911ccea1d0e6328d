"""Isolated virtual environments for the peer libraries we benchmark against.

Each peer lives in its own venv under ``benchmarks/.peer-envs/<name>/`` so that our package
never imports it (landscaper 1.3.1, for instance, drags in topopy, which pins numpy<2 and
networkx<3).  The benchmark calls :func:`ensure_peer_env` (idempotent) and then
:func:`run_peer`, which runs one of the scripts in this folder with the peer's interpreter and
returns the JSON object the script prints as its last stdout line.

Only the standard library is used here, so this module can be imported from any environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

log = logging.getLogger(__name__)

PEERS_DIR = Path(__file__).resolve().parent
BENCH_DIR = PEERS_DIR.parent
REPO_ROOT = BENCH_DIR.parent
ENVS_DIR = BENCH_DIR / ".peer-envs"

# torch is always installed first and alone: a bare "torch" requirement resolved together with
# the peer would pull a multi-GB CUDA build; with torch==2.13.0 already present pip keeps it.
TORCH_REQ = "torch==2.13.0"

#: name -> list of pip install steps (each step one ``pip install`` call, run in order).
PEERS: dict[str, list[list[str]]] = {
    # pyhessian 0.1 declares no dependencies but imports numpy and torch at runtime
    # (and matplotlib only inside density plotting helpers, which we never call).
    "pyhessian": [[TORCH_REQ], ["numpy", "pyhessian==0.1"]],
    # landscaper 1.3.1 pulls topopy (numpy<2, networkx<3), nglpy, gudhi, treelib, ...
    "landscaper131": [[TORCH_REQ], ["landscaper==1.3.1"]],
    # hessian-eigenthings 1.0.0a5 (the v1 rewrite: Lanczos, Hutch++, GGN/Fisher operators)
    # requires numpy, scipy and tqdm beside torch.
    "eigenthings": [[TORCH_REQ], ["hessian-eigenthings==1.0.0a5"]],
}

MARKER = ".peer-env-complete.json"


class PeerEnvError(RuntimeError):
    """Creating a peer environment or running a peer script failed."""


def _spec_key(name: str) -> str:
    spec = json.dumps({"name": name, "steps": PEERS[name], "py": sys.version_info[:2]})
    return hashlib.sha256(spec.encode()).hexdigest()


def env_dir(name: str) -> Path:
    return ENVS_DIR / name


def _python_of(root: Path) -> Path:
    if os.name == "nt":
        return root / "Scripts" / "python.exe"
    return root / "bin" / "python"


def _clean_env() -> dict[str, str]:
    """Environment for child processes: no PYTHONPATH/PYTHONHOME, no active venv leaking in."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE"):
        env.pop(key, None)
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env


def _is_complete(name: str) -> bool:
    root = env_dir(name)
    marker = root / MARKER
    if not marker.is_file() or not _python_of(root).exists():
        return False
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return data.get("key") == _spec_key(name)


def _subprocess(cmd: list[str], timeout_s: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` from the repo root in a clean environment; TimeoutExpired propagates."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_clean_env(), cwd=str(REPO_ROOT), capture_output=True,
                          text=True, timeout=timeout_s)
    return proc, time.perf_counter() - t0


def _tail(proc: subprocess.CompletedProcess, lines: int = 40) -> str:
    return "\n".join((proc.stdout + "\n" + proc.stderr).strip().splitlines()[-lines:])


def _run_logged(cmd: list[str], what: str, timeout_s: float) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    try:
        proc, dt = _subprocess(cmd, timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise PeerEnvError(f"{what}: timed out after {timeout_s:.0f} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise PeerEnvError(
            f"{what} failed (exit {proc.returncode}) after {dt:.1f} s: {' '.join(cmd)}\n"
            f"{_tail(proc)}"
        )
    log.info("%s: done in %.1f s", what, dt)


def ensure_peer_env(name: str, *, timeout_s: float = 1800.0) -> Path:
    """Create (once) the venv for peer ``name`` and return its python executable.

    The env is ``benchmarks/.peer-envs/<name>/``.  A marker file holding a hash of the package
    list is written only after every install step succeeded, so an interrupted build (or a
    changed package list) is wiped and rebuilt on the next call.
    """
    if name not in PEERS:
        raise KeyError(f"unknown peer {name!r}; known: {sorted(PEERS)}")
    root = env_dir(name)
    py = _python_of(root)
    if _is_complete(name):
        log.debug("peer env %s is ready at %s", name, root)
        return py
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    with _lock(ENVS_DIR / f"{name}.lock"):
        if _is_complete(name):  # built by a concurrent process while we waited
            return py
        _build(name, root, py, timeout_s)
    return py


@contextlib.contextmanager
def _lock(path: Path):
    """Exclusive inter-process lock (POSIX flock; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(name: str, root: Path, py: Path, timeout_s: float) -> None:
    if root.exists():
        log.info("peer env %s is incomplete or stale: rebuilding %s", name, root)
        shutil.rmtree(root)
    t0 = time.perf_counter()
    log.info("creating peer env %s at %s", name, root)
    try:
        venv.EnvBuilder(with_pip=True, clear=True, symlinks=(os.name != "nt")).create(root)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise PeerEnvError(f"could not create venv for peer {name!r} at {root}: {exc}") from exc
    for step in PEERS[name]:
        _run_logged(
            [str(py), "-m", "pip", "install", "--no-input", *step],
            f"peer env {name}: pip install {' '.join(step)}",
            timeout_s,
        )
    freeze = subprocess.run(
        [str(py), "-m", "pip", "freeze"], env=_clean_env(), capture_output=True, text=True
    ).stdout.split()
    dt = time.perf_counter() - t0
    marker = {
        "key": _spec_key(name),
        "steps": PEERS[name],
        "build_seconds": round(dt, 1),
        "freeze": freeze,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (root / MARKER).write_text(json.dumps(marker, indent=1))
    log.info("peer env %s ready in %.1f s", name, dt)


def _last_json_line(stdout: str | bytes | None) -> dict | None:
    """The last stdout line that is a JSON object (the scripts print it last; the peers'
    own chatter may precede it)."""
    if stdout is None:
        return None
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", "replace")
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def run_peer(
    name: str, script: str, args: list[str] | tuple[str, ...] = (), timeout_s: float = 600.0
) -> dict:
    """Run ``benchmarks/peers/<script>`` with peer ``name``'s python; return its JSON result.

    cwd is the repository root and PYTHONPATH is removed, so the child never sees our
    ``landscaper`` package (the peer scripts also drop the repo root from ``sys.path``).
    On timeout returns ``{"timed_out": True, "timeout_s": timeout_s, ...}`` (plus ``"partial"``:
    the last JSON line printed before the kill, if any); a failing script
    raises :class:`PeerEnvError` with the tail of its output.  The result gains the keys
    ``"subprocess_seconds"`` (wall time including interpreter start and imports) and ``"peer"``.
    """
    py = ensure_peer_env(name)
    path = PEERS_DIR / script
    if not path.is_file():
        raise FileNotFoundError(path)
    cmd = [str(py), str(path), *map(str, args)]
    log.info("run_peer %s: %s", name, " ".join(cmd))
    try:
        proc, dt = _subprocess(cmd, timeout_s)
    except subprocess.TimeoutExpired as exc:
        log.warning("run_peer %s %s timed out after %.0f s", name, script, timeout_s)
        out = {"timed_out": True, "timeout_s": timeout_s, "peer": name, "script": script}
        partial = _last_json_line(exc.stdout)  # scripts that emit cumulative lines
        if partial is not None:
            out["partial"] = partial
        return out
    result = _last_json_line(proc.stdout)
    if proc.returncode != 0 or result is None:
        raise PeerEnvError(
            f"peer script {script} in env {name} failed (exit {proc.returncode}, "
            f"{'no' if result is None else 'has'} JSON result):\n{_tail(proc)}"
        )
    result.setdefault("peer", name)
    result["subprocess_seconds"] = round(dt, 3)
    return result


if __name__ == "__main__":  # python benchmarks/peers/envs.py [name ...]: build the envs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for peer in sys.argv[1:] or sorted(PEERS):
        log.info("%s: %s", peer, ensure_peer_env(peer))
