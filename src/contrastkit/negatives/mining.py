"""In-batch top-k hard-negative mining with false-negative filtering (UniME, arXiv:2504.17432).

For queries ``x`` (N, d) and keys ``y`` (M, d), with key ``i`` the positive of query ``i``::

    S = normalize(x) normalize(y)^T                      (computed in row blocks, detached)
    drop S_ii, same-label keys, and the false negatives named by the filter
    H_i = the k largest remaining S_ij

``TopKMiner`` returns the indices (``MinedNegatives``); ``gather_negatives`` turns them into the
per-anchor negatives ``(N, k, d)`` that :func:`contrastkit.losses.infonce.info_nce.info_nce` accepts
(gradient flows into the gathered keys, as in UniME); :func:`mined_info_nce` is UniME's loss,
logits ``[s_ii, s_i,n1..nk] / tau`` only (no other in-batch keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (
    check_compatible,
    check_embeddings,
    check_index,
    check_labels,
)
from .filters import FalseNegativeFilter

__all__ = ["MinedNegatives", "TopKMiner", "gather_negatives"]


@dataclass(frozen=True)
class MinedNegatives:
    """``indices`` (N, k) key columns (``-1`` where fewer than k survived), their detached
    ``scores`` (N, k) (``-inf`` there) and ``valid`` (N, k) bool."""

    indices: Tensor
    scores: Tensor
    valid: Tensor


def _block_rows(M: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        return chunk_size
    return max(1, (1 << 22) // max(M, 1))  # about 4M scores per block


class TopKMiner:
    """The ``k`` hardest (most similar) keys of every query that survive the filters.

    Args:
        k: negatives per query (UniME: 8).
        exclude_positive: drop column ``i`` (key ``i`` is query ``i``'s positive); needs M >= N.
        max_score, min_score, absolute_margin, relative_margin: a :class:`FalseNegativeFilter`
            (margins are relative to ``s_ii`` or to ``positive_scores``). UniME's
            ``beta = 0.1`` is ``absolute_margin=-0.1``; NV-Retriever's 95 % rule is
            ``relative_margin=0.05``.
        on_shortage: ``"raise"`` (a row with fewer than ``k`` survivors is an error) or
            ``"mask"`` (those slots get index -1, score -inf, valid False).
        normalize: cosine scores (default) or raw dot products.
        chunk_size: query rows per block (memory O(chunk * M)).

    ``__call__(query, key, labels=None, key_labels=None, positive_scores=None)``: with
    ``labels``/``key_labels`` every same-label key is also excluded (as pytorch-metric-learning
    miners do); ``k = 1`` with labels gives ``BatchHardMiner``'s hardest negatives.
    """

    def __init__(
        self,
        k: int = 8,
        *,
        exclude_positive: bool = True,
        max_score: Optional[float] = None,
        min_score: Optional[float] = None,
        absolute_margin: Optional[float] = None,
        relative_margin: Optional[float] = None,
        on_shortage: str = "raise",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
    ):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if on_shortage not in ("raise", "mask"):
            raise ValueError(f"on_shortage must be 'raise' or 'mask', got {on_shortage!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.k = k
        self.exclude_positive = exclude_positive
        self.filter = FalseNegativeFilter(
            max_score=max_score,
            min_score=min_score,
            absolute_margin=absolute_margin,
            relative_margin=relative_margin,
        )
        self.on_shortage = on_shortage
        self.normalize = normalize
        self.chunk_size = chunk_size

    def __call__(
        self,
        query: Tensor,
        key: Tensor,
        labels: Optional[Tensor] = None,
        key_labels: Optional[Tensor] = None,
        positive_scores: Optional[Tensor] = None,
    ) -> MinedNegatives:
        check_embeddings("query", query)
        check_embeddings("key", key)
        check_compatible("query", query, "key", key)
        N, M = query.shape[0], key.shape[0]
        if self.exclude_positive and M < N:
            raise ValueError(
                f"exclude_positive=True needs key row i to be query i's positive (M >= N): "
                f"query {tuple(query.shape)}, key {tuple(key.shape)}"
            )
        available = M - (1 if self.exclude_positive else 0)
        if self.k > available:
            raise ValueError(
                f"k={self.k} is larger than the {available} candidate keys per query "
                f"(key {tuple(key.shape)}, exclude_positive={self.exclude_positive})"
            )
        if key_labels is not None and labels is None:
            raise ValueError("key_labels given without labels")
        if labels is not None and key_labels is None and M != N:
            raise ValueError(
                f"labels without key_labels needs one key per query: query "
                f"{tuple(query.shape)}, key {tuple(key.shape)}"
            )
        if labels is not None:
            check_labels("labels", labels, N, query)
            key_labels = labels if key_labels is None else key_labels
            check_labels("key_labels", key_labels, M, key)
        x = query.detach()
        y = key.detach()
        if self.normalize:
            x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
        if positive_scores is not None:
            if not isinstance(positive_scores, Tensor) or positive_scores.shape != (N,):
                got = getattr(positive_scores, "shape", None)
                raise ValueError(f"positive_scores must have shape ({N},), got {got}")
            pos_all = positive_scores.detach().to(x.dtype)
        elif self.filter.needs_positive:
            if M < N:
                raise ValueError("margin filters need positive_scores when key has fewer rows")
            pos_all = (x * y[:N]).sum(-1)
        else:
            pos_all = None
        b = _block_rows(M, self.chunk_size)
        idx_out, sc_out = [], []
        for r0 in range(0, N, b):
            r1 = min(N, r0 + b)
            s = x[r0:r1] @ y.T
            drop = torch.zeros_like(s, dtype=torch.bool)
            rows = torch.arange(r1 - r0, device=s.device)
            if self.exclude_positive:
                drop[rows, rows + r0] = True
            if labels is not None:
                drop |= labels[r0:r1, None] == key_labels[None, :]
            if not self.filter.is_empty:
                pos = None if pos_all is None else pos_all[r0:r1]
                drop |= self.filter(s, pos)
            s = s.masked_fill(drop, float("-inf"))
            top, idx = torch.topk(s, self.k, dim=1)
            idx_out.append(idx)
            sc_out.append(top)
        scores, indices = torch.cat(sc_out), torch.cat(idx_out)
        valid = torch.isfinite(scores)
        if not bool(valid.all()):
            if self.on_shortage == "raise":
                short = int((~valid.all(1)).sum())
                least = int(valid.sum(1).min())
                raise ValueError(
                    f"k={self.k}: {short} queries have fewer than k negatives left after "
                    f"filtering (fewest: {least}); lower k or use on_shortage='mask'"
                )
            indices = indices.masked_fill(~valid, -1)
        return MinedNegatives(indices=indices, scores=scores, valid=valid)

    def __repr__(self) -> str:
        return f"TopKMiner(k={self.k}, filter={self.filter!r}, on_shortage={self.on_shortage!r})"


def _indices(mined) -> Tensor:
    return mined.indices if isinstance(mined, MinedNegatives) else mined


def gather_negatives(candidates: Tensor, mined) -> Tensor:
    """Per-anchor negatives ``candidates[indices]`` (N, k, d) for ``info_nce(..., negatives=)``.

    ``mined`` is a :class:`MinedNegatives` or an (N, k) long tensor; a ``-1`` slot is an error
    (``info_nce`` cannot mask per-anchor negatives; use :func:`mined_info_nce` or
    :func:`contrastkit.losses.info_nce_with_negatives` with ``extra_valid``).
    """
    check_embeddings("candidates", candidates)
    idx = _indices(mined)
    check_index("mined", idx, candidates.shape[0], ndim=2, allow=(-1,), ref=candidates)
    if bool((idx < 0).any()):
        raise ValueError(
            f"mined indices hold {int((idx < 0).sum())} invalid (-1) slots; cannot gather"
        )
    return candidates[idx]
