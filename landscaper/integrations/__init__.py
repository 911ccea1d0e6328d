"""Integrations of landscaper with outside frameworks.

Submodules that need a third-party library import it lazily, so ``import landscaper`` never
needs it; e.g. `landscaper.integrations.huggingface` (``transformers`` models and the
``Trainer``; ``pip install transformers accelerate``). Example models and data (PINN, chemistry,
digits) live in `landscaper.examples`; ``integrations.pinn`` and ``integrations.chemistry``
remain as aliases of their old paths.
"""
