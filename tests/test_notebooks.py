"""Every notebook runs end to end in its reduced mode; a failing cell fails the suite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPER_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("LANDSCAPER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[-1].cell_type == "markdown"
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    results = list(tmp_path.glob("*.json"))
    assert results, "the notebook wrote no results JSON"
    data = json.loads(results[0].read_text())
    assert data["quick"] is True


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    assert NOTEBOOKS, "no notebooks found"
    assert os.path.isdir(NOTEBOOKS[0].parent)
