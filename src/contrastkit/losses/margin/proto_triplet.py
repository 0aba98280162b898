"""Proto-Triplet: a triplet margin between each query and the prototypes of a few-shot episode
(Mendez-Ruiz et al. 2023). The queries are compared with ``way`` prototypes (a few columns),
densely; prototypes computed from a rank's batch make it rank-local."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_labels, check_reduction
from ...objective import Objective, rank_local_objective, reduce
from ._common import _episode_dist, _number

__all__ = ["proto_triplet", "class_prototypes", "ProtoTriplet"]


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


@rank_local_objective
def proto_triplet(
    queries: Tensor,
    labels: Tensor,
    prototypes: Tensor,
    prototype_labels: Optional[Tensor] = None,
    *,
    margin: float = 0.5,
    reduction: str = "mean",
) -> Tensor:
    """Proto-Triplet loss of ``queries`` against ``prototypes``; see :class:`ProtoTriplet`."""
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
    return reduce(rows, reduction, group=None)


class ProtoTriplet(Objective, functional=proto_triplet):
    """Proto-Triplet loss: in a few-shot episode, each query must be closer to the prototype of
    its class than to the nearest prototype of another class by at least ``margin``.

    The prototypes are usually the class means of the episode's support set
    (:func:`~contrastkit.losses.margin.class_prototypes`, as ProtoNet); the paper adds this loss
    to the episode's cross-entropy. With the official distance
    ``d(x, y) = sqrt(||x - y||^2 + 1e-6)``, query ``q_i`` of class ``y_i`` and prototypes
    ``p_c`` with labels ``c``::

        d+_i = max_{c: c = y_i} d(q_i, p_c)     (the farthest prototype of its class)
        d-_i = min_{c: c != y_i} d(q_i, p_c)
        l_i  = max(d+_i - d-_i + margin, 0)      (0 when way = 1: no negative prototype)
        loss = mean_i l_i

    Rank-local: prototypes computed from a rank's batch differ between ranks, so under a
    ``torch.distributed`` process group the call raises a ``ValueError`` unless the caller asks
    for the per-rank loss with ``with contrastkit.distributed.local():``.

    Args:
        margin (float): the margin, default 0.5 (the paper). A Python number >= 0.
        reduction (str): ``"mean"`` over queries (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ====================  ==========  ============================================
        input                 shape       meaning
        ====================  ==========  ============================================
        ``queries``           ``(N, d)``  float query embeddings
        ``labels``            ``(N,)``    integer class of each query
        ``prototypes``        ``(C, d)``  float prototypes (same dtype as the queries)
        ``prototype_labels``  ``(C,)``    integer class of each prototype (optional,
                                          default ``0..C-1``); the prototypes with the
                                          query's class are its positives
        ====================  ==========  ============================================

    Example::

        import torch
        import contrastkit as ck
        from contrastkit.losses.margin import class_prototypes

        support, queries = torch.randn(25, 16), torch.randn(15, 16)
        protos = class_prototypes(support, torch.arange(5).repeat_interleave(5))
        loss = ck.ProtoTriplet(margin=0.5)(queries, torch.arange(5).repeat(3), protos)

    See also:
        :class:`ICNN` (the same paper's neighbourhood loss), :class:`TripletMargin`,
        :class:`BatchHardTriplet`.

    References:
        Mendez-Ruiz et al., "SuSana Distancia is all you need: Enforcing class separability in
        metric learning via two novel distance-based loss functions for few-shot image
        classification", arXiv:2305.09062. Prototypes: Snell, Swersky, Zemel, "Prototypical
        Networks for Few-shot Learning", NeurIPS 2017, arXiv:1703.05175.
    """
