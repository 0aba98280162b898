"""The tiled, exact contrast engine (torch only; imports nothing else of contrastkit)."""

from .candidates import LocalCandidates
from .dispatch import BACKENDS, choose_path, compute_dtype, contrast
from .spec import LSETerm, PairMask, RowSpec, SoftTargets

__all__ = [
    "BACKENDS",
    "LSETerm",
    "LocalCandidates",
    "PairMask",
    "RowSpec",
    "SoftTargets",
    "choose_path",
    "compute_dtype",
    "contrast",
]
