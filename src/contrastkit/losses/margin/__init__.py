"""Margin objectives: triplets (given, batch-hard), Proto-Triplet, ICNN, token-level max-margin
and the contrastive pair loss (``docs/objectives/margin.md``).

None of them is a log-sum-exp over candidates, so none runs on the engine. Exact under a process
group: :func:`triplet_margin`, :func:`pair_margin_contrastive`, :func:`max_margin_contrastive`
(per-row means) and :func:`batch_hard_triplet` (mined against every rank's gathered rows);
rank-local: :func:`proto_triplet` and :func:`icnn` (prototypes and neighbourhoods of a rank's
episode).

The helpers :func:`class_prototypes` (ProtoNet prototypes) and :func:`icnn_score` (the score
ICNN takes the log of) are importable from here; they are not objectives.
"""

from ...objective import register
from .icnn import ICNN, ICNNLoss, icnn, icnn_loss, icnn_score  # noqa: F401 (helper)
from .max_margin_contrastive import MaxMarginContrastive, max_margin_contrastive
from .pair_margin_contrastive import PairMarginContrastive, pair_margin_contrastive
from .proto_triplet import ProtoTriplet, class_prototypes, proto_triplet  # noqa: F401 (helper)
from .triplet import BatchHardTriplet, TripletMargin, batch_hard_triplet, triplet_margin

register(triplet_margin, TripletMargin, "margin")
register(batch_hard_triplet, BatchHardTriplet, "margin")
register(proto_triplet, ProtoTriplet, "margin")
register(icnn, ICNN, "margin", functional_aliases=("icnn_loss",), module_aliases=("ICNNLoss",))
register(max_margin_contrastive, MaxMarginContrastive, "margin")
register(pair_margin_contrastive, PairMarginContrastive, "margin")

__all__ = [
    "BatchHardTriplet",
    "ICNN",
    "ICNNLoss",
    "MaxMarginContrastive",
    "PairMarginContrastive",
    "ProtoTriplet",
    "TripletMargin",
    "batch_hard_triplet",
    "icnn",
    "icnn_loss",
    "max_margin_contrastive",
    "pair_margin_contrastive",
    "proto_triplet",
    "triplet_margin",
]
