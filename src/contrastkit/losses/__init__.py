"""Contrastive objectives, each a short specification on the engine (module + functional twin).

One module per objective family; ``docs/objectives/`` has a page per family.
"""

from .alignment_uniformity import (
    AlignmentLoss,
    CLIPAlignUniform,
    UniformityLoss,
    alignment_loss,
    clip_align_uniform,
    cross_uniformity_loss,
    uniformity_loss,
)
from .amcl import (
    AMCL,
    amcl,
)
from .cacr import (
    CACR,
    cacr,
)
from .clip import (
    CLIPLoss,
    clip_loss,
)
from .conr import (
    ConR,
    conr,
)
from .cprd import (
    PartialRankingDistillation,
    partial_ranking_distillation,
)
from .cwcl import (
    CWCL,
    cwcl,
)
from .dcl import (
    DCL,
    DCLW,
    dcl,
    dclw,
)
from .debiased import (
    DebiasedInfoNCE,
    HardNegativeInfoNCE,
    debiased_info_nce,
    hard_negative_info_nce,
)
from .focal import (
    FocalInfoNCE,
    focal_info_nce,
)
from .groco import (
    GroCo,
    groco,
)
from .info_nce import (
    InfoNCE,
    MultipleNegativesRanking,
    info_nce,
    multiple_negatives_ranking,
)
from .logit_scale import (
    LogitScale,
)
from .margin import (
    ICNNLoss,
    MaxMarginContrastive,
    PairMarginContrastive,
    ProtoTriplet,
    TripletMargin,
    batch_hard_triplet,
    icnn_loss,
    max_margin_contrastive,
    pair_margin_contrastive,
    proto_triplet,
    triplet_margin,
)
from .mlcd import (
    MLCDLoss,
    mlcd,
)
from .multiview import (
    MVDHEL,
    MVInfoNCE,
    mv_dhel,
    mv_info_nce,
)
from .ntxent import (
    NTXent,
    nt_xent,
)
from .one_to_k import (
    OneToKContrastive,
    one_to_k_contrastive,
)
from .pamc import (
    PamC,
    pamc,
)
from .siglip import (
    SigLIPLoss,
    siglip_loss,
)
from .simctg import (
    SimCTGLoss,
    simctg_contrastive,
    simctg_loss,
)
from .sogclr import (
    SogCLR,
    iSogCLR,
    isogclr,
    sogclr,
)
from .sogclr_bimodal import (
    SogCLRBimodal,
    isogclr_bimodal,
    iSogCLRBimodal,
    sogclr_bimodal,
)
from .supcon import (
    SupCon,
    supcon,
)
from .supremix import (
    SupReMix,
    supremix,
)
from .swav import (
    SwAV,
    sinkhorn_knopp,
    swav,
)
from .symile import (
    Symile,
    symile,
)
from .whitening import (
    ShuffledGroupWhitening,
    WhitenedCSELoss,
    group_whiten,
    whitened_cse,
)

__all__ = [
    "AMCL",
    "AlignmentLoss",
    "CACR",
    "CLIPAlignUniform",
    "CLIPLoss",
    "CWCL",
    "ConR",
    "DCL",
    "DCLW",
    "DebiasedInfoNCE",
    "FocalInfoNCE",
    "GroCo",
    "HardNegativeInfoNCE",
    "ICNNLoss",
    "InfoNCE",
    "LogitScale",
    "MLCDLoss",
    "MVDHEL",
    "MVInfoNCE",
    "MaxMarginContrastive",
    "MultipleNegativesRanking",
    "NTXent",
    "OneToKContrastive",
    "PairMarginContrastive",
    "PamC",
    "PartialRankingDistillation",
    "ProtoTriplet",
    "ShuffledGroupWhitening",
    "SigLIPLoss",
    "SimCTGLoss",
    "SogCLR",
    "SogCLRBimodal",
    "SupCon",
    "SupReMix",
    "SwAV",
    "Symile",
    "TripletMargin",
    "UniformityLoss",
    "WhitenedCSELoss",
    "alignment_loss",
    "amcl",
    "batch_hard_triplet",
    "cacr",
    "clip_align_uniform",
    "clip_loss",
    "conr",
    "cross_uniformity_loss",
    "cwcl",
    "dcl",
    "dclw",
    "debiased_info_nce",
    "focal_info_nce",
    "groco",
    "group_whiten",
    "hard_negative_info_nce",
    "iSogCLR",
    "iSogCLRBimodal",
    "icnn_loss",
    "info_nce",
    "isogclr",
    "isogclr_bimodal",
    "max_margin_contrastive",
    "mlcd",
    "multiple_negatives_ranking",
    "mv_dhel",
    "mv_info_nce",
    "nt_xent",
    "one_to_k_contrastive",
    "pair_margin_contrastive",
    "pamc",
    "partial_ranking_distillation",
    "proto_triplet",
    "siglip_loss",
    "simctg_contrastive",
    "simctg_loss",
    "sinkhorn_knopp",
    "sogclr",
    "sogclr_bimodal",
    "supcon",
    "supremix",
    "swav",
    "symile",
    "triplet_margin",
    "uniformity_loss",
    "whitened_cse",
]
