"""An offline, real text-classification set built from the docstrings of installed code."""

from __future__ import annotations

import random
from collections.abc import Mapping
from types import ModuleType


def docstring_sentences(
    sources: Mapping[str, ModuleType | tuple[ModuleType, ...]],
    per_class: int,
    seed: int = 0,
    min_chars: int = 25,
    max_chars: int = 200,
) -> tuple[list[str], list[int]]:
    """A labelled text set from installed code: first docstring lines of public names.

    Every label's sentences are the distinct first lines (``min_chars``–``max_chars`` long)
    of the docstrings of the public attributes of its module(s); ``per_class`` of them are
    drawn per label with ``seed`` and the result is shuffled. Offline and real, it gives a
    text-classification task ("which library documents this?") for models without a head.

    Returns:
        ``(texts, labels)``, labels being indices into ``list(sources)``.
    """
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[int] = []
    for label, modules in enumerate(sources.values()):
        modules = modules if isinstance(modules, tuple) else (modules,)
        lines = set()
        for module in modules:
            for name in dir(module):
                if name.startswith("_"):
                    continue
                doc = getattr(getattr(module, name), "__doc__", None)
                if not isinstance(doc, str):
                    continue
                line = doc.strip().split("\n")[0].strip()
                if min_chars < len(line) < max_chars:
                    lines.add(line)
        if len(lines) < per_class:
            raise ValueError(f"label {label} has only {len(lines)} sentences; lower per_class")
        picked = rng.sample(sorted(lines), per_class)
        texts += picked
        labels += [label] * per_class
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]
