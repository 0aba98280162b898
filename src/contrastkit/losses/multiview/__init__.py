"""Multi-view and multi-modal objectives (MV-InfoNCE, MV-DHEL, Symile), the alignment /
uniformity geometry objectives and CLIP + alignment + uniformity (``docs/objectives/multiview.md``).

Names published before the naming rule stay importable as aliases of the same objects:
``alignment_loss``/``AlignmentLoss``, ``uniformity_loss``/``UniformityLoss`` and
``cross_uniformity_loss``.
"""

from ...objective import register
from .alignment_uniformity import (
    Alignment,
    CLIPAlignUniform,
    CrossUniformity,
    Uniformity,
    alignment,
    clip_align_uniform,
    cross_uniformity,
    uniformity,
)
from .alignment_uniformity import (
    clip_align_uniform_terms as clip_align_uniform_terms,
)
from .multiview import (
    MVDHEL,
    MVInfoNCE,
    mv_dhel,
    mv_info_nce,
)
from .symile import (
    Symile,
    symile,
)

# clip_align_uniform_terms (the loss and its terms as a dict; CLIPAlignUniform.terms) is a
# helper, not an objective: importable from here, not in __all__

# aliases of the names published before the naming rule
alignment_loss = alignment
AlignmentLoss = Alignment
uniformity_loss = uniformity
UniformityLoss = Uniformity
cross_uniformity_loss = cross_uniformity

register(mv_info_nce, MVInfoNCE, family="multiview")
register(mv_dhel, MVDHEL, family="multiview")
register(symile, Symile, family="multiview")
register(
    alignment,
    Alignment,
    family="multiview",
    functional_aliases=("alignment_loss",),
    module_aliases=("AlignmentLoss",),
)
register(
    uniformity,
    Uniformity,
    family="multiview",
    functional_aliases=("uniformity_loss",),
    module_aliases=("UniformityLoss",),
)
register(
    cross_uniformity,
    CrossUniformity,
    family="multiview",
    functional_aliases=("cross_uniformity_loss",),
)
register(clip_align_uniform, CLIPAlignUniform, family="multiview")

__all__ = [
    "Alignment",
    "AlignmentLoss",
    "CLIPAlignUniform",
    "CrossUniformity",
    "MVDHEL",
    "MVInfoNCE",
    "Symile",
    "Uniformity",
    "UniformityLoss",
    "alignment",
    "alignment_loss",
    "clip_align_uniform",
    "cross_uniformity",
    "cross_uniformity_loss",
    "mv_dhel",
    "mv_info_nce",
    "symile",
    "uniformity",
    "uniformity_loss",
]
