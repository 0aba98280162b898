"""KL distillation of a teacher's score distribution over each query's listed candidates
(sentence-transformers' ``DistillKLDivLoss``), O(N K d) (exact under a process group: a
per-query mean)."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from ..._validation import check_reduction, check_temperature
from ...objective import Objective, exact_objective, objective_group, reduce, replicated
from ._common import listed_scores, teacher_tensor

__all__ = ["kl_distillation", "KLDistillation"]

DIVERGENCES = ("kl", "cross_entropy")


@exact_objective
def kl_distillation(
    query: Tensor,
    candidates: Tensor,
    teacher_scores: Tensor,
    *,
    temperature: Union[float, Tensor] = 1.0,
    teacher_temperature: Optional[Union[float, Tensor]] = None,
    temperature_squared: bool = True,
    divergence: str = "kl",
    normalize: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """KL(teacher softmax || student softmax) over listed candidates; see
    :class:`KLDistillation`."""
    group = objective_group()
    check_reduction(reduction)
    check_temperature("temperature", temperature)
    if teacher_temperature is None:
        teacher_temperature = temperature
    check_temperature("teacher_temperature", teacher_temperature)
    if not isinstance(temperature_squared, bool):
        raise ValueError(f"temperature_squared must be a bool, got {temperature_squared!r}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    s = listed_scores(query, candidates, normalize)
    t = teacher_tensor("teacher_scores", teacher_scores, (tuple(s.shape),), s, inf_ok=True)
    valid = ~torch.isneginf(t)
    empty = ~valid.any(1)
    if bool(empty.any()):
        raise ValueError(
            f"teacher_scores has {int(empty.sum())} rows that are all -inf (no candidate left), "
            f"shape {tuple(t.shape)}"
        )
    if isinstance(teacher_temperature, Tensor):
        teacher_temperature = teacher_temperature.detach().to(s.device, s.dtype)
    if isinstance(temperature, Tensor):  # learnable: the global loss's gradient on every rank
        temperature = replicated(temperature.to(s.device, s.dtype), group=group)
    log_p = torch.log_softmax(t / teacher_temperature, dim=1)
    log_q = torch.log_softmax((s / temperature).masked_fill(~valid, float("-inf")), dim=1)
    p = log_p.exp()
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    log_q = torch.where(valid, log_q, zero)
    if divergence == "kl":
        rows = (p * (torch.where(valid, log_p, zero) - log_q)).sum(1)
    else:
        rows = -(p * log_q).sum(1)
    if temperature_squared:
        rows = rows * temperature**2
    return reduce(rows, reduction, group=group)


class KLDistillation(Objective, functional=kl_distillation):
    """KL distillation of a teacher's score distribution over each query's listed candidates.

    Each query comes with K listed candidates (a positive and mined negatives, in any order)
    that a teacher (cross-encoder, LLM judge, stronger bi-encoder) has scored. The student's
    softmax over the candidates is pulled towards the teacher's softmax (forward KL, teacher
    first: mass covering). The teacher scores are labels (no gradient). With student scores
    ``s_ik = <q_i, c_ik>`` (dot product; cosine with ``normalize=True``), student temperature
    ``T`` = ``temperature`` and teacher temperature ``T_t`` (``teacher_temperature``, default
    ``T``)::

        p_ik = softmax_k(t_ik / T_t)        q_ik = softmax_k(s_ik / T)
        l_i  = T^2 sum_k p_ik (log p_ik - log q_ik)
        loss = mean_i l_i

    This is sentence-transformers' ``DistillKLDivLoss`` (``KLDivLoss(reduction="batchmean")``
    times the squared student temperature, Hinton's scaling; ``temperature_squared=False``
    drops the factor). ``divergence="cross_entropy"`` gives ``-T^2 sum_k p_ik log q_ik`` (the
    value FlagEmbedding/BGE reports: KL plus the teacher entropy; same gradient). The
    temperature is applied to the raw teacher scores: cosine teacher scores in [-1, 1] at
    ``T_t = 1`` give nearly uniform targets, so scale them (or lower ``teacher_temperature``).
    A teacher score of ``-inf`` pads a query's list: that candidate gets ``p = 0`` and leaves
    the student's softmax too. The gradient with respect to ``s_i`` is
    ``T (q_i - p_i)`` (rows sum to 0). Exact under a ``torch.distributed`` process group (the
    mean over the global batch of queries).

    Args:
        temperature (float or Tensor): the student temperature ``T`` (and the teacher's by
            default), default 1.0 (sentence-transformers >= 5.0.1). A number or a 0-dim tensor.
        teacher_temperature (float or Tensor, optional): the teacher temperature ``T_t``;
            ``None`` (default): ``temperature``.
        temperature_squared (bool): multiply the loss by ``temperature ** 2`` (Hinton et
            al.), default ``True``.
        divergence (str): ``"kl"`` (default) or ``"cross_entropy"`` (KL plus the teacher
            entropy).
        normalize (bool): L2-normalise query and candidates first (cosine scores). Default
            ``False`` (dot product).
        reduction (str): ``"mean"`` over queries (default: KL's ``"batchmean"``), ``"sum"``
            or ``"none"`` (``(N,)``).

    Inputs:
        ==================  =============  =============================================
        input               shape          meaning
        ==================  =============  =============================================
        ``query``           ``(N, d)``     student query embeddings
        ``candidates``      ``(N, K, d)``  student candidate embeddings, K >= 2
        ``teacher_scores``  ``(N, K)``     teacher scores of the same candidates (any
                                           real dtype; ``-inf`` pads; detached)
        ==================  =============  =============================================

    Example::

        import torch
        from contrastkit.losses.distillation import KLDistillation

        query, candidates = torch.randn(4, 8), torch.randn(4, 3, 8)
        teacher_scores = torch.tensor([[9.0, 2.0, 1.0], [7.5, 7.0, 3.0],
                                       [8.0, 1.0, float("-inf")], [6.0, 4.0, 2.0]])
        loss = KLDistillation(temperature=1.0)(query, candidates, teacher_scores)

    See also:
        :class:`MarginMSE` (regression of score margins on the same listed candidates),
        :class:`InBatchKLDistillation` (every in-batch candidate, teacher embeddings),
        :class:`MultipleNegativesRanking` (the one-hot teacher limit: InfoNCE).

    References:
        Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network",
        arXiv:1503.02531.
        Lin, Yang, Lin, "Distilling Dense Representations for Ranking using Tightly-Coupled
        Teachers", arXiv:2010.11386.
    """
