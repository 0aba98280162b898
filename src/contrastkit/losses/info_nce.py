"""InfoNCE (CPC, van den Oord et al. 2018; MoCo's queue form, He et al. 2020) and MNRL.

    l_i = -u_i,i + log( sum_j exp(u_ij) + sum_k exp(u_ik^neg) ),   u = s / tau

over keys ``j`` (the positive of query ``i`` is key ``i``), shared negatives (a MoCo queue,
``(K, d)``) and per-anchor negatives (``(N, h, d)``). ``symmetric=True`` adds the key-to-query
direction (column softmax over the queries) and averages the two.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_compatible, check_embeddings
from ..engine import RowSpec
from ._common import (
    FunctionalLoss,
    check_has_negatives,
    engine_args,
    exact_objective,
    global_total,
    half_path,
    kappa,
    prepare,
    row_dot,
    row_weight,
    run,
)

__all__ = ["info_nce", "InfoNCE", "multiple_negatives_ranking", "MultipleNegativesRanking"]


@exact_objective
def info_nce(
    query: Tensor,
    key: Tensor,
    negatives: Optional[Tensor] = None,
    *,
    temperature=None,
    scale=None,
    symmetric: bool = False,
    in_batch_negatives: bool = True,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """InfoNCE of ``query`` (N, d) against ``key`` (M >= N, d); see :class:`InfoNCE`.

    ``temperature`` (default 0.07) or ``scale`` = 1 / temperature; a tensor temperature may be
    0-dim (learnable) or ``(N,)`` (one per query). ``in_batch_negatives=False`` keeps only each
    query's own key and ``negatives`` in its softmax (MoCo v1/v2's ``[l_pos, l_neg]`` logits).
    One query with one key and no ``negatives`` has no negative at all: a ``ValueError``.
    """
    if temperature is None and scale is None:
        temperature = 0.07
    eng = engine_args(chunk_size, backend)
    check_embeddings("query", query)
    check_embeddings("key", key)
    check_compatible("query", query, "key", key)
    N, M = query.shape[0], key.shape[0]
    if M < N:
        raise ValueError(
            f"key must have at least as many rows as query (row i is query i's positive): "
            f"query {tuple(query.shape)}, key {tuple(key.shape)}"
        )
    if symmetric and M != N:
        raise ValueError(
            f"symmetric=True needs one key per query: query {tuple(query.shape)}, "
            f"key {tuple(key.shape)}"
        )
    private = None
    if negatives is not None:
        check_embeddings("negatives", negatives, ndim=(2, 3))
        check_compatible("query", query, "negatives", negatives)
        if negatives.dim() == 3 and negatives.shape[0] != N:
            raise ValueError(
                f"per-anchor negatives must have shape (N={N}, h, d), got {tuple(negatives.shape)}"
            )
    if negatives is None and M < 2:  # one query, one key, nothing else: the loss would be 0
        check_has_negatives("query", query, "InfoNCE")
    if not in_batch_negatives:
        if negatives is None:
            raise ValueError("in_batch_negatives=False needs negatives (e.g. a queue's keys)")
        if symmetric:
            raise ValueError("in_batch_negatives=False is one-directional: set symmetric=False")
    k = kappa(query, temperature, scale, n_rows=N)
    # fp16/bf16 on the Triton kernels stay in their dtype (shared negatives only: per-anchor
    # ones are a dense einsum here); the positives below are fp32 side statistics either way
    keep = False
    if negatives is None or negatives.dim() == 2:
        ins = (query, key) if negatives is None else (query, key, negatives)
        n_cols = (M if in_batch_negatives else 0) + (0 if negatives is None else len(negatives))
        keep = half_path(eng, N, n_cols, symmetric, *ins)
    q, key_n = prepare(query, normalize, keep), prepare(key, normalize, keep)
    if not in_batch_negatives:
        return _own_key_only(q, key_n[:N], prepare(negatives, normalize, keep), k, reduction, eng)
    cands = key_n
    if negatives is not None:
        neg = prepare(negatives, normalize, keep)
        if neg.dim() == 2:
            cands = torch.cat([key_n, neg])  # a shared queue: candidates of every anchor
        else:
            kr = k if k.dim() == 0 else k[:, None]
            private = torch.logsumexp(torch.einsum("nd,nhd->nh", q, neg) * kr, dim=1)
    pos = row_dot(q, key_n[:N]) * k  # fp32 for fp16/bf16
    w = row_weight(reduction, N) / (2 if symmetric else 1)
    # one-sided: the engine reads u_i,i from the logits of its LSE ("ce"), so the two cancel
    # exactly; two-sided keeps the side positive (the rows' shared exponential needs no shift)
    side = {"pos": pos} if symmetric else {}
    if private is not None:
        side["private"] = private - pos  # log sum_h exp(u_ih - u_i,i)

    def row_fn(st, sd):
        ce = st["lse"][0] - sd["pos"] if symmetric else st["ce"]
        if "private" in sd:
            ce = torch.logaddexp(ce, sd["private"])
        return w * ce

    if not symmetric:
        positive = torch.arange(N, device=q.device)
        spec = RowSpec(row_fn=row_fn, row_side=side, positive=positive)
        return run(q, cands, spec, k, reduction, eng)
    # key-to-query direction: only the N keys are anchors there (queue columns get weight 0)
    extra = cands.shape[0] - N
    col_w = torch.cat([pos.new_full((N,), w), pos.new_zeros(extra)])
    spec = RowSpec(
        row_fn=row_fn,
        row_side=side,
        columns=True,
        col_fn=lambda st, sd: sd["w"] * (st["col_lse"] - sd["pos"]),
        col_side={"pos": torch.cat([pos, pos.new_zeros(extra)]), "w": col_w},
    )
    return run(q, cands, spec, k, reduction, eng)


def _own_key_only(q, pos_key, neg, k, reduction, eng) -> Tensor:
    """``log(exp(u_pos) + sum_j exp(u_ij)) - u_pos`` over the negatives only (MoCo)."""
    N = q.shape[0]
    pos = row_dot(q, pos_key) * k
    w = row_weight(reduction, N)
    if neg.dim() == 3:
        kr = k if k.dim() == 0 else k[:, None]
        # log(exp(pos) + sum exp(neg)) - pos without cancellation when the positive dominates
        rows = F.softplus(torch.logsumexp(torch.einsum("nd,nhd->nh", q, neg) * kr, 1) - pos)
        return global_total(rows if reduction == "none" else (rows * w).sum())
    spec = RowSpec(
        row_fn=lambda st, sd: w * F.softplus(st["lse"][0] - sd["pos"]),
        row_side={"pos": pos},
    )
    return run(q, neg, spec, k, reduction, eng)


class InfoNCE(FunctionalLoss):
    """InfoNCE loss module. ``forward(query, key, negatives=None)``.

    Args:
        temperature: tau (logits ``s / tau``); 0.07 as MoCo v1 (0.2 for MoCo v2). A 0-dim tensor
            (learnable) or one value per query ``(N,)`` is accepted as well.
        symmetric: also the key-to-query direction, averaged with the query-to-key one.
        in_batch_negatives: ``False`` leaves the other queries' keys out of each softmax, so
            only ``negatives`` compete with the positive (MoCo v1/v2 with its queue).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        normalize: L2-normalise every input (default, as every modern use does).
        chunk_size, backend: engine tile and path (``"auto"``, ``"dense"``, ``"tiled"``).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        symmetric: bool = False,
        in_batch_negatives: bool = True,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            info_nce,
            temperature=temperature,
            symmetric=symmetric,
            in_batch_negatives=in_batch_negatives,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )


@exact_objective
def multiple_negatives_ranking(
    anchor: Tensor,
    positive: Tensor,
    *negatives: Tensor,
    scale: float = 20.0,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """MNRL (Henderson et al. 2017; sentence-transformers): cosine similarities times ``scale``.

    Candidates are ``cat(positive, n_1, ..., n_h)``: every anchor's hard negatives are
    candidates for every anchor, as in sentence-transformers. Each negative is ``(N, d)`` (one
    column of hard negatives) or ``(N, h, d)`` (h per anchor, flattened column by column).
    """
    check_embeddings("anchor", anchor)
    check_embeddings("positive", positive)
    check_compatible("anchor", anchor, "positive", positive, same_rows=True)
    cols = []
    for i, n in enumerate(negatives):
        check_embeddings(f"negatives[{i}]", n, ndim=(2, 3))
        check_compatible("anchor", anchor, f"negatives[{i}]", n, same_rows=True)
        cols.extend([n] if n.dim() == 2 else list(n.unbind(1)))
    negs = torch.cat(cols) if cols else None
    if negs is None:
        check_has_negatives("anchor", anchor, "MNRL")
    return info_nce(
        anchor,
        positive,
        negs,
        scale=scale,
        temperature=None,
        reduction=reduction,
        chunk_size=chunk_size,
        backend=backend,
    )


class MultipleNegativesRanking(FunctionalLoss):
    """MNRL module: ``forward(anchor, positive, *negatives)``, ``scale=20`` (tau = 0.05)."""

    def __init__(
        self,
        scale: float = 20.0,
        reduction: str = "mean",
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            multiple_negatives_ranking,
            scale=scale,
            reduction=reduction,
            chunk_size=chunk_size,
            backend=backend,
        )
