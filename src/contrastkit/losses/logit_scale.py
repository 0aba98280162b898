"""A learnable logit scale ``t = exp(t')`` clamped at ``max_logit_scale`` (CLIP, open_clip)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_positive


class LogitScale(nn.Module):
    """Holds ``t' = log(1 / init_temperature)``; calling it returns ``t = exp(t')``.

    Before every use ``t'`` is clamped in place (no gradient) to ``[0, log(max_logit_scale)]``,
    which is what open_clip does after every optimiser step, so ``t`` stays in ``[1, 100]``.
    """

    def __init__(
        self, init_temperature: float = 0.07, learnable: bool = True, max_logit_scale=100.0
    ):
        super().__init__()
        check_positive("init_temperature", init_temperature)
        check_positive("max_logit_scale", max_logit_scale)
        if max_logit_scale < 1:
            raise ValueError(f"max_logit_scale must be >= 1, got {max_logit_scale}")
        value = torch.tensor(math.log(1.0 / init_temperature))
        if learnable:
            self.logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("logit_scale", value)
        self.max_logit_scale = float(max_logit_scale)

    def forward(self) -> Tensor:
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, math.log(self.max_logit_scale))
        return self.logit_scale.exp()

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.logit_scale))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, max_logit_scale={self.max_logit_scale}"
