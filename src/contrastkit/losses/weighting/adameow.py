"""AdaMEOW: InfoNCE with adaptive cluster-aware negative weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import (
    check_compatible,
    check_embeddings,
    check_reduction,
    check_temperature,
    check_tensor,
)
from ...objective import Objective, rank_local_objective, reduce

__all__ = ["adameow_info_nce", "AdaMEOWInfoNCE"]


@rank_local_objective
def adameow_info_nce(
    a: Tensor,
    z: Tensor,
    weights: Tensor,
    *,
    temperature=1.0,
    normalize_weights: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """AdaMEOW InfoNCE of ``a``, ``z`` (N, d) with learned ``weights`` (N, N); see
    :class:`AdaMEOWInfoNCE`."""
    check_reduction(reduction)
    check_temperature("temperature", temperature)
    check_embeddings("a", a)
    check_embeddings("z", z)
    check_compatible("a", a, "z", z, same_rows=True)
    N = a.shape[0]
    check_tensor("weights", weights, kind="float", shape=(N, N), ref=a)
    if bool((weights < 0).any()):
        raise ValueError("weights must be >= 0 (their log enters the denominator)")
    if normalize_weights:
        weights = weights / weights.mean(1, keepdim=True)
    u = F.normalize(a, dim=-1) @ F.normalize(z, dim=-1).T / temperature
    rows = torch.logsumexp(u + torch.log(weights), dim=1) - u.diagonal()
    return reduce(rows, reduction, group=None)


class AdaMEOWInfoNCE(Objective, functional=adameow_info_nce):
    """AdaMEOW InfoNCE: InfoNCE whose negatives carry learned, cluster-aware weights, so that
    negatives likely to share the anchor's semantics count less (Yu et al., AdaMEOW).

    With ``u_ij = cos(a_i, z_j) / temperature`` and weights ``w`` (N, N) produced by
    :class:`contrastkit.negatives.AdaMEOWWeights` (the diagonal is weighted too)::

        l_i = -u_ii + log sum_j w_ij exp(u_ij),        loss = mean_i l_i

    Dense autograd rather than the engine: the weights are learned, so their gradient is
    needed. Rank-local: under a process group it raises unless called inside
    ``contrastkit.distributed.local()``.

    Args:
        temperature (float, default 1.0): tau (1.0 on ACM, 0.9 on the other datasets of the
            official code).
        normalize_weights (bool, default False): rescale each row of ``weights`` to mean 1 (a
            guard against weights shrinking to 0; not in the official code).
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-anchor terms (N,)).

    Inputs:
        - ``a`` (N, d) float: anchors (one view of the nodes).
        - ``z`` (N, d) float: the other view; ``z_i`` is the positive of ``a_i``, every other
          row a weighted negative.
        - ``weights`` (N, N) float, >= 0: negative weights (from ``AdaMEOWWeights``).

    Example::

        import torch
        import contrastkit as ck

        a, z = torch.randn(8, 16), torch.randn(8, 16)
        weights = torch.rand(8, 8) + 0.5
        loss = ck.AdaMEOWInfoNCE(temperature=0.9)(a, z, weights)

    See also:
        :class:`CommunityContrast`, :class:`InfoNCE`.

    References:
        Yu, Ge, Li, Zhou, "Heterogeneous Graph Contrastive Learning with Meta-path Contexts and
        Adaptively Weighted Negative Samples" (MEOW / AdaMEOW), IEEE TKDE 2024,
        arXiv:2212.13847.
    """
