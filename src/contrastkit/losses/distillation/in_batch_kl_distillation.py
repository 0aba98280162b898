"""KL distillation over every in-batch candidate, teacher scores from teacher embeddings per
tile: a forward teacher sweep for the teacher's entropy, then one engine sweep with the teacher's
softmax normalised in the sweep (exact under a process group: the teacher's candidates are
gathered without gradient)."""

from __future__ import annotations

import math
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
#: teacher logits per in-cache chunk of the pre-pass (4 MiB fp32)
_CHUNK_ELEMS = 1 << 20
LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)


def _teacher_rows(tq2: Tensor, tc: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Per anchor, from base-2 teacher logits ``t2_ij = <tq2_i, tc_j>`` (no gradient): the
    base-2 row normaliser ``log2 sum_j 2^t2_ij`` and ``sum_j p_ij ln p_ij`` (natural log, the
    negative entropy), with ``p_i = softmax_j``. One forward sweep: row blocks of ``block``
    rows, column chunks that stay in cache (chunk maxima merged afterwards, as an online
    softmax), two reused buffers."""
    N, M = tq2.shape[0], tc.shape[0]
    dt, dev = tq2.dtype, tq2.device
    lse2 = torch.empty(N, dtype=dt, device=dev)
    neg_h = torch.empty(N, dtype=dt, device=dev)
    rows = max(1, min(block, N))
    width = max(1, min(M, _CHUNK_ELEMS // rows))
    ubuf = torch.empty(rows * width, dtype=dt, device=dev)
    ebuf = torch.empty_like(ubuf)
    n_chunks = -(-M // width)
    for r0 in range(0, N, rows):
        r1 = min(r0 + rows, N)
        b = r1 - r0
        ms = torch.empty(b, n_chunks, dtype=dt, device=dev)
        ss, ts = torch.empty_like(ms), torch.empty_like(ms)
        for ci, c0 in enumerate(range(0, M, width)):
            c1 = min(c0 + width, M)
            u = torch.mm(tq2[r0:r1], tc[c0:c1].T, out=ubuf[: b * (c1 - c0)].view(b, c1 - c0))
            mc = u.amax(dim=1)
            ms[:, ci] = mc
            e = torch.sub(u, mc[:, None], out=ebuf[: u.numel()].view_as(u)).exp2_()
            ss[:, ci] = e.sum(dim=1)
            ts[:, ci] = e.mul_(u).sum(dim=1)  # sum_j 2^(t2 - m_c) t2
        m = ms.amax(dim=1)
        scale = torch.exp2(ms - m[:, None])
        s = (ss * scale).sum(dim=1)
        mom2 = (ts * scale).sum(dim=1) / s  # sum_j p_ij t2_ij
        lse2[r0:r1] = torch.log2(s) + m
        neg_h[r0:r1] = (mom2 - lse2[r0:r1]) * LN2
    return lse2, neg_h


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
    dt = torch.promote_types(q.dtype, torch.float32)  # the engine's compute dtype
    inv_t2 = LOG2E / float(teacher_temperature)  # base-2 teacher logits t2 = tq2 @ tc^T
    tq2 = prepare(teacher_query.detach(), normalize).to(dt) * inv_t2
    tc = prepare(teacher_candidates.detach(), normalize).to(dt)
    tc_all = gather_rows(tc, "teacher_candidates", group=group)  # every rank's columns
    t_lse2, neg_h = _teacher_rows(tq2, tc_all, chunk_size or _PREPASS_ROWS)

    def logits(r0: int, r1: int, c0: int, c1: int, out: Tensor) -> Tensor:
        return torch.mm(tq2[r0:r1], tc_all[c0:c1].T, out=out)

    def targets(r0: int, r1: int, c0: int, c1: int) -> Tensor:  # the paths without logits
        return torch.exp2(tq2[r0:r1] @ tc_all[c0:c1].T - t_lse2[r0:r1, None])

    w = row_weight(reduction, n, group=group)
    factor = (1.0 / kap) ** 2 if temperature_squared else torch.ones_like(kap)

    def row_fn(st: RowStatistics, sd: dict) -> Tensor:
        assert st.lse is not None and st.tgt is not None and st.mass is not None  # asked for
        return w * sd["t2"] * (sd["neg_h"] + st.mass * st.lse[0] - st.tgt)

    spec = RowSpec(
        terms=(LSETerm(),),
        soft_targets=SoftTargets(targets, logits=logits),
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

    It is computed without the N x M matrices: one forward teacher sweep (no gradient, base 2,
    column chunks in cache) gives ``sum_j p_ij log p_ij`` per query, then one engine sweep
    recomputes the teacher's logits ``t_ij / T_t`` in each chunk and normalises them in the
    same sweep (online softmax, soft targets given as logits) next to the student's
    log-sum-exp: ``l_i = T^2 (sum_j p log p + LSE_j(s_ij / T) - sum_j p_ij s_ij / T)``.
    The gradient with respect to ``s_ij`` is ``T (q_ij - p_ij)``. FLOPs: the student's
    ``6 N M d`` (as InfoNCE) plus the teacher's ``2 N M d_T`` twice; memory
    O((N + M)(d + d_T)) plus two tiles. Equals
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
        chunk_size (int, optional): engine tile size (and teacher sweep row block).
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
