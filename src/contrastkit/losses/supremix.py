"""SupReMix loss part: supervised contrastive regression with mixture pairs (Wu et al., "Mixup
Your Own Pairs", 2023, arXiv 2309.16633; Dingyijiang1/Mixup-Your-Own-Pairs
``agedb-dir/supremix_loss.py`` ``SupConLoss_v2``). Building the mixtures is not part of this
module (the mixing spec); the loss takes them as per-anchor extra candidates.

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
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._validation import check_embeddings, check_positive, check_tensor
from ..engine import LSETerm, PairMask, RowSpec
from ._common import FunctionalLoss, engine_args, kappa, prepare, row_weight, run

__all__ = ["supremix", "SupReMix", "DISTANCES"]

DISTANCES = ("L1_inv", "L2_inv", "L1", "L2")


def _distance_weight(dy: Tensor, distance: str) -> Tensor:
    if distance == "L1_inv":
        return dy.abs() + 1
    if distance == "L2_inv":
        return dy * dy + 1
    if distance == "L1":
        return 1.0 / (dy.abs() + 1)
    return 1.0 / (dy * dy + 1)


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
    """SupReMix of ``features (B, V, d)``, ``labels (B,)`` and optional per-anchor ``mixtures
    (V B, Mx, d)`` with ``mixture_mask`` (1 positive, 0 negative, -1 excluded) and
    ``mixture_labels`` (both ``(V B, Mx)``); see :class:`SupReMix`."""
    eng = engine_args(chunk_size, backend)
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
    Z = prepare(features.transpose(0, 1).reshape(n, d), normalize)
    y = labels.detach().to(Z.device, Z.dtype).repeat(V)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("labels contain NaN or Inf values")
    k = kappa(Z, temperature)
    if k.dim() != 0:
        raise ValueError("temperature must be a scalar for SupReMix")
    tau = 1.0 / float(k)
    ratio = 1.0 if base_temperature is None else tau / base_temperature

    # real positives: class sums over exact label equality, O(n d)
    ids = torch.unique(y, return_inverse=True)[1]
    n_cls = int(ids.max()) + 1
    class_sum = torch.zeros(n_cls, d, dtype=Z.dtype, device=Z.device).index_add(0, ids, Z)
    n_pos = (torch.bincount(ids, minlength=n_cls)[ids] - 1).to(Z.dtype)
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
        mask = mixture_mask.to(Z.device)
        if not bool(((mask == 1) | (mask == 0) | (mask == -1)).all()):
            raise ValueError("mixture_mask entries must be 1 (positive), 0 (negative) or -1")
        check_embeddings("mixtures", mixtures.reshape(-1, d))
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
    w = row_weight(reduction, max(int(has_pos.sum()), 1)) * ratio
    row_w = has_pos.to(Z.dtype) * w
    mean_pos = pos_sum / n_pos.clamp(min=1)

    weights = None
    if use_weight:

        def weights(r0, r1, c0, c1):
            return _distance_weight(y[r0:r1, None] - y[None, c0:c1], distance)

    side = {"pos": mean_pos, "w": row_w}
    if side_mix is not None:
        side["lse_mix"] = side_mix

        def row_fn(st, sd):
            return sd["w"] * (torch.logaddexp(st["lse"][0], sd["lse_mix"]) - sd["pos"])
    else:

        def row_fn(st, sd):
            return sd["w"] * (st["lse"][0] - sd["pos"])

    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0), weights=weights),),
        row_fn=row_fn,
        row_side=side,
    )
    return run(Z, Z, spec, k, reduction, eng)


class SupReMix(FunctionalLoss):
    """SupReMix loss module: ``forward(features, labels, mixtures=None, mixture_mask=None,
    mixture_labels=None)``.

    Args:
        temperature, base_temperature: tau = tau_base = 0.3 (IMDB-WIKI; AgeDB 0.5).
        use_weight, distance: distance magnifying of denominator terms ('L1_inv' default).
        reference_shift: reproduce the official separate max shifts (default True).
    """

    def __init__(
        self,
        temperature: float = 0.3,
        base_temperature: Optional[float] = None,
        use_weight: bool = True,
        distance: str = "L1_inv",
        reference_shift: bool = True,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        super().__init__(
            supremix,
            temperature=temperature,
            base_temperature=base_temperature,
            use_weight=use_weight,
            distance=distance,
            reference_shift=reference_shift,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )
