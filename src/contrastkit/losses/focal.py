"""Focal-style reweighting of InfoNCE (KaLM-Embedding-V2, Zhao et al., 2025, arXiv 2506.20923).

Queries ``q`` (N, d), positives ``p`` (N, d) and optional hard negatives (as MNRL: every query's
hard negatives are candidates for every query). With ``u = cos / tau`` and the softmax
probability of the positive ``p_i = exp(u_i,pos) / sum_{j in C} exp(u_ij)``::

    l_i = -(1 - p_i)^gamma log p_i,        loss = mean_i l_i

``gamma = 0`` is InfoNCE / MNRL. As in the focal loss (Lin et al., ICCV 2017) the weight is
differentiated through by default; ``detach_weight=True`` treats it as a constant (the paper
does not say; gamma is not given either, 2 is the focal default). tau 0.02 (the released KaLM
code uses 0.01-0.02). Engine form: the plain InfoNCE row (one log-sum-exp), the row function
``w(CE) CE`` with ``CE_i = lse_i - u_i,pos``; the engine differentiates it per row.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._validation import check_compatible, check_embeddings
from ..engine import RowSpec
from ._common import FunctionalLoss, engine_args, kappa, prepare, row_weight, run

__all__ = ["focal_info_nce", "FocalInfoNCE"]


def _check_gamma(gamma) -> None:
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")


def focal_info_nce(
    query: Tensor,
    positive: Tensor,
    *negatives: Tensor,
    temperature=0.02,
    gamma: float = 2.0,
    detach_weight: bool = False,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Focal InfoNCE of ``query`` against ``positive`` (N, d) and hard ``negatives``, each
    (N, d) or (N, h, d); see :class:`FocalInfoNCE`."""
    eng = engine_args(chunk_size, backend)
    _check_gamma(gamma)
    check_embeddings("query", query)
    check_embeddings("positive", positive)
    check_compatible("query", query, "positive", positive, same_rows=True)
    cols = []
    for i, n in enumerate(negatives):
        check_embeddings(f"negatives[{i}]", n, ndim=(2, 3))
        check_compatible("query", query, f"negatives[{i}]", n, same_rows=True)
        cols.extend([n] if n.dim() == 2 else list(n.unbind(1)))
    N = query.shape[0]
    k = kappa(query, temperature, n_rows=N)
    q = prepare(query, normalize)
    cands = prepare(torch.cat([positive, *cols]) if cols else positive, normalize)
    w = row_weight(reduction, N)
    g = float(gamma)

    def row_fn(st, sd):
        ce = st["ce"]  # read from the LSE's own logits: no cancellation as p_i -> 1
        one_minus_p = (-torch.expm1(-ce)).clamp(min=torch.finfo(ce.dtype).tiny)
        weight = one_minus_p**g
        if detach_weight:
            weight = weight.detach()
        return w * weight * ce

    spec = RowSpec(row_fn=row_fn, positive=torch.arange(N, device=q.device))
    return run(q, cands, spec, k, reduction, eng)


class FocalInfoNCE(FunctionalLoss):
    """Focal InfoNCE module: ``forward(query, positive, *negatives)``.

    Args:
        temperature: tau (0.02); a 0-dim tensor (learnable) or one value per query.
        gamma: focusing exponent (2.0); 0 gives InfoNCE.
        detach_weight: treat ``(1 - p_i)^gamma`` as a constant in backward.
        reduction, normalize, chunk_size, backend: as :class:`InfoNCE`.
    """

    def __init__(
        self,
        temperature: float = 0.02,
        gamma: float = 2.0,
        detach_weight: bool = False,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        _check_gamma(gamma)
        super().__init__(
            focal_info_nce,
            temperature=temperature,
            gamma=gamma,
            detach_weight=detach_weight,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )
