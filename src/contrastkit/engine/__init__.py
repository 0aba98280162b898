"""The tiled, exact contrast engine (torch only; imports nothing else of contrastkit)."""

from .dispatch import BACKENDS, choose_path, compute_dtype, contrast
from .spec import ColumnStatistics, LSETerm, PairMask, RowSpec, RowStatistics, SoftTargets

__all__ = [
    "BACKENDS",
    "ColumnStatistics",
    "LSETerm",
    "PairMask",
    "RowSpec",
    "RowStatistics",
    "SoftTargets",
    "choose_path",
    "compute_dtype",
    "contrast",
]
