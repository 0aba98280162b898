"""Contrastive objectives, each a short specification on the engine (module + functional twin)."""

from .clip import CLIPLoss, clip_loss
from .cwcl import CWCL, cwcl
from .dcl import DCL, DCLW, dcl, dclw
from .debiased import (
    DebiasedInfoNCE,
    HardNegativeInfoNCE,
    debiased_info_nce,
    hard_negative_info_nce,
)
from .info_nce import InfoNCE, MultipleNegativesRanking, info_nce, multiple_negatives_ranking
from .logit_scale import LogitScale
from .ntxent import NTXent, nt_xent
from .siglip import SigLIPLoss, siglip_loss
from .supcon import SupCon, supcon

__all__ = [
    "CLIPLoss",
    "CWCL",
    "DCL",
    "DCLW",
    "DebiasedInfoNCE",
    "HardNegativeInfoNCE",
    "InfoNCE",
    "LogitScale",
    "MultipleNegativesRanking",
    "NTXent",
    "SigLIPLoss",
    "SupCon",
    "clip_loss",
    "cwcl",
    "dcl",
    "dclw",
    "debiased_info_nce",
    "hard_negative_info_nce",
    "info_nce",
    "multiple_negatives_ranking",
    "nt_xent",
    "siglip_loss",
    "supcon",
]
