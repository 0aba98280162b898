"""Multi-view contrastive losses for any number of views V >= 2: MV-InfoNCE and MV-DHEL.

"A Principled Framework for Multi-View Contrastive Learning" (Koromilas et al.,
2025); official code pakoromilas/Multi-View-CL, ``models/losses.py`` (MVINFONCE, MVDHEL).
With ``z^a_i`` view ``a`` of sample ``i`` (normalised) and ``u = <., .> / tau``:

MV-InfoNCE (all V N - 1 other vectors are candidates of every view; the V rows of a sample are
pooled *before* the log, so V = 2 is not NT-Xent)::

    l_i = -log sum_{a != b} exp(u(z^a_i, z^b_i))
          + log sum_a sum_{(b, j) != (a, i)} exp(u(z^a_i, z^b_j))

MV-DHEL (intra-view negatives only, positive not in the denominator)::

    l_i = -log sum_{a < b} exp(u(z^a_i, z^b_i)) + sum_a log sum_{j != i} exp(u(z^a_i, z^a_j))

Both are means over the N samples. Views are given as a tensor ``(V, N, d)``, a sequence of V
tensors ``(N, d)``, or the official layout ``(V N, d)`` view-major with ``n_views=V``.

Engine: MV-DHEL is V row-wise sweeps (one per view, single-sweep gradients). MV-InfoNCE needs
each row's full log-sum-exp before the V rows of a sample are combined, so its sweep returns the
``V N`` row log-sum-exps (two-sweep path, O(V N) memory) and the grouping runs in autograd.
Everything is computed in log space (the official product of V sums overflows for many views).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .._validation import check_compatible, check_embeddings, check_reduction
from ..engine import LSETerm, PairMask, RowSpec
from ._common import FunctionalLoss, engine_args, kappa, local_contrast, prepare

__all__ = ["mv_info_nce", "mv_dhel", "MVInfoNCE", "MVDHEL", "stack_views"]

Views = Union[Tensor, Sequence[Tensor]]


def stack_views(views: Views, n_views: Optional[int] = None, min_rows: int = 1):
    """Validate views and return ``(Z (V, N, d) unnormalised, V, N)``."""
    if isinstance(views, Tensor):
        check_embeddings("views", views, ndim=(2, 3))
        if views.dim() == 2:
            if not isinstance(n_views, int) or isinstance(n_views, bool) or n_views < 1:
                raise ValueError(
                    "a 2-D views tensor (V*N, d) needs n_views=V (a positive integer), "
                    f"got n_views={n_views!r} for shape {tuple(views.shape)}"
                )
            if views.shape[0] % n_views:
                raise ValueError(
                    f"views has {views.shape[0]} rows, not a multiple of n_views={n_views} "
                    f"(shape {tuple(views.shape)})"
                )
            Z = views.reshape(n_views, views.shape[0] // n_views, views.shape[1])
        else:
            if n_views is not None and n_views != views.shape[0]:
                raise ValueError(
                    f"n_views={n_views} but views has shape {tuple(views.shape)} (V, N, d)"
                )
            Z = views
    elif isinstance(views, (list, tuple)):
        if n_views is not None and n_views != len(views):
            raise ValueError(f"n_views={n_views} but {len(views)} views were given")
        for a, v in enumerate(views):
            check_embeddings(f"views[{a}]", v)
            if a:
                check_compatible("views[0]", views[0], f"views[{a}]", v, same_rows=True)
        if not views:
            raise ValueError("views is an empty sequence; give at least 2 views")
        Z = torch.stack(list(views))
    else:
        raise ValueError(
            f"views must be a tensor (V, N, d) / (V*N, d) or a sequence of (N, d) tensors, "
            f"got {type(views).__name__}"
        )
    V, N = Z.shape[0], Z.shape[1]
    if V < 2:
        raise ValueError(f"need at least 2 views for positives, got V={V} (shape {tuple(Z.shape)})")
    if N < min_rows:
        raise ValueError(
            f"need at least {min_rows} samples per view, got N={N} (shape {tuple(Z.shape)})"
        )
    if Z.shape[-1] == 0:
        raise ValueError(f"views has an empty feature dimension, shape {tuple(Z.shape)}")
    return Z, V, N


def _scalar_kappa(Z: Tensor, temperature) -> Tensor:
    k = kappa(Z, temperature)
    if k.dim() != 0:
        raise ValueError(
            f"temperature must be a scalar here, got shape {tuple(k.shape)} (per-anchor "
            "temperatures are not defined for multi-view losses)"
        )
    return k


def positive_lse(Z: Tensor, k: Tensor, ordered: bool) -> Tensor:
    """``log sum exp(u(z^a_i, z^b_i))`` over view pairs of each sample: (N,).

    ``ordered``: over a != b (MV-InfoNCE, twice the unordered sum); else over a < b (MV-DHEL).
    Costs O(N V^2 d) with autograd.
    """
    V = Z.shape[0]
    G = torch.einsum("and,bnd->nab", Z, Z) * k
    a, b = torch.triu_indices(V, V, offset=1, device=Z.device)
    lse = torch.logsumexp(G[:, a, b], dim=1)
    if ordered:
        lse = lse + torch.log(torch.tensor(2.0, dtype=lse.dtype, device=lse.device))
    return lse


def _reduce(rows: Tensor, reduction: str) -> Tensor:
    check_reduction(reduction)
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    return rows


def mv_info_nce(
    views: Views,
    *,
    n_views: Optional[int] = None,
    temperature=0.5,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """MV-InfoNCE of V >= 2 views; see :class:`MVInfoNCE`. ``reduction="none"``: (N,)."""
    eng = engine_args(chunk_size, backend)
    check_reduction(reduction)
    Zs, V, N = stack_views(views, n_views)
    Z = prepare(Zs, normalize)
    k = _scalar_kappa(Z, temperature)
    flat = Z.reshape(V * N, -1)
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0)),),
        row_fn=lambda st, sd: st["lse"][0],
    )
    rows, _ = local_contrast(flat, flat, spec, k, reduce=False, **eng)
    log_den = torch.logsumexp(rows.reshape(V, N), dim=0)
    return _reduce(log_den - positive_lse(Z, k, ordered=True), reduction)


def mv_dhel(
    views: Views,
    *,
    n_views: Optional[int] = None,
    temperature=0.2,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """MV-DHEL of V >= 2 views with N >= 2 samples; see :class:`MVDHEL`."""
    eng = engine_args(chunk_size, backend)
    check_reduction(reduction)
    Zs, V, N = stack_views(views, n_views, min_rows=2)
    Z = prepare(Zs, normalize)
    k = _scalar_kappa(Z, temperature)
    w = 1.0 / N if reduction == "mean" else 1.0
    reduce = reduction != "none"
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0)),),
        row_fn=lambda st, sd: w * st["lse"][0],
    )
    neg = 0.0
    for a in range(V):
        out = local_contrast(Z[a], Z[a], spec, k, reduce=reduce, **eng)
        neg = neg + (out if reduce else out[0])
    pos = positive_lse(Z, k, ordered=False)
    if not reduce:
        return neg - pos
    return neg - w * pos.sum()


class MVInfoNCE(FunctionalLoss):
    """MV-InfoNCE module: ``forward(views, n_views=None)``.

    Args:
        temperature: tau; 0.5 (the official CIFAR configs; 0.1 for ImageNet-1K).
        reduction: ``"mean"`` over samples (official), ``"sum"`` or ``"none"`` (N,).
        normalize, chunk_size, backend: as every objective.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            mv_info_nce,
            temperature=temperature,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )


class MVDHEL(FunctionalLoss):
    """MV-DHEL module: ``forward(views, n_views=None)``.

    Args:
        temperature: tau; 0.2 (the official class default; configs use 0.5 / 0.1).
        reduction: ``"mean"`` over samples (official), ``"sum"`` or ``"none"`` (N,).
    """

    def __init__(
        self,
        temperature: float = 0.2,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            mv_dhel,
            temperature=temperature,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )
