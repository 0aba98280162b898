"""Positives: synthesised and transformed positive pairs (and the mixed positive/negative
targets of mixup methods)."""

from .hallucinator import Hallucinator
from .halp import HaLP, halp_t_max, slerp, spherical_kmeans
from .m3col import MultimodalMixup
from .metrix import Metrix
from .supremix import SupReMixBatch, SupReMixPairs, supremix_weight
from .transform import FeatureTransformation, extrapolate_positives

__all__ = [
    "FeatureTransformation",
    "HaLP",
    "Hallucinator",
    "Metrix",
    "MultimodalMixup",
    "SupReMixBatch",
    "SupReMixPairs",
    "extrapolate_positives",
    "halp_t_max",
    "slerp",
    "spherical_kmeans",
    "supremix_weight",
]


# objectives that used to live here are losses now (contrastkit.losses); the old names still
# resolve, lazily, so that this package never imports contrastkit.losses itself
_MOVED = {"mixup_contrastive_loss"}


def __getattr__(name):
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"contrastkit.positives.{name} moved to contrastkit.losses.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("contrastkit.losses"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
