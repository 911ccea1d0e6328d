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
