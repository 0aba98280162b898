"""Helpers the margin objectives share: number checks, the hinge and the distances."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def _number(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    return float(value)


def _hinge(d_pos: Tensor, d_neg: Tensor, margin: float, soft: bool) -> Tensor:
    v = d_pos - d_neg + margin
    return F.softplus(v) if soft else F.relu(v)


def _dist(x: Tensor, y: Tensor, p: float, eps: float, squared: bool) -> Tensor:
    d = F.pairwise_distance(x, y, p=p, eps=eps)
    return d * d if squared else d


def _episode_dist(x: Tensor, y: Tensor) -> Tensor:
    """The official distance ``sqrt(||x - y||^2 + 1e-6)`` of Proto-Triplet and ICNN for every
    pair (dense: episodes have tens of points)."""
    return ((x[:, None, :] - y[None, :, :]).pow(2).sum(-1) + 1e-6).sqrt()
