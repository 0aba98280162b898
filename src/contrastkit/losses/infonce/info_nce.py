"""InfoNCE (CPC, van den Oord et al. 2018; MoCo's queue form, He et al. 2020) and MNRL.

    l_i = -u_i,i + log( sum_j exp(u_ij) + sum_k exp(u_ik^neg) ),   u = s / tau

over keys ``j`` (the positive of query ``i`` is key ``i``), shared negatives (a MoCo queue,
``(K, d)``) and per-anchor negatives (``(N, h, d)``). ``symmetric=True`` adds the key-to-query
direction (column softmax over the queries) and averages the two.
"""

from __future__ import annotations

from typing import Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_compatible, check_embeddings
from ...engine import RowSpec
from ...objective import (
    Objective,
    check_has_negatives,
    engine_args,
    exact_objective,
    half_path,
    kappa,
    objective_group,
    prepare,
    reduce,
    row_dot,
    row_weight,
    run,
)

__all__ = ["info_nce", "InfoNCE", "multiple_negatives_ranking", "MultipleNegativesRanking"]


def check_query_key(query: Tensor, key: Tensor) -> tuple[int, int]:
    """Shared input checks of the InfoNCE objectives: ``query`` (N, d), ``key`` (M >= N, d)
    (row ``i`` of ``key`` is query ``i``'s positive). Returns ``(N, M)``."""
    check_embeddings("query", query)
    check_embeddings("key", key)
    check_compatible("query", query, "key", key)
    N, M = query.shape[0], key.shape[0]
    if M < N:
        raise ValueError(
            f"key must have at least as many rows as query (row i is query i's positive): "
            f"query {tuple(query.shape)}, key {tuple(key.shape)}"
        )
    return N, M


def private_lse(q: Tensor, neg: Tensor, k: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """``log sum_h exp(u_ih)`` over per-anchor negatives ``neg`` (N, h, d) (O(N h d), plain
    autograd); ``valid`` (N, h) bool masks slots out."""
    kr = k if k.dim() == 0 else k[:, None]
    u = torch.einsum("nd,nhd->nh", q, neg) * kr
    if valid is not None:
        u = u.masked_fill(~valid, float("-inf"))
    return torch.logsumexp(u, dim=1)


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
    """InfoNCE of ``query`` (N, d) against ``key`` (M >= N, d); see :class:`InfoNCE`."""
    return _info_nce(
        query,
        key,
        negatives,
        temperature=temperature,
        scale=scale,
        symmetric=symmetric,
        in_batch_negatives=in_batch_negatives,
        reduction=reduction,
        normalize=normalize,
        chunk_size=chunk_size,
        backend=backend,
        group=objective_group(),
    )


def _info_nce(
    query,
    key,
    negatives,
    *,
    temperature,
    scale,
    symmetric,
    in_batch_negatives,
    reduction,
    normalize,
    chunk_size,
    backend,
    group,
) -> Tensor:
    """The computation of :func:`info_nce` over ``group`` (``None``: this process), shared by
    the exact objectives built on it (:func:`multiple_negatives_ranking`, ``clip``)."""
    if temperature is None and scale is None:
        temperature = 0.07
    eng = engine_args(chunk_size, backend)
    N, M = check_query_key(query, key)
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
        check_has_negatives("query", query, "InfoNCE", group=group)
    if not in_batch_negatives:
        if negatives is None:
            raise ValueError("in_batch_negatives=False needs negatives (e.g. a queue's keys)")
        if symmetric:
            raise ValueError("in_batch_negatives=False is one-directional: set symmetric=False")
    k = kappa(query, temperature, scale, n_rows=N, group=group)
    # fp16/bf16 on the Triton kernels stay in their dtype (shared negatives only: per-anchor
    # ones are a dense einsum here); the positives below are fp32 side statistics either way
    keep = False
    if negatives is None or negatives.dim() == 2:
        ins = (query, key) if negatives is None else (query, key, negatives)
        n_cols = (M if in_batch_negatives else 0) + (0 if negatives is None else len(negatives))
        keep = half_path(eng, N, n_cols, symmetric, *ins)
    q, key_n = prepare(query, normalize, keep), prepare(key, normalize, keep)
    if not in_batch_negatives:
        neg = prepare(negatives, normalize, keep)
        return _own_key_only(q, key_n[:N], neg, k, reduction, eng, group)
    cands = key_n
    if negatives is not None:
        neg = prepare(negatives, normalize, keep)
        if neg.dim() == 2:
            cands = torch.cat([key_n, neg])  # a shared queue: candidates of every anchor
        else:
            private = private_lse(q, neg, k)
    pos = row_dot(q, key_n[:N]) * k  # fp32 for fp16/bf16
    w = row_weight(reduction, N, group=group) / (2 if symmetric else 1)
    # one-sided: the engine reads u_i,i from the logits of its LSE ("ce"), so the two cancel
    # exactly; two-sided keeps the side positive (the rows' shared exponential needs no shift)
    side = {"pos": pos} if symmetric else {}
    if private is not None:
        side["private"] = private - pos  # log sum_h exp(u_ih - u_i,i)

    def row_fn(st, sd):
        ce = st.lse[0] - sd["pos"] if symmetric else st.ce
        if "private" in sd:
            ce = torch.logaddexp(ce, sd["private"])
        return w * ce

    if not symmetric:
        positive = torch.arange(N, device=q.device)
        spec = RowSpec(row_fn=row_fn, row_side=side, positive=positive)
        return run(q, cands, spec, k, reduction, eng, group=group)
    # key-to-query direction: only the N keys are anchors there (queue columns get weight 0)
    extra = cands.shape[0] - N
    col_w = torch.cat([pos.new_full((N,), w), pos.new_zeros(extra)])
    spec = RowSpec(
        row_fn=row_fn,
        row_side=side,
        columns=True,
        col_fn=lambda st, sd: sd["w"] * (st.lse - sd["pos"]),
        col_side={"pos": torch.cat([pos, pos.new_zeros(extra)]), "w": col_w},
    )
    return run(q, cands, spec, k, reduction, eng, group=group)


def _own_key_only(q, pos_key, neg, k, reduction, eng, group) -> Tensor:
    """``log(exp(u_pos) + sum_j exp(u_ij)) - u_pos`` over the negatives only (MoCo)."""
    N = q.shape[0]
    pos = row_dot(q, pos_key) * k
    if neg.dim() == 3:
        # log(exp(pos) + sum exp(neg)) - pos without cancellation when the positive dominates
        rows = F.softplus(private_lse(q, neg, k) - pos)
        return reduce(rows, reduction, group=group)
    w = row_weight(reduction, N, group=group)
    spec = RowSpec(
        row_fn=lambda st, sd: w * F.softplus(cast(Tensor, st.lse)[0] - sd["pos"]),
        row_side={"pos": pos},
    )
    return run(q, neg, spec, k, reduction, eng, group=group)


class InfoNCE(Objective, functional=info_nce):
    """InfoNCE (the CPC / MoCo contrastive loss): each query must pick its own key out of the
    other queries' keys and any extra negatives.

    Query ``i``'s positive is key ``i``; the other keys of the batch (``in_batch_negatives``),
    a shared bank of negatives ``(K, d)`` (a MoCo queue) and per-anchor negatives ``(N, h, d)``
    (mined hard negatives) are its negatives. Cosine similarities (``normalize=True``) are
    divided by the temperature. ``symmetric=True`` adds the key-to-query direction and
    averages the two (the CLIP loss with a fixed temperature). Computed on the tiled engine:
    memory O(N + M), never an N x M matrix in the backward. Exact under a process group (the
    keys and shared negatives of every rank are candidates of every query).

    Formula::

        u_ij = <q_i, k_j> / tau
        l_i  = -u_ii + log( sum_j exp(u_ij) + sum_q exp(u_iq) + sum_h exp(u_ih) )
        loss = mean_i l_i          (symmetric: (mean_i l_i + mean_j l'_j) / 2)

    Args:
        temperature (float | Tensor, default None = 0.07): tau, logits ``s / tau`` (0.07 as
            MoCo v1, 0.2 for MoCo v2). A 0-dim tensor (learnable) or one value per query
            ``(N,)`` is accepted as well.
        scale (float | Tensor, default None): ``1 / tau`` instead of ``temperature`` (give one
            of the two).
        symmetric (bool, default False): also the key-to-query direction, averaged with the
            query-to-key one (needs ``M == N``).
        in_batch_negatives (bool, default True): ``False`` leaves the other queries' keys out
            of each softmax, so only ``negatives`` compete with the positive (MoCo v1/v2 with
            its queue: logits ``[q.k+, q Q^T]``).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (one loss per
            query).
        normalize (bool, default True): L2-normalise every input.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``query``: (N, d) float; the anchors.
        - ``key``: (M, d) float, M >= N; key ``i`` is query ``i``'s positive, the other keys
          are negatives.
        - ``negatives`` (optional): (K, d) shared by every query (a queue) or (N, h, d) per
          query; always negatives.
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        q, k = torch.randn(8, 16), torch.randn(8, 16)
        queue = torch.randn(32, 16)
        loss = ck.InfoNCE(temperature=0.1)(q, k)
        moco = ck.InfoNCE(temperature=0.2, in_batch_negatives=False)(q, k, queue)

    See also:
        :class:`MultipleNegativesRanking` (sentence-transformers' convention), :class:`CLIP`
        (learnable scale, symmetric), :class:`NTXent` (two views), :class:`InfoNCEWithNegatives`
        (queue, mined negatives and weights at once).

    References:
        van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding",
        arXiv:1807.03748. He et al., "Momentum Contrast for Unsupervised Visual Representation
        Learning", CVPR 2020, arXiv:1911.05722.
    """


@exact_objective
def multiple_negatives_ranking(
    anchor: Tensor,
    positive: Tensor,
    *negatives: Tensor,
    scale=None,
    temperature=None,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """MNRL of ``anchor`` against ``positive`` and hard-negative columns; see
    :class:`MultipleNegativesRanking`."""
    group = objective_group()
    check_embeddings("anchor", anchor)
    check_embeddings("positive", positive)
    check_compatible("anchor", anchor, "positive", positive, same_rows=True)
    if scale is None and temperature is None:
        scale = 20.0
    cols = []
    for i, n in enumerate(negatives):
        check_embeddings(f"negatives[{i}]", n, ndim=(2, 3))
        check_compatible("anchor", anchor, f"negatives[{i}]", n, same_rows=True)
        cols.extend([n] if n.dim() == 2 else list(n.unbind(1)))
    negs = torch.cat(cols) if cols else None
    if negs is None:
        check_has_negatives("anchor", anchor, "MNRL", group=group)
    return _info_nce(
        anchor,
        positive,
        negs,
        temperature=temperature,
        scale=scale,
        symmetric=False,
        in_batch_negatives=True,
        reduction=reduction,
        normalize=True,
        chunk_size=chunk_size,
        backend=backend,
        group=group,
    )


class MultipleNegativesRanking(Objective, functional=multiple_negatives_ranking):
    """Multiple negatives ranking loss (MNRL), sentence-transformers' retrieval loss: InfoNCE on
    cosine similarities multiplied by ``scale``, with optional hard-negative columns.

    Each anchor's positive is the same row of ``positive``; every other positive and every hard
    negative of every anchor are its negatives (as ``MultipleNegativesRankingLoss`` of
    sentence-transformers). Inputs are always L2-normalised (cosine similarity). Equal to
    :class:`InfoNCE` with ``temperature = 1 / scale`` and the hard negatives as a shared bank.
    Exact under a process group.

    Formula::

        u_ij = scale * cos(a_i, c_j),   c = cat(positive, n_1, ..., n_h)
        l_i  = -u_ii + log sum_j exp(u_ij)
        loss = mean_i l_i

    Args:
        scale (float | Tensor, default None = 20.0): the logit multiplier (sentence-transformers'
            ``scale=20``, i.e. tau = 0.05).
        temperature (float | Tensor, default None): ``1 / scale`` instead of ``scale`` (give one
            of the two).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (one per anchor).
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``anchor``: (N, d) float.
        - ``positive``: (N, d) float; row ``i`` is anchor ``i``'s positive.
        - ``*negatives``: any number of hard-negative columns, each (N, d) or (N, h, d) (h per
          anchor, taken column by column); candidates of every anchor.
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        a, p, n = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
        loss = ck.MultipleNegativesRanking()(a, p, n)
        same = ck.MultipleNegativesRanking(temperature=0.05)(a, p, n)

    See also:
        :class:`InfoNCE`, :class:`CLIP` (symmetric, learnable scale).

    References:
        Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply",
        arXiv:1705.00652. Reimers, Gurevych, "Sentence-BERT", arXiv:1908.10084
        (sentence-transformers' ``MultipleNegativesRankingLoss``).
    """
