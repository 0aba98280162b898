"""M3CoL multimodal mixup (Kumar, Singhal et al., "Harnessing Shared Relations via Multimodal
Mixup Contrastive Learning for Multimodal Classification", TMLR 2025, arXiv:2409.17777;
official code RaghavSinghal10/M3CoL, ``model/utils.py`` ``mixco_*``).

Mix modality X; the loss contrasts the mixed batch against the fixed modality Y::

    perm random, beta_i ~ Beta(0.15, 0.15), selected_i = (U(0, 1) <= 0.5)
    x~_i = beta_i x_i + (1 - beta_i) x_perm(i)   (selected; else x~_i = x_i, beta_i = 1)

The loss of the mixed batch is :class:`contrastkit.losses.MixupContrastive` (soft targets
``P_ii = beta_i``, ``P_i,perm(i) = 1 - beta_i``); this package only builds its inputs::

    x_mixed, perm, mix = MultimodalMixup().mix(x, generator=g)
    loss = contrastkit.MixupContrastive(temperature=0.1)(x_mixed, y, perm, mix)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._validation import check_embeddings
from ._random import beta

__all__ = ["MultimodalMixup"]


class MultimodalMixup:
    """M3CoL mixing: ``mix(x, generator=None)`` -> ``(x_mixed, perm, mix)``, the inputs of
    :class:`contrastkit.losses.MixupContrastive` (with the other modality ``y``).

    Args:
        alpha: Beta(alpha, alpha) per sample (0.15); prob: probability a sample is mixed (0.5).
    """

    def __init__(self, alpha: float = 0.15, prob: float = 0.5):
        if not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.alpha, self.prob = float(alpha), float(prob)

    def mix(self, x: Tensor, generator: Optional[torch.Generator] = None):
        check_embeddings("x", x)
        B = x.shape[0]
        perm = torch.randperm(B, generator=generator).to(x.device)
        b = beta(self.alpha, self.alpha, (B,), generator, x)
        sel = (torch.rand(B, generator=generator) <= self.prob).to(x.device)
        b = torch.where(sel, b, torch.ones_like(b))
        x_mixed = b[:, None] * x + (1 - b[:, None]) * x[perm]
        return x_mixed, perm, b
