"""DCL and DCLW: Decoupled Contrastive Learning (Yeh et al., ECCV 2022, arXiv 2110.06848).

DCL removes the positive from the denominator::

    l_i = -u_i,partner(i) + log sum_{j != i, partner(i)} exp(u_ij)      (2N anchors, mean)

DCLW weights the positive term by the von Mises-Fisher weight of its pair::

    w_i = 2 - N softmax_k(<z1_k, z2_k> / sigma)_i,   l_i = -w_i u_i,partner(i) + LSE_neg

The weight is detached by default (as lightly); ``detach_weights=False`` keeps its gradient (as
raminnakhli/Decoupled-Contrastive-Learning). The loss can be negative; N >= 2 is required.
"""

from __future__ import annotations

from typing import Optional, cast

import torch
from torch import Tensor

from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    gather_rows,
    kappa,
    objective_group,
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


def _decoupled(z1, z2, temperature, weights_fn, reduction, normalize, chunk_size, backend, group):
    eng = engine_args(chunk_size, backend)
    # fp16/bf16 kept for the kernels without weights (DCL); DCLW's weights need fp32 embeddings
    Z, partner = two_views(z1, z2, normalize, min_rows=2, eng=eng if weights_fn is None else None)
    k = kappa(Z, temperature, group=group)
    pos = partner_logits(Z, k)
    side = {"pos": pos if weights_fn is None else pos * weights_fn(Z)}
    w = row_weight(reduction, Z.shape[0], group=group)
    spec = RowSpec(
        terms=negatives_only(partner),
        row_fn=lambda st, sd: w * (cast(Tensor, st.lse)[0] - sd["pos"]),
        row_side=side,
    )
    return run(Z, Z, spec, k, reduction, eng, group=group)


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
    group = objective_group()
    return _decoupled(z1, z2, temperature, None, reduction, normalize, chunk_size, backend, group)


def vmf_weights(Z: Tensor, sigma: float, detach: bool = True, group=None) -> Tensor:
    """DCLW weights ``2 - N softmax(<z1_k, z2_k> / sigma)`` for stacked views, repeated twice
    (the softmax over every rank of ``group``)."""
    N = Z.shape[0] // 2
    s = (Z[:N] * Z[N:]).sum(-1)
    if detach:
        s = s.detach()
    # under a process group the softmax runs over the global batch (identity locally)
    s_all, off = gather_rows(s, "DCLW pair similarities", group=group), row_offset(N, group=group)
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
    group = objective_group()
    if not isinstance(sigma, (int, float)) or sigma <= 0:
        raise ValueError(f"sigma must be a number > 0, got {sigma!r}")
    return _decoupled(
        z1,
        z2,
        temperature,
        lambda Z: vmf_weights(Z, sigma, detach_weights, group=group),
        reduction,
        normalize,
        chunk_size,
        backend,
        group,
    )


class DCL(Objective, functional=dcl):
    """DCL, decoupled contrastive learning: NT-Xent with the positive removed from the
    denominator, which removes the negative-positive coupling that makes NT-Xent need large
    batches.

    Two views of N samples are stacked into 2N anchors; each anchor's positive is the other
    view of its sample, every other view is a negative. The loss can be negative. Exact under
    a process group.

    Formula::

        Z = cat(z1, z2) (2N, d),  u_ij = <z_i, z_j> / tau,  p(i) = (i + N) mod 2N
        l_i  = -u_i,p(i) + log sum_{j != i, p(i)} exp(u_ij)
        loss = mean_i l_i

    Args:
        temperature (float | Tensor, default 0.1): tau, as the paper. A 0-dim tensor may be
            learnable.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (2N rows, view-major).
        normalize (bool, default True): L2-normalise the views.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``z1``: (N, d) float, N >= 2; the first view of each sample.
        - ``z2``: (N, d) float; row ``i`` is the positive of ``z1[i]``.
        - returns a scalar, or (2N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        loss = ck.DCL(temperature=0.1)(z1, z2)

    See also:
        :class:`DCLW` (von Mises-Fisher weighted positives), :class:`NTXent`.

    References:
        Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848.
    """


class DCLW(Objective, functional=dclw):
    """DCLW, weighted decoupled contrastive learning: :class:`DCL` with each positive term
    weighted by the von Mises-Fisher weight of its pair, so that pairs that are already close
    count less.

    The weight is a softmax over the batch's pair similarities; it is detached by default (as
    lightly); ``detach_weights=False`` keeps its gradient (as the authors' reimplementation
    raminnakhli/Decoupled-Contrastive-Learning). Exact under a process group (the softmax runs
    over the global batch).

    Formula::

        w_k  = 2 - N softmax_k(<z1_k, z2_k> / sigma)      (one weight per pair, both views)
        l_i  = -w_i u_i,p(i) + log sum_{j != i, p(i)} exp(u_ij),   u = <z_i, z_j> / tau
        loss = mean_i l_i

    Args:
        temperature (float | Tensor, default 0.1): tau, as the paper.
        sigma (float, default 0.5): the vMF concentration of the weights (> 0), as the paper.
        detach_weights (bool, default True): no gradient through the weights.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (2N rows, view-major).
        normalize (bool, default True): L2-normalise the views.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``z1``: (N, d) float, N >= 2; the first view of each sample.
        - ``z2``: (N, d) float; row ``i`` is the positive of ``z1[i]``.
        - returns a scalar, or (2N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        loss = ck.DCLW(temperature=0.1, sigma=0.5)(z1, z2)

    See also:
        :class:`DCL`, :class:`NTXent`.

    References:
        Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848.
    """
