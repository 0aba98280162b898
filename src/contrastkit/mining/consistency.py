"""Positive-consistency filtering of (query, positive) training pairs (CoRNStack, Suresh et al.,
arXiv:2412.01007).

An off-the-shelf embedder scores every query against a pool of candidates (the positives of
all pairs, plus any corpus). A pair is kept only if its own positive ranks near the top::

    r_i  = 1 + #{j in pool, j != i : s(q_i, c_j) > s(q_i, c_i)}     (ties are not above)
    keep = (r_i <= top_k) and (s(q_i, c_i) >= min_score)

The rank is a per-row count of pool columns above the positive's score, accumulated over blocks
of queries and pool rows (memory one block, never an N x N matrix, the pool may be a
``numpy.memmap``). With ``top_k = filter_topk`` it is KaLM-Embedding's ranking-consistency filter
(keep a pair iff its positive scores at least the ``filter_topk``-th best pool score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from contrastkit.mining.search import check_matrix

__all__ = ["PositiveConsistency", "positive_consistency"]

#: pool scores per block (float64: 32 MiB)
BLOCK_ELEMS = 1 << 22
#: relative slack of the "strictly above" test in float64: the positive's score and a duplicate
#: candidate's score come from different dot products (different summation orders)
TIE_RTOL = 1e-12


@dataclass(frozen=True)
class PositiveConsistency:
    """Result of :func:`positive_consistency`, one entry per pair.

    ``keep`` (N,) bool; ``rank`` (N,) int64, the 1-based rank of the pair's positive in the
    pool; ``positive_score`` (N,) float64, ``s(q_i, c_i)``.
    """

    keep: np.ndarray
    rank: np.ndarray
    positive_score: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        """Indices of the kept pairs."""
        return np.flatnonzero(self.keep)


def _block(x, r0: int, r1: int, normalize: bool) -> Tensor:
    b = x[r0:r1] if isinstance(x, Tensor) else torch.from_numpy(np.array(x[r0:r1], np.float64))
    b = b.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(b).all()):
        raise ValueError(f"non-finite values in rows {r0}..{r1 - 1}")
    return torch.nn.functional.normalize(b, dim=-1) if normalize else b


def positive_consistency(
    queries,
    positives,
    corpus=None,
    *,
    top_k: int = 1,
    min_score: Optional[float] = None,
    include_positives: bool = True,
    normalize: bool = True,
    chunk_size: Optional[int] = None,
) -> PositiveConsistency:
    """Keep the pairs whose positive an embedder ranks within ``top_k`` for its query.

    Args:
        queries: (N, d) query embeddings (tensor, numpy array or memmap).
        positives: (N, d) embeddings of each query's positive (row ``i`` pairs with query
            ``i``).
        corpus: optional (C, d) extra pool rows (e.g. the whole document collection).
        top_k: the largest rank kept (``k_c``; 1 keeps pairs whose positive is the best match).
        min_score: also drop pairs whose positive scores below it (``s_min``); None: no floor.
        include_positives: the pool holds every pair's positive (the usual in-collection
            check); ``False``: only ``corpus`` (then the positive itself is not in the pool and
            the rank counts the corpus rows above it).
        normalize: cosine scores (L2-normalised rows) or raw inner products.
        chunk_size: query rows per block (default: about 4M scores per block).

    Returns a :class:`PositiveConsistency` (``keep``, ``rank``, ``positive_score``). Ties with
    the positive's score do not count as above it (two identical candidates both rank first).
    """
    n, d = check_matrix("queries", queries)
    n_pos, d_pos = check_matrix("positives", positives)
    if (n_pos, d_pos) != (n, d):
        raise ValueError(
            f"positives must have the shape of queries {(n, d)} (row i is query i's positive), "
            f"got {(n_pos, d_pos)}"
        )
    pools = []
    if include_positives:
        pools.append(positives)
    if corpus is not None:
        n_c, d_c = check_matrix("corpus", corpus)
        if d_c != d:
            raise ValueError(f"corpus has dimension {d_c} but queries have {d}")
        pools.append(corpus)
    if not pools:
        raise ValueError("include_positives=False needs a corpus (the pool would be empty)")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if min_score is not None and (
        isinstance(min_score, bool)
        or not isinstance(min_score, (int, float))
        or not np.isfinite(min_score)
    ):
        raise ValueError(f"min_score must be a finite number or None, got {min_score!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    sizes = [check_matrix("pool", p)[0] for p in pools]
    pool_rows = max(1, min(sum(sizes), BLOCK_ELEMS))
    q_rows = chunk_size or max(1, BLOCK_ELEMS // pool_rows)
    c_rows = max(1, BLOCK_ELEMS // q_rows)
    rank = np.ones(n, np.int64)
    pos_score = np.empty(n, np.float64)
    for q0 in range(0, n, q_rows):
        q1 = min(n, q0 + q_rows)
        q = _block(queries, q0, q1, normalize)
        s_pos = (q * _block(positives, q0, q1, normalize)).sum(-1)
        thr = s_pos + TIE_RTOL * s_pos.abs().clamp(min=1.0)
        above = torch.zeros(q1 - q0, dtype=torch.int64)
        for p_i, (pool, size) in enumerate(zip(pools, sizes)):
            for c0 in range(0, size, c_rows):
                c1 = min(size, c0 + c_rows)
                s = q @ _block(pool, c0, c1, normalize).T
                hit = s > thr[:, None]
                if include_positives and p_i == 0:  # the pair's own positive is not counted
                    rows = torch.arange(q0, q1)
                    own = (rows >= c0) & (rows < c1)
                    hit[own.nonzero().flatten(), rows[own] - c0] = False
                above += hit.sum(1)
        rank[q0:q1] = 1 + above.numpy()
        pos_score[q0:q1] = s_pos.numpy()
    keep = rank <= top_k
    if min_score is not None:
        keep &= pos_score >= min_score
    return PositiveConsistency(keep=keep, rank=rank, positive_score=pos_score)
