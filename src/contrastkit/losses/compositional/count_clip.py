"""CountCLIP (Paiss et al., arXiv:2302.12066): the CLIP loss plus a counting-contrastive term,
a two-way softmax of each counting image between its caption and the same caption with a wrong
number (the counterfactual)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_number, check_tensor
from ...objective import (
    ScaledObjective,
    exact_objective,
    kappa,
    objective_group,
    prepare,
    reduce,
)
from ..infonce.clip import clip
from ._common import own_negatives_rows

__all__ = ["count_clip", "CountCLIP"]


@exact_objective
def count_clip(
    image: Tensor,
    text: Tensor,
    counterfactual: Tensor,
    counting: Optional[Tensor] = None,
    *,
    count_weight: float = 1.0,
    scale=None,
    temperature=None,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """CLIP loss of ``image`` / ``text`` (N, d) plus ``count_weight`` times the counting loss
    against ``counterfactual`` (N, d) on the rows marked in ``counting`` (N,); see
    :class:`CountCLIP`."""
    group = objective_group()
    if scale is None and temperature is None:
        temperature = 0.07
    check_embeddings("image", image)
    check_embeddings("text", text)
    check_compatible("image", image, "text", text, same_rows=True)
    check_embeddings("counterfactual", counterfactual)
    check_compatible("image", image, "counterfactual", counterfactual, same_rows=True)
    N = image.shape[0]
    if counting is not None:
        check_tensor("counting", counting, ndim=1, kind="bool", rows=N, ref=image)
    weight = check_number("count_weight", count_weight, minimum=0.0)
    loss = clip(
        image,
        text,
        scale=scale,
        temperature=temperature,
        reduction=reduction,
        normalize=normalize,
        chunk_size=chunk_size,
        backend=backend,
    )
    k = kappa(image, temperature, scale, n_rows=N, group=group)
    v, w = prepare(image, normalize), prepare(text, normalize)
    cf = prepare(counterfactual, normalize)
    rows = own_negatives_rows(v, w, cf[:, None], k)  # softplus(u_cf - u_pos)
    n_counting = N
    if counting is not None:
        rows = torch.where(counting, rows, torch.zeros_like(rows))
        n_counting = int(counting.sum())
    return loss + weight * reduce(rows, reduction, n_counting, group=group)


class CountCLIP(ScaledObjective, functional=count_clip, init_temperature=0.07):
    """CountCLIP: the CLIP loss plus a counting-contrastive loss that teaches the model object
    counts. Each image of the counting subset must prefer its caption ("three dogs on the
    grass") to the same caption with a wrong number ("six dogs on the grass") in a two-way
    softmax.

    The counterfactual captions are **not** columns of the CLIP matrix (they are not in-batch
    negatives of other images): each meets only its own image. ``counting`` marks the rows of
    the batch that belong to the counting subset (default: all); the other rows' counterfactuals
    are ignored (pass anything finite, e.g. the caption itself). The counting term uses the
    CLIP logit scale. The CLIP part runs on the tiled engine (memory O(N d)); the counting term
    is O(N d). Exact under a process group (both are means over the global batch: the CLIP mean
    over all pairs, the counting mean over all counting rows). With ``count_weight=0`` or no
    counting row this is :class:`CLIP`.

    Formula::

        u(v, w) = t <v, w>,   t = exp(t') = 1 / tau
        l_i = -log( exp u(v_i, w_i) / (exp u(v_i, w_i) + exp u(v_i, w^cf_i)) )
            = softplus( u(v_i, w^cf_i) - u(v_i, w_i) )
        loss = L_CLIP + lambda * mean_{i in counting} l_i

    ``reduction="none"`` returns each pair's CLIP term plus ``lambda l_i`` (0 off the counting
    subset); ``"sum"`` is its sum; ``"mean"`` divides the CLIP part by N and the counting part
    by the number of counting rows (0 when there is none).

    Args:
        init_temperature (float, default 0.07): initial tau (logit scale ``log(1 / tau)``).
        learnable (bool, default True): learn the scale (a parameter) or keep it fixed.
        max_logit_scale (float, default 100.0): clamp of ``t = exp(t')``.
        count_weight (float, default 1.0): lambda, the weight of the counting loss (the paper
            does not pin it down here; 1 is a neutral default).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (see above).
        normalize (bool, default True): L2-normalise every input.
        chunk_size (int | None, default None): engine tile size of the CLIP part.
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        ==================  ===================  ========================================
        input               shape                meaning
        ==================  ===================  ========================================
        ``image``           ``(N, d)`` float     image embeddings, N >= 2
        ``text``            ``(N, d)`` float     captions; row ``i`` is image ``i``'s
        ``counterfactual``  ``(N, d)`` float     caption ``i`` with a wrong count
        ``counting``        ``(N,)`` bool        rows of the counting subset (optional,
                                                 default all)
        returns             scalar, or ``(N,)``  with ``reduction="none"``
        ==================  ===================  ========================================

    Example::

        import torch
        import contrastkit as ck

        image, text, wrong = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
        counting = torch.tensor([True, True, True, False, False, False, False, False])
        loss_fn = ck.CountCLIP(count_weight=1.0)
        loss = loss_fn(image, text, wrong, counting)

    See also:
        :class:`CLIP`, :class:`ImageGroundedContrast` (K generated negatives per image; with
        K = 1 its term is the counting loss), :class:`NegCLIP` (negatives as columns of every
        image).

    References:
        Paiss, Ephrat, Tov, Zada, Mosseri, Irani, Dekel, "Teaching CLIP to Count to Ten",
        ICCV 2023, arXiv:2302.12066.
    """
