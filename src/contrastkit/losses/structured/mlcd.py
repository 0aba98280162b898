"""MLCD: multi-label cluster discrimination (An et al., "Multi-label Cluster Discrimination for
Visual Representation Learning", ECCV 2024, arXiv 2407.17331, eq. 4-5), with the unified
(Circle-loss, Sun et al., CVPR 2020) form it derives from.

Embedding ``e`` (normalised) and class centres ``W (k, d)`` (normalised; offline k-means);
``Omega_p`` = the image's ``l`` nearest centres (``positives (N, l)``, -1 = padding) and
``Omega_n`` = a random subset (``negative_ratio``) of the centres, resampled each call, without
the image's own positives. With ``s_j = <w_j, e>``, scale ``gamma`` and margin ``m``::

    lse_p = log sum_{i in Omega_p} exp(-gamma (s_i - m))
    lse_n = log sum_{j in Omega_n} exp(gamma s_j)
    form="mlcd" (eq. 5, default):  l = softplus(lse_p) + softplus(lse_n)
    form="mlc"  (eq. 4, unified):  l = softplus(lse_p + lse_n)
                                     = log(1 + sum_j sum_i exp(gamma (s_j - s_i + m)))

The paper states neither a scale nor a margin (defaults gamma = 1, m = 0; m is applied to the
positive logits, the CosFace convention, so "mlc" is exactly Circle's unified form). The MLCD
training code is not public (deepglint/unicom releases models); this follows the paper's
equations. Circle's self-paced weights (alpha_p, alpha_n) are not included.

Engine: ``lse_n`` is a log-sum-exp over the sampled centres per image with the image's own
positives excluded (an index mask), swept by the engine; ``lse_p`` is a side input of O(N l d)
work and O(N l) memory (:func:`~contrastkit.objective.index_dot`: the ``(N, l, d)`` gathered
centres are never stored).

Exactness: exact under a process group. The centres are *replicated* (every rank holds the same
``(k, d)`` tensor; nothing is gathered, and their gradient is that of the global loss on every
rank), the sampled negative centres are the same on every rank (an internal sample is rank 0's,
all-gathered; ``negatives`` given by the caller must match on every rank, checked), each rank
sweeps its own images against them and the loss is the mean (sum) over the global images.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_index, check_range
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    gather_rows,
    global_total,
    index_dot,
    kappa,
    local_contrast,
    objective_group,
    prepare,
    replicated,
    row_weight,
)

__all__ = ["mlcd", "MLCD", "MLCDLoss"]

FORMS = ("mlcd", "mlc")


def _check_options(scale, margin, form, negative_ratio):
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise ValueError(f"margin must be a number, got {margin!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if isinstance(negative_ratio, bool) or not isinstance(negative_ratio, (int, float)):
        raise ValueError(f"negative_ratio must be a number in (0, 1], got {negative_ratio!r}")
    check_range("negative_ratio", negative_ratio, 0.0, 1.0, lo_open=True, hi_open=False)


@exact_objective
def mlcd(
    embeddings: Tensor,
    centres: Tensor,
    positives: Tensor,
    negatives: Optional[Tensor] = None,
    *,
    scale: float = 1.0,
    margin: float = 0.0,
    form: str = "mlcd",
    negative_ratio: float = 1.0,
    generator: Optional[torch.Generator] = None,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """MLCD of ``embeddings`` against ``centres`` with ``positives`` (and optionally the sampled
    ``negatives``); see :class:`MLCD`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    _check_options(scale, margin, form, negative_ratio)
    check_embeddings("embeddings", embeddings)
    check_embeddings("centres", centres)
    check_compatible("embeddings", embeddings, "centres", centres)
    N, k_all = embeddings.shape[0], centres.shape[0]
    check_index(
        "positives",
        positives,
        k_all,
        ndim=(1, 2),
        rows=N,
        allow=(-1,),
        ref=embeddings,
        what="centres",
    )
    pos = positives[:, None] if positives.dim() == 1 else positives
    pos = pos.to(device=embeddings.device, dtype=torch.long)
    sampled = negatives is None
    if negatives is None:
        n_neg = max(1, int(round(negative_ratio * k_all)))
        negatives = (
            torch.arange(k_all)
            if n_neg == k_all
            else torch.randperm(k_all, generator=generator)[:n_neg].sort().values
        )
    check_index("negatives", negatives, k_all, ndim=1, what="centres")
    negatives = negatives.to(embeddings.device, torch.long)
    if group is not None:
        negatives = _same_negatives(negatives, sampled, group)

    E = prepare(embeddings, normalize)
    W = prepare(replicated(centres, group=group), normalize)
    k = kappa(E, scale=scale, n_rows=N, group=group)
    # positives: O(N l d) work, O(N l) memory, with autograd
    valid = pos >= 0
    s_p = index_dot(E, W, pos.clamp(min=0))  # no (N, l, d) copy of the positive centres
    x_p = (-k * (s_p - margin)).masked_fill(~valid, float("-inf"))
    has_p = valid.any(1)
    lse_p = torch.logsumexp(torch.where(has_p[:, None], x_p, torch.zeros_like(x_p)), dim=1)
    lse_p = torch.where(has_p, lse_p, torch.full_like(lse_p, float("-inf")))
    # negatives: the sampled centres without the row's own positives (columns of the subset)
    col_of = torch.full((k_all,), -1, dtype=torch.long, device=E.device)
    col_of[negatives] = torch.arange(negatives.numel(), device=E.device)
    excl = torch.where(valid, col_of[pos.clamp(min=0)], torch.full_like(pos, -1))
    C = W[negatives]
    w = row_weight(reduction, N, group=group)
    if form == "mlcd":

        def row_fn(st, sd):
            return w * (F.softplus(sd["lse_p"]) + F.softplus(st.lse[0]))
    else:

        def row_fn(st, sd):
            return w * F.softplus(sd["lse_p"] + st.lse[0])

    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(index=excl)),),
        row_fn=row_fn,
        row_side={"lse_p": lse_p},
    )
    # the candidates (centres) are replicated, not gathered: this rank's images against them,
    # then the global total (every rank's images; counts in ``w`` are global)
    out = local_contrast(E, C, spec, k, reduce=reduction != "none", group=None, **eng)
    if reduction == "none":
        out = out[0]
    return global_total(out, group=group)


def _same_negatives(negatives: Tensor, sampled: bool, group) -> Tensor:
    """The negative centres every rank uses: rank 0's sample when drawn here (ranks' generators
    may differ), the caller's when given (must then be the same on every rank)."""
    every = gather_rows(negatives, "negatives", group=group).view(group.world, -1)
    if sampled:
        return every[0]
    differ = [r for r in range(group.world) if not torch.equal(every[r], every[0])]
    if differ:
        raise ValueError(
            "negatives must be the same centre indices on every rank of the process group "
            f"(the centres are shared); rank(s) {differ} differ from rank 0: "
            f"rank 0 {every[0][:6].tolist()}, rank {differ[0]} {every[differ[0]][:6].tolist()}"
        )
    return negatives


class MLCD(Objective, functional=mlcd):
    """MLCD: multi-label cluster discrimination against fixed cluster centres.

    Each image has ``l`` positive centres (its nearest k-means centres, computed offline) and is
    contrasted with a random subset of the other centres (``negative_ratio``, resampled each
    call, the image's own positives excluded). The loss pulls the image towards all its
    positive centres and away from the sampled negatives, in the Circle-loss form with scale
    ``gamma`` and margin ``m``. Exact under a process group: the centres are shared by every
    rank (their gradient is the global loss's on every rank), the sampled negatives are rank
    0's sample (given ``negatives`` must be equal on every rank) and the loss is the mean over
    the images of every rank.

    ::

        s_j = <w_j, e> (normalised),  Omega_p = positives, Omega_n = sampled negatives
        lse_p = log sum_{i in Omega_p} exp(-gamma (s_i - m))
        lse_n = log sum_{j in Omega_n} exp(gamma s_j)
        form="mlcd" (eq. 5):  l = softplus(lse_p) + softplus(lse_n)
        form="mlc"  (eq. 4):  l = softplus(lse_p + lse_n)

    Args:
        scale (float, default 1.0): gamma, multiplies the cosines (not stated in the paper).
        margin (float, default 0.0): m, subtracted from the positive cosines (CosFace style).
        form (str, default "mlcd"): ``"mlcd"`` (eq. 5, the paper's loss) or ``"mlc"`` (eq. 4,
            the unified Circle form).
        negative_ratio (float in (0, 1], default 1.0): fraction of the centres sampled as
            negatives each call (paper: 0.1; 1.0 uses every centre).
        generator (torch.Generator or None, default None): generator of the sampling (under
            a process group the sample drawn on rank 0 is used by every rank).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per image).
        normalize (bool, default True): L2-normalise embeddings and centres.
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``embeddings``: ``(N, d)`` float, one row per image.
        - ``centres``: ``(k, d)`` float, the class (cluster) centres.
        - ``positives``: ``(N, l)`` (or ``(N,)``) int64 indices of each image's positive centres,
          ``-1`` = padding.
        - ``negatives`` (optional): ``(M,)`` int64 indices of the sampled negative centres
          (default: drawn with ``negative_ratio``); the same on every rank of a process group.

    Example::

        import torch
        import contrastkit as ck

        e, centres = torch.randn(8, 16), torch.randn(20, 16)
        positives = torch.randint(0, 20, (8, 3))
        loss = ck.MLCD(scale=16.0, negative_ratio=0.5)(e, centres, positives)

    See also:
        :class:`SwAV` (online clustering), :class:`SupCon` (labels instead of centres).

    References:
        An et al., "Multi-label Cluster Discrimination for Visual Representation Learning",
        ECCV 2024, arXiv:2407.17331.
        Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization",
        CVPR 2020, arXiv:2002.10857.
    """


#: the name published before the naming rule
MLCDLoss = MLCD
