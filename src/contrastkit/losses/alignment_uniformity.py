"""Alignment and uniformity losses, and CLIP + alignment + uniformity (the contrastive-gap fix).

"Understanding Contrastive Representation Learning through Alignment and Uniformity on the
Hypersphere" (Wang & Isola, ICML 2020; official code SsnL/align_uniform)::

    L_align(alpha) = mean_i ||x_i - y_i||^alpha                                (alpha = 2)
    L_uniform(t)   = log mean_{i != j} exp(-t ||x_i - x_j||^2)                 (t = 2)
    L_xunif(t)     = log mean_{i != j} exp(-t ||x_i - y_j||^2)      (cross-modal, N (N - 1) pairs)

(the mean over ordered pairs i != j equals the paper's mean over i < j).

"It's Not a Modality Gap: Characterizing and Addressing the Contrastive Gap" (Fahim, Murphy,
Fyshe; arXiv 2405.18570; official code abrar-fahim/contrastive-gap)::

    L_CUA   = L_CLIP(t = 100, fixed) + L_align(I, T) + (L_uniform(I) + L_uniform(T)) / 2
    L_CUAXU = L_CUA + L_xunif(I, T)

Engine: the uniformity terms are one log-sum-exp over all pairs. Each Gaussian potential is an
inner product of augmented vectors, ``-t ||x - y||^2 = <[sqrt(2t) x, -t|x|^2, 1],
[sqrt(2t) y, 1, -t|y|^2]>`` (exact for any inputs; ``2t s - 2t`` on the unit sphere), so a sweep
gives every row's log-sum-exp over ``j != i`` in O(N) memory (two-sweep path) and the global
``logsumexp`` over rows runs in autograd. Alignment is an O(N d) diagonal term. The values agree
with :func:`contrastkit.metrics.geometry.alignment` / ``uniformity`` (which are no-grad floats).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._validation import check_compatible, check_embeddings, check_positive, check_reduction
from ..engine import LSETerm, PairMask, RowSpec
from ._common import engine_args, local_contrast, prepare
from .clip import clip_loss
from .logit_scale import ScaledLoss

__all__ = [
    "alignment_loss",
    "uniformity_loss",
    "cross_uniformity_loss",
    "clip_align_uniform",
    "AlignmentLoss",
    "UniformityLoss",
    "CLIPAlignUniform",
]


def _check_t(name: str, value) -> float:
    if isinstance(value, Tensor):
        raise ValueError(f"{name} must be a Python number, got a tensor")
    check_positive(name, value)
    return float(value)


def _check_weights(align_weight, uniform_weight, cross_uniform_weight) -> None:
    for name, w in (
        ("align_weight", align_weight),
        ("uniform_weight", uniform_weight),
        ("cross_uniform_weight", cross_uniform_weight),
    ):
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")


def alignment_loss(
    x: Tensor, y: Tensor, *, alpha: float = 2.0, reduction: str = "mean", normalize: bool = True
) -> Tensor:
    """``||x_i - y_i||^alpha`` of positive pairs (N, d), reduced; see the module docstring."""
    check_reduction(reduction)
    alpha = _check_t("alpha", alpha)
    check_embeddings("x", x)
    check_embeddings("y", y)
    check_compatible("x", x, "y", y, same_rows=True)
    d2 = (prepare(x, normalize) - prepare(y, normalize)).pow(2).sum(-1)
    if alpha == 2.0:
        rows = d2
    else:  # d2 ** (alpha / 2) with a finite gradient at d2 = 0
        pos = d2 > 0
        rows = torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)) ** (alpha / 2), 0 * d2)
    if reduction == "mean":
        return rows.mean()
    return rows.sum() if reduction == "sum" else rows


def _augment(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """Rows ``a_i``, ``b_j`` with ``<a_i, b_j> = -t ||x_i - x_j||^2``."""
    sq = -t * (x * x).sum(-1, keepdim=True)
    one = torch.ones_like(sq)
    s = math.sqrt(2.0 * t) * x
    return torch.cat([s, sq, one], dim=-1), torch.cat([s, one, sq], dim=-1)


def _log_mean_pairs(x: Tensor, y: Tensor, t: float, eng: dict) -> Tensor:
    """``log mean_{i != j} exp(-t ||x_i - y_j||^2)`` (x, y (N, d), N >= 2) on the engine."""
    a, _ = _augment(x, t)
    _, b = _augment(y, t)
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0)),),
        row_fn=lambda st, sd: st["lse"][0],
    )
    k = torch.ones((), dtype=a.dtype, device=a.device)
    rows, _ = local_contrast(a, b, spec, k, reduce=False, **eng)
    n = x.shape[0]
    return torch.logsumexp(rows, dim=0) - math.log(n * (n - 1))


def uniformity_loss(
    x: Tensor,
    y: Optional[Tensor] = None,
    *,
    t: float = 2.0,
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """``log mean_{i != j} exp(-t ||x_i - x_j||^2)`` of ``x`` (N >= 2, d); with ``y`` the mean of
    the two uniformities (as :func:`contrastkit.metrics.geometry.uniformity`)."""
    eng = engine_args(chunk_size, backend)
    t = _check_t("t", t)
    check_embeddings("x", x, min_rows=2)
    xn = prepare(x, normalize)
    u = _log_mean_pairs(xn, xn, t, eng)
    if y is None:
        return u
    check_embeddings("y", y, min_rows=2)
    check_compatible("x", x, "y", y)
    yn = prepare(y, normalize)
    return 0.5 * (u + _log_mean_pairs(yn, yn, t, eng))


def cross_uniformity_loss(
    x: Tensor,
    y: Tensor,
    *,
    t: float = 2.0,
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """``log mean_{i != j} exp(-t ||x_i - y_j||^2)`` over the N (N - 1) non-matching pairs."""
    eng = engine_args(chunk_size, backend)
    t = _check_t("t", t)
    check_embeddings("x", x, min_rows=2)
    check_embeddings("y", y, min_rows=2)
    check_compatible("x", x, "y", y, same_rows=True)
    return _log_mean_pairs(prepare(x, normalize), prepare(y, normalize), t, eng)


def clip_align_uniform(
    image: Tensor,
    text: Tensor,
    *,
    scale=None,
    temperature=None,
    cross_uniformity: bool = False,
    align_weight: float = 1.0,
    uniform_weight: float = 1.0,
    cross_uniform_weight: float = 1.0,
    t: float = 2.0,
    alpha: float = 2.0,
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
    return_terms: bool = False,
):
    """CLIP loss plus alignment and uniformity (CUA; ``cross_uniformity=True``: CUAXU).

    ``temperature`` 0.01 (t = 100, fixed) unless ``scale`` or ``temperature`` is given.
    ``return_terms=True`` returns a dict with ``"loss"`` and each term (unweighted).
    """
    if scale is None and temperature is None:
        temperature = 0.01
    _check_weights(align_weight, uniform_weight, cross_uniform_weight)
    eng = {"normalize": normalize, "chunk_size": chunk_size, "backend": backend}
    check_embeddings("image", image, min_rows=2)
    check_embeddings("text", text, min_rows=2)
    check_compatible("image", image, "text", text, same_rows=True)
    terms = {
        "clip": clip_loss(image, text, scale=scale, temperature=temperature, **eng),
        "align": alignment_loss(image, text, alpha=alpha, normalize=normalize),
        "uniform": uniformity_loss(image, text, t=t, **eng),
    }
    loss = terms["clip"] + align_weight * terms["align"] + uniform_weight * terms["uniform"]
    if cross_uniformity:
        terms["cross_uniform"] = cross_uniformity_loss(image, text, t=t, **eng)
        loss = loss + cross_uniform_weight * terms["cross_uniform"]
    if return_terms:
        return {"loss": loss, **terms}
    return loss


class AlignmentLoss(torch.nn.Module):
    """Alignment loss module: ``forward(x, y)``; ``alpha = 2`` as the paper."""

    def __init__(self, alpha: float = 2.0, reduction: str = "mean", normalize: bool = True):
        super().__init__()
        check_reduction(reduction)
        self.alpha = _check_t("alpha", alpha)
        self.reduction, self.normalize = reduction, normalize

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return alignment_loss(
            x, y, alpha=self.alpha, reduction=self.reduction, normalize=self.normalize
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, reduction={self.reduction!r}"


class UniformityLoss(torch.nn.Module):
    """Uniformity loss module: ``forward(x, y=None)``; ``t = 2`` as the paper. A scalar (one
    log-mean-exp over all pairs), so there is no ``reduction``."""

    def __init__(
        self,
        t: float = 2.0,
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__()
        self.t = _check_t("t", t)
        engine_args(chunk_size, backend)
        self.normalize, self.chunk_size, self.backend = normalize, chunk_size, backend

    def forward(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return uniformity_loss(
            x,
            y,
            t=self.t,
            normalize=self.normalize,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"t={self.t}"


class CLIPAlignUniform(ScaledLoss):
    """CUA / CUAXU module owning the CLIP logit scale: ``forward(image, text)``.

    Args:
        init_temperature: 0.01 (t = 100) as the paper; ``learnable=False`` keeps it fixed.
        cross_uniformity: add the cross-modal uniformity term (CUAXU).
        align_weight, uniform_weight, cross_uniform_weight: term weights (1 in the paper).
        t, alpha: uniformity and alignment exponents (2 and 2).
    """

    def __init__(
        self,
        init_temperature: float = 0.01,
        learnable: bool = False,
        max_logit_scale: float = 100.0,
        cross_uniformity: bool = False,
        align_weight: float = 1.0,
        uniform_weight: float = 1.0,
        cross_uniform_weight: float = 1.0,
        t: float = 2.0,
        alpha: float = 2.0,
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            init_temperature, learnable, max_logit_scale, "mean", normalize, chunk_size, backend
        )
        self.t, self.alpha = _check_t("t", t), _check_t("alpha", alpha)
        _check_weights(align_weight, uniform_weight, cross_uniform_weight)
        self.cross_uniformity = cross_uniformity
        self.align_weight, self.uniform_weight = align_weight, uniform_weight
        self.cross_uniform_weight = cross_uniform_weight

    def forward(self, image: Tensor, text: Tensor, return_terms: bool = False):
        opts = self.options(image)
        opts.pop("reduction")
        return clip_align_uniform(
            image,
            text,
            cross_uniformity=self.cross_uniformity,
            align_weight=self.align_weight,
            uniform_weight=self.uniform_weight,
            cross_uniform_weight=self.cross_uniform_weight,
            t=self.t,
            alpha=self.alpha,
            return_terms=return_terms,
            **opts,
        )
