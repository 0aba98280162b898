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

from ..._validation import check_compatible, check_embeddings
from ...engine import RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    kappa,
    objective_group,
    prepare,
    row_weight,
    run,
)

__all__ = ["focal_info_nce", "FocalInfoNCE"]


def _check_gamma(gamma) -> None:
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")


@exact_objective
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
    """Focal InfoNCE of ``query`` against ``positive`` (N, d) and hard ``negatives``; see
    :class:`FocalInfoNCE`."""
    group = objective_group()
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
    k = kappa(query, temperature, n_rows=N, group=group)
    q = prepare(query, normalize)
    cands = prepare(torch.cat([positive, *cols]) if cols else positive, normalize)
    w = row_weight(reduction, N, group=group)
    g = float(gamma)

    def row_fn(st, sd):
        ce = st.ce  # read from the LSE's own logits: no cancellation as p_i -> 1
        one_minus_p = (-torch.expm1(-ce)).clamp(min=torch.finfo(ce.dtype).tiny)
        weight = one_minus_p**g
        if detach_weight:
            weight = weight.detach()
        return w * weight * ce

    spec = RowSpec(row_fn=row_fn, positive=torch.arange(N, device=q.device))
    return run(q, cands, spec, k, reduction, eng, group=group)


class FocalInfoNCE(Objective, functional=focal_info_nce):
    """Focal InfoNCE: InfoNCE whose per-query terms are down-weighted when the positive is
    already easy, as the focal loss does for classification (KaLM-Embedding-V2).

    Queries are scored against every positive of the batch (and every hard negative, as
    MNRL); ``p_i`` is the softmax probability of query ``i``'s own positive::

        u_ij = cos(q_i, c_j) / temperature,   p_i = exp(u_i,pos) / sum_j exp(u_ij)
        l_i  = -(1 - p_i)^gamma log p_i,        loss = mean_i l_i

    ``gamma = 0`` is InfoNCE / MNRL. Exact under a process group (every rank's queries see
    the global candidates).

    Args:
        temperature (float or Tensor, default 0.02): tau; a 0-dim tensor (learnable) or one
            value per query (N,).
        gamma (float, default 2.0): focusing exponent, >= 0; 0 gives InfoNCE.
        detach_weight (bool, default False): treat ``(1 - p_i)^gamma`` as a constant in the
            backward pass.
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-query terms (N,)).
        normalize (bool, default True): L2-normalise the embeddings.
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``query`` (N, d) float: the anchors.
        - ``positive`` (N, d) float: row ``i`` is the positive of query ``i``; the other rows
          are its in-batch negatives.
        - ``*negatives`` each (N, d) or (N, h, d) float: hard negatives, candidates for every
          query.

    Example::

        import torch
        import contrastkit as ck

        q, p = torch.randn(8, 16), torch.randn(8, 16)
        loss = ck.FocalInfoNCE(temperature=0.05, gamma=2.0)(q, p)

    See also:
        :class:`InfoNCE`, :class:`MultipleNegativesRanking`, :class:`DebiasedInfoNCE`.

    References:
        Zhao et al., "KaLM-Embedding-V2", arXiv:2506.20923; Lin et al., "Focal Loss for Dense
        Object Detection", arXiv:1708.02002.
    """
