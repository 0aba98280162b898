"""gCooL community contrast: negatives weighted by community similarity."""

from __future__ import annotations

import torch
from torch import Tensor

from ..._validation import (
    check_compatible,
    check_embeddings,
    check_index,
    check_reduction,
    check_temperature,
)
from ...negatives.weighting import (
    community_centroids,
)
from ...objective import Objective, rank_local_objective, reduce, wide

__all__ = ["community_contrast", "CommunityContrast"]


@rank_local_objective
def community_contrast(
    h1: Tensor,
    h2: Tensor,
    assignment1: Tensor,
    assignment2: Tensor,
    n_communities: int,
    *,
    temperature: float = 0.2,
    mode: str = "cosine",
    gamma: float = 2e-5,
    reduction: str = "mean",
) -> Tensor:
    """gCooL's node <-> community cross-contrast of two views ``h1, h2`` (N, d) with community
    assignments (N,); see :class:`CommunityContrast`."""
    check_reduction(reduction)
    if mode not in ("cosine", "rbf"):
        raise ValueError(f"mode must be 'cosine' or 'rbf', got {mode!r}")
    check_temperature("temperature", temperature)
    check_embeddings("h1", h1)
    check_embeddings("h2", h2)
    check_compatible("h1", h1, "h2", h2, same_rows=True)
    for name, a in (("assignment1", assignment1), ("assignment2", assignment2)):
        check_index(name, a, n_communities, shape=(h1.shape[0],), ref=h1, what="communities")

    h1, h2 = wide(h1), wide(h2)  # fp16/bf16 in fp32: logits h . C / tau are not normalised

    def one_side(h, assign_other, C_other):
        if mode == "cosine":
            logit = h @ C_other.T / temperature
            logw = torch.zeros(n_communities, n_communities, dtype=h.dtype, device=h.device)
        else:
            logit = -torch.cdist(h, C_other).pow(2) / temperature**2
            logw = -gamma * torch.cdist(C_other, C_other).pow(2)
        logit_w = logit + logw[assign_other]  # w(c, c') exp(.)
        pos = logit.gather(1, assign_other[:, None]).squeeze(1)
        return torch.logsumexp(logit_w, dim=1) - pos  # w(c, c) = 1 keeps the positive

    C1 = community_centroids(h1, assignment1, n_communities)
    C2 = community_centroids(h2, assignment2, n_communities)
    rows = (one_side(h1, assignment2, C2) + one_side(h2, assignment1, C1)) / 2
    return reduce(rows, reduction, group=None)


class CommunityContrast(Objective, functional=community_contrast):
    """gCooL community contrast: every node of one view is contrasted with the community
    centroids of the other view; its own community is the positive, the other communities the
    negatives, optionally weighted by how far apart the communities are (Li et al., gCooL).

    With ``c = assignment2[i]`` and (detached) centroids ``C_v`` of each view::

        L12_i = -log( e(h1_i, C2[c]) / (e(h1_i, C2[c]) + sum_{c' != c} w(c, c') e(h1_i, C2[c'])) )
        loss  = mean_i (L12_i + L21_i) / 2

    ``mode="cosine"``: ``e = exp(h . C / temperature)``, ``w = 1`` (the official run);
    ``mode="rbf"``: ``e = exp(-||h - C||^2 / temperature^2)``, ``w = exp(-gamma ||C_c -
    C_c'||^2)``. O(N C d), no engine needed. Rank-local (the centroids are batch statistics):
    under a process group it raises unless called inside ``contrastkit.distributed.local()``.

    Args:
        temperature (float, default 0.2): tau.
        mode (str, default "cosine"): "cosine" | "rbf".
        gamma (float, default 2e-5): scale of the community-distance weights in "rbf" mode.
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-node terms (N,)).

    Inputs:
        - ``h1``, ``h2`` (N, d) float: the two views' node embeddings (row ``i`` is node ``i``).
        - ``assignment1``, ``assignment2`` (N,) int64 in ``[0, n_communities)``: communities of
          the nodes in each view; a node's own community in the other view is its positive.
        - ``n_communities`` (int): number of communities.

    Example::

        import torch
        import contrastkit as ck

        h1, h2 = torch.randn(12, 16), torch.randn(12, 16)
        assign = torch.arange(12) % 3
        loss = ck.CommunityContrast(temperature=0.2)(h1, h2, assign, assign, 3)

    See also:
        :class:`TeamUp`, :class:`AdaMEOWInfoNCE`.

    References:
        Li et al., "Graph Communal Contrastive Learning" (gCooL), WWW 2022, arXiv:2110.14863.
    """
