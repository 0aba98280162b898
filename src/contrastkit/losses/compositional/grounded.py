"""DeGLA's local contrasts (Hu et al., arXiv:2504.16801): image-grounded (IGC, the image
against its caption and the caption's own K generated negatives) and text-grounded (TGC, the
caption against its EMA teacher's embedding and its own negatives, at scale 10).

Each anchor meets only its own 1 + K candidates: O(N K d) batched dot products, no N x N
matrix and no engine (a softmax over a listed handful of candidates is already linear).
Exact under a process group: a per-sample mean.
"""

from __future__ import annotations

from torch import Tensor

from ..._validation import check_compatible, check_embeddings
from ...objective import (
    Objective,
    ScaledObjective,
    exact_objective,
    kappa,
    objective_group,
    prepare,
    reduce,
)
from ._common import check_negatives, own_negatives_rows

__all__ = [
    "image_grounded_contrast",
    "ImageGroundedContrast",
    "text_grounded_contrast",
    "TextGroundedContrast",
]


@exact_objective
def image_grounded_contrast(
    image: Tensor,
    text: Tensor,
    negatives: Tensor,
    *,
    scale=None,
    temperature=None,
    reduction: str = "mean",
    normalize: bool = True,
) -> Tensor:
    """DeGLA's image-grounded contrast of ``image`` (N, d) over ``text`` (N, d) and its own
    ``negatives`` (N, K, d); see :class:`ImageGroundedContrast`."""
    group = objective_group()
    if scale is None and temperature is None:
        temperature = 0.07
    check_embeddings("image", image)
    check_embeddings("text", text)
    check_compatible("image", image, "text", text, same_rows=True)
    check_negatives("negatives", negatives, "image", image)
    N = image.shape[0]
    k = kappa(image, temperature, scale, n_rows=N, group=group)
    v, w, neg = prepare(image, normalize), prepare(text, normalize), prepare(negatives, normalize)
    return reduce(own_negatives_rows(v, w, neg, k), reduction, group=group)


class ImageGroundedContrast(ScaledObjective, functional=image_grounded_contrast):
    """DeGLA's image-grounded contrast (IGC): each image must pick its own caption among that
    caption and the caption's own K generated negatives (LLM rewrites that change the
    composition: swapped attributes, relations, objects). Other images' captions and negatives
    are not candidates.

    The module owns a learnable logit scale like :class:`CLIP` (DeGLA uses the CLIP model's
    own scale; to share one, call the functional with ``scale=clip_module.logit_scale.exp()``).
    Negatives are an explicit ``(N, K, d)`` tensor, so no column layout can pair an image with
    another sample's negatives. With K = 0 the loss is 0; with K = 1 it is the two-way
    counting loss ``softplus(u_neg - u_pos)`` of :class:`CountCLIP`. Computed without the
    engine (O(N K d)); exact under a process group (a per-image mean).

    Formula::

        u(v, w) = t <v, w>,   t = exp(t') = 1 / tau
        l_i = -u(v_i, w_i) + log( exp u(v_i, w_i) + sum_k exp u(v_i, w^-_ik) )
        loss = mean_i l_i

    Args:
        init_temperature (float, default 0.07): initial tau (logit scale ``log(1 / tau)``).
        learnable (bool, default True): learn the scale (a parameter) or keep it fixed.
        max_logit_scale (float, default 100.0): clamp of ``t = exp(t')``.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (one per image).
        normalize (bool, default True): L2-normalise every input.

    Inputs:
        =============  ===================  ===============================================
        input          shape                meaning
        =============  ===================  ===============================================
        ``image``      ``(N, d)`` float     image embeddings (the anchors)
        ``text``       ``(N, d)`` float     captions; row ``i`` is image ``i``'s positive
        ``negatives``  ``(N, K, d)`` float  the K negatives generated from caption ``i``
        returns        scalar, or ``(N,)``  with ``reduction="none"``
        =============  ===================  ===============================================

    Example::

        import torch
        import contrastkit as ck

        image, text, negatives = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 4, 16)
        igc = ck.ImageGroundedContrast()
        loss = igc(image, text, negatives)
        clip_scale = torch.tensor(100.0)  # e.g. a CLIP module's logit_scale.exp()
        shared = ck.image_grounded_contrast(image, text, negatives, scale=clip_scale)

    See also:
        :class:`TextGroundedContrast` (the caption against its EMA teacher and its negatives),
        :class:`NegCLIP` (the negatives as columns of every image), :class:`KLDistillation`.

    References:
        Hu, Yang, Wang, Xu, Feng, Wang, "Decoupled Global-Local Alignment for Improving
        Compositional Understanding", arXiv:2504.16801 (code: github.com/xiaoxing2001/DeGLA).
    """


@exact_objective
def text_grounded_contrast(
    text: Tensor,
    teacher_text: Tensor,
    negatives: Tensor,
    *,
    temperature=0.1,
    reduction: str = "mean",
    normalize: bool = True,
) -> Tensor:
    """DeGLA's text-grounded contrast of ``text`` (N, d) against its teacher's embedding
    ``teacher_text`` (N, d, detached) and its own ``negatives`` (N, K, d); see
    :class:`TextGroundedContrast`."""
    group = objective_group()
    check_embeddings("text", text)
    check_embeddings("teacher_text", teacher_text)
    check_compatible("text", text, "teacher_text", teacher_text, same_rows=True)
    check_negatives("negatives", negatives, "text", text)
    N = text.shape[0]
    k = kappa(text, temperature, None, n_rows=N, group=group)
    w, neg = prepare(text, normalize), prepare(negatives, normalize)
    teacher = prepare(teacher_text.detach(), normalize)
    return reduce(own_negatives_rows(w, teacher, neg, k), reduction, group=group)


class TextGroundedContrast(Objective, functional=text_grounded_contrast):
    """DeGLA's text-grounded contrast (TGC): each caption's student embedding must be closer
    to the frozen (EMA) teacher's embedding of the *same* caption than to the student's
    embeddings of its own K generated negatives.

    The teacher is a label: ``teacher_text`` is detached (compute it without gradient, e.g.
    with :class:`contrastkit.memory.MomentumEncoder`). DeGLA uses a fixed scale of 10
    (``temperature=0.1``), not the CLIP model's learned one. Negatives are an explicit
    ``(N, K, d)`` tensor: each caption meets its own negatives only. With K = 0 the loss is 0.
    Computed without the engine (O(N K d)); exact under a process group (a per-caption mean).

    Formula::

        u(a, b) = <a, b> / tau,   tau = 0.1 (scale 10)
        l_i = -u(w_i, w^T_i) + log( exp u(w_i, w^T_i) + sum_k exp u(w_i, w^-_ik) )
        loss = mean_i l_i          (w^T: the teacher's embedding, detached)

    Args:
        temperature (float | Tensor, default 0.1): tau (DeGLA: scale 10); a 0-dim tensor
            (learnable) or one value per caption ``(N,)`` is accepted as well.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (one per caption).
        normalize (bool, default True): L2-normalise every input.

    Inputs:
        ================  ===================  ============================================
        input             shape                meaning
        ================  ===================  ============================================
        ``text``          ``(N, d)`` float     the student's caption embeddings (anchors)
        ``teacher_text``  ``(N, d)`` float     the teacher's embeddings of the same captions
                                               (the positives; detached)
        ``negatives``     ``(N, K, d)`` float  the student's embeddings of caption ``i``'s
                                               K generated negatives
        returns           scalar, or ``(N,)``  with ``reduction="none"``
        ================  ===================  ============================================

    Example::

        import torch
        import contrastkit as ck

        text, negatives = torch.randn(8, 16), torch.randn(8, 4, 16)
        teacher_text = text + 0.1 * torch.randn(8, 16)  # an EMA teacher's embeddings
        loss = ck.TextGroundedContrast()(text, teacher_text, negatives)

    See also:
        :class:`ImageGroundedContrast` (the image as anchor), :class:`EmbeddingDistillation`
        (DeGLA's self-distillation term), :class:`NegCLIP`.

    References:
        Hu, Yang, Wang, Xu, Feng, Wang, "Decoupled Global-Local Alignment for Improving
        Compositional Understanding", arXiv:2504.16801 (code: github.com/xiaoxing2001/DeGLA).
    """
