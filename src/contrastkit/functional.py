"""Functional twins of every objective in :mod:`contrastkit.losses` (as ``torch.nn.functional``)."""

from .losses import (
    clip_loss,
    cwcl,
    dcl,
    dclw,
    debiased_info_nce,
    hard_negative_info_nce,
    info_nce,
    multiple_negatives_ranking,
    nt_xent,
    siglip_loss,
    supcon,
)
from .temperature import (
    logit_scale_from_temperature,
    scale_from_logit_scale,
    scale_from_temperature,
    temperature_from_logit_scale,
    temperature_from_scale,
)

__all__ = [
    "clip_loss",
    "cwcl",
    "dcl",
    "dclw",
    "debiased_info_nce",
    "hard_negative_info_nce",
    "info_nce",
    "logit_scale_from_temperature",
    "multiple_negatives_ranking",
    "nt_xent",
    "scale_from_logit_scale",
    "scale_from_temperature",
    "siglip_loss",
    "supcon",
    "temperature_from_logit_scale",
    "temperature_from_scale",
]
