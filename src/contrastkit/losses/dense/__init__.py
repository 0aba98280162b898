"""Dense and temporal contrast (``docs/objectives/dense.md``): PixPro's pixel-propagation
consistency, pixel-level InfoNCE with spatial positives (PixContrast), temporal contrast with
time-offset positives and misaligned frames as negatives, COMET's hierarchical multi-level
contrast of medical time series.

PixPro and COMET are dense like their official code (per-image / per-timestamp matrices); the
pixel and temporal InfoNCE objectives run on the engine with many positives per anchor (pixel
positives per block of whole images from their coordinates, frame positives listed); all four
are exact under a process group. :func:`pixel_propagation` (PixPro's propagation module)
is a helper, not an objective.
"""

from ...objective import register
from .comet import COMET, comet
from .pixel_contrast import PixelContrast, pixel_contrast
from .pixpro import PixPro, pixel_propagation, pixpro  # noqa: F401 (helper)
from .temporal_contrast import TemporalContrast, temporal_contrast

register(pixpro, PixPro, "dense")
register(pixel_contrast, PixelContrast, "dense")
register(temporal_contrast, TemporalContrast, "dense")
register(comet, COMET, "dense")

__all__ = [
    "COMET",
    "PixPro",
    "PixelContrast",
    "TemporalContrast",
    "comet",
    "pixel_contrast",
    "pixpro",
    "temporal_contrast",
]
