"""Margin losses: triplet (standard, batch-hard), Proto-Triplet, ICNN and max-margin contrastive.

None of these is a log-sum-exp over candidates, so none runs on the engine:

* triplet on given triplets and the max-margin losses are O(N d) elementwise terms;
* batch-hard triplet mines each anchor's hardest positive and negative (a max / min over the
  batch) in row blocks without gradient (O(b N) memory), then differentiates the 2N selected
  distances, which is the exact gradient (it flows only to the arg-max / arg-min pairs);
* Proto-Triplet compares queries with ``way`` prototypes (a few columns);
* ICNN needs per-row nearest-neighbour statistics plus batch-global maxima and counts, on
  few-shot episodes (tens of points): computed densely.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (
    check_compatible,
    check_embeddings,
    check_index,
    check_labels,
    check_reduction,
    check_tensor,
    optional_int,
)
from ._common import prepare

__all__ = [
    "triplet_margin",
    "batch_hard_triplet",
    "TripletMargin",
    "proto_triplet",
    "class_prototypes",
    "ProtoTriplet",
    "icnn_score",
    "icnn_loss",
    "ICNNLoss",
    "max_margin_contrastive",
    "MaxMarginContrastive",
    "pair_margin_contrastive",
    "PairMarginContrastive",
]

MINING = (None, "batch_hard")


def _number(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    return float(value)


def _reduce(rows: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return rows.mean() if rows.numel() else rows.sum()
    return rows.sum() if reduction == "sum" else rows


def _hinge(d_pos: Tensor, d_neg: Tensor, margin: float, soft: bool) -> Tensor:
    v = d_pos - d_neg + margin
    return F.softplus(v) if soft else F.relu(v)


def _dist(x: Tensor, y: Tensor, p: float, eps: float, squared: bool) -> Tensor:
    d = F.pairwise_distance(x, y, p=p, eps=eps)
    return d * d if squared else d


# ---------------------------------------------------------------------------------------------
# C28 triplet
# ---------------------------------------------------------------------------------------------
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
    """Triplet loss on given triplets (N, d): ``max(d(a, p) - d(a, n) + margin, 0)``.

    ``d(x, y) = ||x - y + eps||_p`` as ``torch.nn.TripletMarginLoss`` (which it equals with the
    defaults); ``swap`` uses ``min(d(a, n), d(p, n))``; ``squared`` squares the distances
    (FaceNet, with ``normalize=True`` and margin 0.2); ``soft`` replaces the hinge by softplus.
    """
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
    return _reduce(_hinge(d_ap, d_an, margin, soft), reduction)


@torch.no_grad()
def _mine_batch_hard(x: Tensor, labels: Tensor, p: float, block: int):
    """Per anchor: index of the farthest same-label sample (j != i) and of the nearest
    different-label sample, and whether both exist. O(block N) memory."""
    N = x.shape[0]
    hp = torch.empty(N, dtype=torch.long, device=x.device)
    hn = torch.empty_like(hp)
    ok = torch.empty(N, dtype=torch.bool, device=x.device)
    cols = torch.arange(N, device=x.device)
    for r0 in range(0, N, block):
        r1 = min(N, r0 + block)
        D = torch.cdist(x[r0:r1], x, p=p)
        same = labels[r0:r1, None] == labels[None, :]
        self_ = cols[None, :] == torch.arange(r0, r1, device=x.device)[:, None]
        pos = same & ~self_
        hp[r0:r1] = D.masked_fill(~pos, -math.inf).argmax(dim=1)
        hn[r0:r1] = D.masked_fill(same, math.inf).argmin(dim=1)
        ok[r0:r1] = pos.any(dim=1) & (~same).any(dim=1)
    return hp, hn, ok


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
    """Batch-hard triplet loss (Hermans et al. 2017) of ``embeddings`` (N, d) with ``labels``.

    For each anchor, the farthest positive (same label, not itself) and the nearest negative:
    ``max(d+ - d- + margin, 0)`` (``soft``: ``softplus(d+ - d- + margin)``; the paper's soft
    margin is ``margin=0``). Anchors without a positive or a negative are left out (the mean is
    over the others; 0 when there is none); ``reduction="none"`` gives 0 for them. Mining runs in
    row blocks of ``chunk_size`` (default 1024) without gradient.
    """
    check_reduction(reduction)
    optional_int("chunk_size", chunk_size)
    margin = _number("margin", margin)
    p = _number("p", p, strict=True)
    eps = _number("eps", eps)
    check_embeddings("embeddings", embeddings)
    check_labels("labels", labels, embeddings.shape[0], embeddings)
    x = prepare(embeddings, normalize)
    hp, hn, ok = _mine_batch_hard(x, labels, p, chunk_size or 1024)
    idx = ok.nonzero().squeeze(1)
    d_pos = _dist(x[idx], x[hp[idx]], p, eps, squared)
    d_neg = _dist(x[idx], x[hn[idx]], p, eps, squared)
    losses = _hinge(d_pos, d_neg, margin, soft)
    if reduction == "none":
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_put((idx,), losses)
    if reduction == "mean" and idx.numel() == 0:
        return x.sum() * 0.0
    return _reduce(losses, reduction)


class TripletMargin(torch.nn.Module):
    """Triplet margin loss (FaceNet, Schroff et al. CVPR 2015; batch-hard: Hermans et al.,
    "In Defense of the Triplet Loss for Person Re-Identification", arXiv 1703.07737).

    ``mining=None``: ``forward(anchor, positive, negative)``, as ``torch.nn.TripletMarginLoss``.
    ``mining="batch_hard"``: ``forward(embeddings, labels)``, hardest positive and negative per
    anchor.

    Args:
        margin: 1.0 (PyTorch); FaceNet 0.2 (squared, normalised), re-ID 0.3.
        p, eps: the p-norm distance ``||x - y + eps||_p``.
        swap: the distance swap (given triplets only).
        squared, soft, normalize: squared distances, softplus instead of the hinge, L2-normalise.
    """

    def __init__(
        self,
        margin: float = 1.0,
        mining: Optional[str] = None,
        p: float = 2.0,
        eps: float = 1e-6,
        swap: bool = False,
        squared: bool = False,
        soft: bool = False,
        normalize: bool = False,
        reduction: str = "mean",
        chunk_size: Optional[int] = None,
    ):
        super().__init__()
        if mining not in MINING:
            raise ValueError(f"mining must be one of {MINING}, got {mining!r}")
        if swap and mining is not None:
            raise ValueError("swap applies to given triplets only (mining=None)")
        check_reduction(reduction)
        optional_int("chunk_size", chunk_size)
        self.margin, self.p, self.eps = _number("margin", margin), p, eps
        self.mining, self.swap, self.squared, self.soft = mining, swap, squared, soft
        self.normalize, self.reduction, self.chunk_size = normalize, reduction, chunk_size

    def forward(self, *inputs: Tensor) -> Tensor:
        kw = dict(
            margin=self.margin,
            p=self.p,
            eps=self.eps,
            squared=self.squared,
            soft=self.soft,
            normalize=self.normalize,
            reduction=self.reduction,
        )
        if self.mining is None:
            if len(inputs) != 3:
                raise ValueError(f"forward takes (anchor, positive, negative), got {len(inputs)}")
            return triplet_margin(*inputs, swap=self.swap, **kw)
        if len(inputs) != 2:
            raise ValueError(f"batch-hard forward takes (embeddings, labels), got {len(inputs)}")
        return batch_hard_triplet(*inputs, chunk_size=self.chunk_size, **kw)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, p={self.p}"


# ---------------------------------------------------------------------------------------------
# C29 Proto-Triplet, C30 ICNN ("SuSana Distancia is all you need", Mendez-Ruiz et al. 2023)
# ---------------------------------------------------------------------------------------------
def _episode_dist(x: Tensor, y: Tensor) -> Tensor:
    """The official distance ``sqrt(||x - y||^2 + 1e-6)`` for every pair (dense)."""
    return ((x[:, None, :] - y[None, :, :]).pow(2).sum(-1) + 1e-6).sqrt()


def class_prototypes(support: Tensor, labels: Tensor, way: Optional[int] = None) -> Tensor:
    """Class means of ``support`` (n, d) for labels ``0..way-1`` (ProtoNet prototypes)."""
    check_embeddings("support", support)
    check_labels("labels", labels, support.shape[0], support)
    way = int(labels.max()) + 1 if way is None else way
    if int(labels.min()) < 0 or int(labels.max()) >= way:
        raise ValueError(f"labels must lie in 0..{way - 1}, got {labels.min()}..{labels.max()}")
    counts = torch.bincount(labels, minlength=way)
    if bool((counts == 0).any()):
        raise ValueError(f"classes without support samples: {(counts == 0).nonzero().flatten()}")
    sums = support.new_zeros(way, support.shape[1]).index_add(0, labels, support)
    return sums / counts[:, None].to(support.dtype)


def proto_triplet(
    queries: Tensor,
    labels: Tensor,
    prototypes: Tensor,
    prototype_labels: Optional[Tensor] = None,
    *,
    margin: float = 0.5,
    reduction: str = "mean",
) -> Tensor:
    """Proto-Triplet loss: ``max(d(q, p_y) - min_{c != y} d(q, p_c) + margin, 0)`` per query.

    ``d = sqrt(||x - y||^2 + 1e-6)`` (official); ``prototype_labels`` default ``0..way-1``. With
    several prototypes of a class, ``d+`` is the farthest of them (official). way = 1: 0.
    """
    check_reduction(reduction)
    margin = _number("margin", margin)
    check_embeddings("queries", queries)
    check_embeddings("prototypes", prototypes)
    check_compatible("queries", queries, "prototypes", prototypes)
    check_labels("labels", labels, queries.shape[0], queries)
    way = prototypes.shape[0]
    if prototype_labels is None:
        prototype_labels = torch.arange(way, device=prototypes.device)
    check_labels("prototype_labels", prototype_labels, way, prototypes)
    same = labels[:, None] == prototype_labels[None, :]
    missing = ~same.any(dim=1)
    if bool(missing.any()):
        raise ValueError(
            f"labels {labels[missing].unique().tolist()} have no prototype "
            f"(prototype_labels {prototype_labels.tolist()})"
        )
    D = _episode_dist(queries, prototypes)
    d_pos = D.masked_fill(~same, -math.inf).amax(dim=1)
    d_neg = D.masked_fill(same, math.inf).amin(dim=1)
    rows = F.relu(d_pos - d_neg + margin)  # no negative prototype: -inf -> 0
    return _reduce(rows, reduction)


class ProtoTriplet(torch.nn.Module):
    """Proto-Triplet module: ``forward(queries, labels, prototypes, prototype_labels=None)``;
    margin 0.5 as the paper ("SuSana Distancia is all you need", arXiv 2305.09062)."""

    def __init__(self, margin: float = 0.5, reduction: str = "mean"):
        super().__init__()
        check_reduction(reduction)
        self.margin, self.reduction = _number("margin", margin), reduction

    def forward(self, queries, labels, prototypes, prototype_labels=None) -> Tensor:
        return proto_triplet(
            queries,
            labels,
            prototypes,
            prototype_labels,
            margin=self.margin,
            reduction=self.reduction,
        )


def icnn_score(
    origin: Tensor,
    labels: Tensor,
    target: Optional[Tensor] = None,
    target_labels: Optional[Tensor] = None,
    *,
    k: int = 4,
    ipc: Optional[int] = None,
) -> Tensor:
    """The ICNN separability score in (0, 1] (official ``modified_score``), differentiable.

    Each origin row's ``ipc + 1`` nearest targets (``sqrt(||x - t||^2 + 1e-6)``) minus the first
    (taken to be itself, as the official code does even when ``target`` differs); ``k`` is cut
    to ``m - 2`` when ``k + 2 >= m`` (then gamma = 1), ``ipc`` defaults to ``k + 1``::

        nd_ij     = D_ij / nn_dc_i (first k neighbours), / max(1, max_j nd_ij)
        sc_lambda = 1 - mean_{i: sc_i > 0} [sum_j nd_ij sc_ij / sc_i]
        dc_lambda = | mean_{i: dc_i > 0} [sum_j dcnd_ij / dc_i] - 1[no dc anywhere] |,
                    dcnd = (D dc)_{:k} / global max
        gamma     = mean_i sc_i / k,     score = ((sc_lambda + dc_lambda) / 2 + gamma) / 2

    (means with the official ``+ 1e-7`` in the denominators). fp16/bf16 inputs are computed in
    fp32 (the ``1e-6`` and ``1e-7`` guards are below fp16's resolution) and the score is
    returned in the input dtype.
    """
    return _icnn_score(origin, labels, target, target_labels, k, ipc).to(origin.dtype)


def _icnn_score(origin, labels, target, target_labels, k, ipc) -> Tensor:
    """:func:`icnn_score` in the compute dtype (fp32 for fp16/bf16 inputs)."""
    eps = 1e-7
    check_embeddings("origin", origin)
    check_labels("labels", labels, origin.shape[0], origin)
    if target is None:
        target = origin
        target_labels = labels if target_labels is None else target_labels
    check_embeddings("target", target)
    check_compatible("origin", origin, "target", target)
    if target_labels is None:
        raise ValueError("target_labels is required when target is given")
    check_labels("target_labels", target_labels, target.shape[0], target)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    m = target.shape[0]
    if m < 3:
        raise ValueError(f"target needs at least 3 rows for ICNN, got shape {tuple(target.shape)}")
    full_gamma = k + 2 >= m
    k = m - 2 if full_gamma else k
    ipc = k + 1 if ipc is None else ipc
    if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < k or ipc + 1 > m:
        raise ValueError(f"ipc must be an integer in [k={k}, m-1={m - 1}], got {ipc!r}")
    D_all = _episode_dist(prepare(origin, False), prepare(target, False))  # fp32 for fp16/bf16
    dist, index = D_all.topk(ipc + 1, dim=1, largest=False)
    dist, index = dist[:, 1:], index[:, 1:]
    sc = (labels[:, None] == target_labels[index]).to(dist.dtype)
    dc = 1.0 - sc
    inf = torch.tensor(math.inf, dtype=dist.dtype, device=dist.device)
    nn_dc = torch.where(dc > 0, dist, inf).amin(dim=1)
    nd = dist[:, :k] / (nn_dc[:, None] + eps)
    nd = nd / nd.amax(dim=1, keepdim=True).clamp(min=1.0)
    sc_k, dc_k = sc[:, :k], dc[:, :k]
    sc_count, dc_count = sc_k.sum(1), dc_k.sum(1)
    sc_sum = (nd * sc_k).sum(1) / (sc_count + eps)
    sc_lambda = 1 - sc_sum.sum() / ((sc_count > 0).sum() + eps)
    dcnd = dist[:, :k] * dc_k
    dcnd = dcnd / (dcnd.max() + eps)
    dc_op = -1.0 if bool((dc_k == 0).all()) else 0.0
    dc_sum = dcnd.sum(1) / (dc_count + eps)
    dc_lambda = (dc_sum.sum() / ((dc_count > 0).sum() + eps) + dc_op).abs()
    gamma = (sc_count / k).mean() if not full_gamma else dist.new_ones(())
    return ((sc_lambda + dc_lambda) / 2 + gamma) / 2


def icnn_loss(
    origin: Tensor,
    labels: Tensor,
    target: Optional[Tensor] = None,
    target_labels: Optional[Tensor] = None,
    *,
    k: int = 4,
    ipc: Optional[int] = None,
) -> Tensor:
    """ICNN loss ``-log(icnn_score(...))`` (Mendez-Ruiz et al. 2023, arXiv 2305.09062).

    The logarithm is taken in fp32 for fp16/bf16 inputs; the loss has the input dtype.
    """
    score = _icnn_score(origin, labels, target, target_labels, k, ipc)
    return -torch.log(score).to(origin.dtype)


class ICNNLoss(torch.nn.Module):
    """ICNN loss module: ``forward(origin, labels, target=None, target_labels=None)``.

    The paper's variants: suppicnn = ``(support, support_labels)``; queryicnn = ``(queries,
    query_labels, prototypes, arange(way))`` (or the supports); fullicnn = ``(cat(support,
    query), labels)`` with ``ipc = shot + query``. ``k = 4`` as the official code.
    """

    def __init__(self, k: int = 4, ipc: Optional[int] = None):
        super().__init__()
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        optional_int("ipc", ipc)
        self.k, self.ipc = k, ipc

    def forward(self, origin, labels, target=None, target_labels=None) -> Tensor:
        return icnn_loss(origin, labels, target, target_labels, k=self.k, ipc=self.ipc)


# ---------------------------------------------------------------------------------------------
# C31 max-margin contrastive
# ---------------------------------------------------------------------------------------------
def max_margin_contrastive(
    logits: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    margin: float = 1.0,
    alpha: float = 1.0,
    ignore_index: int = -100,
) -> Tensor:
    """Token-level max-margin loss of ExplagraphGen (Saha et al., "Explanation Graph Generation
    via Pre-trained Language Models: An Empirical Study with Contrastive Learning",
    ACL 2022), added to the MLE loss there::

        l = alpha mean_t max(0, margin + nll(positive_t) - nll(negative_t))

    ``logits`` (B, T, V) are the decoder outputs for the positive target ``positive`` (B, T);
    ``negative`` (B, T') holds the negative target's ids. Both are truncated to min(T, T');
    ``ignore_index`` positions (padding) have NLL 0 and still count in the mean (official).
    """
    margin, alpha = _number("margin", margin), _number("alpha", alpha)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}")
    # an empty batch or sequence would average over nothing (NaN): at least one row and step
    if not isinstance(logits, Tensor) or logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a floating tensor (B, T, V), got "
            f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}"
        )
    check_tensor("logits", logits)  # at least one row, finite
    if logits.shape[1] == 0 or logits.shape[2] == 0:
        raise ValueError(f"logits must have T >= 1 steps and V >= 1 classes, got {logits.shape}")
    V = logits.shape[2]
    for name, ids in (("positive", positive), ("negative", negative)):
        check_index(name, ids, V, ndim=2, allow=(ignore_index,), ref=logits, what="vocabulary ids")
        if ids.shape[0] != logits.shape[0]:
            raise ValueError(
                f"{name} has batch size {ids.shape[0]} but logits {tuple(logits.shape)}"
            )
        if ids.shape[1] == 0:
            raise ValueError(f"{name} must have at least one token, got {tuple(ids.shape)}")
    if positive.shape[1] != logits.shape[1]:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be the decoder outputs for positive "
            f"{tuple(positive.shape)} (same length)"
        )
    L, V = min(positive.shape[1], negative.shape[1]), logits.shape[2]
    flat = logits[:, :L].reshape(-1, V)
    pos = F.cross_entropy(
        flat, positive[:, :L].reshape(-1), ignore_index=ignore_index, reduction="none"
    )
    neg = F.cross_entropy(
        flat, negative[:, :L].reshape(-1), ignore_index=ignore_index, reduction="none"
    )
    return alpha * F.relu(margin + pos - neg).mean()


class MaxMarginContrastive(torch.nn.Module):
    """ExplagraphGen's token-level max-margin loss: ``forward(logits, positive, negative)``;
    margin 1, alpha 1 as the official code; ``ignore_index`` = the tokenizer's pad id."""

    def __init__(self, margin: float = 1.0, alpha: float = 1.0, ignore_index: int = -100):
        super().__init__()
        self.margin, self.alpha = _number("margin", margin), _number("alpha", alpha)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return max_margin_contrastive(
            logits,
            positive,
            negative,
            margin=self.margin,
            alpha=self.alpha,
            ignore_index=self.ignore_index,
        )


def pair_margin_contrastive(
    x1: Tensor,
    x2: Tensor,
    dissimilar: Tensor,
    *,
    margin: float = 1.0,
    normalize: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Contrastive pair loss (Hadsell, Chopra, LeCun, CVPR 2006) with ``D = ||x1 - x2||_2``::

    l = (1 - Y) D^2 / 2 + Y max(0, margin - D)^2 / 2,   Y = ``dissimilar`` (N,) in {0, 1}.
    """
    check_reduction(reduction)
    margin = _number("margin", margin)
    check_embeddings("x1", x1)
    check_embeddings("x2", x2)
    check_compatible("x1", x1, "x2", x2, same_rows=True)
    if not isinstance(dissimilar, Tensor) or dissimilar.shape != (x1.shape[0],):
        raise ValueError(f"dissimilar must be a tensor of shape ({x1.shape[0]},)")
    if dissimilar.is_complex():
        raise ValueError(f"dissimilar must hold 0 or 1 values, got dtype {dissimilar.dtype}")
    y = dissimilar.to(x1.dtype)
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("dissimilar must hold 0 (similar) or 1 (dissimilar) values")
    a, b = prepare(x1, normalize), prepare(x2, normalize)
    d2 = (a - b).pow(2).sum(-1)
    pos = d2 > 0
    d = torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), 0 * d2)
    rows = 0.5 * (1 - y) * d2 + 0.5 * y * F.relu(margin - d).pow(2)
    return _reduce(rows, reduction)


class PairMarginContrastive(torch.nn.Module):
    """Hadsell et al.'s contrastive pair loss: ``forward(x1, x2, dissimilar)``, margin 1."""

    def __init__(self, margin: float = 1.0, normalize: bool = False, reduction: str = "mean"):
        super().__init__()
        check_reduction(reduction)
        self.margin, self.normalize, self.reduction = (
            _number("margin", margin),
            normalize,
            reduction,
        )

    def forward(self, x1: Tensor, x2: Tensor, dissimilar: Tensor) -> Tensor:
        return pair_margin_contrastive(
            x1,
            x2,
            dissimilar,
            margin=self.margin,
            normalize=self.normalize,
            reduction=self.reduction,
        )
