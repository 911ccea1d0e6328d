"""The ``Examples:`` in landscaper's docstrings run, and say what they print.

Every module of the package whose source holds a ``>>>`` line is searched with
`doctest.DocTestFinder`, and each docstring example found runs as one test. The main entry
points must keep an example: removing it fails `test_entry_points_have_examples`.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "landscaper"

#: The entry points the documentation shows first: each must carry a runnable example.
ENTRY_POINTS = (
    "landscaper.objective.Objective",
    "landscaper.hessian.top_eigenpairs",
    "landscaper.landscape.Landscape.compute",
    "landscaper.landscape.Landscape.smad",
    "landscaper.jump_retrain.JumpRetrain",
    "landscaper.integrations.huggingface.hf_landscape",
)

#: Examples that need an optional package, and that package.
NEEDS = {"landscaper.integrations.huggingface": "transformers"}

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def collect() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    tests = []
    for name in modules_with_examples():
        module = importlib.import_module(name)
        tests += [t for t in finder.find(module, name) if t.examples]
    return sorted(tests, key=lambda t: t.name)


TESTS = collect()


def resolve(dotted: str) -> object:
    """The object a dotted name points to: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("test", TESTS, ids=[t.name for t in TESTS])
def test_docstring_example_runs(test: doctest.DocTest) -> None:
    needed = next((pkg for mod, pkg in NEEDS.items() if test.name.startswith(mod)), None)
    if needed is not None:
        pytest.importorskip(needed)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    result = runner.run(test, out=report.append, clear_globs=True)
    assert result.failed == 0, "".join(report)


@pytest.mark.parametrize("dotted", ENTRY_POINTS)
def test_entry_points_have_examples(dotted: str) -> None:
    doc = inspect.getdoc(resolve(dotted)) or ""
    section = re.search(r"^Examples:\n(.*?)(?=^\S|\Z)", doc, re.M | re.S)
    assert section, f"{dotted} has no Examples: section"
    assert re.search(r"^\s+>>> \S", section.group(1), re.M), f"{dotted}: no >>> line"
    assert dotted in {t.name for t in TESTS}, f"{dotted}: doctest finds no example"


def test_the_examples_are_found() -> None:
    # guards the collection itself: a finder that found nothing would pass every test above
    assert len(TESTS) >= len(ENTRY_POINTS)
    assert sum(len(t.examples) for t in TESTS) >= 40
