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

Exactness: rank-local. The hard negatives are mined among this rank's keys.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import (
    check_compatible,
    check_embeddings,
    check_index,
    check_temperature,
    check_tensor,
    optional_int,
)
from ...objective import EPS, Objective, kappa, prepare, rank_local_objective, reduce

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


@rank_local_objective
def partial_ranking_distillation(
    query: Tensor,
    keys: Tensor,
    negatives: Tensor,
    teacher_scores: Tensor,
    n_valid: Optional[Tensor] = None,
    *,
    temperature=0.07,
    reduction: str = "mean",
    normalize: bool = True,
) -> Tensor:
    """CPRD of ``query`` against ``keys[negatives]`` ordered by ``teacher_scores``; see
    :class:`PartialRankingDistillation`."""
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
    kap = kappa(q, temperature, n_rows=N, group=None)
    order = torch.argsort(teacher_scores.detach(), dim=1, descending=True, stable=True)
    ranked = torch.gather(negatives.to(q.device, torch.long), 1, order.to(q.device))
    u = torch.einsum("nd,nkd->nk", q, c[ranked]) * (kap if kap.dim() == 0 else kap[:, None])
    suffix = torch.logcumsumexp(u.flip(1), dim=1).flip(1)  # log sum_{k >= j} exp(u_k)
    steps = torch.arange(K, device=q.device)[None, :] < n_valid.to(q.device)[:, None]
    rows = torch.where(steps, suffix - u, torch.zeros_like(u)).sum(1)
    return reduce(rows, reduction, group=None)


class PartialRankingDistillation(Objective, functional=partial_ranking_distillation):
    """CPRD: contrastive partial ranking distillation from a cross-encoder teacher.

    A dual-encoder student mines each query's top-``K`` hard negatives with its own similarity
    (:meth:`mine`, i.e. :func:`in_batch_hard_negatives`); a cross-encoder teacher scores those
    pairs. Only the teacher's *relative order* among the hard negatives is distilled, as a
    Plackett-Luce likelihood written as contrastive steps: each ranked negative is the positive
    against all lower-ranked ones. The text-to-image term is the same call with the roles
    swapped; the total is added to the dual encoder's contrastive loss. The paper's code is not
    public: the valid prefix ``n_valid`` and the temperature are left to the caller.
    Rank-local under a process group.

    ::

        c_1 > ... > c_K : the hard negatives in the teacher's order
        u_ik = cos(q_i, keys[c_k]) / T
        l_i = sum_{j < J_i} [ -u_i,c_j + log sum_{k = j..K} exp(u_i,c_k) ]   (J_i = n_valid_i)

    Args:
        temperature (float or tensor, default 0.07): ``T`` (an assumption of this port).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per query).
        normalize (bool, default True): L2-normalise queries and keys.

    Inputs:
        - ``query``: ``(N, d)`` float student embeddings.
        - ``keys``: ``(M, d)`` float student embeddings of the other side.
        - ``negatives``: ``(N, K)`` int64 indices into ``keys`` (the mined hard negatives).
        - ``teacher_scores``: ``(N, K)`` float teacher scores of the same pairs (higher first).
        - ``n_valid`` (optional): ``(N,)`` int64 number of ranking steps per row (default ``K``).

    Example::

        import torch
        import contrastkit as ck

        img, txt = torch.randn(8, 16), torch.randn(8, 16)
        cprd = ck.PartialRankingDistillation(temperature=0.07)
        neg = cprd.mine(img, txt, 3)                   # (8, 3) hard negative texts
        teacher = torch.randn(8, 3)                    # the cross encoder's scores of those pairs
        loss = cprd(img, txt, neg, teacher)

    See also:
        :func:`in_batch_hard_negatives`, :class:`GroCo` (ranking of positives vs negatives).

    References:
        Chen et al., "How to Make Cross Encoder a Good Teacher for Efficient Image-Text
        Retrieval?", CVPR 2024, arXiv:2407.07479.
    """

    normalize: bool  # option, set by Objective.__init__

    def mine(
        self, query: Tensor, keys: Tensor, k: int = 10, positives: Optional[Tensor] = None
    ) -> Tensor:
        """The ``(N, k)`` hard negatives of each query to score with the teacher
        (:func:`in_batch_hard_negatives` with this module's ``normalize``; ``k`` = 10 by
        default, an assumption of this port)."""
        return in_batch_hard_negatives(
            query, keys, k, positives=positives, normalize=self.normalize
        )
