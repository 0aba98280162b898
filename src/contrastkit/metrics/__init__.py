"""Evaluation metrics on embeddings: geometry, k-NN, linear probe, retrieval, STS, zero-shot.

Pure functions: tensors in, Python floats out (spectra and ranks as tensors). Bad inputs raise
``ValueError`` naming the argument and its shape.
"""

from .geometry import (
    alignment,
    collapse_spectrum,
    cone_effect,
    effective_rank,
    isotropy,
    modality_gap,
    modality_separability,
    rankme,
    tolerance,
    uniformity,
)
from .knn import knn_accuracy
from .probe import linear_probe_accuracy
from .retrieval import (
    IR_METRICS,
    cosine_scores,
    ground_truth_ranks,
    hit_rate_at_k,
    map_at_k,
    mean_rank,
    mean_rank_variance,
    median_rank,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    ranked_retrieval_metrics,
    recall_at_k,
    retrieval_ranks,
)
from .sts import pearson_correlation, spearman_correlation, sts_pearson, sts_spearman
from .zero_shot import zero_shot_accuracy, zero_shot_classifier

__all__ = [
    "alignment",
    "uniformity",
    "tolerance",
    "effective_rank",
    "rankme",
    "collapse_spectrum",
    "modality_gap",
    "cone_effect",
    "modality_separability",
    "isotropy",
    "knn_accuracy",
    "linear_probe_accuracy",
    "cosine_scores",
    "ground_truth_ranks",
    "retrieval_ranks",
    "hit_rate_at_k",
    "mean_rank",
    "median_rank",
    "recall_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "map_at_k",
    "precision_at_k",
    "ranked_retrieval_metrics",
    "IR_METRICS",
    "mean_rank_variance",
    "spearman_correlation",
    "pearson_correlation",
    "sts_spearman",
    "sts_pearson",
    "zero_shot_classifier",
    "zero_shot_accuracy",
]
