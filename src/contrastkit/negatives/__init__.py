"""Negatives: mining, false-negative filtering, synthesis, sampling and structure-aware weights.

Every piece feeds an objective of :mod:`contrastkit.losses`: mined indices become per-anchor hard
negatives (``gather_negatives`` -> ``info_nce(..., negatives=)``), weights become the engine's
negative weights and synthetic negatives extra candidates (``info_nce_with_negatives``).
"""

from .compose import weight_function
from .filters import (
    FalseNegativeFilter,
    apply_filter,
    margin_filter,
    relative_margin_filter,
    threshold_filter,
)
from .mining import MinedNegatives, TopKMiner, gather_negatives
from .mixing import HardNegativeMixing, OnlineHardNegativeMixing, interpolate_negatives
from .sampling import (
    BadPairMiner,
    DebCSESampler,
    FeatureAwareSampler,
    cluster_features,
    combine_stage_labels,
    histogram_propensity,
)
from .semi_hard import SemiHardMiner
from .subclass import SubclassBalancer
from .weighting import (
    AdaMEOWWeights,
    ClusterNegativeWeights,
    CommunityNegativeWeights,
    community_centroids,
    community_strength,
    community_weights,
    meow_cluster_labels,
    team_up_gamma,
)

__all__ = [
    "AdaMEOWWeights",
    "BadPairMiner",
    "ClusterNegativeWeights",
    "CommunityNegativeWeights",
    "DebCSESampler",
    "FalseNegativeFilter",
    "FeatureAwareSampler",
    "HardNegativeMixing",
    "MinedNegatives",
    "OnlineHardNegativeMixing",
    "SemiHardMiner",
    "SubclassBalancer",
    "TopKMiner",
    "apply_filter",
    "cluster_features",
    "combine_stage_labels",
    "community_centroids",
    "community_strength",
    "community_weights",
    "gather_negatives",
    "histogram_propensity",
    "interpolate_negatives",
    "margin_filter",
    "meow_cluster_labels",
    "relative_margin_filter",
    "team_up_gamma",
    "threshold_filter",
    "weight_function",
]


# objectives that used to live here are losses now (contrastkit.losses); the old names still
# resolve, lazily, so that this package never imports contrastkit.losses itself
_MOVED = {
    "info_nce_with_negatives",
    "mined_info_nce",
    "adameow_info_nce",
    "community_contrast",
    "team_up_loss",
    "sbcl_loss",
}


def __getattr__(name):
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"contrastkit.negatives.{name} moved to contrastkit.losses.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("contrastkit.losses"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
