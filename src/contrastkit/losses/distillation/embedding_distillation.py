"""Embedding regression distillation: student embeddings regressed onto a teacher's (MSE, as
sentence-transformers' ``MSELoss``, or cosine distance), O(N d) (exact under a process group:
a per-row mean)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_reduction
from ...objective import Objective, exact_objective, objective_group, prepare, reduce

__all__ = ["embedding_distillation", "EmbeddingDistillation"]

DISTANCES = ("mse", "l2", "cosine")


@exact_objective
def embedding_distillation(
    student: Tensor,
    teacher: Tensor,
    *,
    distance: str = "mse",
    normalize: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Regression of ``student`` onto ``teacher`` embeddings; see
    :class:`EmbeddingDistillation`."""
    group = objective_group()
    check_reduction(reduction)
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    check_embeddings("student", student)
    check_embeddings("teacher", teacher)
    # any floating teacher dtype is accepted (a frozen fp32 teacher next to a bf16 student)
    check_compatible("student", student, "teacher", teacher.to(student.dtype), same_rows=True)
    z = prepare(student, normalize)
    t = prepare(teacher.detach().to(z.dtype), normalize)
    if distance == "mse":
        rows = (z - t).pow(2).mean(1)
    elif distance == "l2":
        d2 = (z - t).pow(2).sum(1)
        pos = d2 > 0
        rows = torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), 0 * d2)
    else:
        rows = 1 - F.cosine_similarity(z, t, dim=1, eps=1e-12)
    return reduce(rows, reduction, group=group)


class EmbeddingDistillation(Objective, functional=embedding_distillation):
    """Embedding regression distillation: the student's embeddings regressed onto a teacher's.

    Each row pairs a student embedding with the teacher's embedding of the same input (a
    stronger model, an EMA copy of the student, a multilingual student mimicking an English
    teacher). The teacher is a label (no gradient). With ``distance="mse"`` the loss is the
    mean squared error over all ``N d`` coordinates (sentence-transformers' ``MSELoss``),
    with ``"l2"`` the mean Euclidean distance, with ``"cosine"`` the mean of one minus the
    cosine similarity (the three distances of sentence-transformers' ``EmbedDistillLoss``)::

        mse:     l_i = 1/d sum_k (z_ik - t_ik)^2
        l2:      l_i = ||z_i - t_i||_2            (gradient 0 where z_i = t_i)
        cosine:  l_i = 1 - <z_i, t_i> / (||z_i|| ||t_i||)
        loss     = mean_i l_i

    On unit vectors (``normalize=True``) ``d * l_i`` of the MSE form equals
    ``2 (1 - cos)``: the cosine form times 2. A self-distillation term written as the sum of
    squared differences of normalised features (DeGLA's EMA teacher) is ``d`` times this loss
    with ``normalize=True, reduction="sum"``. The student and teacher dimensions must agree
    (project the student first otherwise). ``EmbedDistillLoss`` defaults to ``"cosine"``; here
    the default is ``"mse"``, as ``MSELoss``. Exact under a ``torch.distributed`` process
    group (the mean over the global batch of rows).

    Args:
        distance (str): ``"mse"`` (default), ``"l2"`` or ``"cosine"``.
        normalize (bool): L2-normalise student and teacher first. Default ``False``.
        reduction (str): ``"mean"`` over rows (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ===========  ==========  ====================================================
        input        shape       meaning
        ===========  ==========  ====================================================
        ``student``  ``(N, d)``  student embeddings
        ``teacher``  ``(N, d)``  teacher embeddings of the same inputs (detached; cast
                                 to the student's dtype)
        ===========  ==========  ====================================================

    Example::

        import torch
        from contrastkit.losses.distillation import EmbeddingDistillation

        student, teacher = torch.randn(4, 8), torch.randn(4, 8)
        loss = EmbeddingDistillation(distance="cosine")(student, teacher)

    See also:
        :class:`MarginMSE` and :class:`KLDistillation` (distillation of scores instead of
        embeddings).

    References:
        Reimers, Gurevych, "Making Monolingual Sentence Embeddings Multilingual using
        Knowledge Distillation", arXiv:2004.09813.
    """
