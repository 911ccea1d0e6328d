"""`landscaper.topology` is the lowest layer: it imports nothing of the package above it.

Every module under ``landscaper/topology/`` is parsed (never imported) and each of its imports,
at any depth (deferred ones inside functions too), must name the standard library, one of the
allowed third-party packages, or a module inside ``topology`` itself. A relative import that
climbs out of the package counts as outside.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

TOPOLOGY = Path(__file__).resolve().parents[1] / "landscaper" / "topology"
PACKAGE = ("landscaper", "topology")
ALLOWED_THIRD_PARTY = {"numpy", "scipy", "gudhi", "networkx", "matplotlib"}
MODULES = sorted(TOPOLOGY.rglob("*.py"))
OUTSIDE = "<outside>"


def imported_modules(source: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the text of ``path``.

    A relative import that climbs above ``landscaper.topology`` is named ``<outside>...``.
    """
    package = [*PACKAGE, *path.relative_to(TOPOLOGY).parent.parts]
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            tail = [node.module] if node.module else []
            if node.level == 0:
                found.append((node.lineno, node.module or ""))
            elif node.level - 1 > len(package) - len(PACKAGE):
                found.append((node.lineno, OUTSIDE + "." * node.level + ".".join(tail)))
            else:
                base = package[: len(package) - (node.level - 1)]
                found.append((node.lineno, ".".join(base + tail)))
    return found


def allowed(module: str) -> bool:
    """Whether topology may import ``module``."""
    parts = module.split(".")
    if tuple(parts[: len(PACKAGE)]) == PACKAGE:
        return True
    if module.startswith(OUTSIDE) or parts[0] == "landscaper":
        return False
    return parts[0] in ALLOWED_THIRD_PARTY or parts[0] in sys.stdlib_module_names


def test_the_topology_package_has_modules():
    assert len(MODULES) > 5 and TOPOLOGY / "__init__.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_topology_imports_nothing_above_it(path):
    outside = [f"{path.name}:{line}: {module}"
               for line, module in imported_modules(path.read_text(), path)
               if not allowed(module)]
    assert not outside, "topology must not import from outside itself:\n" + "\n".join(outside)


@pytest.mark.parametrize("source", [
    "from .._utils import parse_bytes",
    "from ..plots import new_axes",
    "from ... import something",
    "import landscaper.sampling",
    "from landscaper import Objective",
    "import torch",
    "def f():\n    from ..plots import new_axes",
])
def test_the_check_refuses_imports_from_outside(source):
    modules = [m for _, m in imported_modules(source, TOPOLOGY / "plotting.py")]
    assert modules and not any(allowed(m) for m in modules)


def test_the_check_accepts_topology_and_the_allowed_packages():
    source = ("from __future__ import annotations\nimport numpy as np\nimport itertools\n"
              "from .merge_tree import MergeTree\nfrom . import order\n"
              "from scipy.spatial import cKDTree\nfrom landscaper.topology import basins\n"
              "def f():\n    from matplotlib.figure import Figure\n")
    modules = [m for _, m in imported_modules(source, TOPOLOGY / "plotting.py")]
    assert len(modules) == 8 and all(allowed(m) for m in modules)
