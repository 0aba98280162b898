"""MarginMSE (Hofstätter et al., 2020): the student's positive-minus-negative score margins
regressed onto the teacher's, O(N K d) on listed candidates (exact under a process group: a
per-query mean)."""

from __future__ import annotations

from torch import Tensor

from ..._validation import check_reduction
from ...objective import Objective, exact_objective, objective_group, reduce
from ._common import listed_scores, teacher_tensor

__all__ = ["margin_mse", "MarginMSE"]


@exact_objective
def margin_mse(
    query: Tensor,
    candidates: Tensor,
    teacher: Tensor,
    *,
    normalize: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """MarginMSE of the student's margins against the teacher's; see :class:`MarginMSE`."""
    group = objective_group()
    check_reduction(reduction)
    s = listed_scores(query, candidates, normalize)
    n, k = s.shape
    shapes = ((n, k), (n, k - 1)) + (((n,),) if k == 2 else ())
    t = teacher_tensor("teacher", teacher, shapes, s)
    if t.dim() == 1:
        t = t[:, None]
    m_teacher = t[:, :1] - t[:, 1:] if t.shape[1] == k else t
    m_student = s[:, :1] - s[:, 1:]
    rows = (m_student - m_teacher).pow(2).mean(1)
    return reduce(rows, reduction, group=group)


class MarginMSE(Objective, functional=margin_mse):
    """MarginMSE: cross-architecture knowledge distillation of score margins.

    Each query comes with K listed candidates, the positive first, then K - 1 (mined)
    negatives. A teacher (typically a cross-encoder) scored them; the student (a bi-encoder)
    is trained so that its margin between the positive and each negative equals the teacher's
    margin. Only differences are matched, so the student need not reproduce the teacher's
    absolute scores, but the scales must be compatible (MSE is not scale invariant: a cosine
    student cannot reach cross-encoder margins of about 10). The teacher enters as labels (no
    gradient). With student scores ``s_ik = <q_i, c_ik>`` (dot product; cosine with
    ``normalize=True``) and teacher scores ``t_ik``::

        l_i  = 1 / (K - 1) sum_{k=1}^{K-1} ((s_i0 - s_ik) - (t_i0 - t_ik))^2
        loss = mean_i l_i

    which is the mean over all ``N (K - 1)`` margins (sentence-transformers'
    ``MarginMSELoss``). ``teacher`` is either the teacher's scores ``(N, K)`` or its margins
    ``t_i0 - t_ik`` ``(N, K - 1)`` (``(N,)`` also for one negative). Exact under a
    ``torch.distributed`` process group (the mean over the global batch of queries).

    Args:
        normalize (bool): L2-normalise query and candidates first (cosine scores). Default
            ``False`` (dot product, as the paper's and sentence-transformers' students).
        reduction (str): ``"mean"`` over queries (default), ``"sum"`` or ``"none"``
            (``(N,)``: each query's mean over its negatives).

    Inputs:
        ==============  =============  =================================================
        input           shape          meaning
        ==============  =============  =================================================
        ``query``       ``(N, d)``     student query embeddings
        ``candidates``  ``(N, K, d)``  student candidate embeddings, column 0 the positive,
                                       K >= 2
        ``teacher``     ``(N, K)``,    teacher scores of the candidates, or the teacher
                        ``(N, K-1)``   margins positive minus negative (any real dtype;
                        or ``(N,)``    detached)
        ==============  =============  =================================================

    Example::

        import torch
        from contrastkit.losses.distillation import MarginMSE

        query, candidates = torch.randn(4, 8), torch.randn(4, 3, 8)
        teacher = torch.tensor([[9.0, 2.0, 1.0], [7.5, 7.0, 3.0], [8.0, 1.0, 0.5], [6.0, 4.0, 2.0]])
        loss = MarginMSE()(query, candidates, teacher)

    See also:
        :class:`KLDistillation` (the teacher's softmax over the same candidates),
        :class:`EmbeddingDistillation` (regression onto the teacher's embeddings).

    References:
        Hofstätter, Althammer, Schröder, Sertkan, Hanbury, "Improving Efficient Neural Ranking
        Models with Cross-Architecture Knowledge Distillation", arXiv:2010.02666.
    """
