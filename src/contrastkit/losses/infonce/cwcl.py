"""CWCL: Continuously Weighted Contrastive Loss (Srinivasa et al., NeurIPS 2023, 2309.14580).

``p`` are the frozen modality's embeddings, ``q`` the trained modality's. Targets come from a
frozen similarity (never an N x N matrix: the target terms are linear in ``W``, so they are
closed-form sums, and the engine sweeps only CLIP's two log-sum-exps)::

    W_ij = (<t_i, t_j> + 1) / 2      (t = target embeddings, by default p itself; no gradient)
    L_pq = -(1/N) sum_i (1 / sum_j W_ij) sum_j W_ij log softmax_j(<p_i, q_j> / tau)
    L_qp = the same over the columns (q_j against every p_i);  loss = (L_pq + L_qp) / 2

No official code was found; the weight map and the two directions follow the paper. With W = I
this is the CLIP loss.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings
from ...engine import ColumnStatistics, RowSpec, RowStatistics
from ...objective import (
    ScaledObjective,
    engine_args,
    exact_objective,
    global_total,
    half_path,
    kappa,
    objective_group,
    prepare,
    row_weight,
    run,
    sum_across_ranks,
    wide,
)

__all__ = ["cwcl", "CWCL"]


@exact_objective
def cwcl(
    frozen: Tensor,
    trained: Tensor,
    target_embeddings: Optional[Tensor] = None,
    *,
    temperature=None,
    scale=None,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """CWCL of ``frozen`` (N, d) and ``trained`` (N, d) embeddings; see :class:`CWCL`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    if temperature is None and scale is None:
        temperature = 0.07
    check_embeddings("frozen", frozen)
    check_embeddings("trained", trained)
    check_compatible("frozen", frozen, "trained", trained, same_rows=True)
    if target_embeddings is not None:
        check_embeddings("target_embeddings", target_embeddings)
        if target_embeddings.shape[0] != frozen.shape[0]:
            raise ValueError(
                f"target_embeddings must have one row per pair ({frozen.shape[0]}), got "
                f"shape {tuple(target_embeddings.shape)}"
            )
    N = frozen.shape[0]
    k = kappa(frozen, temperature, scale, n_rows=N, group=group)
    if k.dim() != 0:
        raise ValueError("temperature must be a scalar for CWCL")
    keep = half_path(eng, N, N, True, frozen, trained)  # fp16/bf16 kept for the kernels
    p = prepare(frozen, normalize, keep).detach()
    q = prepare(trained, normalize, keep)
    t = prepare(target_embeddings if target_embeddings is not None else frozen, True).detach()
    t = t.to(wide(p).dtype)  # the targets stay in the compute dtype (fp32 for fp16/bf16)
    pw, qw = wide(p), wide(q)
    # The soft-target terms in closed form: with W_ij = (<t_i, t_j> + 1) / 2 and u_ij = k <p_i,
    # q_j>, sum_j W_ij u_ij = k/2 <p_i, sum_j q_j + (sum_j q_j t_j^T) t_i>, its column twin
    # likewise, and sum_j W_ij = (M + <t_i, sum_j t_j>) / 2: O((N + M) d d_t) work on sums over
    # the global batch (one all-reduce of about 2 d d_t floats under a process group), so the
    # engine only sweeps the two log-sum-exps of CLIP (the fused single sweep, 8 N M d FLOPs).
    d, dt = qw.shape[1], t.shape[1]
    count = torch.full((1,), float(N), dtype=t.dtype, device=t.device)
    parts = [qw.sum(0), (t.t() @ qw).flatten(), pw.sum(0), (t.t() @ pw).flatten(), t.sum(0)]
    sums = sum_across_ranks(torch.cat(parts + [count]), "CWCL target sums", group=group)
    S_q, C_q, S_p, C_p, S_t, M = sums.split([d, dt * d, d, dt * d, dt, 1])
    tgt = (pw @ S_q + ((t @ C_q.view(dt, d)) * pw).sum(1)) * 0.5  # / k
    col_tgt = (qw @ S_p + ((t @ C_p.view(dt, d)) * qw).sum(1)) * 0.5  # / k
    mass = (M + t @ S_t) * 0.5  # rows' and columns' (W is symmetric, N = M)

    w = row_weight(reduction, N, group=group) / 2
    side = w * k * (tgt + col_tgt) / mass  # row i's and column i's target terms

    def row_fn(st: RowStatistics, sd: dict) -> Tensor:
        assert st.lse is not None
        return w * st.lse[0]

    def col_fn(st: ColumnStatistics, sd: dict) -> Tensor:
        assert st.lse is not None
        return w * st.lse

    spec = RowSpec(row_fn=row_fn, columns=True, col_fn=col_fn)
    out = run(p, q, spec, k, reduction, eng, group=group)
    if reduction == "none":
        return out - global_total(side, group=group)
    return out - global_total(side.sum(), group=group)


class CWCL(ScaledObjective, functional=cwcl, init_temperature=0.07):
    """CWCL, continuously weighted contrastive loss: CLIP-style alignment of a trained modality
    to a frozen one, where every pair gets a soft target weight from the frozen modality's own
    similarities instead of the one-hot identity.

    ``frozen`` comes from the frozen pre-trained encoder (no gradient flows into it),
    ``trained`` from the encoder being trained. The targets ``W`` come from
    ``target_embeddings`` (by default ``frozen``) and carry no gradient; they never form an
    N x N matrix (the target terms ``sum_j W_ij u_ij`` and ``sum_j W_ij`` are closed-form
    sums, linear in ``W``, and the engine sweeps CLIP's two log-sum-exps: CLIP's speed). With
    ``W = I`` this is the CLIP loss. The module owns a learnable logit scale (init 1/0.07,
    clamped at 100, as CLIP/LiT); the functional
    :func:`cwcl` takes ``temperature`` or ``scale``. No official code was found: the weight
    map and the two directions follow the paper. Exact under a process group.

    Formula::

        W_ij = (<t_i, t_j> + 1) / 2          (t = target embeddings, normalised; no gradient)
        L_pq = -(1/N) sum_i (1 / sum_j W_ij) sum_j W_ij log softmax_j(<p_i, q_j> / tau)
        L_qp = the same over the columns (q_j against every p_i)
        loss = (L_pq + L_qp) / 2

    Args:
        init_temperature (float, default 0.07): initial tau of the learnable scale.
        learnable (bool, default True): learn the scale (a parameter) or keep it fixed (a
            buffer).
        max_logit_scale (float, default 100.0): clamp of ``t = 1 / tau``.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per pair, the two
            directions' terms added, each weighted 1/2).
        normalize (bool, default True): L2-normalise ``frozen`` and ``trained``.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``frozen``: (N, d) float; the frozen modality (detached).
        - ``trained``: (N, d) float; row ``i`` pairs with ``frozen[i]``.
        - ``target_embeddings`` (optional): (N, e) float; embeddings whose similarities give
          the soft targets (default ``frozen``).
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        frozen, trained = torch.randn(8, 16), torch.randn(8, 16, requires_grad=True)
        loss = ck.CWCL(init_temperature=0.07)(frozen, trained)
        loss.backward()

    See also:
        :class:`CLIP` (one-hot targets), :class:`InfoNCE`.

    References:
        Srinivasa et al., "CWCL: Cross-Modal Transfer with Continuously Weighted Contrastive
        Loss", NeurIPS 2023, arXiv:2309.14580.
    """
