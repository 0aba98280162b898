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


def scale_from_temperature(temperature):
    return 1.0 / temperature


def temperature_from_scale(scale):
    return 1.0 / scale


def logit_scale_from_temperature(temperature):
    """open_clip's parameter for a temperature: ``log(1 / tau)`` (0.07 -> 2.6593)."""
    if isinstance(temperature, Tensor):
        return -torch.log(temperature)
    return -math.log(temperature)


def temperature_from_logit_scale(logit_scale):
    if isinstance(logit_scale, Tensor):
        return torch.exp(-logit_scale)
    return math.exp(-logit_scale)


def scale_from_logit_scale(logit_scale):
    if isinstance(logit_scale, Tensor):
        return torch.exp(logit_scale)
    return math.exp(logit_scale)
