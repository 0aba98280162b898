"""Representation shaping: shuffled group whitening of sentence embeddings and its objective
(WhitenedCSE), and SimCTG's token-level contrastive objective for text generation.

:func:`whitened_cse` is exact under a process group; the whitening transform
(:func:`shuffled_group_whitening`) and SimCTG are rank-local (inside
``contrastkit.distributed.local()`` they compute on this rank's batch, otherwise they raise).
"""

from ...objective import register
from .simctg import (
    SimCTG,
    SimCTGContrastive,
    SimCTGLoss,
    simctg,
    simctg_contrastive,
    simctg_loss,
)
from .whitening import (
    ShuffledGroupWhitening,
    WhitenedCSE,
    WhitenedCSELoss,
    group_whiten,
    shuffled_group_whitening,
    whitened_cse,
)

register(whitened_cse, WhitenedCSE, family="shaping", module_aliases=("WhitenedCSELoss",))
register(
    shuffled_group_whitening,
    ShuffledGroupWhitening,
    family="shaping",
    functional_aliases=("group_whiten",),
)
register(
    simctg,
    SimCTG,
    family="shaping",
    functional_aliases=("simctg_loss",),
    module_aliases=("SimCTGLoss",),
)
register(simctg_contrastive, SimCTGContrastive, family="shaping")

__all__ = [
    "ShuffledGroupWhitening",
    "SimCTG",
    "SimCTGContrastive",
    "SimCTGLoss",
    "WhitenedCSE",
    "WhitenedCSELoss",
    "group_whiten",
    "shuffled_group_whitening",
    "simctg",
    "simctg_contrastive",
    "simctg_loss",
    "whitened_cse",
]
