"""NegCLIP (Yuksekgonul et al., arXiv:2210.01936): symmetric CLIP whose image-to-text softmax
also holds generated hard-negative captions as extra columns; the text-to-image softmax is
CLIP's (over the N images, anchored at the N true captions only)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_tensor
from ...objective import ScaledObjective, check_has_negatives, exact_objective, objective_group
from ..infonce.info_nce import info_nce

__all__ = ["neg_clip", "NegCLIP"]


def _negative_columns(negatives, image: Tensor) -> Optional[Tensor]:
    """The hard negatives as (M, d) columns: (N, K, d) sample-major or (M, d); None if empty."""
    if negatives is None:
        return None
    check_tensor("negatives", negatives, ndim=(2, 3), kind="float", min_rows=0)  # finite too
    check_compatible("image", image, "negatives", negatives)
    if negatives.dim() == 3 and negatives.shape[0] != image.shape[0]:
        raise ValueError(
            f"negatives (N, K, d) must have one row per image: image {tuple(image.shape)}, "
            f"negatives {tuple(negatives.shape)}"
        )
    flat = negatives.reshape(-1, negatives.shape[-1])  # (N, K, d): sample-major columns
    return flat if flat.shape[0] else None


@exact_objective
def neg_clip(
    image: Tensor,
    text: Tensor,
    negatives: Optional[Tensor] = None,
    *,
    scale=None,
    temperature=None,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """NegCLIP loss of paired ``image`` / ``text`` (N, d) with hard-negative captions
    ``negatives`` (N, K, d) or (M, d); see :class:`NegCLIP`."""
    group = objective_group()
    if scale is None and temperature is None:
        temperature = 0.07
    check_embeddings("image", image)
    check_embeddings("text", text)
    check_compatible("image", image, "text", text, same_rows=True)
    neg = _negative_columns(negatives, image)
    if neg is None:
        check_has_negatives("image", image, "NegCLIP without negatives (CLIP)", group=group)
    # symmetric InfoNCE with a shared bank: the bank joins every image's row (image -> text);
    # the columns of the bank carry weight 0 in the text -> image direction
    return info_nce(
        image,
        text,
        neg,
        scale=scale,
        temperature=temperature,
        symmetric=True,
        reduction=reduction,
        normalize=normalize,
        chunk_size=chunk_size,
        backend=backend,
    )


class NegCLIP(ScaledObjective, functional=neg_clip, init_temperature=0.07):
    """NegCLIP: CLIP with composition-aware hard-negative captions. Image ``i`` must pick its
    caption among all captions of the batch and all generated negative captions (e.g. the
    caption with two words swapped); caption ``i`` must pick image ``i`` among the images, as
    in CLIP.

    The negative captions are extra **columns of the image-to-text softmax only**: they are
    never anchors and never enter the text-to-image softmax. Every image's row holds every
    negative of the batch (its own K and the other images' ones), as NegCLIP's and DeGLA's
    code do (``logits_per_image = image @ cat(texts, hard_captions).T``,
    ``logits_per_text[:N]``). Hard-negative *images* (NegCLIP's nearest-neighbour images with
    their captions) are ordinary pairs: append them to ``image`` / ``text``. Without
    negatives (``None`` or K = 0) this is :class:`CLIP` exactly.

    Runs on the tiled engine as the symmetric InfoNCE with a bank of ``M = N K`` negatives:
    memory O((N + M) d), never an N x (N + M) matrix. Exact under a process group: every rank's
    captions and negatives are columns of every image (the positive logit is an O(N d) dot
    product, so the order in which ranks' blocks are gathered cannot shift a label, unlike a
    naive all-gather of per-rank ``[captions; negatives]`` with ``arange`` labels).

    Formula::

        W = [w_1 .. w_N ; w^-_1 .. w^-_M]           M = N K columns of negatives
        u_ij = t <v_i, W_j>,  t = exp(t') = 1 / tau
        i2t_i = -u_ii + log sum_{j <= N + M} exp(u_ij)
        t2i_i = -u_ii + log sum_{j <= N} exp(t <w_i, v_j>)
        loss = (mean_i i2t_i + mean_i t2i_i) / 2

    Args:
        init_temperature (float, default 0.07): initial tau (logit scale ``log(1 / tau)``).
        learnable (bool, default True): learn the scale (a parameter) or keep it fixed.
        max_logit_scale (float, default 100.0): clamp of ``t = exp(t')`` (as CLIP).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per pair, the
            two directions' terms averaged).
        normalize (bool, default True): L2-normalise every input.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        =============  ===================  ==================================================
        input          shape                meaning
        =============  ===================  ==================================================
        ``image``      ``(N, d)`` float     image embeddings (anchors of image -> text)
        ``text``       ``(N, d)`` float     captions; row ``i`` is image ``i``'s positive
        ``negatives``  ``(N, K, d)`` or     hard-negative captions (K per image, K >= 0, or
                       ``(M, d)`` float,    any M); negatives of every image; optional
                       or None
        returns        scalar, or ``(N,)``  with ``reduction="none"``
        =============  ===================  ==================================================

    Example::

        import torch
        import contrastkit as ck

        image, text = torch.randn(8, 16), torch.randn(8, 16)
        swapped = torch.randn(8, 1, 16)  # one word-order-swapped caption per image
        loss_fn = ck.NegCLIP()
        loss = loss_fn(image, text, swapped)
        clip = loss_fn(image, text)  # no negatives: the CLIP loss

    See also:
        :class:`CLIP` (no negatives), :class:`ImageGroundedContrast` (each image against its
        own negatives only), :class:`CountCLIP`, :class:`InfoNCE` (a shared bank of
        negatives, one direction).

    References:
        Yuksekgonul, Bianchi, Kalluri, Jurafsky, Zou, "When and Why Vision-Language Models
        Behave like Bags-of-Words, and What to Do About It?", ICLR 2023, arXiv:2210.01936
        (code: github.com/vinid/neg_clip). Hu et al., "Decoupled Global-Local Alignment for
        Improving Compositional Understanding" (DeGLA's global term), arXiv:2504.16801.
    """
