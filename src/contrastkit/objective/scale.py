"""Temperature conventions, converted in one place, and the logit multiplier of the engine.

* ``temperature`` tau: logits are ``s / tau`` (MoCo, SimCLR, SupCon). Every objective of
  contrastkit takes ``temperature``.
* ``scale`` = 1 / tau: logits are ``scale * s`` (sentence-transformers' MNRL ``scale=20``);
  only objectives that mirror a peer API with a scale take it, beside ``temperature``.
* ``logit_scale`` = log(1 / tau): the *parameter* open_clip and OpenAI CLIP learn; their losses
  receive ``logit_scale.exp()``, i.e. our ``scale``. :class:`LogitScale` holds one.

The engine multiplies similarities by ``kappa = 1 / tau`` (:func:`kappa`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .._validation import check_positive, check_temperature
from ..engine import compute_dtype
from .group import replicated

__all__ = [
    "LogitScale",
    "kappa",
    "logit_scale_from_temperature",
    "scale_from_logit_scale",
    "scale_from_temperature",
    "temperature_from_logit_scale",
    "temperature_from_scale",
]


def kappa(
    ref: Tensor,
    temperature=None,
    scale=None,
    n_rows: Optional[int] = None,
    *,
    group,
) -> Tensor:
    """The logit multiplier 1/tau as a tensor: from ``scale`` if given, else ``temperature``.

    A tensor temperature may be 0-dim (global, possibly learnable) or ``(n_rows,)`` (per anchor).
    Under ``group`` a 0-dim tensor is :func:`~contrastkit.objective.group.replicated`: its
    gradient is that of the global loss on every rank.
    """
    if scale is not None and temperature is not None:
        raise ValueError("give either temperature or scale, not both")
    name, value = ("scale", scale) if scale is not None else ("temperature", temperature)
    if value is None:
        raise ValueError("temperature (or scale) is required")
    check_positive(name, value)
    dt = compute_dtype(ref.dtype)
    if isinstance(value, Tensor):
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != n_rows):
            raise ValueError(
                f"{name} must be a scalar or have one value per anchor ({n_rows},), "
                f"got shape {tuple(value.shape)}"
            )
        if value.device != ref.device:
            raise ValueError(f"{name} is on {value.device} but the embeddings on {ref.device}")
        value = value.to(dt)
        if value.dim() == 0:
            value = replicated(value, group=group)
        return value if name == "scale" else 1.0 / value
    k = float(value) if name == "scale" else 1.0 / float(value)
    return torch.tensor(k, dtype=dt, device=ref.device)


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


# Every conversion is element-wise (a tensor of any shape converts entry by entry); a
# temperature or scale must be finite and > 0, a logit scale finite.


def _finite(name: str, value) -> None:
    if isinstance(value, Tensor):
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be a finite floating tensor, got {value!r:.60}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    elif not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


def scale_from_temperature(temperature):
    check_positive("temperature", temperature)
    return 1.0 / temperature


def temperature_from_scale(scale):
    check_positive("scale", scale)
    return 1.0 / scale


def logit_scale_from_temperature(temperature):
    """open_clip's parameter for a temperature: ``log(1 / tau)`` (0.07 -> 2.6593)."""
    check_positive("temperature", temperature)
    if isinstance(temperature, Tensor):
        return -torch.log(temperature)
    return -math.log(temperature)


def temperature_from_logit_scale(logit_scale):
    _finite("logit_scale", logit_scale)
    if isinstance(logit_scale, Tensor):
        return torch.exp(-logit_scale)
    return math.exp(-logit_scale)


def scale_from_logit_scale(logit_scale):
    _finite("logit_scale", logit_scale)
    if isinstance(logit_scale, Tensor):
        return torch.exp(logit_scale)
    return math.exp(logit_scale)
