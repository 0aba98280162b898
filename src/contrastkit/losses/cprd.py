"""CPRD: Contrastive Partial Ranking Distillation (Chen et al., "How to Make Cross Encoder a Good
Teacher for Efficient Image-Text Retrieval?", CVPR 2024, arXiv 2407.07479).

A dual-encoder student mines each query's top-``K`` hard negatives (its own similarity, the
positive excluded: :func:`in_batch_hard_negatives`); a cross-encoder teacher scores those pairs and
orders them ``c_1 > ... > c_K``. Only the relative order among hard negatives is distilled, as a
Plackett-Luce likelihood written as contrastive steps (each ranked negative is the positive
against all lower-ranked ones)::

    l_i = sum_{j < J_i} [ -u_i,c_j + log sum_{k = j..K} exp(u_i,c_k) ],   u = cos(q_i, t) / tau

``J_i`` = ``n_valid`` (default ``K``; the last step is identically 0). The text-to-image term is
the same call with the roles swapped; the total is added to the dual-encoder's contrastive loss.

Confidence: the paper's code is not public. This follows its abstract (mine hard negatives with
the dual encoder, keep only their relative order from the cross encoder, contrastive form); the
"valid" prefix rule, tau and the loss weight are not confirmed, so ``n_valid`` (per row) and
``temperature`` (default 0.07, an assumption) are left to the caller.

Engine: not used. After mining (a chunked top-K that never holds more than a row block of
similarities) the loss touches only ``N x K`` pairs, with a suffix log-sum-exp over ``K``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (
    check_compatible,
    check_embeddings,
    check_index,
    check_temperature,
    check_tensor,
    optional_int,
)
from ._common import EPS, kappa, prepare, row_weight

__all__ = ["in_batch_hard_negatives", "partial_ranking_distillation", "PartialRankingDistillation"]


@torch.no_grad()
def in_batch_hard_negatives(
    query: Tensor,
    keys: Tensor,
    k: int,
    *,
    positives: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
    normalize: bool = True,
) -> Tensor:
    """Indices ``(N, k)`` of each query's ``k`` most similar keys, its positive excluded
    (``positives (N,)``, default ``i``), most similar first. Row blocks of ``chunk_size``."""
    check_embeddings("query", query)
    check_embeddings("keys", keys)
    check_compatible("query", query, "keys", keys)
    N, M = query.shape[0], keys.shape[0]
    if positives is None:
        if M < N:
            raise ValueError(f"keys ({M} rows) must have a row per query ({N}) or give positives")
        positives = torch.arange(N, device=query.device)
    if not isinstance(positives, Tensor) or positives.shape != (N,):
        raise ValueError(f"positives must have shape ({N},)")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= M - 1:
        raise ValueError(
            f"k must be an integer in [1, {M - 1}] (keys minus the positive), got {k!r}"
        )
    optional_int("chunk_size", chunk_size)
    q = F.normalize(query, dim=-1, eps=EPS) if normalize else query
    c = F.normalize(keys, dim=-1, eps=EPS) if normalize else keys
    rows = chunk_size or max(1, (1 << 22) // max(M, 1))
    out = torch.empty(N, k, dtype=torch.long, device=query.device)
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        s = q[r0:r1] @ c.t()
        s[torch.arange(r1 - r0), positives[r0:r1]] = float("-inf")
        out[r0:r1] = s.topk(k, dim=1).indices
    return out


def partial_ranking_distillation(
    query: Tensor,
    keys: Tensor,
    negatives: Tensor,
    teacher_scores: Tensor,
    *,
    temperature=0.07,
    n_valid: Optional[Tensor] = None,
    reduction: str = "mean",
    normalize: bool = True,
) -> Tensor:
    """CPRD of ``query (N, d)`` against ``keys[negatives]`` (``negatives (N, K)`` indices) with
    the teacher's scores ``(N, K)`` of the same pairs; see the module docstring."""
    check_embeddings("query", query)
    check_embeddings("keys", keys)
    check_compatible("query", query, "keys", keys)
    N = query.shape[0]
    check_index("negatives", negatives, keys.shape[0], ndim=2, rows=N, ref=query, what="keys")
    K = negatives.shape[1]
    check_tensor("teacher_scores", teacher_scores, kind="float", shape=(N, K), finite=False)
    if not bool(torch.isfinite(teacher_scores).all()):
        raise ValueError("teacher_scores contain NaN or Inf values")
    if n_valid is None:
        n_valid = torch.full((N,), K, dtype=torch.long, device=query.device)
    if not isinstance(n_valid, Tensor) or n_valid.shape != (N,) or n_valid.is_floating_point():
        raise ValueError(f"n_valid must be an integer tensor of shape ({N},)")
    if bool(((n_valid < 0) | (n_valid > K)).any()):
        raise ValueError(f"n_valid must be in [0, {K}]")
    check_temperature("temperature", temperature, N)
    q = prepare(query, normalize)
    c = prepare(keys, normalize)
    kap = kappa(q, temperature, n_rows=N)
    order = torch.argsort(teacher_scores.detach(), dim=1, descending=True, stable=True)
    ranked = torch.gather(negatives.to(q.device, torch.long), 1, order.to(q.device))
    u = torch.einsum("nd,nkd->nk", q, c[ranked]) * (kap if kap.dim() == 0 else kap[:, None])
    suffix = torch.logcumsumexp(u.flip(1), dim=1).flip(1)  # log sum_{k >= j} exp(u_k)
    steps = torch.arange(K, device=q.device)[None, :] < n_valid.to(q.device)[:, None]
    rows = torch.where(steps, suffix - u, torch.zeros_like(u)).sum(1)
    if reduction == "none":
        return rows
    return rows.sum() * row_weight(reduction, N)


class PartialRankingDistillation(torch.nn.Module):
    """CPRD module: ``forward(query, keys, negatives, teacher_scores, n_valid=None)``.

    :meth:`mine` (= :func:`in_batch_hard_negatives` with this module's ``k``) gives the pairs to
    score with the teacher. Args: ``k`` hard negatives per query (an assumption: 10),
    ``temperature`` (0.07, unconfirmed), ``reduction``, ``normalize``.
    """

    def __init__(
        self, k: int = 10, temperature: float = 0.07, reduction: str = "mean", normalize=True
    ):
        super().__init__()
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        check_temperature("temperature", temperature)
        row_weight(reduction, 1)
        self.k, self.temperature, self.reduction, self.normalize = (
            k,
            temperature,
            reduction,
            normalize,
        )

    def mine(self, query: Tensor, keys: Tensor, positives: Optional[Tensor] = None) -> Tensor:
        return in_batch_hard_negatives(
            query, keys, self.k, positives=positives, normalize=self.normalize
        )

    def forward(self, query, keys, negatives, teacher_scores, n_valid=None) -> Tensor:
        return partial_ranking_distillation(
            query,
            keys,
            negatives,
            teacher_scores,
            temperature=self.temperature,
            n_valid=n_valid,
            reduction=self.reduction,
            normalize=self.normalize,
        )

    def extra_repr(self) -> str:
        return f"k={self.k}, temperature={self.temperature}, reduction={self.reduction!r}"
