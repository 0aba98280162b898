"""Multi-view contrastive objectives for any number of views V >= 2: MV-InfoNCE and MV-DHEL
(Koromilas et al., 2025, arXiv:2507.06979; official code pakoromilas/Multi-View-CL).

Engine: MV-DHEL is V row-wise sweeps (one per view, single-sweep gradients). MV-InfoNCE needs
each row's full log-sum-exp before the V rows of a sample are combined, so its sweep returns the
``V N`` row log-sum-exps (two-sweep path, O(V N) memory) and the grouping runs in autograd.
Everything is computed in log space (the official product of V sums overflows for many views).
Both are exact under a process group (see :class:`MVInfoNCE` and :class:`MVDHEL`).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union, cast

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_reduction
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    gather_rows,
    global_total,
    kappa,
    objective_group,
    prepare,
    reduce,
    row_offset,
    row_weight,
    run,
)

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


def _scalar_kappa(Z: Tensor, temperature, group) -> Tensor:
    k = kappa(Z, temperature, group=group)
    if k.dim() != 0:
        raise ValueError(
            f"temperature must be a scalar here, got shape {tuple(k.shape)} (per-anchor "
            "temperatures are not defined for multi-view losses)"
        )
    return k


def positive_lse(Z: Union[Tensor, Sequence[Tensor]], k: Tensor, ordered: bool) -> Tensor:
    """``log sum exp(u(z^a_i, z^b_i))`` over view pairs of each sample: (N,), from ``Z``
    (V, N, d) or its V views (N, d).

    ``ordered``: over a != b (MV-InfoNCE, twice the unordered sum); else over a < b (MV-DHEL).
    Costs O(N V^2 d) with autograd, one (N, d) temporary at a time: the row dots of each
    view pair (an einsum over all pairs copies ``Z`` twice into its batched layout and keeps
    both copies for the backward).
    """
    views = Z.unbind(0) if isinstance(Z, Tensor) else list(Z)
    V = len(views)
    G = torch.stack([(views[a] * views[b]).sum(-1) for a in range(V) for b in range(a + 1, V)], 1)
    lse = torch.logsumexp(G * k, dim=1)
    if ordered:
        lse = lse + torch.log(torch.tensor(2.0, dtype=lse.dtype, device=lse.device))
    return lse


@exact_objective
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
    """MV-InfoNCE of V >= 2 views; see :class:`MVInfoNCE`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    check_reduction(reduction)
    Zs, V, N = stack_views(views, n_views)
    Z = prepare(Zs, normalize)
    k = _scalar_kappa(Z, temperature, group)
    # Sample-major rows (row n V + a: view a of sample n): the V rows of a sample are
    # consecutive, so the engine's row blocks hold whole samples (``row_group``) and the row
    # function combines a sample's V log-sum-exps itself: one single sweep. Every vector of
    # every rank is a candidate of every row: this rank's rows are swept against the gathered
    # candidates (their gradients go back to their ranks) and the loss summed over the group;
    # the row itself is column offset + i.
    flat = Z.transpose(0, 1).reshape(N * V, -1)
    cands = gather_rows(flat, "views", group=group)
    pos = positive_lse(Z, k, ordered=True).repeat_interleave(V)  # per row, read once per sample
    w = row_weight(reduction, N, group=group) if reduction != "none" else 1.0

    def row_fn(st, sd):
        log_den = torch.logsumexp(cast(Tensor, st.lse)[0].view(-1, V), dim=1)
        return w * (log_den - sd["pos"].view(-1, V)[:, 0])

    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=row_offset(V * N, group=group))),),
        row_fn=row_fn,
        row_side={"pos": pos},
        row_group=V,
    )
    out = run(flat, cands, spec, k, reduction, eng, group=None)  # local sweep, global cands
    return global_total(out, group=group)


@exact_objective
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
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    check_reduction(reduction)
    Zs, V, N = stack_views(views, n_views, min_rows=2)
    # each view normalised on its own: the normalisation's backward then has (N, d)
    # temporaries, not (V, N, d) ones (the sweeps never need the stacked views)
    Z = [prepare(z, normalize) for z in Zs.unbind(0)]
    k = _scalar_kappa(Z[0], temperature, group)
    w = row_weight(reduction, N, group=group)
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0)),),
        row_fn=lambda st, sd: w * cast(Tensor, st.lse)[0],
    )
    neg = 0.0
    for za in Z:
        neg = neg + run(za, za, spec, k, reduction, eng, group=group)
    return neg - reduce(positive_lse(Z, k, ordered=False), reduction, group=group)


class MVInfoNCE(Objective, functional=mv_info_nce):
    """Multi-view InfoNCE (MV-InfoNCE): one contrastive loss for V >= 2 views of each sample.

    Every vector of every view is a candidate of every other vector; the positives of sample
    ``i`` are its other views. Unlike averaging pairwise InfoNCE losses, the V rows of a sample
    are pooled *before* the logarithm, so with V = 2 it is not NT-Xent (it is >= NT-Xent, with
    equality when both views' denominators coincide). With ``z^a_i`` view ``a`` of sample ``i``
    (L2-normalised) and ``u(x, y) = <x, y> / temperature``::

        l_i = -log sum_{a != b} exp(u(z^a_i, z^b_i))
              + log sum_a sum_{(b, j) != (a, i)} exp(u(z^a_i, z^b_j))
        loss = mean_i l_i

    Exact under a ``torch.distributed`` process group (the global batch's loss on every rank).

    Args:
        n_views (int, optional): V when ``views`` is given in the official layout ``(V N, d)``
            (view-major); default ``None`` (read from the input).
        temperature (float or 0-dim tensor): tau, default 0.5 (the official CIFAR configs; 0.1
            for ImageNet-1K). A tensor may require grad.
        reduction (str): ``"mean"`` over samples (default, official), ``"sum"`` or ``"none"``
            (the ``(N,)`` per-sample losses).
        normalize (bool): L2-normalise the embeddings (default ``True``).
        chunk_size (int, optional): engine tile width (default: automatic).
        backend (str): engine path, ``"auto"`` (default), ``"dense"`` or ``"tiled"``.

    Inputs:
        ``views``: a float tensor ``(V, N, d)``, a sequence of V tensors ``(N, d)``, or ``(V N,
        d)`` with ``n_views=V``. Row ``i`` of every view is the same sample: those V vectors are
        each other's positives; every other vector is a negative. fp16/bf16 are computed in
        fp32.

    Example::

        import torch
        import contrastkit as ck

        views = torch.randn(3, 16, 8)  # 3 views of 16 samples
        loss = ck.MVInfoNCE(temperature=0.5)(views)

    See also:
        :class:`MVDHEL` (intra-view negatives), :class:`contrastkit.NTXent` (two views),
        :class:`Symile` (higher-order dependence between modalities).

    References:
        Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning",
        arXiv:2507.06979 (official code: github.com/pakoromilas/Multi-View-CL, MVINFONCE).
    """


class MVDHEL(Objective, functional=mv_dhel):
    """Multi-view decoupled hyperspherical energy loss (MV-DHEL) for V >= 2 views.

    The positives of sample ``i`` are its other views (pooled over the ``V (V - 1) / 2`` view
    pairs); its negatives are the other samples *of the same view* only, one denominator per
    view, and the positive does not enter the denominators (decoupled, as DCL). With ``z^a_i``
    view ``a`` of sample ``i`` (L2-normalised) and ``u(x, y) = <x, y> / temperature``::

        l_i = -log sum_{a < b} exp(u(z^a_i, z^b_i)) + sum_a log sum_{j != i} exp(u(z^a_i, z^a_j))
        loss = mean_i l_i

    With V = 2 this is the official NTXentHPS loss. Exact under a ``torch.distributed`` process
    group (the global batch's loss on every rank).

    Args:
        n_views (int, optional): V when ``views`` is given as ``(V N, d)`` (view-major);
            default ``None``.
        temperature (float or 0-dim tensor): tau, default 0.2 (the official class default;
            the configs use 0.5 / 0.1). A tensor may require grad.
        reduction (str): ``"mean"`` over samples (default, official), ``"sum"`` or ``"none"``
            (``(N,)``).
        normalize (bool): L2-normalise the embeddings (default ``True``).
        chunk_size (int, optional): engine tile width (default: automatic).
        backend (str): engine path, ``"auto"`` (default), ``"dense"`` or ``"tiled"``.

    Inputs:
        ``views``: a float tensor ``(V, N, d)`` with N >= 2, a sequence of V tensors ``(N,
        d)``, or ``(V N, d)`` with ``n_views=V``. Row ``i`` of every view is the same sample
        (the positives); the other rows of the same view are the negatives.

    Example::

        import torch
        import contrastkit as ck

        views = torch.randn(4, 16, 8)  # 4 views of 16 samples
        loss = ck.MVDHEL(temperature=0.2)(views)

    See also:
        :class:`MVInfoNCE` (all vectors as candidates), :class:`contrastkit.DCL` (decoupled
        two-view loss).

    References:
        Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning",
        arXiv:2507.06979 (official code: github.com/pakoromilas/Multi-View-CL, MVDHEL).
    """
