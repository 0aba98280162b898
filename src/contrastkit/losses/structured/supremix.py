"""SupReMix loss part: supervised contrastive regression with mixture pairs (Wu et al., "Mixup
Your Own Pairs", 2023, arXiv 2309.16633; Dingyijiang1/Mixup-Your-Own-Pairs
``agedb-dir/supremix_loss.py`` ``SupConLoss_v2``). Building the mixtures is not part of this
module: :class:`contrastkit.positives.supremix.SupReMixPairs` builds them (with their labels)
and :meth:`~contrastkit.positives.supremix.SupReMixBatch.padded` lays them out per anchor as
this loss's ``mixtures, mixture_mask, mixture_labels`` inputs; the distance weights are
:func:`contrastkit.positives.supremix.distance_weight`. The loss takes the mixtures as
per-anchor extra candidates.

Anchors ``a`` are the ``2B`` views (view-major), ``u_ak = <z_a, z_k> / tau`` for real candidates
``k != a`` and ``v_am = <z_a, x_am> / tau`` for the anchor's mixtures ``x_am`` (detached, used as
given, not re-normalised). ``P'(a)`` = real ``k != a`` with ``y_k = y_a`` plus mixtures with mask
1; ``A'(a)`` = real ``k != a`` plus mixtures with mask != -1. With distance weights
``w = |dy| + 1`` ('L1_inv', default; 'L2_inv' dy^2 + 1, 'L1' 1/(|dy| + 1), 'L2' 1/(dy^2 + 1),
label of a mixture = its mixture label) on every denominator term::

    l_a = -(tau / tau_base) 1/|P'(a)| sum_{p in P'(a)} [x_ap - log sum_{k in A'(a)} w_ak exp(x_ak)]

``reference_shift=True`` (default) reproduces the official code, which shifts the real logits and
the mixture logits by their own (detached) row maxima before one joint softmax: every mixture
logit gets ``delta_a = max_k u_ak - max_m v_am`` added (the real max is the self logit
``1/tau`` for unit features; with ``normalize=False`` the self logit is used). ``False`` is the
plain joint softmax. Anchors without positives (NaN in the official code) contribute 0 and leave
the mean. The official 'L2_inv' weight of mixtures is ``(dy + 1)^2 + 1`` (a typo); the formula
above is used instead. Defaults: tau = tau_base = 0.3 (IMDB-WIKI script; AgeDB 0.5),
``use_weight=True``, 'L1_inv'.

Engine: the real candidates are one weighted log-sum-exp per anchor (self excluded, weights from
labels per tile; a plain one without weights); the mixture block is ``O(B Mx d)`` per call and
enters each row as side inputs (its log-sum-exp and positive sum) with autograd.

Exactness: exact under a process group. The labels are gathered (classes, counts and the
distance weights of every rank's candidates), the class sums all-reduced with their gradients,
and each rank's anchors swept against every rank's views; mixtures stay per anchor. Rows are
rank-major (each rank's view-major stack), so ``reduction="none"`` orders them by rank.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_embeddings, check_positive, check_tensor
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    gather_rows,
    kappa,
    objective_group,
    prepare,
    row_offset,
    row_weight,
    run,
    sum_across_ranks,
)
from ...positives.supremix import DISTANCES
from ...positives.supremix import distance_weight as _distance_weight

__all__ = ["supremix", "SupReMix", "DISTANCES"]


def _tile_weight(delta: Tensor, kind: str) -> Tensor:
    """:func:`contrastkit.positives.supremix.distance_weight` in place on a fresh tile of label
    differences (the engine evaluates it once per tile; fewer passes and temporaries)."""
    d = delta.abs_()
    if kind == "L1_inv":
        return d.add_(1)
    if kind == "L1":
        return d.add_(1).reciprocal_()
    if kind == "L2":
        return d.mul_(d).add_(1).reciprocal_()
    return d.mul_(d).add_(1)


@exact_objective
def supremix(
    features: Tensor,
    labels: Tensor,
    mixtures: Optional[Tensor] = None,
    mixture_mask: Optional[Tensor] = None,
    mixture_labels: Optional[Tensor] = None,
    *,
    temperature=0.3,
    base_temperature: Optional[float] = None,
    use_weight: bool = True,
    distance: str = "L1_inv",
    reference_shift: bool = True,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SupReMix of ``features`` and ``labels`` with optional per-anchor mixtures (the output of
    :meth:`contrastkit.positives.supremix.SupReMixBatch.padded`); see :class:`SupReMix`."""
    eng = engine_args(chunk_size, backend)
    group = objective_group()  # None without a process group
    check_embeddings("features", features, ndim=3)
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if base_temperature is not None:
        check_positive("base_temperature", base_temperature)
    Bn, V, d = features.shape
    n = Bn * V
    if n < 2:
        raise ValueError(f"features needs at least 2 vectors, got shape {tuple(features.shape)}")
    # regression targets: real numbers (integers are converted), finite
    check_tensor("labels", labels, kind="real", shape=(Bn,), ref=features)
    # normalised in the input's layout, then laid out view-major: the normalisation keeps the
    # input itself for its backward, not a second (n, d) copy
    Z = prepare(features, normalize).transpose(0, 1).reshape(n, d)
    y = labels.detach().to(Z.device, Z.dtype).repeat(V)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("labels contain NaN or Inf values")
    k = kappa(Z, temperature, group=group)
    if k.dim() != 0:
        raise ValueError("temperature must be a scalar for SupReMix")
    tau = 1.0 / float(k.detach())
    ratio = 1.0 if base_temperature is None else tau / base_temperature

    # real positives: class sums over exact label equality, O(n d); under a process group the
    # classes, counts and sums are those of every rank's rows (labels gathered, sums all-reduced)
    y_all = gather_rows(y, "labels", group=group)
    offset = row_offset(n, group=group)
    ids_all = torch.unique(y_all, return_inverse=True)[1]
    ids = ids_all[offset : offset + n]
    n_cls = int(ids_all.max()) + 1
    class_sum = torch.zeros(n_cls, d, dtype=Z.dtype, device=Z.device).index_add(0, ids, Z)
    class_sum = sum_across_ranks(class_sum, "class sums", group=group)
    n_pos = (torch.bincount(ids_all, minlength=n_cls)[ids] - 1).to(Z.dtype)
    pos_sum = (Z * (class_sum[ids] - Z)).sum(-1) * k

    side_mix = None
    if mixtures is not None:
        if (
            not isinstance(mixtures, Tensor)
            or mixtures.dim() != 3
            or mixtures.shape[0] != n
            or mixtures.shape[2] != d
        ):
            raise ValueError(
                f"mixtures must have shape ({n}, Mx, {d}), got "
                f"{tuple(getattr(mixtures, 'shape', ()))}"
            )
        Mx = mixtures.shape[1]
        for name, t in (("mixture_mask", mixture_mask), ("mixture_labels", mixture_labels)):
            if not isinstance(t, Tensor) or t.shape != (n, Mx):
                raise ValueError(
                    f"{name} must have shape ({n}, {Mx}), got {tuple(getattr(t, 'shape', ()))}"
                )
        assert mixture_mask is not None and mixture_labels is not None  # checked above
        mask = mixture_mask.to(Z.device)
        if not bool(((mask == 1) | (mask == 0) | (mask == -1)).all()):
            raise ValueError("mixture_mask entries must be 1 (positive), 0 (negative) or -1")
        # finite check in row blocks: at once its temporaries are 1.6x the (n, Mx, d) mixtures
        flat = mixtures.reshape(-1, d)
        check_tensor("mixtures", flat, kind="float", finite=False)
        if not all(bool(torch.isfinite(part).all()) for part in flat.split(1 << 14)):
            check_embeddings("mixtures", flat)  # raises, with the count of bad values
        X = mixtures.detach().to(Z.dtype)
        v = torch.einsum("nd,nmd->nm", Z, X) * k
        if reference_shift and Mx > 0:
            self_logit = (Z * Z).sum(-1) * k
            v = v + (self_logit - v.max(dim=1).values).detach()[:, None]
        keep = mask != -1
        logw = torch.zeros_like(v)
        if use_weight:
            ml = mixture_labels.detach().to(Z.device, Z.dtype)
            logw = torch.log(_distance_weight(y[:, None] - ml, distance))
        x = torch.where(keep, v + logw, torch.full_like(v, float("-inf")))
        any_keep = keep.any(1)
        lse_mix = torch.logsumexp(torch.where(any_keep[:, None], x, torch.zeros_like(x)), dim=1)
        lse_mix = torch.where(any_keep, lse_mix, torch.full_like(lse_mix, float("-inf")))
        is_pos = mask == 1
        pos_sum = pos_sum + torch.where(is_pos, v, torch.zeros_like(v)).sum(1)
        n_pos = n_pos + is_pos.sum(1).to(Z.dtype)
        side_mix = lse_mix

    has_pos = n_pos > 0
    w = row_weight(reduction, int(has_pos.sum()), group=group) * ratio
    row_w = has_pos.to(Z.dtype) * w
    mean_pos = pos_sum / n_pos.clamp(min=1)

    weights = None
    if use_weight:

        def weights(r0, r1, c0, c1):  # local rows, global columns (every rank's candidates)
            return _tile_weight(torch.sub(y[r0:r1, None], y_all[None, c0:c1]), distance)

        weights.global_columns = True  # type: ignore[attr-defined]

    side = {"pos": mean_pos, "w": row_w}
    if side_mix is not None:
        side["lse_mix"] = side_mix

        def row_fn(st, sd):
            return sd["w"] * (torch.logaddexp(st.lse[0], sd["lse_mix"]) - sd["pos"])
    else:

        def row_fn(st, sd):
            return sd["w"] * (st.lse[0] - sd["pos"])

    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0), weights=weights),),
        row_fn=row_fn,
        row_side=side,
    )
    return run(Z, Z, spec, k, reduction, eng, group=group)


class SupReMix(Objective, functional=supremix):
    """SupReMix: supervised contrastive regression with mixture pairs.

    A supervised-contrastive loss for continuous labels: real samples with exactly the same
    label are positives, every other sample is in the denominator with a weight that grows
    with its label distance. Mixtures add hard candidates per anchor: mixtures of the anchor
    with a sample of another label are hard *negatives*, mixtures of two samples whose labels
    bracket the anchor's (mixed to the anchor's label) are hard *positives*. The mixtures come
    from :class:`contrastkit.positives.supremix.SupReMixPairs` (``*batch.padded()``); without
    them the loss is the weighted supervised-contrastive part alone. Anchors without positives
    contribute 0 and leave the mean. Exact under a process group.

    ::

        u_ak = <z_a, z_k> / T (real, k != a),   v_am = <z_a, x_am> / T (mixtures, detached)
        P'(a) = {k : y_k = y_a} + {m : mask_am = 1},  A'(a) = {k != a} + {m : mask_am != -1}
        w_ak = |y_a - y_k| + 1   ("L1_inv"; label of a mixture = its mixture label)
        l_a = -(T / T_base) 1/|P'(a)| sum_{p in P'(a)} [x_ap - log sum_{k in A'(a)} w_ak exp(x_ak)]
        loss = sum_a l_a / #{a : |P'(a)| > 0}

    ``reference_shift=True`` reproduces the official code, which shifts the real and the mixture
    logits by their own (detached) row maxima before one joint softmax (every mixture logit of
    anchor ``a`` gets ``max_k u_ak - max_m v_am`` added); ``False`` is the plain joint softmax.

    Args:
        temperature (float or 0-dim tensor, default 0.3): ``T`` (IMDB-WIKI; AgeDB 0.5).
        base_temperature (float or None, default None): ``T_base`` (None: ``T``, ratio 1).
        use_weight (bool, default True): weigh the denominator terms by label distance.
        distance (str, default "L1_inv"): ``"L1_inv"`` ``|dy| + 1``, ``"L2_inv"`` ``dy^2 + 1``,
            ``"L1"`` ``1 / (|dy| + 1)``, ``"L2"`` ``1 / (dy^2 + 1)``.
        reference_shift (bool, default True): the official separate max shifts (see above).
        reduction (str, default "mean"): ``"mean"`` (over anchors with positives) | ``"sum"`` |
            ``"none"`` (per anchor, view-major).
        normalize (bool, default True): L2-normalise the features (mixtures are used as given).
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``features``: ``(B, V, d)`` float, ``V`` views per sample; anchors are the ``V B``
          view rows (view-major).
        - ``labels``: ``(B,)`` real regression labels (equal labels: positives).
        - ``mixtures`` (optional): ``(V B, Mx, d)`` float per-anchor mixtures.
        - ``mixture_mask`` (optional): ``(V B, Mx)`` int, 1 positive, 0 negative, -1 padding.
        - ``mixture_labels`` (optional): ``(V B, Mx)`` real labels of the mixtures.

    Example::

        import torch
        import contrastkit as ck
        from contrastkit.positives import SupReMixPairs

        f = torch.randn(8, 2, 16)                     # 8 samples, 2 views
        y = torch.tensor([1.0, 2, 2, 3, 4, 4, 5, 6])
        batch = SupReMixPairs(window=2.0)(f, y)
        loss = ck.SupReMix(temperature=0.3)(f, y, *batch.padded())

    See also:
        :class:`contrastkit.positives.supremix.SupReMixPairs` (builds the mixtures),
        :class:`ConR` (contrastive regression by label windows), :class:`SupCon`.

    References:
        Wu et al., "Mixup Your Own Pairs" (SupReMix), 2023, arXiv:2309.16633
        (Dingyijiang1/Mixup-Your-Own-Pairs).
    """
