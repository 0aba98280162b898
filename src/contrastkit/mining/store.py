"""Embeddings streamed to disk: ``.npy`` files written batch by batch through ``numpy.memmap``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np


def embed_to_memmap(
    texts: Sequence[str],
    encode: Callable[[Sequence[str]], np.ndarray],
    path,
    *,
    batch_size: int = 64,
    progress: Optional[Callable[[int], None]] = None,
) -> np.memmap:
    """Encode ``texts`` in batches into the ``.npy`` file ``path``; returns it opened read-only.

    Only one batch of embeddings is in memory at a time. Row ``i`` of the file is the embedding of
    ``texts[i]``: every batch must return exactly one float row per text and the same width as the
    first batch, otherwise a ``ValueError`` names the batch (no row can go missing or shift).
    ``progress(n)`` is called with the number of texts encoded after each batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = len(texts)
    if n == 0:
        raise ValueError("cannot embed an empty list of texts")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = None
    for b0 in range(0, n, batch_size):
        batch = texts[b0 : b0 + batch_size]
        emb = np.asarray(encode(batch))
        if emb.ndim != 2 or emb.shape[0] != len(batch):
            raise ValueError(
                f"encoder returned shape {emb.shape} for a batch of {len(batch)} texts "
                f"(rows {b0}..{b0 + len(batch) - 1}); expected ({len(batch)}, dim)"
            )
        if out is None:
            out = np.lib.format.open_memmap(
                path, mode="w+", dtype=np.float32, shape=(n, emb.shape[1])
            )
        elif emb.shape[1] != out.shape[1]:
            raise ValueError(
                f"encoder returned dimension {emb.shape[1]} for rows {b0}.. "
                f"but {out.shape[1]} before"
            )
        if not np.isfinite(emb).all():
            raise ValueError(f"encoder returned NaN/Inf for rows {b0}..{b0 + len(batch) - 1}")
        out[b0 : b0 + len(batch)] = emb
        if progress is not None:
            progress(len(batch))
    out.flush()
    del out
    return np.load(path, mmap_mode="r")
