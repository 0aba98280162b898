"""View builders: text (SimCSE dropout, ESimCSE word
repetition), images (multi-crop), graphs (edge dropping, feature masking, LightGCL SVD view) and
time series (jitter, scaling, segment permutation, time masking). Pure torch; every random
choice comes from an optional seeded ``torch.Generator``.
"""

from .graph import SVDView, drop_edges, mask_features, normalize_bipartite, svd_view
from .image import MultiCrop, multi_crop, random_resized_crop_box
from .text import RepeatedBatch, dropout_views, word_repetition, word_repetition_batch
from .timeseries import jitter, permute_segments, scaling, time_mask

__all__ = [
    "dropout_views",
    "word_repetition",
    "word_repetition_batch",
    "RepeatedBatch",
    "multi_crop",
    "random_resized_crop_box",
    "MultiCrop",
    "drop_edges",
    "mask_features",
    "normalize_bipartite",
    "svd_view",
    "SVDView",
    "jitter",
    "scaling",
    "permute_segments",
    "time_mask",
]
