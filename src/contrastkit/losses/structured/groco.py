"""GroCo: group ordering constraints with a differentiable sorting network (Shvetsova et al.,
"Learning by Sorting: Self-supervised Learning with Group Ordering Constraints", ICCV 2023,
arXiv 2301.02009; ninatu/learning_by_sorting ``losses/groco.py``, sorting as the ``diffsort``
package, Petersen et al.).

For each anchor view ``a`` of ``V`` views ``(V, B, d)``:

* ``pos (B, V_p)``: cosine of anchor ``i`` with sample ``i`` in the other positive views (the
  first ``n_pos_views``; ``V_p = n_pos_views - 1``, or ``n_pos_views`` for a small-crop anchor),
  positives detached (``stop_grad``);
* ``neg (B, k)``: the ``k = topk_neg`` largest cosines of anchor ``i`` with the other samples of
  the same view (keys detached), self excluded;
* ``x = [sort(neg) ; sort(pos)]`` ascending (``n = k + V_p`` values), sorted softly by an odd-even
  transposition network of ``n`` layers whose comparators mix with the Cauchy CDF
  ``alpha = atan(steepness (b - a)) / pi + 1/2``; ``X[i, r]`` = probability that value ``i`` ends
  at ascending rank ``r``;
* ``P_pos[i] = sum_{r >= k} X[i, r]``, ``P_neg = sum_{r < k} X[i, r]`` (clipped to [0, 1]) vs the
  targets ``1[i >= k]`` and ``1[i < k]``; ``loss_a = (BCE_pos + BCE_neg) / 2`` (means over B n,
  log clamped at -100 as ``torch.nn.BCELoss``).

``loss = mean_a loss_a``. Defaults: topk_neg 10, steepness 1, stop_grad True.

Engine: not used. Each row needs a top-k buffer of its negatives and a small sorting network.
The top-k is found in row blocks without gradient (memory O(b B)) and the selected ``B k``
similarities are recomputed with autograd (sparse backward).

Exactness: rank-local. The top-k negatives are searched among this rank's samples.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_embeddings, check_positive, optional_int
from ...objective import EPS, Objective, rank_local_objective, reduce

__all__ = ["soft_sort_permutation", "groco", "GroCo"]


def soft_sort_permutation(x: Tensor, steepness: float = 1.0) -> tuple[Tensor, Tensor]:
    """Odd-even transposition network with Cauchy comparators on ``x (B, n)``.

    Returns ``(sorted values (B, n), X (B, n, n))`` with ``X[b, i, r]`` the probability that
    input ``i`` ends at ascending position ``r`` (rows and columns of X sum to 1).
    """
    B, n = x.shape
    X = torch.eye(n, dtype=x.dtype, device=x.device).expand(B, n, n)
    for layer in range(n):
        a = torch.arange(layer % 2, n - 1, 2, device=x.device)
        if a.numel() == 0:
            continue
        b = a + 1
        xa, xb = x[:, a], x[:, b]
        alpha = torch.atan(steepness * (xb - xa)) / math.pi + 0.5
        lo = alpha * xa + (1 - alpha) * xb
        hi = (1 - alpha) * xa + alpha * xb
        x = x.index_copy(1, a, lo).index_copy(1, b, hi)
        Xa, Xb = X[:, :, a], X[:, :, b]
        al = alpha[:, None, :]
        X = X.index_copy(2, a, al * Xa + (1 - al) * Xb).index_copy(2, b, (1 - al) * Xa + al * Xb)
    return x, X


def _bce(p: Tensor, t: Tensor) -> Tensor:
    """Per-row mean binary cross-entropy (log clamped at -100 as ``torch.nn.BCELoss``)."""
    bce = t * torch.log(p).clamp(min=-100) + (1 - t) * torch.log1p(-p).clamp(min=-100)
    return -bce.mean(dim=1)


def _topk_neg(z: Tensor, keys: Tensor, k: int, rows: int) -> Tensor:
    """Indices (B, k) of each row's k most similar other rows, found block-wise without grad."""
    B = z.shape[0]
    out = torch.empty(B, k, dtype=torch.long, device=z.device)
    with torch.no_grad():
        for r0 in range(0, B, rows):
            r1 = min(B, r0 + rows)
            s = z[r0:r1] @ keys.t()
            s[torch.arange(r1 - r0), torch.arange(r0, r1)] = float("-inf")
            out[r0:r1] = s.topk(k, dim=1).indices
    return out


@rank_local_objective
def groco(
    views: Union[Tensor, Sequence[Tensor]],
    *,
    n_pos_views: Optional[int] = None,
    topk_neg: int = 10,
    steepness: float = 1.0,
    stop_grad: bool = True,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """GroCo of ``views`` ``(V, B, d)`` (or a list of ``(B, d)``); see :class:`GroCo`."""
    if not isinstance(views, Tensor):
        views = list(views)
        if not views or not all(isinstance(v, Tensor) for v in views):
            raise ValueError("views must be a (V, B, d) tensor or a list of (B, d) tensors")
        for i, v in enumerate(views):
            check_embeddings(f"views[{i}]", v)
            if v.shape != views[0].shape:
                raise ValueError(
                    f"views[{i}] has shape {tuple(v.shape)}, views[0] {tuple(views[0].shape)}"
                )
        views = torch.stack(views)
    check_embeddings("views", views, ndim=3)
    V, B, _ = views.shape
    n_pos = V if n_pos_views is None else n_pos_views
    if not isinstance(n_pos, int) or not 1 <= n_pos <= V:
        raise ValueError(f"n_pos_views must be in [1, {V}], got {n_pos_views!r}")
    if n_pos < 2 and V <= n_pos:
        raise ValueError("GroCo needs at least one positive view per anchor (V >= 2)")
    if not isinstance(topk_neg, int) or isinstance(topk_neg, bool) or topk_neg < 1:
        raise ValueError(f"topk_neg must be a positive integer, got {topk_neg!r}")
    if topk_neg > B - 1:
        raise ValueError(f"topk_neg ({topk_neg}) must be at most the batch size minus 1 ({B - 1})")
    check_positive("steepness", steepness)
    optional_int("chunk_size", chunk_size)
    dt = torch.float32 if views.dtype in (torch.float16, torch.bfloat16) else views.dtype
    Z = views.to(dt)
    Z = F.normalize(Z, dim=-1, eps=EPS) if normalize else Z
    rows = chunk_size or max(1, (1 << 22) // B)
    k = topk_neg
    total = Z.new_zeros(B)  # per-sample terms
    for a in range(V):
        anchor = Z[a]
        pos_views = [p for p in range(n_pos) if p != a]
        if not pos_views:
            raise ValueError(f"anchor view {a} has no positive view (n_pos_views = {n_pos})")
        P = torch.stack([Z[p] for p in pos_views], dim=1)  # (B, Vp, d)
        pos = (anchor[:, None, :] * (P.detach() if stop_grad else P)).sum(-1)
        keys = anchor.detach() if stop_grad else anchor
        idx = _topk_neg(anchor, keys, k, rows)
        neg = (anchor[:, None, :] * keys[idx]).sum(-1)  # descending
        x = torch.cat([neg.flip(1), pos.sort(dim=1).values], dim=1)
        _, X = soft_sort_permutation(x, steepness)
        n = x.shape[1]
        p_neg = X[:, :, :k].sum(2).clamp(0, 1)
        p_pos = X[:, :, k:].sum(2).clamp(0, 1)
        t_pos = (torch.arange(n, device=x.device) >= k).to(x.dtype).expand(B, n)
        total = total + (_bce(p_pos, t_pos) + _bce(p_neg, 1 - t_pos)) / 2
    return reduce(total / V, reduction, group=None)


class GroCo(Objective, functional=groco):
    """GroCo: self-supervised learning by sorting, with group ordering constraints.

    For every anchor, the similarities to its positives (the same sample in the other views)
    and to its ``topk_neg`` hardest negatives (the most similar other samples of the anchor's
    view) are sorted together by a differentiable sorting network. The loss asks that every
    positive ends above every negative: a binary cross-entropy on the probability that each
    value lands in the positive (top) or negative (bottom) group, rather than a softmax over
    all pairs. Rank-local under a process group.

    ::

        x = [sort(neg_topk) ; sort(pos)]             (n = k + V_p cosines of an anchor)
        X = soft_sort_permutation(x, steepness)      (X[i, r] = P(value i lands at rank r))
        P_pos[i] = sum_{r >= k} X[i, r],  P_neg[i] = sum_{r < k} X[i, r]
        l_b = mean_a (BCE(P_pos, 1[i >= k]) + BCE(P_neg, 1[i < k])) / 2   (means over i)
        loss = mean_b l_b

    Args:
        n_pos_views (int or None, default None): the first ``n_pos_views`` views are usable
            as positives (the full crops with multi-crop; None: all views).
        topk_neg (int, default 10): hardest negatives per anchor (at most ``B - 1``).
        steepness (float, default 1.0): steepness of the Cauchy comparators of the network.
        stop_grad (bool, default True): detach the positives and the negative keys (paper).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per sample).
        normalize (bool, default True): L2-normalise the views.
        chunk_size (int or None, default None): row block of the top-k search.

    Inputs:
        - ``views``: ``(V, B, d)`` float (or a list of ``V`` tensors ``(B, d)``); sample ``b``
          in two views is a positive pair, other samples are negatives.

    Example::

        import torch
        import contrastkit as ck

        views = torch.randn(2, 16, 8)      # 2 views of 16 samples
        loss = ck.GroCo(topk_neg=4)(views)

    See also:
        :func:`soft_sort_permutation` (the sorting network), :class:`PartialRankingDistillation`.

    References:
        Shvetsova et al., "Learning by Sorting: Self-supervised Learning with Group Ordering
        Constraints", ICCV 2023, arXiv:2301.02009 (ninatu/learning_by_sorting).
        Petersen et al., "Monotonic Differentiable Sorting Networks", ICLR 2022,
        arXiv:2203.09630.
    """
