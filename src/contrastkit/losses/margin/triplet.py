"""Triplet margin losses: on given triplets (:func:`triplet_margin`) and batch-hard
(:func:`batch_hard_triplet`).

Neither is a log-sum-exp over candidates, so neither runs on the engine:

* triplet on given triplets is O(N d) elementwise terms, one per row (exact under a process
  group: a per-row mean);
* batch-hard triplet mines each anchor's hardest positive and negative (a max / min over the
  batch) in row blocks without gradient (O(b N) memory), then differentiates the 2N selected
  distances, which is the exact gradient (it flows only to the arg-max / arg-min pairs). Under
  a process group the candidates are every rank's rows (gathered), so it is exact too.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..._validation import (
    check_compatible,
    check_embeddings,
    check_labels,
    check_reduction,
    optional_int,
)
from ...objective import (
    Objective,
    exact_objective,
    gather_rows,
    objective_group,
    prepare,
    reduce,
    row_offset,
)
from ._common import _dist, _hinge, _number

__all__ = ["triplet_margin", "TripletMargin", "batch_hard_triplet", "BatchHardTriplet"]


@exact_objective
def triplet_margin(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    margin: float = 1.0,
    p: float = 2.0,
    eps: float = 1e-6,
    swap: bool = False,
    squared: bool = False,
    soft: bool = False,
    normalize: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Triplet margin loss on given triplets ``(anchor, positive, negative)``; see
    :class:`TripletMargin`."""
    group = objective_group()
    check_reduction(reduction)
    margin = _number("margin", margin)
    p = _number("p", p, strict=True)
    eps = _number("eps", eps)
    for name, x in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        check_embeddings(name, x)
        check_compatible("anchor", anchor, name, x, same_rows=True)
    a, pp, n = (prepare(x, normalize) for x in (anchor, positive, negative))
    d_ap = _dist(a, pp, p, eps, squared)
    d_an = _dist(a, n, p, eps, squared)
    if swap:
        d_an = torch.minimum(d_an, _dist(pp, n, p, eps, squared))
    return reduce(_hinge(d_ap, d_an, margin, soft), reduction, group=group)


class TripletMargin(Objective, functional=triplet_margin):
    """Triplet margin loss on given triplets: each anchor must be closer to its positive than
    to its negative by at least ``margin``.

    The triplets are given (mined beforehand, e.g. with :mod:`contrastkit.mining`); for labelled
    batches that mine their own hardest triplets use :class:`BatchHardTriplet`. With the
    defaults it equals ``torch.nn.TripletMarginLoss``. With ``d(x, y) = ||x - y + eps||_p``
    (squared when ``squared=True``) and rows ``a_i``, ``p_i``, ``n_i``::

        d+_i = d(a_i, p_i)
        d-_i = d(a_i, n_i)                        (swap: min(d(a_i, n_i), d(p_i, n_i)))
        l_i  = max(d+_i - d-_i + margin, 0)       (soft: softplus(d+_i - d-_i + margin))
        loss = mean_i l_i

    Exact under a ``torch.distributed`` process group (the mean over the global batch of
    triplets).

    Args:
        margin (float): the margin, default 1.0 (PyTorch); FaceNet uses 0.2 with
            ``squared=True, normalize=True``. A Python number >= 0 (not a temperature).
        p (float): the norm of the distance, default 2 (Euclidean); > 0.
        eps (float): added to the difference before the norm, default 1e-6 (as PyTorch).
        swap (bool): the distance swap of Balntas et al. (BMVC 2016): the negative distance is
            the smaller of anchor-negative and positive-negative. Default ``False``.
        squared (bool): square the distances (FaceNet). Default ``False``.
        soft (bool): softplus instead of the hinge. Default ``False``.
        normalize (bool): L2-normalise the embeddings first. Default ``False`` (as PyTorch).
        reduction (str): ``"mean"`` over triplets (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ============  ==========  =========================================
        input         shape       meaning
        ============  ==========  =========================================
        ``anchor``    ``(N, d)``  float embeddings of the anchors
        ``positive``  ``(N, d)``  row ``i`` is the positive of anchor ``i``
        ``negative``  ``(N, d)``  row ``i`` is the negative of anchor ``i``
        ============  ==========  =========================================

    Example::

        import torch
        import contrastkit as ck

        anchor, positive, negative = torch.randn(3, 16, 8).unbind(0)
        loss = ck.TripletMargin(margin=1.0)(anchor, positive, negative)

    See also:
        :class:`BatchHardTriplet` (mines the triplets in a labelled batch),
        :class:`PairMarginContrastive` (pairs instead of triplets), :class:`ProtoTriplet`
        (triplets against class prototypes), ``torch.nn.TripletMarginLoss``.

    References:
        Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition and
        Clustering", CVPR 2015, arXiv:1503.03832. The distance swap: Balntas, Riba, Ponsa,
        Mikolajczyk, "Learning local feature descriptors with triplets and shallow
        convolutional neural networks", BMVC 2016.
    """


@torch.no_grad()
def _mine_batch_hard(
    x: Tensor, labels: Tensor, X: Tensor, Y: Tensor, offset: int, p: float, block: int
):
    """Per anchor ``x[i]`` (global row ``offset + i`` of the candidates ``X`` with labels ``Y``):
    index in ``X`` of the farthest same-label sample (not itself) and of the nearest
    different-label sample, and whether both exist. O(block M) memory for M candidates."""
    N = x.shape[0]
    hp = torch.empty(N, dtype=torch.long, device=x.device)
    hn = torch.empty_like(hp)
    ok = torch.empty(N, dtype=torch.bool, device=x.device)
    cols = torch.arange(X.shape[0], device=x.device)
    for r0 in range(0, N, block):
        r1 = min(N, r0 + block)
        D = torch.cdist(x[r0:r1], X, p=p)
        same = labels[r0:r1, None] == Y[None, :]
        self_ = cols[None, :] == offset + torch.arange(r0, r1, device=x.device)[:, None]
        pos = same & ~self_
        hp[r0:r1] = D.masked_fill(~pos, -math.inf).argmax(dim=1)
        hn[r0:r1] = D.masked_fill(same, math.inf).argmin(dim=1)
        ok[r0:r1] = pos.any(dim=1) & (~same).any(dim=1)
    return hp, hn, ok


@exact_objective
def batch_hard_triplet(
    embeddings: Tensor,
    labels: Tensor,
    *,
    margin: float = 1.0,
    p: float = 2.0,
    eps: float = 1e-6,
    squared: bool = False,
    soft: bool = False,
    normalize: bool = False,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Batch-hard triplet loss of labelled ``embeddings``; see :class:`BatchHardTriplet`."""
    group = objective_group()
    check_reduction(reduction)
    optional_int("chunk_size", chunk_size)
    margin = _number("margin", margin)
    p = _number("p", p, strict=True)
    eps = _number("eps", eps)
    check_embeddings("embeddings", embeddings)
    check_labels("labels", labels, embeddings.shape[0], embeddings)
    x = prepare(embeddings, normalize)
    # the candidates: every rank's rows (gradients flow back to their rank), this rank's anchors
    X = gather_rows(x, "embeddings", group=group)
    Y = gather_rows(labels, "labels", group=group)
    offset = row_offset(x.shape[0], group=group)
    hp, hn, ok = _mine_batch_hard(x, labels, X, Y, offset, p, chunk_size or 1024)
    idx = ok.nonzero().squeeze(1)
    d_pos = _dist(x[idx], X[hp[idx]], p, eps, squared)
    d_neg = _dist(x[idx], X[hn[idx]], p, eps, squared)
    losses = _hinge(d_pos, d_neg, margin, soft)
    rows = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_put((idx,), losses)
    return reduce(rows, reduction, count=idx.numel(), group=group)


class BatchHardTriplet(Objective, functional=batch_hard_triplet):
    """Batch-hard triplet loss: every sample of a labelled batch is an anchor, paired with its
    hardest positive (the farthest sample of its class) and its hardest negative (the nearest
    sample of another class).

    For P x K batches (P classes, K samples each) in re-identification and retrieval. The
    search runs in row blocks of ``chunk_size`` without gradient (O(chunk_size x N) memory,
    never the N x N matrix); the loss then differentiates the selected distances, which is the
    exact gradient. With ``d(x, y) = ||x - y + eps||_p`` (squared when ``squared=True``)::

        d+_i = max_{j != i, y_j = y_i} d(x_i, x_j)
        d-_i = min_{j: y_j != y_i} d(x_i, x_j)
        l_i  = max(d+_i - d-_i + margin, 0)        (soft: softplus(d+_i - d-_i + margin))
        loss = mean over the anchors that have a positive and a negative (0 if none)

    Anchors without a positive or without a negative are left out of the mean; with
    ``reduction="none"`` their term is 0. With ``normalize=True, eps=0`` it equals
    pytorch-metric-learning's ``TripletMarginLoss`` + ``BatchHardMiner`` with a
    ``MeanReducer``.

    Exact under a ``torch.distributed`` process group: every rank's embeddings and labels are
    gathered (O(N d) communication), each rank's anchors are mined against the global batch and
    the mean is over the global count of anchors, so the loss and the gradients are those of
    one process on the global batch (every rank must pass the same batch size). Use
    ``with contrastkit.distributed.local():`` to mine within each rank's batch instead.

    Args:
        margin (float): the margin, default 1.0; 0.3 is usual in re-identification, and
            ``soft=True, margin=0`` is Hermans et al.'s soft margin. A Python number >= 0.
        p (float): the norm of the distance, default 2 (Euclidean); > 0.
        eps (float): added to the difference before the norm, default 1e-6 (as PyTorch).
        squared (bool): square the distances. Default ``False``.
        soft (bool): softplus instead of the hinge. Default ``False``.
        normalize (bool): L2-normalise the embeddings first. Default ``False``.
        reduction (str): ``"mean"`` over the anchors with a positive and a negative (default),
            ``"sum"`` or ``"none"`` (``(N,)``, 0 for the anchors left out).
        chunk_size (int or None): rows per block of the search, default ``None`` (1024).

    Inputs:
        ==============  ==========  ==========================================
        input           shape       meaning
        ==============  ==========  ==========================================
        ``embeddings``  ``(N, d)``  float embeddings
        ``labels``      ``(N,)``    integer class ids; same id = positive pair
        ==============  ==========  ==========================================

    Example::

        import torch
        import contrastkit as ck

        embeddings = torch.randn(32, 8)
        labels = torch.arange(8).repeat_interleave(4)  # P = 8 classes x K = 4 samples
        loss = ck.BatchHardTriplet(margin=0.3)(embeddings, labels)

    See also:
        :class:`TripletMargin` (given triplets), :mod:`contrastkit.mining` (mining triplets
        from a corpus), :class:`ProtoTriplet`.

    References:
        Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
        arXiv:1703.07737. Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015,
        arXiv:1503.03832.
    """
