"""Hard negatives inside symmetric CLIP: NegCLIP-style extra text negatives in the
image-to-text direction only, image- and text-grounded composition contrast, counting
contrast (``docs/objectives/compositional.md``).

NegCLIP and CountCLIP run their CLIP part on the tiled engine; the grounded contrasts and the
counting term compare each sample with its own few candidates (O(N K d), no engine). Every
objective here is exact under a process group.
"""

from ...objective import register
from .count_clip import CountCLIP, count_clip
from .grounded import (
    ImageGroundedContrast,
    TextGroundedContrast,
    image_grounded_contrast,
    text_grounded_contrast,
)
from .neg_clip import NegCLIP, neg_clip

register(neg_clip, NegCLIP, "compositional")
register(image_grounded_contrast, ImageGroundedContrast, "compositional")
register(text_grounded_contrast, TextGroundedContrast, "compositional")
register(count_clip, CountCLIP, "compositional")

__all__ = [
    "CountCLIP",
    "ImageGroundedContrast",
    "NegCLIP",
    "TextGroundedContrast",
    "count_clip",
    "image_grounded_contrast",
    "neg_clip",
    "text_grounded_contrast",
]
