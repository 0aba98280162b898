"""Alignment and uniformity objectives, and CLIP + alignment + uniformity (the contrastive-gap
fix).

Alignment and uniformity are from Wang & Isola (arXiv:2005.10242; official code
SsnL/align_uniform); CLIP + alignment + uniformity (CUA / CUAXU) from Fahim, Murphy and Fyshe
(arXiv:2405.18570; official code abrar-fahim/contrastive-gap). The formulas are in the module
twins' docstrings.

Engine: the uniformity terms are one log-sum-exp over all pairs. Each Gaussian potential is an
inner product of augmented vectors, ``-t ||x - y||^2 = <[sqrt(2t) x, -t|x|^2, 1],
[sqrt(2t) y, 1, -t|y|^2]>`` (exact for any inputs; ``2t s - 2t`` on the unit sphere), so a sweep
gives every row's log-sum-exp over ``j != i`` in O(N) memory (two-sweep path) and the global
``logsumexp`` over rows runs in autograd. Alignment is an O(N d) diagonal term. The values agree
with :func:`contrastkit.metrics.geometry.alignment` / ``uniformity`` (which are no-grad floats).
Every objective here is exact under a process group.
"""

from __future__ import annotations

import math
from typing import Optional, cast

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_positive, check_reduction
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    ScaledObjective,
    engine_args,
    exact_objective,
    gather_rows,
    global_rows,
    global_total,
    objective_group,
    prepare,
    reduce,
    row_offset,
    run,
)
from ..infonce.clip import clip

__all__ = [
    "alignment",
    "uniformity",
    "cross_uniformity",
    "clip_align_uniform",
    "clip_align_uniform_terms",
    "Alignment",
    "Uniformity",
    "CrossUniformity",
    "CLIPAlignUniform",
]


def _check_number(name: str, value) -> float:
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


@exact_objective
def alignment(
    x: Tensor, y: Tensor, *, alpha: float = 2.0, reduction: str = "mean", normalize: bool = True
) -> Tensor:
    """``||x_i - y_i||^alpha`` of positive pairs, reduced; see :class:`Alignment`."""
    return _alignment(x, y, alpha, reduction, normalize, objective_group())


def _alignment(x: Tensor, y: Tensor, alpha, reduction: str, normalize: bool, group) -> Tensor:
    check_reduction(reduction)
    alpha = _check_number("alpha", alpha)
    check_embeddings("x", x)
    check_embeddings("y", y)
    check_compatible("x", x, "y", y, same_rows=True)
    d2 = (prepare(x, normalize) - prepare(y, normalize)).pow(2).sum(-1)
    if alpha == 2.0:
        rows = d2
    else:  # d2 ** (alpha / 2) with a finite gradient at d2 = 0
        pos = d2 > 0
        rows = torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)) ** (alpha / 2), 0 * d2)
    return reduce(rows, reduction, group=group)


def _augment(x: Tensor, potential: float) -> tuple[Tensor, Tensor]:
    """Rows ``a_i``, ``b_j`` with ``<a_i, b_j> = -potential ||x_i - x_j||^2``."""
    sq = -potential * (x * x).sum(-1, keepdim=True)
    one = torch.ones_like(sq)
    s = math.sqrt(2.0 * potential) * x
    return torch.cat([s, sq, one], dim=-1), torch.cat([s, one, sq], dim=-1)


def _log_mean_pairs(x: Tensor, y: Tensor, potential: float, eng: dict, group) -> Tensor:
    """``log mean_{i != j} exp(-potential ||x_i - y_j||^2)`` (x, y (N, d), N >= 2) on the engine,
    over the global batch of ``group``."""
    a, _ = _augment(x, potential)
    _, b = _augment(y, potential)
    n = x.shape[0]
    total = global_rows(n, group=group)
    # this rank's rows against every rank's candidates (gradients go back to their ranks); the
    # pair (i, i) is column offset + i of the gathered candidates
    b = gather_rows(b, "y", group=group)
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=row_offset(n, group=group))),),
        row_fn=lambda st, sd: cast(Tensor, st.lse)[0],
    )
    k = torch.ones((), dtype=a.dtype, device=a.device)
    rows = run(a, b, spec, k, "none", eng, group=None)  # local sweep, global candidates
    # one log-sum-exp over every rank's rows: each rank computes it from the gathered rows, and
    # contributes its share n / total of it to the global total (the gradient of the global
    # loss, not world times it, once the gathered rows' gradients are summed back)
    lme = torch.logsumexp(gather_rows(rows, "rows", group=group), dim=0)
    lme = lme - math.log(total * (total - 1))
    return global_total(lme * (n / total), group=group)


@exact_objective
def uniformity(
    x: Tensor,
    y: Optional[Tensor] = None,
    *,
    potential: float = 2.0,
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Uniformity of ``x`` (with ``y``: the mean of both uniformities); see :class:`Uniformity`."""
    eng = engine_args(chunk_size, backend)
    return _uniformity(x, y, potential, normalize, eng, objective_group())


def _uniformity(x: Tensor, y: Optional[Tensor], potential, normalize: bool, eng: dict, group):
    potential = _check_number("potential", potential)
    check_embeddings("x", x, min_rows=2)
    if y is not None:
        check_embeddings("y", y, min_rows=2)
        check_compatible("x", x, "y", y)
    xn = prepare(x, normalize)
    u = _log_mean_pairs(xn, xn, potential, eng, group)
    if y is None:
        return u
    yn = prepare(y, normalize)
    return 0.5 * (u + _log_mean_pairs(yn, yn, potential, eng, group))


@exact_objective
def cross_uniformity(
    x: Tensor,
    y: Tensor,
    *,
    potential: float = 2.0,
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Uniformity over the N (N - 1) non-matching pairs ``(x_i, y_j)``; see
    :class:`CrossUniformity`."""
    eng = engine_args(chunk_size, backend)
    return _cross_uniformity(x, y, potential, normalize, eng, objective_group())


def _cross_uniformity(x: Tensor, y: Tensor, potential, normalize: bool, eng: dict, group):
    potential = _check_number("potential", potential)
    check_embeddings("x", x, min_rows=2)
    check_embeddings("y", y, min_rows=2)
    check_compatible("x", x, "y", y, same_rows=True)
    return _log_mean_pairs(prepare(x, normalize), prepare(y, normalize), potential, eng, group)


def _cua_terms(
    image: Tensor,
    text: Tensor,
    scale,
    temperature,
    cross_uniformity: bool,
    weights: tuple,
    potential,
    alpha,
    eng: dict,
    group,
) -> dict:
    """The loss and terms of CUA / CUAXU over ``group`` (CLIP is its own exact objective)."""
    if scale is None and temperature is None:
        temperature = 0.01
    _check_weights(*weights)
    align_weight, uniform_weight, cross_uniform_weight = weights
    engine_args(eng["chunk_size"], eng["backend"])
    check_embeddings("image", image, min_rows=2)
    check_embeddings("text", text, min_rows=2)
    check_compatible("image", image, "text", text, same_rows=True)
    normalize = eng["normalize"]
    kw = {"chunk_size": eng["chunk_size"], "backend": eng["backend"]}
    terms = {
        "clip": clip(image, text, scale=scale, temperature=temperature, **eng),
        "align": _alignment(image, text, alpha, "mean", normalize, group),
        "uniform": _uniformity(image, text, potential, normalize, kw, group),
    }
    loss = terms["clip"] + align_weight * terms["align"] + uniform_weight * terms["uniform"]
    if cross_uniformity:
        terms["cross_uniform"] = _cross_uniformity(image, text, potential, normalize, kw, group)
        loss = loss + cross_uniform_weight * terms["cross_uniform"]
    return {"loss": loss, **terms}


@exact_objective
def clip_align_uniform_terms(
    image: Tensor,
    text: Tensor,
    *,
    scale=None,
    temperature=None,
    cross_uniformity: bool = False,
    align_weight: float = 1.0,
    uniform_weight: float = 1.0,
    cross_uniform_weight: float = 1.0,
    potential: float = 2.0,
    alpha: float = 2.0,
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> dict:
    """The terms of :func:`clip_align_uniform` (same options): a dict with ``"loss"`` (the
    weighted total) and the unweighted ``"clip"``, ``"align"``, ``"uniform"`` (and
    ``"cross_uniform"`` with ``cross_uniformity=True``)."""
    weights = (align_weight, uniform_weight, cross_uniform_weight)
    eng = {"normalize": normalize, "chunk_size": chunk_size, "backend": backend}
    return _cua_terms(
        image, text, scale, temperature, cross_uniformity, weights, potential, alpha, eng,
        objective_group(),
    )  # fmt: skip


@exact_objective
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
    potential: float = 2.0,
    alpha: float = 2.0,
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """CLIP + alignment + uniformity (CUA; ``cross_uniformity=True``: CUAXU); see
    :class:`CLIPAlignUniform` (its terms: :func:`clip_align_uniform_terms`)."""
    weights = (align_weight, uniform_weight, cross_uniform_weight)
    eng = {"normalize": normalize, "chunk_size": chunk_size, "backend": backend}
    return _cua_terms(
        image, text, scale, temperature, cross_uniformity, weights, potential, alpha, eng,
        objective_group(),
    )["loss"]  # fmt: skip


class Alignment(Objective, functional=alignment):
    """Alignment of positive pairs: the mean distance between the two embeddings of each pair.

    Low alignment means positive pairs map to nearby points. Together with :class:`Uniformity`
    it characterises (and, as a loss, replaces) the contrastive objective on the hypersphere.
    With ``x_i``, ``y_i`` the L2-normalised embeddings of pair ``i``::

        l_i  = ||x_i - y_i||^alpha
        loss = mean_i l_i

    Exact under a ``torch.distributed`` process group (the mean over the global batch).

    Args:
        alpha (float): the exponent, default 2 (the paper). A Python number > 0.
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).
        normalize (bool): L2-normalise the embeddings (default ``True``).

    Inputs:
        ``x``, ``y``: float tensors ``(N, d)``; row ``i`` of ``x`` and row ``i`` of ``y`` are a
        positive pair (no negatives are used).

    Example::

        import torch
        import contrastkit as ck

        x, y = torch.randn(16, 8), torch.randn(16, 8)
        loss = ck.Alignment()(x, y) + ck.Uniformity()(x, y)

    See also:
        :class:`Uniformity`, :class:`CLIPAlignUniform`,
        :func:`contrastkit.metrics.geometry.alignment` (the no-grad metric).

    References:
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020, arXiv:2005.10242 (official code:
        github.com/SsnL/align_uniform).
    """


class Uniformity(Objective, functional=uniformity):
    """Uniformity: the log of the mean Gaussian potential between the embeddings of a batch.

    Low uniformity means the embeddings spread over the hypersphere. ``potential`` is the
    parameter ``t`` of the paper's Gaussian potential ``G_t(x, y) = exp(-t ||x - y||^2)``: a
    sharpness (it multiplies squared distances), not a temperature (it was called ``t`` before
    the keyword was renamed). With ``x_i`` the L2-normalised embeddings::

        loss = log mean_{i != j} exp(-potential ||x_i - x_j||^2)

    (the mean over ordered pairs ``i != j`` equals the paper's mean over ``i < j``). Given a
    second batch ``y`` the loss is the mean of both uniformities. A scalar (one log-mean-exp
    over all pairs), so there is no ``reduction``. Exact under a ``torch.distributed`` process
    group (all pairs of the global batch).

    Args:
        potential (float): the Gaussian potential's ``t``, default 2 (the paper). A Python
            number > 0.
        normalize (bool): L2-normalise the embeddings (default ``True``).
        chunk_size (int, optional): engine tile width (default: automatic).
        backend (str): engine path, ``"auto"`` (default), ``"dense"`` or ``"tiled"``.

    Inputs:
        ``x``: a float tensor ``(N, d)``, N >= 2; ``y`` (optional): ``(M, d)``, M >= 2. No
        positives: every pair of distinct rows of one batch contributes.

    Example::

        import torch
        import contrastkit as ck

        x = torch.randn(16, 8)
        loss = ck.Uniformity(potential=2.0)(x)

    See also:
        :class:`Alignment`, :class:`CrossUniformity`,
        :func:`contrastkit.metrics.geometry.uniformity` (the no-grad metric).

    References:
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020, arXiv:2005.10242 (official code:
        github.com/SsnL/align_uniform).
    """


class CrossUniformity(Objective, functional=cross_uniformity):
    """Cross-modal uniformity: uniformity over the non-matching pairs of two modalities.

    Used by CUAXU to spread the two modalities' embeddings over a common region of the
    hypersphere (closing the contrastive gap). With ``x_i``, ``y_j`` L2-normalised::

        loss = log mean_{i != j} exp(-potential ||x_i - y_j||^2)

    over the ``N (N - 1)`` pairs with ``i != j``. A scalar, so there is no ``reduction``. Exact
    under a ``torch.distributed`` process group.

    Args:
        potential (float): the Gaussian potential's ``t``, default 2. A Python number > 0.
        normalize (bool): L2-normalise the embeddings (default ``True``).
        chunk_size (int, optional): engine tile width (default: automatic).
        backend (str): engine path, ``"auto"`` (default), ``"dense"`` or ``"tiled"``.

    Inputs:
        ``x``, ``y``: float tensors ``(N, d)``, N >= 2; row ``i`` of both is a matched pair,
        which is left out (every non-matching pair contributes).

    Example::

        import torch
        import contrastkit as ck

        image, text = torch.randn(16, 8), torch.randn(16, 8)
        loss = ck.CrossUniformity()(image, text)

    See also:
        :class:`Uniformity`, :class:`CLIPAlignUniform`.

    References:
        Fahim, Murphy & Fyshe, "It's Not a Modality Gap: Characterizing and Addressing the
        Contrastive Gap", arXiv:2405.18570 (official code: github.com/abrar-fahim/contrastive-gap).
    """


class CLIPAlignUniform(
    ScaledObjective, functional=clip_align_uniform, init_temperature=0.01, learnable=False
):
    """CLIP + alignment + uniformity (CUA), optionally + cross-modal uniformity (CUAXU).

    The CLIP loss leaves image and text embeddings in separate cones of the hypersphere (the
    "contrastive gap"); adding alignment and uniformity terms closes it. The module owns the
    CLIP logit scale ``t`` (fixed at 100 by default, as the paper; ``learnable=True`` learns
    it). With :class:`Alignment` ``A``, :class:`Uniformity` ``U`` and :class:`CrossUniformity`
    ``XU``::

        L_CUA   = L_CLIP(t) + align_weight * A(I, T) + uniform_weight * (U(I) + U(T)) / 2
        L_CUAXU = L_CUA + cross_uniform_weight * XU(I, T)

    ``forward(image, text)`` returns the loss; :meth:`terms` returns the loss and every
    (unweighted) term. Exact under a ``torch.distributed`` process group.

    Args:
        init_temperature (float): initial ``1 / t``, default 0.01 (``t = 100``, the paper).
        learnable (bool): learn the logit scale (default ``False``: fixed, as the paper).
        max_logit_scale (float): clamp of ``t`` (default 100).
        cross_uniformity (bool): add the cross-modal uniformity term (CUAXU; default
            ``False``: CUA).
        align_weight, uniform_weight, cross_uniform_weight (float): term weights >= 0,
            default 1 (the paper).
        potential (float): the Gaussian potential's ``t`` of the uniformity terms, default 2.
        alpha (float): the alignment exponent, default 2.
        normalize (bool): L2-normalise the embeddings (default ``True``).
        chunk_size (int, optional): engine tile width (default: automatic).
        backend (str): engine path, ``"auto"`` (default), ``"dense"`` or ``"tiled"``.

    Inputs:
        ``image``, ``text``: float tensors ``(N, d)``, N >= 2; row ``i`` of both is a matched
        pair (the positive of CLIP and of the alignment term), every other row a negative.

    Example::

        import torch
        import contrastkit as ck

        image, text = torch.randn(16, 8), torch.randn(16, 8)
        cuaxu = ck.CLIPAlignUniform(cross_uniformity=True)
        loss = cuaxu(image, text)
        terms = cuaxu.terms(image, text)  # {"loss", "clip", "align", "uniform", ...}

    See also:
        :class:`contrastkit.CLIP`, :class:`Alignment`, :class:`Uniformity`,
        :class:`CrossUniformity`.

    References:
        Fahim, Murphy & Fyshe, "It's Not a Modality Gap: Characterizing and Addressing the
        Contrastive Gap", arXiv:2405.18570 (official code: github.com/abrar-fahim/contrastive-gap);
        Radford et al., "Learning Transferable Visual Models From Natural Language
        Supervision", arXiv:2103.00020.
    """

    def terms(self, image: Tensor, text: Tensor, **overrides) -> dict:
        """The loss and its unweighted terms (:func:`clip_align_uniform_terms`) with this
        module's options (keyword arguments override them for this call)."""
        opts = self.current_options()
        opts["scale"] = opts["scale"].to(image.device)
        return clip_align_uniform_terms(image, text, **{**opts, **overrides})
