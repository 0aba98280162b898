"""The multi-positive part of the dense objectives: per anchor, the log-sum-exp of its
positives (positives summed inside the log) or their mean logit (mean of per-positive terms)."""

from __future__ import annotations

import torch
from torch import Tensor

#: ``multi_positive`` values: positives summed inside the log, or per-positive terms averaged
MULTI_POSITIVE = ("sum", "mean")


def check_multi_positive(value) -> str:
    if value not in MULTI_POSITIVE:
        raise ValueError(f"multi_positive must be one of {MULTI_POSITIVE}, got {value!r}")
    return value


def listed_positive_term(A: Tensor, B: Tensor, k: Tensor, index: Tensor, form: str) -> Tensor:
    """Per anchor ``(N,)``: ``log sum_{j in P(i)} exp(u_ij)`` (``form="sum"``) or
    ``mean_{j in P(i)} u_ij`` (``"mean"``) over positives listed per anchor: ``index``
    ``(N, P)`` columns of ``B``, -1 = padding; O(N P d)."""
    valid = index >= 0
    u = torch.einsum("nd,npd->np", A, B[index.clamp(min=0)])
    u = u * (k if k.dim() == 0 else k[:, None])
    if form == "sum":
        return torch.logsumexp(u.masked_fill(~valid, float("-inf")), dim=1)
    return (u * valid).sum(1) / valid.sum(1).clamp(min=1)
