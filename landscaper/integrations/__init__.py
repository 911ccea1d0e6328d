"""Optional integrations of landscaper with other libraries and kinds of models.

Submodules that need a third-party library import it lazily, so ``import landscaper`` never
needs it; e.g. `landscaper.integrations.huggingface` (``transformers`` models and the
``Trainer``; ``pip install "landscaper[hf]"``).
"""
