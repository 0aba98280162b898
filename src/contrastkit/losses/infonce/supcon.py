"""SupCon: Supervised Contrastive Learning (Khosla et al., NeurIPS 2020), the L_out variant.

Features ``(N, V, d)`` are flattened view-major into ``V N`` contrast vectors. For anchor ``a``
with positives ``P(a)`` (same label, not itself) and candidates ``A(a)`` (all but itself)::

    l_a = -(tau / tau_base) (1 / |P(a)|) sum_{p in P(a)} [u_ap - log sum_{k in A(a)} exp(u_ak)]

The positive sums need no mask: ``sum_{p in P(a)} u_ap = kappa <z_a, C_y(a) - z_a>`` with
``C_c`` the sum of class ``c``'s vectors, so labels cost O(N d). ``labels=None`` is SimCLR mode
(positives = the other views of the same sample). Anchors without a positive are excluded from
the mean (the official code counts them as 0 in the mean; ``exclude_no_positive=False`` does so).
"""

from __future__ import annotations

from typing import Optional, cast

import torch
from torch import Tensor

from ..._validation import check_embeddings, check_labels
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    check_has_negatives,
    engine_args,
    exact_objective,
    gather_rows,
    half_path,
    kappa,
    objective_group,
    prepare,
    row_offset,
    row_weight,
    run,
    sum_across_ranks,
    wide,
)

__all__ = ["supcon", "SupCon"]


@exact_objective
def supcon(
    features: Tensor,
    labels: Optional[Tensor] = None,
    *,
    temperature=0.1,
    base_temperature: Optional[float] = None,
    contrast_mode: str = "all",
    exclude_no_positive: bool = True,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SupCon of ``features`` (N, d) or (N, V, d) with ``labels`` (N,); see :class:`SupCon`.

    One sample (N = 1) has no negatives: a ``ValueError``, not a loss of 0.
    """
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    check_embeddings("features", features, ndim=(2, 3))
    if contrast_mode not in ("all", "one"):
        raise ValueError(f"contrast_mode must be 'all' or 'one', got {contrast_mode!r}")
    feats = features if features.dim() == 3 else features[:, None]
    N, V = feats.shape[0], feats.shape[1]
    if N * V < 2:
        raise ValueError(
            "features needs at least 2 vectors (N * V) to contrast, "
            f"got shape {tuple(features.shape)}"
        )
    check_has_negatives("features", features, "SupCon", unit="sample", group=group)
    # under a process group: labels, class sums and counts over the global batch (rank offset)
    off = row_offset(N, group=group)
    if labels is None:
        labels = torch.arange(off, off + N, device=features.device)
    else:
        check_labels("labels", labels, N, features)
    inverse = torch.unique(gather_rows(labels, "labels", group=group), return_inverse=True)[1]
    ids = inverse[off : off + N].repeat(V)  # view-major
    n_rows = N * V if contrast_mode == "all" else N
    keep = half_path(eng, n_rows, N * V, False, features)  # fp16/bf16 kept for the kernels
    Zc = prepare(feats.transpose(0, 1).reshape(N * V, -1), normalize, keep)
    Za = Zc if contrast_mode == "all" else Zc[:N]
    k = kappa(Zc, temperature, group=group)
    if k.dim() != 0:
        raise ValueError("temperature must be a scalar for SupCon")
    tau = 1.0 / float(k.detach())
    ratio = 1.0 if base_temperature is None else tau / base_temperature
    n_classes = int(inverse.max()) + 1
    Zw, Zaw = wide(Zc), wide(Za)  # side statistics in fp32 when Zc stays in fp16/bf16
    class_sum = torch.zeros(n_classes, Zw.shape[1], dtype=Zw.dtype, device=Zw.device)
    class_sum = sum_across_ranks(class_sum.index_add(0, ids, Zw), "class sums", group=group)
    n_pos = torch.bincount(inverse, minlength=n_classes)[ids[: Za.shape[0]]] * V - 1
    pos_sum = ((Zaw * (class_sum[ids[: Za.shape[0]]] - Zaw)).sum(-1)) * k
    has_pos = n_pos > 0
    count = int(has_pos.sum()) if exclude_no_positive else Za.shape[0]
    w = row_weight(reduction, count, min_count=1, group=group) * ratio
    row_w = has_pos.to(Zw.dtype) * w
    mean_pos = pos_sum / n_pos.clamp(min=1)
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0)),),
        row_fn=lambda st, sd: sd["w"] * (cast(Tensor, st.lse)[0] - sd["pos"]),
        row_side={"pos": mean_pos, "w": row_w},
    )
    return run(Za, Zc, spec, k, reduction, eng, group=group)


class SupCon(Objective, functional=supcon):
    """SupCon, supervised contrastive learning (the L_out variant): every sample with the same
    label is a positive, all others are negatives.

    Features ``(N, V, d)`` (V views per sample) are flattened view-major into ``V N`` contrast
    vectors; each one is an anchor (``contrast_mode="all"``) or only view 0 is
    (``contrast_mode="one"``). The positives' sum needs no mask: it is computed from per-class
    sums in O(N d). ``labels=None`` is the SimCLR mode (positives are the other views of the
    same sample). Anchors without a positive are excluded from the mean (the official code
    counts them as 0 in the mean: ``exclude_no_positive=False``). Exact under a process group
    (labels, class sums and counts over the global batch).

    Formula::

        u_ab = <z_a, z_b> / tau,  P(a) = {p != a : y_p = y_a},  A(a) = {b != a}
        l_a  = -(tau / tau_base) (1 / |P(a)|) sum_{p in P(a)} [u_ap - log sum_{b in A(a)} exp(u_ab)]
        loss = mean over anchors with |P(a)| > 0

    Args:
        temperature (float | Tensor, default 0.1): tau (the paper's README; the class default
            there is 0.07). A 0-dim tensor may be learnable.
        base_temperature (float | None, default None): the official ``tau / tau_base``
            rescaling; None means tau_base = tau (factor 1).
        contrast_mode (str, default "all"): ``"all"`` (every view is an anchor) or ``"one"``
            (view 0 only).
        exclude_no_positive (bool, default True): drop anchors without positives from the mean.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (one per anchor,
            view-major, 0 for anchors without a positive).
        normalize (bool, default True): L2-normalise the features.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``features``: (N, d) or (N, V, d) float, N >= 2.
        - ``labels`` (optional): (N,) integer class ids; same label = positive. None: each
          sample is its own class.
        - returns a scalar, or (V N,) (``"one"``: (N,)) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        feats, labels = torch.randn(8, 2, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        loss = ck.SupCon(temperature=0.1)(feats, labels)

    See also:
        :class:`NTXent` (labels=None with two views), :class:`InfoNCE`.

    References:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, arXiv:2004.11362.
    """
