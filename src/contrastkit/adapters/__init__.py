"""Adapters to training frameworks.

* :mod:`contrastkit.adapters.sentence_transformers`: :class:`ContrastkitLoss`, any contrastkit
  objective as a sentence-transformers loss (``SentenceTransformerTrainer``, ``model.fit``),
  optionally with gradient caching (``mini_batch_size``).

Plain PyTorch and Lightning need no adapter: see ``examples/plain_pytorch.py`` and
``examples/lightning_module.py``. Nothing here imports the frameworks themselves.
"""

from .sentence_transformers import ContrastkitLoss

__all__ = ["ContrastkitLoss"]
