"""CACR: Contrastive Attraction and Contrastive Repulsion (Zheng et al., TMLR 2023,
arXiv 2105.03746; JegZheng/CACR-SSL, small-scale losses ``our_loss1`` / ``our_loss2``).

``V >= 2`` views of ``N >= 2`` samples, L2-normalised, ``d2(a, b) = ||a - b||^2 = 2 - 2<a, b>``.

Attraction (query view ``x``; the other ``V - 1`` views of the same sample are positives; more
distant positives weigh more)::

    pi+_{i,v} = softmax_{v != x}(attraction_scale d2(z^x_i, z^v_i))
    L_att = (1/V) sum_x mean_i sum_{v != x} pi+_{i,v} alpha d2(z^x_i, z^v_i)

Repulsion (each view pair ``x < y``; anchor ``z^x_i``, negatives ``z^y_j``, ``j != i``; closer
negatives weigh more)::

    pi-_ij = softmax_{j != i}(-repulsion_scale d2(z^x_i, z^y_j))
    L_rep = mean_{x<y} mean_i sum_j pi-_ij (-beta d2(z^x_i, z^y_j))

``L = L_att + L_rep``; the softmax weights are not detached (as the official code).
``weighting``: ``'full'``; ``'without_w1'`` / ``'without_w2'`` / ``'none'`` replace the
attraction / repulsion / both weighted sums by plain means. ``debiased=True`` (official
``with_debiased``): repulsion row ``(-tau_plus d2(z^x_i, z^y_i) + sum_j pi- c) / (1 - tau_plus)``
(ignored without w2, as the official code). Defaults alpha = beta = 1, attraction_scale
(the paper's tau+) = 1, repulsion_scale (tau-) = 0.9 (CIFAR-10; 2.0 for CIFAR-100 / STL-10),
tau_plus = 0.1.

Engine form: the repulsion row is ``-beta (2 - 2 E_i)`` with ``E_i`` the
first moment of the row softmax of ``2 r s`` with ``r = repulsion_scale`` (``-r d2 = 2 r s - 2 r``),
the engine's first-moment statistic (``RowSpec.moment``: ``mom_i = sum_j pi_ij u_ij`` swept
beside the row's log-sum-exp in one pass, exact gradient). Attraction is dense over the
``V - 1`` positives (O(N V^2 d)).
Inputs are always L2-normalised (``d2 = 2 - 2 s`` needs unit vectors).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..._validation import check_embeddings, check_reduction
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    global_rows,
    global_total,
    objective_group,
    prepare,
    row_weight,
    run,
    sum_across_ranks,
)

__all__ = ["cacr", "CACR"]

WEIGHTINGS = ("full", "without_w1", "without_w2", "none")


def _check_options(alpha, beta, attraction_scale, repulsion_scale, weighting, tau_plus):
    for name, v in (
        ("alpha", alpha),
        ("beta", beta),
        ("attraction_scale", attraction_scale),
        ("repulsion_scale", repulsion_scale),
    ):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not isinstance(tau_plus, (int, float)) or not 0 <= tau_plus < 1:
        raise ValueError(f"tau_plus must be a number in [0, 1), got {tau_plus!r}")


def _stack_views(views) -> Tensor:
    if isinstance(views, Tensor):
        check_embeddings("views", views, ndim=3)
        Z = views
    else:
        views = list(views)
        if not views:
            raise ValueError("views must hold at least 2 views, got none")
        for i, v in enumerate(views):
            check_embeddings(f"views[{i}]", v)
            if v.shape != views[0].shape or v.dtype != views[0].dtype:
                raise ValueError(
                    f"views[{i}] has shape {tuple(v.shape)} / {v.dtype}, but views[0] "
                    f"{tuple(views[0].shape)} / {views[0].dtype}"
                )
            if v.device != views[0].device:
                raise ValueError(f"views[{i}] is on {v.device} but views[0] on {views[0].device}")
        Z = torch.stack(views)
    V, N = Z.shape[0], Z.shape[1]
    if V < 2 or N < 2:
        raise ValueError(
            f"CACR needs at least 2 views of at least 2 samples (V, N, d), got {tuple(Z.shape)}"
        )
    return Z


@exact_objective
def cacr(
    views: Union[Tensor, Sequence[Tensor]],
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    attraction_scale: float = 1.0,
    repulsion_scale: float = 0.9,
    weighting: str = "full",
    debiased: bool = False,
    tau_plus: float = 0.1,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """CACR loss of ``views`` (V, N, d) or a sequence of V tensors (N, d); see :class:`CACR`."""
    eng = engine_args(chunk_size, backend)
    check_reduction(reduction)
    _check_options(alpha, beta, attraction_scale, repulsion_scale, weighting, tau_plus)
    group = objective_group()  # None without a process group
    Z = prepare(_stack_views(views), True)
    V, N = Z.shape[0], Z.shape[1]
    scale = row_weight(reduction, N, group=group)

    # attraction: d2 between views of the same sample, (V, V, N)
    # (rowwise dot products: einsum's batched-matmul backward is pathologically slow here)
    zs = Z.unbind(0)  # one backward node instead of a full-size zeros per selected view
    dots = {(x, v): (zs[x] * zs[v]).sum(-1) for x in range(V) for v in range(x + 1, V)}
    d2_pos = 2.0 - 2.0 * torch.stack(
        [torch.stack([dots[min(x, v), max(x, v)] for v in range(V) if v != x]) for x in range(V)]
    )  # [x, other view, sample]
    cost = alpha * d2_pos
    if weighting in ("without_w1", "none"):
        att = cost.mean(dim=1)  # (V, N)
    else:
        att = (torch.softmax(attraction_scale * d2_pos, dim=1) * cost).sum(dim=1)
    local = att.mean(dim=0)  # (1/V) sum_x, per i: rows that need no other rank's data

    # repulsion over view pairs x < y (anchors: this rank's samples; negatives: every rank's)
    pairs = [(x, y) for x in range(V) for y in range(x + 1, V)]
    swept = []
    for x, y in pairs:
        zx, zy = zs[x], zs[y]
        if weighting in ("without_w2", "none") or repulsion_scale == 0:
            # uniform weights: mean_{j != i} s_ij = (<z_i, sum_j z_j> - s_ii) / (N - 1)
            s_ii = (zx * zy).sum(-1)
            total_y = sum_across_ranks(zy.sum(0), "view sums", group=group)
            n_all = global_rows(N, group=group)
            mean_s = ((zx * total_y).sum(-1) - s_ii) / (n_all - 1)
            row = -beta * (2.0 - 2.0 * mean_s)
            if debiased and weighting not in ("without_w2", "none"):
                row = (-tau_plus * (2.0 - 2.0 * s_ii) + row) / (1.0 - tau_plus)
            local = local + row / len(pairs)
            continue
        kap = 2.0 * repulsion_scale
        side = {"w": torch.full((N,), scale, dtype=Z.dtype, device=Z.device)}
        if debiased:
            side["pos_d2"] = 2.0 - 2.0 * (zx * zy).sum(-1)

        def row_fn(st, sd, kap=kap):
            e = st.mom / kap  # mom = sum_j pi_ij u_ij, u = kap s
            value = -beta * (2.0 - 2.0 * e)
            if "pos_d2" in sd:
                value = (-tau_plus * sd["pos_d2"] + value) / (1.0 - tau_plus)
            return sd["w"] * value

        spec = RowSpec(
            terms=(LSETerm(exclude=PairMask(self_offset=0)),),
            moment=True,
            row_fn=row_fn,
            row_side=side,
        )
        kt = torch.tensor(kap, dtype=Z.dtype, device=Z.device)
        swept.append(run(zx, zy, spec, kt, reduction, eng, group=group))
    if reduction == "none":
        out = global_total(local, group=group)
    else:
        out = global_total(local.sum() * scale, group=group)
    for part in swept:
        out = out + part / len(pairs)
    return out


class CACR(Objective, functional=cacr):
    """CACR: contrastive attraction and contrastive repulsion. Every sample has ``V >= 2``
    views; positives (other views of the sample) are pulled together with weights that favour
    the most distant ones, negatives (other samples in another view) pushed apart with weights
    that favour the closest ones (Zheng et al.).

    On L2-normalised views, ``d2(a, b) = ||a - b||^2``::

        pi+_{i,v} = softmax_{v != x}(attraction_scale d2(z^x_i, z^v_i))
        L_att     = (1/V) sum_x mean_i sum_{v != x} pi+_{i,v} alpha d2(z^x_i, z^v_i)
        pi-_ij    = softmax_{j != i}(-repulsion_scale d2(z^x_i, z^y_j))
        L_rep     = mean_{x<y} mean_i sum_j pi-_ij (-beta d2(z^x_i, z^y_j))
        loss      = L_att + L_rep          (softmax weights not detached, as the official code)

    Exact under a process group: the loss of the global batch (each rank's samples repelled
    from every rank's other views; the engine's first-moment statistic needs no per-tile
    weights).

    Args:
        alpha (float, default 1.0), beta (float, default 1.0): attraction / repulsion cost
            scales, >= 0.
        attraction_scale (float, default 1.0): multiplier of ``d2`` in the attraction softmax
            (the paper's ``tau+``, an inverse temperature), >= 0.
        repulsion_scale (float, default 0.9): multiplier of ``-d2`` in the repulsion softmax
            (the paper's ``tau-``; 0.9 on CIFAR-10, 2.0 on CIFAR-100 / STL-10), >= 0.
        weighting (str, default "full"): "full" | "without_w1" | "without_w2" | "none" (plain
            means instead of the attraction / repulsion / both weighted sums).
        debiased (bool, default False), tau_plus (float, default 0.1): debiased repulsion
            (official ``with_debiased``; ``tau_plus`` is a class prior in [0, 1)).
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-sample terms (N,)).
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``views``: a (V, N, d) float tensor or a sequence of V tensors (N, d); V >= 2,
          N >= 2. ``views[v][i]`` are positives of each other for every ``v``.

    Example::

        import torch
        import contrastkit as ck

        views = torch.randn(2, 8, 16)
        loss = ck.CACR(repulsion_scale=0.9)(views)

    See also:
        :class:`DebiasedInfoNCE`, :class:`HardNegativeInfoNCE`.

    References:
        Zheng et al., "Contrastive Attraction and Contrastive Repulsion for Representation
        Learning", TMLR 2023, arXiv:2105.03746 (github.com/JegZheng/CACR-SSL).
    """
