"""Negatives: mining, false-negative filtering, synthesis, sampling and structure-aware weights.

Every piece feeds an objective of :mod:`contrastkit.losses`: mined indices become per-anchor hard
negatives (``gather_negatives`` -> ``info_nce(..., negatives=)``), weights become the engine's
negative weights and synthetic negatives extra candidates (``info_nce_with_negatives``).
"""

from .compose import info_nce_with_negatives, weight_function
from .filters import (
    FalseNegativeFilter,
    apply_filter,
    margin_filter,
    relative_margin_filter,
    threshold_filter,
)
from .mining import MinedNegatives, TopKMiner, gather_negatives, mined_info_nce
from .mixing import HardNegativeMixing, OnlineHardNegativeMixing, interpolate_negatives
from .sampling import (
    BadPairMiner,
    DebCSESampler,
    FeatureAwareSampler,
    cluster_features,
    combine_stage_labels,
    histogram_propensity,
)
from .subclass import SubclassBalancer, sbcl_loss
from .weighting import (
    AdaMEOWWeights,
    ClusterNegativeWeights,
    CommunityNegativeWeights,
    adameow_info_nce,
    community_centroids,
    community_contrast,
    community_strength,
    community_weights,
    meow_cluster_labels,
    team_up_gamma,
    team_up_loss,
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
    "SubclassBalancer",
    "TopKMiner",
    "adameow_info_nce",
    "apply_filter",
    "cluster_features",
    "combine_stage_labels",
    "community_centroids",
    "community_contrast",
    "community_strength",
    "community_weights",
    "gather_negatives",
    "histogram_propensity",
    "info_nce_with_negatives",
    "interpolate_negatives",
    "margin_filter",
    "meow_cluster_labels",
    "mined_info_nce",
    "relative_margin_filter",
    "sbcl_loss",
    "team_up_gamma",
    "team_up_loss",
    "threshold_filter",
    "weight_function",
]
