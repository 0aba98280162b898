"""Helpers the compositional objectives share: the check of per-sample negatives and the
softmax of an anchor over its positive and its own K negatives."""

from __future__ import annotations

import torch
from torch import Tensor

from ..._validation import check_compatible, check_tensor


def check_negatives(name: str, negatives, ref_name: str, ref: Tensor) -> Tensor:
    """``negatives`` (N, K, d): K >= 0 negatives of each of ``ref``'s N rows (``ref`` already
    checked), finite, with ``ref``'s dtype, device and feature dimension."""
    check_tensor(name, negatives, ndim=3, kind="float", min_rows=1)
    check_compatible(ref_name, ref, name, negatives, same_rows=True)
    return negatives


def own_negatives_rows(anchor: Tensor, positive: Tensor, negatives: Tensor, k: Tensor) -> Tensor:
    """``-u_i,pos + log(exp(u_i,pos) + sum_k exp(u_ik))`` per anchor, ``u = k <a, .>``, written
    as ``log(1 + sum_k exp(u_ik - u_i,pos))`` (0 with K = 0). O(N K d): each anchor meets only
    its own K + 1 candidates, so no engine is involved."""
    kr = k if k.dim() == 0 else k[:, None]
    pos = (anchor * positive).sum(-1, keepdim=True)
    neg = torch.einsum("nd,nkd->nk", anchor, negatives)
    gaps = (neg - pos) * kr  # u_ik - u_i,pos
    return torch.logsumexp(torch.cat([torch.zeros_like(pos), gaps], dim=1), dim=1)
