"""The report's headline numbers, their readings, and the side-by-side comparison page."""

from __future__ import annotations

import json

import numpy as np
import pytest

from landscaper import Landscape
from landscaper.headlines import compare_headlines, headlines
from landscaper.report import Report, add_landscape, write_comparison


def two_wells(n: int = 41) -> Landscape:
    a = np.linspace(-2, 2, n)
    return Landscape.from_arrays((a ** 2 - 1) ** 2 + 0.3 * a + 1.0, [a])


def bowl(n: int = 41) -> Landscape:
    a = np.linspace(-2, 2, n)
    return Landscape.from_arrays(a ** 2 + 1.0, [a])


def report_of(land: Landscape, folder, spectrum=None) -> Report:
    report = Report(folder)
    if spectrum is not None:
        report.metrics["hessian"] = spectrum
    add_landscape(report, land)
    return report


def test_headlines_read_the_numbers_they_show(tmp_path):
    hessian = {"top_eigenvalues": [8.0, 2.0], "trace": 16.0, "trace_std_error": 0.5,
               "curvature": "hessian"}
    rows = {h.key: h for h in headlines(report_of(two_wells(), tmp_path, hessian).metrics)}
    assert rows["top_eigenvalue"].value == 8.0 and "4·ε²" in rows["top_eigenvalue"].reading
    assert rows["trace"].text == "16 ± 0.5" and "= 2," in rows["trace"].reading
    assert rows["minima"].value == 2 and "2 local minima" in rows["minima"].reading
    # (a^2 - 1)^2 + 0.3 a + 1: the shallower well (a > 0) dies at the barrier; p = 2
    grid = np.linspace(-2, 2, 41)
    f = (grid ** 2 - 1) ** 2 + 0.3 * grid + 1
    left, right = int(np.argmin(f[:20])), 20 + int(np.argmin(f[20:]))
    assert rows["persistence"].value == pytest.approx((f[left:right + 1].max() - f[right]) ** 2)
    assert rows["saddle_radius"].value is not None
    assert "jr_persistence" not in rows  # no J&R stage, no headline
    single = {h.key: h for h in headlines(report_of(bowl(), tmp_path / "b").metrics)}
    assert single["minima"].reading.startswith("a single basin")
    assert single["saddle_radius"].text == "never" and single["smad"].value == 0


def test_the_comparison_page_puts_two_reports_side_by_side(tmp_path):
    a = report_of(bowl(), tmp_path / "a")
    b = report_of(two_wells(), tmp_path / "b")
    a.write(), b.write()
    rows = {label: diff for label, _, _, diff in compare_headlines(a.metrics, b.metrics,
                                                                   ("flat", "rugged"))}
    assert rows["minima on the grid"] == "minima on the grid: rugged's is 2× flat's"
    assert "flat never" in rows["θ₀'s basin meets a saddle"]
    out = write_comparison(tmp_path, [("flat", a), ("rugged", b)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["folders"] == {"flat": "a", "rugged": "b"}
    assert metrics["models"]["rugged"]["landscape"]["minima"] == 2
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 * len(a.figures)
    assert page.index("Summary") < page.index("Figures, side by side") < page.index("<details>")
    with pytest.raises(ValueError, match="compares two reports"):
        write_comparison(tmp_path, [("flat", a)])


def test_jump_retrain_headline_counts_basins_and_reads_their_deepest_barrier(tmp_path):
    import torch
    from torch import nn

    from landscaper import JumpRetrain
    from landscaper.report import add_jump_retrain

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    jr = JumpRetrain(model, (x, y), nn.functional.cross_entropy,
                     lambda ps: torch.optim.SGD(ps, lr=0.1), seeds=(0, 1), step_sizes=(0.5, 1.0),
                     epochs=3, embedding="pca", k=3, progress=False).fit()
    report = Report(tmp_path)
    add_jump_retrain(report, jr)
    m = report.metrics["jump_retrain"]
    d0 = jr.persistence_.diagrams[0]
    finite = d0[np.isfinite(d0[:, 1])]
    assert m["basins"] == len(d0) >= 2  # three neighbours: the runs stay apart
    barrier = (finite[:, 1] - finite[:, 0]).max() if len(finite) else 0.0
    assert m["largest_barrier"] == pytest.approx(barrier)
    (headline,) = [h for h in headlines(report.metrics) if h.key == "jr_persistence"]
    assert f"16 retraining samples fall into {len(d0)} basins" in headline.reading
    assert (f"({m['essential_d0']} groups the graph never joins)" in headline.reading) == (
        m["essential_d0"] > 1)
    rugged = {"jump_retrain": {**m, "total_persistence_d0": 1e-3}}
    one = {"jump_retrain": {**m, "basins": 1, "largest_barrier": 0.0,
                            "total_persistence_d0": 1e-9, "total_persistence_d1": 0.0}}
    (row,) = [diff for label, _, _, diff in compare_headlines(rugged, one, ("a", "b"))
              if label.startswith("J&R")]
    # a ratio of 1e6 says less than the two values
    assert "higher for a" in row and "×" not in row
