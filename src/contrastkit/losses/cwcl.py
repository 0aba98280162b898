"""CWCL: Continuously Weighted Contrastive Loss (Srinivasa et al., NeurIPS 2023, 2309.14580).

``p`` are the frozen modality's embeddings, ``q`` the trained modality's. Targets come from a
frozen similarity, evaluated per tile (never an N x N matrix)::

    W_ij = (<t_i, t_j> + 1) / 2      (t = target embeddings, by default p itself; no gradient)
    L_pq = -(1/N) sum_i (1 / sum_j W_ij) sum_j W_ij log softmax_j(<p_i, q_j> / tau)
    L_qp = the same over the columns (q_j against every p_i);  loss = (L_pq + L_qp) / 2

No official code was found; the weight map and the two directions follow the paper (method card
C10, MEDIUM confidence). With W = I this is the CLIP loss.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from .._validation import check_compatible, check_embeddings
from ..engine import RowSpec
from ..engine.gpu.coverage import EmbeddingSoftTargets
from ._common import (
    engine_args,
    exact_objective,
    gather_rows,
    half_path,
    kappa,
    prepare,
    row_weight,
    run,
    wide,
)
from .logit_scale import ScaledLoss

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
    k = kappa(frozen, temperature, scale, n_rows=N)
    if k.dim() != 0:
        raise ValueError("temperature must be a scalar for CWCL")
    keep = half_path(eng, N, N, True, frozen, trained)  # fp16/bf16 kept for the kernels
    p = prepare(frozen, normalize, keep).detach()
    q = prepare(trained, normalize, keep)
    t = prepare(target_embeddings if target_embeddings is not None else frozen, True).detach()
    t = t.to(wide(p).dtype)  # the targets stay in the compute dtype (fp32 for fp16/bf16)
    t_cols = gather_rows(t, "target embeddings")  # every rank's under a process group

    def weights(r0: int, r1: int, c0: int, c1: int) -> Tensor:
        return (t[r0:r1] @ t_cols[c0:c1].T + 1.0) * 0.5

    w = row_weight(reduction, N) / 2
    # W = (<t_i, t_j> + 1) / 2 as embeddings: the torch paths evaluate it per tile, the Triton
    # kernels use its closed-form linear terms; W is symmetric (the transposed problem's
    # targets, for contrastkit.distributed, are the same function)
    spec = RowSpec(
        soft_targets=EmbeddingSoftTargets(t, t_cols, 0.5, 0.5, transposed=weights),
        row_fn=lambda st, sd: w * (st["lse"][0] - st["tgt"] / st["mass"]),
        columns=True,
        col_fn=lambda st, sd: w * (st["col_lse"] - st["col_tgt"] / st["col_mass"]),
    )
    return run(p, q, spec, k, reduction, eng)


class CWCL(ScaledLoss):
    """CWCL owning a learnable logit scale (init 1/0.07, clamped at 100, as CLIP/LiT).

    ``forward(frozen, trained, target_embeddings=None)``: ``frozen`` comes from the frozen
    pre-trained encoder (no gradient flows into it), ``trained`` from the encoder being trained.
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        learnable: bool = True,
        max_logit_scale: float = 100.0,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            init_temperature, learnable, max_logit_scale, reduction, normalize, chunk_size, backend
        )

    def forward(self, frozen: Tensor, trained: Tensor, target_embeddings: Optional[Tensor] = None):
        return cwcl(frozen, trained, target_embeddings, **self.options(frozen))
