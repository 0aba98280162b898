"""Weighting: per-sample temperatures, stochastic optimisation of global objectives, and
negatives weighted by hardness, clusters, communities or sub-classes."""

from ...objective.registry import register
from .adameow import AdaMEOWInfoNCE, adameow_info_nce
from .amcl import AMCL, amcl
from .cacr import CACR, cacr
from .community import CommunityContrast, community_contrast
from .debiased import (
    DebiasedInfoNCE,
    HardNegativeInfoNCE,
    debiased_info_nce,
    hard_negative_info_nce,
)
from .focal import FocalInfoNCE, focal_info_nce
from .one_to_k import OneToKContrastive, one_to_k_contrastive
from .sbcl import SBCL, sbcl, sbcl_loss
from .sogclr import SogCLR, iSogCLR, isogclr, sogclr
from .sogclr_bimodal import SogCLRBimodal, isogclr_bimodal, iSogCLRBimodal, sogclr_bimodal
from .team_up import TeamUp, team_up, team_up_loss

for _functional, _module, _aliases in (
    (sogclr, SogCLR, ()),
    (isogclr, iSogCLR, ()),
    (sogclr_bimodal, SogCLRBimodal, ()),
    (isogclr_bimodal, iSogCLRBimodal, ()),
    (amcl, AMCL, ()),
    (cacr, CACR, ()),
    (focal_info_nce, FocalInfoNCE, ()),
    (one_to_k_contrastive, OneToKContrastive, ()),
    (debiased_info_nce, DebiasedInfoNCE, ()),
    (hard_negative_info_nce, HardNegativeInfoNCE, ()),
    (adameow_info_nce, AdaMEOWInfoNCE, ()),
    (community_contrast, CommunityContrast, ()),
    (team_up, TeamUp, ("team_up_loss",)),
    (sbcl, SBCL, ("sbcl_loss",)),
):
    register(_functional, _module, "weighting", functional_aliases=_aliases)

__all__ = [
    "AMCL",
    "AdaMEOWInfoNCE",
    "CACR",
    "CommunityContrast",
    "DebiasedInfoNCE",
    "FocalInfoNCE",
    "HardNegativeInfoNCE",
    "OneToKContrastive",
    "SBCL",
    "SogCLR",
    "SogCLRBimodal",
    "TeamUp",
    "adameow_info_nce",
    "amcl",
    "cacr",
    "community_contrast",
    "debiased_info_nce",
    "focal_info_nce",
    "hard_negative_info_nce",
    "iSogCLR",
    "iSogCLRBimodal",
    "isogclr",
    "isogclr_bimodal",
    "one_to_k_contrastive",
    "sbcl",
    "sbcl_loss",
    "sogclr",
    "sogclr_bimodal",
    "team_up",
    "team_up_loss",
]
