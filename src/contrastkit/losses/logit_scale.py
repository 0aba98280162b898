"""A learnable logit scale ``t = exp(t')`` clamped at ``max_logit_scale`` (CLIP, open_clip)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_positive, check_temperature


class LogitScale(nn.Module):
    """Holds ``t' = log(1 / init_temperature)``; calling it returns ``t = exp(t')``.

    Before every use ``t'`` is clamped in place (no gradient) to ``[0, log(max_logit_scale)]``,
    which is what open_clip does after every optimiser step, so ``t`` stays in ``[1, 100]``.
    """

    def __init__(
        self, init_temperature: float = 0.07, learnable: bool = True, max_logit_scale=100.0
    ):
        super().__init__()
        check_temperature("init_temperature", init_temperature)
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
        return float(torch.exp(-self.logit_scale.detach()))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, max_logit_scale={self.max_logit_scale}"


class ScaledLoss(nn.Module):
    """Base of the losses that own a :class:`LogitScale` (CLIP, CWCL, SigLIP): it validates and
    stores the shared options and exposes ``logit_scale`` (open_clip's parameter ``t'``)."""

    def __init__(
        self,
        init_temperature: float,
        learnable: bool,
        max_logit_scale: float,
        reduction: str,
        normalize: bool,
        chunk_size,
        backend: str,
    ):
        super().__init__()
        from .._validation import check_reduction
        from ._common import engine_args

        check_reduction(reduction)
        engine_args(chunk_size, backend)
        self.scale = LogitScale(init_temperature, learnable, max_logit_scale)
        self.reduction, self.normalize = reduction, normalize
        self.chunk_size, self.backend = chunk_size, backend

    @property
    def logit_scale(self):
        """The learned parameter ``t'`` (open_clip's ``logit_scale``)."""
        return self.scale.logit_scale

    def options(self, ref: Tensor) -> dict:
        """Keyword arguments for the functional twin: the current scale and the options."""
        # a non-tensor input is left to the functional, whose error names the argument
        device = ref.device if isinstance(ref, Tensor) else None
        return {
            "scale": self.scale().to(device),
            "reduction": self.reduction,
            "normalize": self.normalize,
            "chunk_size": self.chunk_size,
            "backend": self.backend,
        }
