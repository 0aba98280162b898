"""Functional twins of every objective (as ``torch.nn.functional``), generated from the catalogue
(:mod:`contrastkit.objective.registry`): each registered functional under its name and its
published aliases (``sinkhorn_knopp`` is registered as a helper without a twin), and the
temperature converters."""

from . import losses  # noqa: F401  (registers every objective)
from .objective.registry import entries as _entries
from .objective.registry import names as _names
from .objective.scale import (  # noqa: F401  (published here as well)
    logit_scale_from_temperature,
    scale_from_logit_scale,
    scale_from_temperature,
    temperature_from_logit_scale,
    temperature_from_scale,
)


def _namespace() -> dict:
    return {n: o for n, o in _names(_entries()).items() if not isinstance(o, type)}


globals().update(_namespace())

__all__ = sorted(
    [
        *_namespace(),
        "logit_scale_from_temperature",
        "scale_from_logit_scale",
        "scale_from_temperature",
        "temperature_from_logit_scale",
        "temperature_from_scale",
    ]
)
