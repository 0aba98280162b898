"""Distillation objectives: a student's scores or embeddings trained towards a teacher's
(``docs/objectives/distillation.md``).

All take the teacher as detached labels. MarginMSE, KL distillation over listed candidates
and embedding regression compute O(N K d) (or O(N d)) terms without the engine; the in-batch
KL distillation runs on the engine with soft targets recomputed per tile from the teacher's
embeddings. Exact under a process group: every objective here is a per-query mean.
"""

from ...objective import register
from .embedding_distillation import EmbeddingDistillation, embedding_distillation
from .in_batch_kl_distillation import InBatchKLDistillation, in_batch_kl_distillation
from .kl_distillation import KLDistillation, kl_distillation
from .margin_mse import MarginMSE, margin_mse

register(margin_mse, MarginMSE, "distillation")
register(kl_distillation, KLDistillation, "distillation")
register(in_batch_kl_distillation, InBatchKLDistillation, "distillation")
register(embedding_distillation, EmbeddingDistillation, "distillation")

__all__ = [
    "EmbeddingDistillation",
    "InBatchKLDistillation",
    "KLDistillation",
    "MarginMSE",
    "embedding_distillation",
    "in_batch_kl_distillation",
    "kl_distillation",
    "margin_mse",
]
