"""DEXML's decoupled softmax (Gupta et al., ICLR 2024): multi-label InfoNCE in which each
positive competes only with the negatives of its row.

    NEG_i = log sum_{j not in P_i, j not in I_i} exp(u_ij),   u_ij = <q_i, c_j> / tau
    l_i   = (1 / |P_i|) sum_{p in P_i} w_ip [logaddexp(NEG_i, u_ip) - u_ip]

One masked log-sum-exp per row on the engine (the positives and ignored columns are an index
mask, excluded in the tile), then one ``softplus(NEG_i - u_ip)`` per listed positive from
O(N P d) side dot products. Never an N x L logit matrix.
"""

from __future__ import annotations

from typing import Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_index, check_tensor
from ...engine import LSETerm, PairMask, RowSpec
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

__all__ = ["dexml", "DEXML", "sample_positives"]


def _index_table(name: str, idx: Tensor, N: int, M: int, ref: Tensor) -> Tensor:
    check_index(name, idx, M, ndim=2, rows=N, min_rows=0, allow=(-1,), ref=ref, what="candidates")
    return idx.long()


def _check_no_duplicates(name: str, idx: Tensor) -> None:
    """No column listed twice in a row (a positive counted twice would weigh double)."""
    if idx.shape[1] < 2:
        return
    s = idx.sort(dim=1).values
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if bool(dup.any()):
        row = int(dup.any(1).nonzero()[0])
        raise ValueError(f"{name} lists a column twice in row {row}: {idx[row].tolist()}")


@exact_objective
def dexml(
    query: Tensor,
    candidates: Tensor,
    positives: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
    ignore: Optional[Tensor] = None,
    *,
    temperature=0.05,
    exclude_no_positive: bool = True,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """DEXML decoupled softmax of ``query`` (N, d) over ``candidates`` (L, d); see
    :class:`DEXML`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    check_embeddings("query", query)
    check_embeddings("candidates", candidates)
    check_compatible("query", query, "candidates", candidates)
    N, M = query.shape[0], candidates.shape[0]
    if positives is None:
        if M < N:
            raise ValueError(
                "positives=None takes candidate row i as query i's positive, so candidates "
                f"needs at least as many rows as query: query {tuple(query.shape)}, "
                f"candidates {tuple(candidates.shape)}"
            )
        positives = torch.arange(N, device=query.device)[:, None]
    else:
        if isinstance(positives, Tensor) and positives.dim() == 1:
            positives = positives[:, None]
        positives = _index_table("positives", positives, N, M, query)
        _check_no_duplicates("positives", positives)
    P = positives.shape[1]
    valid = positives >= 0
    if weights is not None:
        check_tensor("weights", weights, kind="real", ref=query)
        if tuple(weights.shape) != (N, P) and not (P == 1 and tuple(weights.shape) == (N,)):
            raise ValueError(
                f"weights must have the shape of positives {(N, P)}, got {tuple(weights.shape)}"
            )
        if bool((weights < 0).any()):
            raise ValueError("weights must be >= 0 (label values)")
        weights = weights.reshape(N, P)
    exclude = positives
    if ignore is not None:
        if isinstance(ignore, Tensor) and ignore.dim() == 1:
            ignore = ignore[:, None]
        ignore = _index_table("ignore", ignore, N, M, query)
        clash = (positives[:, :, None] == ignore[:, None, :]) & valid[:, :, None]
        if bool(clash.any()):
            row = int(clash.flatten(1).any(1).nonzero()[0])
            raise ValueError(f"ignore lists a positive column of row {row}")
        exclude = torch.cat([positives, ignore], dim=1)
    q, c = prepare(query, normalize), prepare(candidates, normalize)
    k = kappa(q, temperature, n_rows=N, group=group)
    kr = k if k.dim() == 0 else k[:, None]
    # u_ip for the listed positives: O(N P d) with autograd (padding reads row 0, weight 0)
    upos = torch.einsum("nd,npd->np", q, c[positives.clamp(min=0)]) * kr
    n_pos = valid.sum(1)
    has = n_pos > 0
    count = int(has.sum()) if exclude_no_positive else N
    w = row_weight(reduction, count, group=group)
    coef = valid.to(q.dtype) / n_pos.clamp(min=1)[:, None].to(q.dtype)
    if weights is not None:
        coef = coef * weights.to(q.dtype)
    coef = coef * w
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(index=exclude)),),
        row_fn=lambda st, sd: (
            sd["coef"] * F.softplus(cast(Tensor, st.lse)[0][:, None] - sd["upos"])
        ).sum(1),
        row_side={"upos": upos, "coef": coef},
    )
    return run(q, c, spec, k, reduction, eng, group=group)


def sample_positives(
    positives: Tensor,
    values: Optional[Tensor] = None,
    *,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """DEXML's default training step (``loss_sample``): one positive per row, drawn with
    probability proportional to its label value (uniform without ``values``).

    Returns ``(sampled (N, 1), ignore (N, P))``: the sampled column (-1 for a row without
    positives) and the other positives (-1 elsewhere), which DEXML removes from the row
    altogether. Pass them as ``dexml(query, candidates, sampled, None, ignore)``.
    """
    check_index("positives", positives, None, ndim=2, min_rows=0, allow=(-1,))
    valid = positives >= 0
    if values is None:
        p = valid.double()
    else:
        check_tensor("values", values, kind="real", shape=tuple(positives.shape))
        if bool((values < 0).any()):
            raise ValueError("values must be >= 0")
        p = values.double() * valid
    has = p.sum(1) > 0
    N = positives.shape[0]
    slot = torch.zeros(N, dtype=torch.long, device=positives.device)
    if bool(has.any()):
        dev = positives.device
        draw = torch.multinomial(p[has].cpu(), 1, generator=generator).squeeze(1).to(dev)
        slot[has] = draw
    rows = torch.arange(N, device=positives.device)
    sampled = torch.where(has, positives[rows, slot], torch.full_like(slot, -1))[:, None]
    ignore = positives.clone()
    ignore[rows[has], slot[has]] = -1
    return sampled, ignore


class DEXML(Objective, functional=dexml):
    """DEXML's decoupled softmax: multi-label InfoNCE in which every positive label of a query
    competes only with that query's negatives, never with its other positives.

    Built for extreme multi-label classification with dual encoders: the candidates are label
    embeddings (the whole label set, or the labels of the batch), each query lists its positive
    columns. The softmax over all columns (the usual multi-label InfoNCE, or SupCon's L_out)
    keeps the other positives in the denominator, so a query with many labels can never give
    any of them a high probability; the decoupled form removes them. Per positive the loss is
    at most that of the coupled softmax. With one positive per row it is InfoNCE.

    The engine computes one masked log-sum-exp over the negatives per row (the positives and
    ``ignore`` columns are an index mask, excluded inside each tile; memory O((N + L) d) plus
    one tile); the positives' logits are O(N P d) dot products. Exact under a process group:
    each rank keeps its queries and sees every rank's candidates; ``positives`` and
    ``ignore`` index the candidates of the same rank (as InfoNCE's in-batch positive),
    counts are global.

    Formula::

        u_ij  = <q_i, c_j> / tau
        NEG_i = log sum_{j not in P_i and not in I_i} exp(u_ij)
        l_i   = (1 / |P_i|) sum_{p in P_i} w_ip * [logaddexp(NEG_i, u_ip) - u_ip]
              = (1 / |P_i|) sum_{p in P_i} w_ip * softplus(NEG_i - u_ip)
        loss  = mean of l_i over rows with |P_i| > 0

    The official training default (``loss_sample``) draws one positive per row and step in
    proportion to its label value and removes the others from the row:
    :func:`~contrastkit.losses.infonce.dexml.sample_positives` returns both tables.

    Args:
        temperature (float | Tensor, default 0.05): tau (the official configuration, cosine
            similarities). A 0-dim tensor may be learnable; an ``(N,)`` tensor is per query.
        exclude_no_positive (bool, default True): drop rows without a positive from the mean
            (the official code counts them as 0 in the mean over all rows: ``False``).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (one per query,
            0 for a query without positives).
        normalize (bool, default True): L2-normalise both inputs (the official
            ``norm_embs: True``).
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``query``: (N, d) float.
        - ``candidates``: (L, d) float, same dtype and d; the label embeddings (columns).
        - ``positives`` (optional): (N, P) or (N,) integer columns of each query's positives,
          -1 pads a shorter list; None: row i of ``candidates`` is query i's only positive.
        - ``weights`` (optional): (N, P) non-negative label values multiplying each positive's
          term (the official ``loss_weighted``); None: 1. A listed positive of weight 0 still
          leaves the denominator and counts in ``|P_i|`` (the official code treats a label
          value of 0 as no label: leave such columns out of ``positives``).
        - ``ignore`` (optional): (N, Q) integer columns removed from the row altogether (the
          positives not sampled this step), -1 pads.
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        query, labels = torch.randn(6, 16), torch.randn(10, 16)
        positives = torch.tensor([[0, 3], [1, -1], [2, 7], [4, -1], [5, 9], [6, 8]])
        loss = ck.DEXML(temperature=0.05)(query, labels, positives)
        one = ck.dexml(query, labels[:6], temperature=0.05)  # one positive: InfoNCE

    See also:
        :class:`SupCon` (other positives stay in the denominator), :class:`InfoNCE` (one
        positive per row), :class:`DCL` (the positive removed from its own denominator).

    References:
        Gupta, Khatri, Rawat, Bhojanapalli, Jain, Dhillon, "Dual-Encoders for Extreme
        Multi-Label Classification", ICLR 2024, arXiv:2310.10636. Official code:
        github.com/nilesh2797/DEXML.
    """
