"""The documentation site: built offline with ``mkdocs build --strict``, then opened page by page
in headless Chromium (skipped only where no Chromium is installed); and the README's example
runs as written."""

from __future__ import annotations

import functools
import html
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser",
                                                "google-chrome") if shutil.which(name)), None)

#: API pages that must show the runnable example of each main entry point.
EXAMPLE_PAGES = {
    "landscaper.objective.Objective": "api/objective.html",
    "landscaper.hessian.top_eigenpairs": "api/hessian.html",
    "landscaper.landscape.Landscape.compute": "api/landscape.html",
    "landscaper.landscape.Landscape.smad": "api/landscape.html",
    "landscaper.jump_retrain.JumpRetrain": "api/jump_retrain.html",
    "landscaper.integrations.huggingface.hf_landscape": "api/huggingface.html",
}


# ---------------------------------------------------------------------------- the build
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail('mkdocs is not installed: pip install -e ".[docs]" (the dev extra has it)')
    out = tmp_path_factory.mktemp("docs") / "site"
    results = tmp_path_factory.mktemp("notebook-results")
    # the notebooks run during the build, in their quick mode, so their pages show outputs
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "LANDSCAPER_DOCS_EXECUTE": "true",
           "LANDSCAPER_NOTEBOOK_QUICK": "1", "LANDSCAPER_RESULTS_DIR": str(results),
           "MPLBACKEND": "Agg"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    print(f"mkdocs build --strict: {time.perf_counter() - start:.1f} s")
    return out


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if p.name != "harness.html")


class _Page(HTMLParser):
    """The ids, link targets and external resources of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.resources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name"):
            if values.get(key) and (key == "id" or tag == "a"):
                self.ids.add(values[key])
        if tag == "a" and values.get("href") is not None:
            self.links.append(values["href"])
        if tag == "script" and values.get("src"):
            self.resources.append(values["src"])
        if tag == "link" and values.get("href") and values.get("rel") in {"stylesheet",
                                                                       "preload", "icon"}:
            self.resources.append(values["href"])
        if tag == "img" and values.get("src"):
            self.resources.append(values["src"])


@functools.cache
def _parsed(path: Path) -> _Page:
    parser = _Page()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_site_builds_with_every_page(site):
    built = {p.relative_to(site).as_posix() for p in pages(site)}
    sources = {p.relative_to(ROOT / "docs").with_suffix(".html").as_posix()
               for p in (ROOT / "docs").rglob("*") if p.suffix in {".md", ".ipynb"}}
    assert sources <= built, sources - built
    assert len(built) >= 30
    assert (site / "images").is_dir()


def test_internal_links_and_anchors_resolve(site):
    checked, broken = 0, []
    for page in pages(site):
        base = page.relative_to(site).as_posix()
        for href in _parsed(page).links:
            parts = urlsplit(href)
            if parts.scheme or href.startswith("//"):
                continue  # external (https:, mailto:): not fetched offline
            # a path from the site root (404.html's links) or from the page's folder
            target_rel = urljoin(base, unquote(parts.path)).lstrip("/") if parts.path else base
            target = site / target_rel
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{base}: {href} (no file {target_rel})")
            elif parts.fragment and target.suffix == ".html" and (
                    unquote(parts.fragment) not in _parsed(target).ids):
                broken.append(f"{base}: {href} (no anchor #{parts.fragment})")
    print(f"{checked} internal links checked")
    assert checked > 500
    assert not broken, "\n".join(broken[:40])


def test_the_site_loads_nothing_from_the_network(site):
    remote = [f"{page.relative_to(site)}: {src}" for page in pages(site)
              for src in _parsed(page).resources if re.match(r"(https?:)?//", src)]
    assert not remote, remote[:20]


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


@pytest.mark.parametrize("dotted", sorted(EXAMPLE_PAGES))
def test_api_pages_show_the_runnable_examples(site, dotted):
    import doctest

    sys.path.insert(0, str(ROOT))
    from test_doctests import resolve  # the same lookup as the doctest suite

    page = site / EXAMPLE_PAGES[dotted]
    assert dotted in _parsed(page).ids, f"{page.name} has no section for {dotted}"
    examples = doctest.DocTestParser().get_examples(resolve(dotted).__doc__ or "")
    assert examples, dotted
    text = _text(page)
    missing = [e.source.splitlines()[0] for e in examples
               if ">>> " + e.source.splitlines()[0] not in text]
    assert not missing, f"{page.name} does not show {missing}"


# ---------------------------------------------------------------------------- the browser
HARNESS = """<!DOCTYPE html><html><head><title>harness</title></head><body>
<iframe id="f" width="1200" height="900"></iframe><pre id="out">pending</pre><script>
const pages = {pages};
const results = [];
function visit(url) {{
  return new Promise(resolve => {{
    const frame = document.getElementById("f");
    const timer = setTimeout(() => {{ results.push({{url, loaded: false}}); resolve(); }}, 20000);
    frame.onload = () => setTimeout(() => {{
      clearTimeout(timer);
      const doc = frame.contentDocument;
      const images = Array.from(doc.images).map(i => [i.getAttribute("src"), i.complete,
                                                      i.naturalWidth]);
      results.push({{url, loaded: true, title: doc.title, images,
                     body: doc.body ? doc.body.innerText.length : 0}});
      resolve();
    }}, 300);
    frame.src = url;
  }});
}}
(async () => {{
  for (const page of pages) await visit(page);
  document.getElementById("out").textContent = JSON.stringify(results);
}})();
</script></body></html>"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[tuple[str, int]]

    def log_request(self, code="-", size="-") -> None:  # noqa: ARG002 - the signature
        self.requests.append((self.path, int(code) if str(code).isdigit() else 0))

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install chromium)")
def test_every_page_loads_in_a_browser_without_errors(site, tmp_path):
    urls = [p.relative_to(site).as_posix() for p in pages(site)]
    (site / "harness.html").write_text(HARNESS.format(pages=json.dumps(urls)))
    requests: list[tuple[str, int]] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        proc = subprocess.run(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=600000",
             "--dump-dom", f"http://127.0.0.1:{port}/harness.html"],
            capture_output=True, text=True, timeout=180, check=False)
    finally:
        server.shutdown()
        server.server_close()
    found = re.search(r'<pre id="out">(.*?)</pre>', proc.stdout, re.S)
    assert found and found.group(1) != "pending", proc.stderr[-3000:]
    results = json.loads(html.unescape(found.group(1)))
    assert [r["url"] for r in results] == urls
    not_loaded = [r["url"] for r in results if not r["loaded"] or not r["title"]
                  or r["body"] < 100]
    assert not not_loaded, not_loaded
    images = [(r["url"], src, complete, width) for r in results
              for src, complete, width in r["images"]]
    broken = [i for i in images if not (i[2] and i[3] > 0)]
    assert not broken, broken
    assert len(images) >= 6
    failed = [(path, code) for path, code in requests
              if code >= 400 and not path.endswith("favicon.ico")]
    assert not failed, failed
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if "rror" in line or "Uncaught" in line]
    assert not errors, errors[:20]
    print(f"{len(results)} pages, {len(images)} images, {len(requests)} requests, "
          f"{len(console)} console lines")


# ---------------------------------------------------------------------------- the README
def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", text, re.S)
    assert found, "the README has no ```python example"
    return found.group(1)


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path):
    pytest.importorskip("sklearn")
    code = readme_example()
    assert len(code.strip().splitlines()) <= 14, "keep the README example about ten lines"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip(), "the example prints its results"
    assert list(tmp_path.glob("*.png")), "the example saves its figure"


def test_readme_links_into_the_docs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)]*)?\)", text)
    assert len(targets) >= 8, targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert len(images) == 1 and (ROOT / images[0]).is_file(), images
    assert "mkdocs serve" in text and "mkdocs build" in text
    assert "python3 tasks.py demo" in text and "python3 tasks.py test" in text


def test_notebook_pages_show_the_outputs_of_their_run(site):
    """The notebooks are committed without outputs; the build runs them (quick mode), so each
    page holds its printed results and its figure."""
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for notebook in notebooks:
        page = (site / "notebooks" / f"{notebook.stem}.html").read_text()
        assert "data:image/png;base64," in page, notebook.stem
        assert "Traceback (most recent call last)" not in page, notebook.stem
