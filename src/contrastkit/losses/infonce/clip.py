"""Symmetric CLIP / ALIGN loss (Radford et al. 2021; Jia et al. 2021) with a learnable scale.

    A = t X Y^T,   loss = [CE_rows(A, arange) + CE_rows(A^T, arange)] / 2

One sweep computes the row and column log-sum-exps together; backward recomputes the tiles
(8 N M d FLOPs against 6 N M d for one direction). ``t`` comes from ``scale`` (e.g.
``logit_scale.exp()`` from open_clip) or ``temperature``; :class:`CLIP` owns a learnable
``logit_scale`` initialised to ``log(1 / 0.07)`` and clamped at ``log(100)``.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..._validation import check_compatible, check_embeddings
from ...objective import ScaledObjective, check_has_negatives, exact_objective, objective_group
from .info_nce import _info_nce

__all__ = ["clip", "CLIP", "clip_loss", "CLIPLoss"]


@exact_objective
def clip(
    image: Tensor,
    text: Tensor,
    *,
    scale=None,
    temperature=None,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Symmetric CLIP loss of paired ``image`` and ``text`` embeddings (N, d), N >= 2; see
    :class:`CLIP`."""
    group = objective_group()
    if scale is None and temperature is None:
        temperature = 0.07
    check_embeddings("image", image)
    check_embeddings("text", text)
    check_compatible("image", image, "text", text, same_rows=True)
    check_has_negatives("image", image, "CLIP", group=group)
    return _info_nce(  # the symmetric InfoNCE
        image,
        text,
        None,
        temperature=temperature,
        scale=scale,
        symmetric=True,
        in_batch_negatives=True,
        reduction=reduction,
        normalize=normalize,
        chunk_size=chunk_size,
        backend=backend,
        group=group,
    )


class CLIP(ScaledObjective, functional=clip, init_temperature=0.07):
    """The CLIP / ALIGN contrastive loss with its learnable logit scale: image ``i`` must pick
    text ``i`` among the batch's texts, and text ``i`` image ``i`` among the images.

    The module owns open_clip's ``logit_scale`` parameter ``t'`` (``log(1 / 0.07)`` at start),
    clamped to ``[0, log 100]`` before each use as open_clip does after every step; the logits
    are ``exp(t') cos(x_i, y_j)``. The functional :func:`clip` takes ``scale`` (open_clip's
    ``logit_scale.exp()``) or ``temperature`` instead. Both directions run in one sweep of the
    tiled engine (memory O(N)). Exact under a process group (open_clip's ``gather_with_grad``
    result without the N x N matrix).

    Formula::

        A_ij = t <x_i, y_j>,   t = exp(t') = 1 / tau
        loss = [ mean_i CE(A_i., i) + mean_j CE(A_.j, j) ] / 2

    Args:
        init_temperature (float, default 0.07): initial tau (logit scale ``log(1 / tau)``,
            2.6593 for 0.07).
        learnable (bool, default True): learn the scale (a parameter) or keep it fixed (a
            buffer).
        max_logit_scale (float, default 100.0): clamp of ``t = exp(t')`` (as CLIP and open_clip).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per pair, the two
            directions' terms averaged).
        normalize (bool, default True): L2-normalise both inputs.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``image``: (N, d) float, N >= 2.
        - ``text``: (N, d) float; row ``i`` is the positive of ``image[i]``, the other rows its
          negatives (and vice versa).
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        image, text = torch.randn(8, 16), torch.randn(8, 16)
        loss_fn = ck.CLIP(init_temperature=0.07)
        loss = loss_fn(image, text)
        same = ck.clip(image, text, scale=loss_fn.logit_scale.exp())

    See also:
        :class:`SigLIP` (sigmoid loss), :class:`CWCL` (soft targets), :class:`InfoNCE`
        (``symmetric=True`` with a fixed temperature). ``CLIPLoss`` / ``clip_loss`` are the
        names earlier releases used (aliases of the same objects).

    References:
        Radford et al., "Learning Transferable Visual Models From Natural Language
        Supervision", ICML 2021, arXiv:2103.00020. Jia et al., "Scaling Up Visual and
        Vision-Language Representation Learning With Noisy Text Supervision" (ALIGN),
        arXiv:2102.05918. Official code: github.com/mlfoundations/open_clip.
    """


#: the names earlier releases published
clip_loss = clip
CLIPLoss = CLIP
