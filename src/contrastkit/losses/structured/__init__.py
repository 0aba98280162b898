"""Structured targets: clustering (SwAV, MLCD), ranking (GroCo, CPRD), regression (ConR,
SupReMix) and approximation (PamC).

Every objective of this family is rank-local under a process group (Sinkhorn codes, top-k
searches, label windows, class sums and meta-nodes are computed over one rank's batch): inside
``contrastkit.distributed.local()`` it computes the per-rank loss, otherwise it raises.
"""

from ...objective import register
from .conr import ConR, conr
from .cprd import PartialRankingDistillation, partial_ranking_distillation
from .groco import GroCo, groco
from .mlcd import MLCD, MLCDLoss, mlcd
from .pamc import PamC, pamc
from .supremix import SupReMix, supremix
from .swav import SwAV, sinkhorn_knopp, swav

register(swav, SwAV, family="structured")
register(sinkhorn_knopp, None, family="structured")
register(mlcd, MLCD, family="structured", module_aliases=("MLCDLoss",))
register(groco, GroCo, family="structured")
register(partial_ranking_distillation, PartialRankingDistillation, family="structured")
register(conr, ConR, family="structured")
register(supremix, SupReMix, family="structured")
register(pamc, PamC, family="structured")

__all__ = [
    "ConR",
    "GroCo",
    "MLCD",
    "MLCDLoss",
    "PamC",
    "PartialRankingDistillation",
    "SupReMix",
    "SwAV",
    "conr",
    "groco",
    "mlcd",
    "pamc",
    "partial_ranking_distillation",
    "sinkhorn_knopp",
    "supremix",
    "swav",
]
