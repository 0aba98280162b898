"""ICNN: the negative log of a k-nearest-neighbour class-separability score (Mendez-Ruiz et al.
2023). It needs per-row nearest-neighbour statistics plus batch-global maxima and counts, on
few-shot episodes (tens of points): computed densely, rank-local."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_labels
from ...objective import Objective, prepare, rank_local_objective
from ._common import _episode_dist

__all__ = ["icnn_score", "icnn", "ICNN"]


def icnn_score(
    origin: Tensor,
    labels: Tensor,
    target: Optional[Tensor] = None,
    target_labels: Optional[Tensor] = None,
    *,
    k: int = 4,
    ipc: Optional[int] = None,
) -> Tensor:
    """The ICNN separability score in (0, 1] (official ``modified_score``), differentiable;
    :class:`ICNN` is ``-log`` of it.

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


@rank_local_objective
def icnn(
    origin: Tensor,
    labels: Tensor,
    target: Optional[Tensor] = None,
    target_labels: Optional[Tensor] = None,
    *,
    k: int = 4,
    ipc: Optional[int] = None,
) -> Tensor:
    """ICNN loss ``-log(icnn_score(...))``; see :class:`ICNN` (formerly ``icnn_loss``)."""
    score = _icnn_score(origin, labels, target, target_labels, k, ipc)
    return -torch.log(score).to(origin.dtype)  # the log in fp32 for fp16/bf16 inputs


class ICNN(Objective, functional=icnn):
    """ICNN loss: the negative log of a class-separability score built from each sample's
    nearest neighbours (Intra-Class Nearest Neighbours).

    The score (:func:`~contrastkit.losses.margin.icnn.icnn_score`, in (0, 1], 1 when no
    sample of another class is among any sample's ``ipc`` nearest neighbours) rewards
    neighbourhoods of one's own class that are tight relative to the nearest other-class
    neighbour. It is a batch-level quantity (no per-sample terms, hence no ``reduction``).
    The paper's variants: suppicnn ``(support, support_labels)``; queryicnn ``(queries,
    query_labels, prototypes, arange(way))`` (or the supports as targets); fullicnn
    ``(cat(support, query), labels)`` with ``ipc = shot + query``. With
    ``D_ij = sqrt(||x_i - t_j||^2 + 1e-6)`` over each row's ``ipc`` nearest targets (itself
    excluded), ``sc`` / ``dc`` the same-class / different-class indicators of the first ``k``::

        nd_ij     = (D_ij / min_{j: dc_ij} D_ij) / max(1, max_j of it)
        sc_lambda = 1 - mean_{i: sc_i > 0} [sum_j nd_ij sc_ij / sc_i]
        dc_lambda = | mean_{i: dc_i > 0} [sum_j (D dc)_ij / max(D dc) / dc_i] - 1[no dc at all] |
        gamma     = mean_i sc_i / k
        loss      = -log(((sc_lambda + dc_lambda) / 2 + gamma) / 2)

    (means with the official ``+ 1e-7`` in the denominators; ``k`` is cut to ``m - 2`` when
    ``k + 2 >= m`` targets, and then gamma = 1). fp16/bf16 inputs are computed in fp32.

    Rank-local: the score needs every sample's neighbours and batch-global maxima, so under a
    ``torch.distributed`` process group the call raises a ``ValueError`` unless the caller asks
    for the per-rank loss with ``with contrastkit.distributed.local():``.

    Args:
        k (int): neighbours in the score, default 4 (the official code). An integer >= 1.
        ipc (int or None): neighbours searched per row, default ``None`` (``k + 1``); an
            integer in ``[k, m - 1]``.

    Inputs:
        =================  ==========  ================================================
        input              shape       meaning
        =================  ==========  ================================================
        ``origin``         ``(N, d)``  float embeddings whose neighbourhoods are scored
        ``labels``         ``(N,)``    integer class of each origin row
        ``target``         ``(m, d)``  float neighbours searched (optional, default
                                       ``origin``; m >= 3)
        ``target_labels``  ``(m,)``    integer class of each target (required with
                                       ``target``); same class = positive neighbour
        =================  ==========  ================================================

    Example::

        import torch
        import contrastkit as ck

        x = torch.randn(20, 16)
        labels = torch.arange(4).repeat_interleave(5)
        loss = ck.ICNN(k=4)(x, labels)

    See also:
        :class:`ProtoTriplet` (the same paper's prototype loss), :class:`BatchHardTriplet`.

    References:
        Mendez-Ruiz et al., "SuSana Distancia is all you need: Enforcing class separability in
        metric learning via two novel distance-based loss functions for few-shot image
        classification", arXiv:2305.09062.
    """


#: the names published before the naming rule
icnn_loss = icnn
ICNNLoss = ICNN
