"""Temperature conventions, converted in one place (never mixed up).

* ``temperature`` tau: logits are ``s / tau`` (MoCo, SimCLR, SupCon).
* ``scale`` = 1 / tau: logits are ``scale * s`` (sentence-transformers MNRL ``scale=20``).
* ``logit_scale`` = log(1 / tau): the *parameter* open_clip and OpenAI CLIP learn; their losses
  receive ``logit_scale.exp()``, i.e. our ``scale``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._validation import check_positive

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
