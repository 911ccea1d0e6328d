"""The HTML report in a real headless browser (skipped only where no Chromium is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from landscaper import Landscape
from landscaper.report import report_for_landscape

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser",
                                                "google-chrome") if shutil.which(name)), None)

HARNESS = """<!DOCTYPE html><html><body><iframe id="r" src="{src}"></iframe><pre id="out">
pending</pre><script>
document.getElementById("r").addEventListener("load", () => {{
  const doc = document.getElementById("r").contentDocument;
  const images = Array.from(doc.images).map(i => [i.complete, i.naturalWidth]);
  document.getElementById("out").textContent = JSON.stringify({{images, title: doc.title}});
}});
</script></body></html>"""


@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install chromium)")
def test_report_renders_every_image_without_console_errors(tmp_path):
    a = np.linspace(-2.5, 2.5, 31)
    grid = np.meshgrid(a, a, indexing="ij")
    values = sum(g**2 - 10 * np.cos(2 * np.pi * g) + 10 for g in grid)
    out = report_for_landscape(Landscape.from_arrays(values, [a, a]), tmp_path / "report")
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.format(src=(out / "index.html").as_uri()))
    proc = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
         harness.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="out">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["title"] == "landscaper report"
    assert len(result["images"]) == 6
    assert all(complete and width > 0 for complete, width in result["images"])
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "rror" in line or "Uncaught" in line], console
