"""Positives: synthesised and transformed positive pairs (and the mixed positive/negative
targets of mixup methods)."""

from .hallucinator import Hallucinator
from .halp import HaLP, halp_t_max, slerp, spherical_kmeans
from .m3col import MultimodalMixup, mixup_contrastive_loss
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
    "mixup_contrastive_loss",
    "slerp",
    "spherical_kmeans",
    "supremix_weight",
]
