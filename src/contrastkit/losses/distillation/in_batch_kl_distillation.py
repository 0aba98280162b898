"""KL distillation over every in-batch candidate, teacher scores from teacher embeddings per
tile: a teacher log-sum-exp pre-pass, then one engine sweep with soft targets (exact under a
process group: the teacher's candidates are gathered without gradient)."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_temperature
from ...engine import LSETerm, RowSpec, RowStatistics, SoftTargets
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    gather_rows,
    kappa,
    objective_group,
    prepare,
    row_weight,
    run,
)

__all__ = ["in_batch_kl_distillation", "InBatchKLDistillation"]

_PREPASS_ROWS = 256


def _teacher_rows(tq: Tensor, tc: Tensor, inv_t: float, block: int) -> tuple[Tensor, Tensor]:
    """Per anchor: ``L_i = LSE_j(t_ij / T_t)`` and ``sum_j p_ij log p_ij`` (no gradient), in
    row blocks of ``block x M`` teacher logits."""
    lse = torch.empty(tq.shape[0], dtype=tq.dtype, device=tq.device)
    neg_h = torch.empty_like(lse)
    for r0 in range(0, tq.shape[0], block):
        u = (tq[r0 : r0 + block] @ tc.T) * inv_t
        lse_b = torch.logsumexp(u, dim=1)
        log_p = u - lse_b[:, None]
        lse[r0 : r0 + block] = lse_b
        neg_h[r0 : r0 + block] = (log_p.exp() * log_p).sum(1)
    return lse, neg_h


@exact_objective
def in_batch_kl_distillation(
    query: Tensor,
    candidates: Tensor,
    teacher_query: Tensor,
    teacher_candidates: Tensor,
    *,
    temperature: Union[float, Tensor] = 1.0,
    teacher_temperature: Optional[float] = None,
    temperature_squared: bool = True,
    normalize: bool = False,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """KL(teacher softmax || student softmax) over every in-batch candidate; see
    :class:`InBatchKLDistillation`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    check_embeddings("query", query)
    check_embeddings("candidates", candidates)
    check_compatible("query", query, "candidates", candidates)
    check_embeddings("teacher_query", teacher_query)
    check_embeddings("teacher_candidates", teacher_candidates)
    check_compatible("teacher_query", teacher_query, "teacher_candidates", teacher_candidates)
    if teacher_query.shape[0] != query.shape[0]:
        raise ValueError(
            f"teacher_query must have one row per query ({query.shape[0]}), got shape "
            f"{tuple(teacher_query.shape)}"
        )
    if teacher_candidates.shape[0] != candidates.shape[0]:
        raise ValueError(
            f"teacher_candidates must have one row per candidate ({candidates.shape[0]}), got "
            f"shape {tuple(teacher_candidates.shape)}"
        )
    if teacher_query.device != query.device:
        raise ValueError(f"teacher_query is on {teacher_query.device} but query on {query.device}")
    check_temperature("temperature", temperature)
    if teacher_temperature is None:
        teacher_temperature = float(temperature)
    if isinstance(teacher_temperature, Tensor) or isinstance(teacher_temperature, bool):
        raise ValueError(f"teacher_temperature must be a number, got {teacher_temperature!r}")
    check_temperature("teacher_temperature", teacher_temperature)
    if not isinstance(temperature_squared, bool):
        raise ValueError(f"temperature_squared must be a bool, got {temperature_squared!r}")
    n = query.shape[0]
    q, c = prepare(query, normalize), prepare(candidates, normalize)
    kap = kappa(q, temperature, group=group)  # 1 / T, replicated under a group
    tq = prepare(teacher_query.detach(), normalize).to(q.dtype)
    tc = prepare(teacher_candidates.detach(), normalize).to(q.dtype)
    tc_all = gather_rows(tc, "teacher_candidates", group=group)  # every rank's columns
    inv_t = 1.0 / float(teacher_temperature)
    t_lse, neg_h = _teacher_rows(tq, tc_all, inv_t, chunk_size or _PREPASS_ROWS)

    def targets(r0: int, r1: int, c0: int, c1: int) -> Tensor:
        return torch.exp((tq[r0:r1] @ tc_all[c0:c1].T) * inv_t - t_lse[r0:r1, None])

    w = row_weight(reduction, n, group=group)
    factor = (1.0 / kap) ** 2 if temperature_squared else torch.ones_like(kap)

    def row_fn(st: RowStatistics, sd: dict) -> Tensor:
        assert st.lse is not None and st.tgt is not None and st.mass is not None  # asked for
        return w * sd["t2"] * (sd["neg_h"] + st.mass * st.lse[0] - st.tgt)

    spec = RowSpec(
        terms=(LSETerm(),),
        soft_targets=SoftTargets(targets),
        row_fn=row_fn,
        row_side={"neg_h": neg_h, "t2": factor.expand(n)},
    )
    return run(q, c, spec, kap, reduction, eng, group=group)


class InBatchKLDistillation(Objective, functional=in_batch_kl_distillation):
    """KL distillation over every in-batch candidate, with a teacher given by its embeddings.

    Every candidate row of the batch is a column of every query (in-batch negatives, as
    InfoNCE). The teacher's scores are the dot products of its own embeddings of the same
    queries and candidates (an LLM embedder, a stronger bi-encoder), computed per tile and
    never stored; the student's softmax over all M candidates is pulled towards the teacher's
    (forward KL). With student scores ``s_ij = <q_i, c_j>``, teacher scores
    ``t_ij = <q^T_i, c^T_j>`` (cosines with ``normalize=True``), temperatures ``T``
    (``temperature``) and ``T_t`` (``teacher_temperature``, default ``T``)::

        p_ij = softmax_j(t_ij / T_t)        q_ij = softmax_j(s_ij / T)
        l_i  = T^2 sum_j p_ij (log p_ij - log q_ij)
        loss = mean_i l_i

    It is computed without the N x M matrices: a teacher pre-pass (row blocks, no gradient)
    gives ``LSE_j(t_ij / T_t)`` and ``sum_j p_ij log p_ij`` per query, then one engine sweep
    recomputes ``p_ij`` from the teacher embeddings in each tile (soft targets) next to the
    student's log-sum-exp: ``l_i = T^2 (sum_j p log p + LSE_j(s_ij / T) - sum_j p_ij s_ij / T)``.
    The gradient with respect to ``s_ij`` is ``T (q_ij - p_ij)``. Equals
    :class:`KLDistillation` with every query listing every candidate and teacher scores
    ``t_ij``. Exact under a ``torch.distributed`` process group: each rank keeps its queries,
    sees every rank's candidates, and the teacher's candidate embeddings are gathered without
    gradient (O(M d_T)).

    Args:
        temperature (float or Tensor): the student temperature ``T``, default 1.0; a number
            or a 0-dim tensor (learnable).
        teacher_temperature (float, optional): ``T_t``; ``None`` (default): ``temperature``.
        temperature_squared (bool): multiply the loss by ``temperature ** 2``, default
            ``True``.
        normalize (bool): L2-normalise student and teacher embeddings first (cosine scores).
            Default ``False``.
        reduction (str): ``"mean"`` over queries (default), ``"sum"`` or ``"none"``.
        chunk_size (int, optional): engine tile size (and pre-pass row block).
        backend (str): ``"auto"``, ``"dense"`` or ``"tiled"``.

    Inputs:
        ======================  ============  ===========================================
        input                   shape         meaning
        ======================  ============  ===========================================
        ``query``               ``(N, d)``    student query embeddings
        ``candidates``          ``(M, d)``    student candidate embeddings (every one a
                                              column of every query)
        ``teacher_query``       ``(N, d_T)``  teacher embeddings of the queries (detached)
        ``teacher_candidates``  ``(M, d_T)``  teacher embeddings of the candidates
        ======================  ============  ===========================================

    Example::

        import torch
        from contrastkit.losses.distillation import InBatchKLDistillation

        query, candidates = torch.randn(6, 8), torch.randn(10, 8)
        teacher_query, teacher_candidates = torch.randn(6, 16), torch.randn(10, 16)
        loss = InBatchKLDistillation(temperature=0.05, normalize=True)(
            query, candidates, teacher_query, teacher_candidates
        )

    See also:
        :class:`KLDistillation` (teacher scores given per listed candidate),
        :class:`CWCL` (soft targets from a frozen modality's similarities).

    References:
        Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network",
        arXiv:1503.02531.
    """
