"""Symmetric CLIP / ALIGN loss (Radford et al. 2021; Jia et al. 2021) with a learnable scale.

    A = t X Y^T,   loss = [CE_rows(A, arange) + CE_rows(A^T, arange)] / 2

One sweep computes the row and column log-sum-exps together; backward recomputes the tiles
(8 N M d FLOPs against 6 N M d for one direction). ``t`` comes from ``scale`` (e.g.
``logit_scale.exp()`` from open_clip) or ``temperature``; :class:`CLIPLoss` owns a learnable
``logit_scale`` initialised to ``log(1 / 0.07)`` and clamped at ``log(100)``.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ._common import check_has_negatives, exact_objective
from .info_nce import info_nce
from .logit_scale import ScaledLoss

__all__ = ["clip_loss", "CLIPLoss"]


@exact_objective
def clip_loss(
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
    """Symmetric CLIP loss of paired ``image`` and ``text`` embeddings (N, d), N >= 2 (one pair
    has no negative: a ``ValueError``)."""
    if scale is None and temperature is None:
        temperature = 0.07
    from .._validation import check_compatible, check_embeddings

    check_embeddings("image", image)
    check_embeddings("text", text)
    check_compatible("image", image, "text", text, same_rows=True)
    check_has_negatives("image", image, "CLIP")
    return info_nce(
        image,
        text,
        temperature=temperature,
        scale=scale,
        symmetric=True,
        reduction=reduction,
        normalize=normalize,
        chunk_size=chunk_size,
        backend=backend,
    )


class CLIPLoss(ScaledLoss):
    """CLIP loss owning its learnable logit scale: ``forward(image, text)``.

    Args:
        init_temperature: initial tau (logit scale ``log(1 / tau)``, 2.6593 for 0.07).
        learnable: learn the scale (a parameter) or keep it fixed (a buffer).
        max_logit_scale: clamp of ``t = exp(t')`` (100, as CLIP and open_clip).
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        learnable: bool = True,
        max_logit_scale: float = 100.0,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            init_temperature, learnable, max_logit_scale, reduction, normalize, chunk_size, backend
        )

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        return clip_loss(image, text, **self.options(image))
