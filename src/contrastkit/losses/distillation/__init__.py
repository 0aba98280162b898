"""Distillation objectives: a student's scores or embeddings trained towards a teacher's
(``docs/objectives/distillation.md``).

All take the teacher as detached labels. MarginMSE, KL distillation over listed candidates
and embedding regression compute O(N K d) (or O(N d)) terms without the engine; the in-batch
KL distillation runs on the engine with soft targets recomputed per tile from the teacher's
embeddings, as does ALBEF's momentum distillation (soft targets from a momentum model's
features and queues). Exact under a process group: every objective here is a per-query mean.
:func:`ensemble_teacher_scores` (heterogeneous teachers' scores normalised into one label) is a
plain function, not an objective.
"""

from ...objective import register
from .embedding_distillation import EmbeddingDistillation, embedding_distillation
from .ensemble import ensemble_teacher_scores  # noqa: F401  (public, not an objective)
from .in_batch_kl_distillation import InBatchKLDistillation, in_batch_kl_distillation
from .kl_distillation import KLDistillation, kl_distillation
from .margin_mse import MarginMSE, margin_mse
from .momentum_distillation import MomentumDistillation, momentum_distillation

register(margin_mse, MarginMSE, "distillation")
register(kl_distillation, KLDistillation, "distillation")
register(in_batch_kl_distillation, InBatchKLDistillation, "distillation")
register(embedding_distillation, EmbeddingDistillation, "distillation")
register(momentum_distillation, MomentumDistillation, "distillation")

__all__ = [
    "EmbeddingDistillation",
    "InBatchKLDistillation",
    "KLDistillation",
    "MarginMSE",
    "MomentumDistillation",
    "embedding_distillation",
    "in_batch_kl_distillation",
    "kl_distillation",
    "margin_mse",
    "momentum_distillation",
]
