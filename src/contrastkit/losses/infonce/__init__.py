"""The InfoNCE family: one positive (or a label set) against in-batch, queued, mined or weighted
negatives (``docs/objectives/infonce.md``)."""

from ...objective import register
from .clip import CLIP, CLIPLoss, clip, clip_loss
from .cwcl import CWCL, cwcl
from .dcl import DCL, DCLW, dcl, dclw
from .dexml import DEXML, dexml
from .info_nce import InfoNCE, MultipleNegativesRanking, info_nce, multiple_negatives_ranking
from .m3col import MixupContrastive, mixup_contrastive, mixup_contrastive_loss
from .mined import MinedInfoNCE, mined_info_nce
from .nce import NCE, CompositionalNLL, compositional_nll, nce
from .ntxent import NTXent, nt_xent
from .siglip import SigLIP, SigLIPLoss, siglip, siglip_loss
from .supcon import SupCon, supcon
from .with_negatives import InfoNCEWithNegatives, info_nce_with_negatives

register(info_nce, InfoNCE, family="infonce")
register(multiple_negatives_ranking, MultipleNegativesRanking, family="infonce")
register(nt_xent, NTXent, family="infonce")
register(
    clip, CLIP, family="infonce", functional_aliases=("clip_loss",), module_aliases=("CLIPLoss",)
)
register(
    siglip,
    SigLIP,
    family="infonce",
    functional_aliases=("siglip_loss",),
    module_aliases=("SigLIPLoss",),
)
register(dcl, DCL, family="infonce")
register(dclw, DCLW, family="infonce")
register(supcon, SupCon, family="infonce")
register(cwcl, CWCL, family="infonce")
register(info_nce_with_negatives, InfoNCEWithNegatives, family="infonce")
register(mined_info_nce, MinedInfoNCE, family="infonce")
register(
    mixup_contrastive,
    MixupContrastive,
    family="infonce",
    functional_aliases=("mixup_contrastive_loss",),
)
register(dexml, DEXML, family="infonce")
register(nce, NCE, family="infonce")
register(compositional_nll, CompositionalNLL, family="infonce")

__all__ = [
    "CLIP",
    "CLIPLoss",
    "CWCL",
    "CompositionalNLL",
    "DCL",
    "DCLW",
    "DEXML",
    "InfoNCE",
    "InfoNCEWithNegatives",
    "MinedInfoNCE",
    "MixupContrastive",
    "MultipleNegativesRanking",
    "NCE",
    "NTXent",
    "SigLIP",
    "SigLIPLoss",
    "SupCon",
    "clip",
    "clip_loss",
    "compositional_nll",
    "cwcl",
    "dcl",
    "dclw",
    "dexml",
    "info_nce",
    "info_nce_with_negatives",
    "mined_info_nce",
    "mixup_contrastive",
    "mixup_contrastive_loss",
    "multiple_negatives_ranking",
    "nce",
    "nt_xent",
    "siglip",
    "siglip_loss",
    "supcon",
]
