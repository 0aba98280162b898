"""Temperature conventions (they live in :mod:`contrastkit.objective.scale`)."""

from .objective.scale import (
    logit_scale_from_temperature,
    scale_from_logit_scale,
    scale_from_temperature,
    temperature_from_logit_scale,
    temperature_from_scale,
)

__all__ = [
    "logit_scale_from_temperature",
    "scale_from_logit_scale",
    "scale_from_temperature",
    "temperature_from_logit_scale",
    "temperature_from_scale",
]
