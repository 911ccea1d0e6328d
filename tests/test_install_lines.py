"""No install line we show installs the other project that owns the name ``landscaper`` on PyPI."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: ``pip install`` followed by a bare ``landscaper`` requirement, with or without extras/quotes
WRONG = re.compile(r"""pip install[^\n`]*?(?<![\w.-])["']?landscaper(\[[^\]]*\])?["']?(?![\w-])""")


def shown_texts() -> dict[Path, str]:
    files = [ROOT / "README.md", *(ROOT / "landscaper").rglob("*.py"),
             *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "benchmarks").glob("*.py")]
    docs = ROOT / "docs"
    if docs.is_dir():
        files += list(docs.rglob("*.md"))
    return {f: f.read_text(encoding="utf-8") for f in files}


def test_no_install_line_names_the_taken_distribution():
    found = [f"{path.relative_to(ROOT)}: {match.group(0)}"
             for path, text in shown_texts().items() for match in WRONG.finditer(text)
             if "Do not run" not in text[max(0, match.start() - 20):match.start()]]
    assert not found, found


def test_the_pattern_catches_what_it_must():
    for line in ('pip install "landscaper[hf]"', "pip install landscaper", "pip install -U "
                 "landscaper[phate]", "pip install 'landscaper[chem]'"):
        assert WRONG.search(line), line
    for line in ('pip install -e ".[hf]"', "pip install landscaper-tda", "pip install phate",
                 "pip install landscaper_tda"):
        assert not WRONG.search(line), line


def test_the_distribution_name_is_not_the_taken_one():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "landscaper-tda"$', text, re.M)
