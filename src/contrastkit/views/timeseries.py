"""A simple time-series augmentation set: jitter, scaling, segment permutation, time masking.

Jitter, scaling and permutation follow Um et al., "Data Augmentation of Wearable Sensor Data for
Parkinson's Disease Monitoring using Convolutional Neural Networks" (ICMI 2017), as used for
contrastive views by TS-TCC (Eldele et al., IJCAI 2021: weak view = scaling, strong view =
jitter of a segment permutation). Time masking zeroes contiguous spans of time steps (as in
masked-timestamp views, e.g. TS2Vec).

Input ``x`` is ``(B, T)`` or ``(B, C, T)`` (batch first; ``time_dim`` picks the time axis, so
``(B, T, C)`` is ``time_dim=1``). Every function takes an optional seeded ``generator``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._random import check_generator, randint, randn, randperm

__all__ = ["jitter", "scaling", "permute_segments", "time_mask"]


def _check_x(x, time_dim: int) -> int:
    if not isinstance(x, Tensor) or x.dim() not in (2, 3):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a (B, T) or (B, C, T) tensor, got {got}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got dtype {x.dtype}")
    if not isinstance(time_dim, int) or not -x.dim() <= time_dim < x.dim():
        raise ValueError(f"time_dim must index a dimension of x {tuple(x.shape)}, got {time_dim!r}")
    t = time_dim % x.dim()
    if t == 0:
        raise ValueError("time_dim must not be the batch dimension 0")
    return t


def _check_nonneg(name, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    return float(v)


def jitter(x: Tensor, sigma: float = 0.03, *, generator: Optional[torch.Generator] = None):
    """``x + sigma * N(0, 1)``, one draw per element (Um et al.: ``sigma = 0.03``; TS-TCC uses
    dataset-specific ``jitter_ratio`` such as 0.8 on standardised signals)."""
    _check_x(x, -1)
    sigma = _check_nonneg("sigma", sigma)
    check_generator(generator)
    return x + sigma * randn(x.shape, generator, x.device, x.dtype)


def scaling(
    x: Tensor,
    sigma: float = 0.1,
    *,
    time_dim: int = -1,
    generator: Optional[torch.Generator] = None,
):
    """``x * s`` with ``s ~ N(1, sigma^2)`` drawn once per (sample, channel) and constant over
    time (Um et al.: ``sigma = 0.1``)."""
    t = _check_x(x, time_dim)
    sigma = _check_nonneg("sigma", sigma)
    check_generator(generator)
    shape = list(x.shape)
    shape[t] = 1
    return x * (1.0 + sigma * randn(shape, generator, x.device, x.dtype))


def permute_segments(
    x: Tensor,
    max_segments: int = 5,
    *,
    seg_mode: str = "random",
    time_dim: int = -1,
    generator: Optional[torch.Generator] = None,
    return_order: bool = False,
):
    """Cut each series into ``n`` contiguous segments (``n`` uniform in ``[1, max_segments]``)
    and concatenate them in a random order; all channels move together.

    ``seg_mode="random"``: cut points are ``n - 1`` distinct positions in ``[1, T - 1]``;
    ``"equal"``: ``n`` near-equal segments. ``return_order``: also the ``(B, T)`` source time
    index of every output step (a permutation of ``0..T-1`` made of increasing runs).
    """
    t = _check_x(x, time_dim)
    check_generator(generator)
    if isinstance(max_segments, bool) or not isinstance(max_segments, int) or max_segments < 1:
        raise ValueError(f"max_segments must be a positive integer, got {max_segments!r}")
    if seg_mode not in ("random", "equal"):
        raise ValueError(f"seg_mode must be 'random' or 'equal', got {seg_mode!r}")
    B, T = x.shape[0], x.shape[t]
    order = torch.empty(B, T, dtype=torch.long)
    steps = torch.arange(T)
    for b in range(B):
        n = min(int(randint(1, max_segments + 1, (1,), generator)), T)
        if seg_mode == "random":
            cuts = (randperm(T - 1, generator)[: n - 1] + 1).sort().values.tolist()
            segs = torch.tensor_split(steps, cuts)
        else:
            segs = torch.tensor_split(steps, n)
        perm = randperm(len(segs), generator).tolist()
        order[b] = torch.cat([segs[k] for k in perm])
    idx = order.to(x.device)
    xt = x.movedim(t, -1)
    view = idx.reshape(B, *([1] * (xt.dim() - 2)), T).expand_as(xt)
    out = torch.gather(xt, -1, view).movedim(-1, t)
    return (out, order) if return_order else out


def time_mask(
    x: Tensor,
    ratio: float = 0.1,
    *,
    n_spans: int = 1,
    value: float = 0.0,
    time_dim: int = -1,
    generator: Optional[torch.Generator] = None,
    return_mask: bool = False,
):
    """Set ``n_spans`` contiguous spans of ``max(1, round(ratio T))`` time steps (start uniform,
    spans may overlap) to ``value`` in every channel, independently per sample.
    ``return_mask``: also the ``(B, T)`` boolean mask of masked steps."""
    t = _check_x(x, time_dim)
    check_generator(generator)
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    if isinstance(n_spans, bool) or not isinstance(n_spans, int) or n_spans < 0:
        raise ValueError(f"n_spans must be a non-negative integer, got {n_spans!r}")
    B, T = x.shape[0], x.shape[t]
    span = max(1, int(round(float(ratio) * T))) if ratio > 0 else 0
    mask = torch.zeros(B, T, dtype=torch.bool)
    if span and n_spans:
        starts = randint(0, T - span + 1, (B, n_spans), generator)
        pos = torch.arange(T)
        for k in range(n_spans):
            s = starts[:, k : k + 1]
            mask |= (pos[None, :] >= s) & (pos[None, :] < s + span)
    m = mask.to(x.device)
    shape = [B] + [1] * (x.dim() - 1)
    shape[t] = T
    out = torch.where(m.reshape(shape), torch.full_like(x, value), x)
    return (out, mask) if return_mask else out
