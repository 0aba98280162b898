"""DCL and DCLW: Decoupled Contrastive Learning (Yeh et al., ECCV 2022, arXiv 2110.06848).

DCL removes the positive from the denominator::

    l_i = -u_i,partner(i) + log sum_{j != i, partner(i)} exp(u_ij)      (2N anchors, mean)

DCLW weights the positive term by the von Mises-Fisher weight of its pair::

    w_i = 2 - N softmax_k(<z1_k, z2_k> / sigma)_i,   l_i = -w_i u_i,partner(i) + LSE_neg

The weight is detached by default (as lightly); ``detach_weights=False`` keeps its gradient (as
raminnakhli/Decoupled-Contrastive-Learning). The loss can be negative; N >= 2 is required.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..engine import LSETerm, PairMask, RowSpec
from ._common import (
    FunctionalLoss,
    engine_args,
    exact_objective,
    gather_rows,
    kappa,
    partner_logits,
    row_offset,
    row_weight,
    run,
    two_views,
)

__all__ = ["dcl", "dclw", "DCL", "DCLW", "negatives_only"]


def negatives_only(partner: Tensor) -> tuple:
    """The LSE term over negatives of stacked views: self and partner excluded."""
    return (LSETerm(exclude=PairMask(self_offset=0, index=partner)),)


def _decoupled(z1, z2, temperature, weights_fn, reduction, normalize, chunk_size, backend):
    eng = engine_args(chunk_size, backend)
    # fp16/bf16 kept for the kernels without weights (DCL); DCLW's weights need fp32 embeddings
    Z, partner = two_views(z1, z2, normalize, min_rows=2, eng=eng if weights_fn is None else None)
    k = kappa(Z, temperature)
    pos = partner_logits(Z, k)
    side = {"pos": pos if weights_fn is None else pos * weights_fn(Z)}
    w = row_weight(reduction, Z.shape[0])
    spec = RowSpec(
        terms=negatives_only(partner),
        row_fn=lambda st, sd: w * (st["lse"][0] - sd["pos"]),
        row_side=side,
    )
    return run(Z, Z, spec, k, reduction, eng)


@exact_objective
def dcl(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature=0.1,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """DCL of two views (N, d), N >= 2; see :class:`DCL`."""
    return _decoupled(z1, z2, temperature, None, reduction, normalize, chunk_size, backend)


def vmf_weights(Z: Tensor, sigma: float, detach: bool = True) -> Tensor:
    """DCLW weights ``2 - N softmax(<z1_k, z2_k> / sigma)`` for stacked views, repeated twice."""
    N = Z.shape[0] // 2
    s = (Z[:N] * Z[N:]).sum(-1)
    if detach:
        s = s.detach()
    # under a process group the softmax runs over the global batch (identity locally)
    s_all, off = gather_rows(s, "DCLW pair similarities"), row_offset(N)
    w = (2.0 - s_all.shape[0] * torch.softmax(s_all / sigma, dim=0))[off : off + N]
    return torch.cat([w, w])


@exact_objective
def dclw(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature=0.1,
    sigma: float = 0.5,
    detach_weights: bool = True,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """DCLW of two views (N, d), N >= 2; see :class:`DCLW`."""
    if not isinstance(sigma, (int, float)) or sigma <= 0:
        raise ValueError(f"sigma must be a number > 0, got {sigma!r}")
    return _decoupled(
        z1,
        z2,
        temperature,
        lambda Z: vmf_weights(Z, sigma, detach_weights),
        reduction,
        normalize,
        chunk_size,
        backend,
    )


class DCL(FunctionalLoss):
    """DCL module: ``forward(z1, z2)``; temperature 0.1 as the paper."""

    def __init__(
        self,
        temperature: float = 0.1,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            dcl,
            temperature=temperature,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )


class DCLW(FunctionalLoss):
    """DCLW module: ``forward(z1, z2)``; temperature 0.1, sigma 0.5 as the paper."""

    def __init__(
        self,
        temperature: float = 0.1,
        sigma: float = 0.5,
        detach_weights: bool = True,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        if not isinstance(sigma, (int, float)) or sigma <= 0:
            raise ValueError(f"sigma must be a number > 0, got {sigma!r}")
        super().__init__(
            dclw,
            temperature=temperature,
            sigma=sigma,
            detach_weights=detach_weights,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )
