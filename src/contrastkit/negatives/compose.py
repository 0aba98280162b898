"""InfoNCE with every kind of extra negative at once, on the engine.

    l_i = -u_ii + log( sum_j w_ij exp(u_ij) + sum_q exp(u_iq) + sum_h v_ih exp(u_ih) )

``u = cos / tau``; ``j`` runs over the keys (key ``i`` is query ``i``'s positive; ``w_ij = 1``
unless ``weights`` are given, the diagonal included; ``in_batch_negatives=False``: only
``j = i``), ``q`` over a shared queue (MoCo), ``h`` over per-anchor extra negatives
``(N, h, d)`` (mined hard negatives, MoCHi / KaLM synthetic negatives) with an optional
validity mask ``v``. :func:`contrastkit.losses.info_nce.info_nce` takes a queue
*or* per-anchor negatives; this function takes both plus negative weights, which is what the
pieces of :mod:`contrastkit.negatives` produce. ``weights`` are the engine's per-tile negative
weights (no gradient): a dense ``(N, M)`` tensor, an object with ``tile(r0, r1, c0, c1)`` such as
:class:`ClusterNegativeWeights`, or such a callable; ``weights[i, i] = 0`` removes the positive
from the denominator (MEOW); a query left with an empty denominator is a ``ValueError``. The
key/queue sum runs on the engine (tiled, exact, O(N + M) memory); the per-anchor sum is
``O(N h d)`` plain autograd.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._validation import check_compatible, check_embeddings, check_tensor
from ..engine import LSETerm, RowSpec
from ..losses._common import engine_args, kappa, prepare, row_weight, run

__all__ = ["info_nce_with_negatives", "weight_function"]


def weight_function(weights, n_rows: int, n_cols: int):
    """``weights`` (dense tensor, ``.tile`` object or callable) as ``fn(r0, r1, c0, c1)``."""
    if weights is None:
        return None
    if isinstance(weights, Tensor):
        check_tensor("weights", weights, kind="real", finite=False)
        if weights.shape != (n_rows, n_cols):
            raise ValueError(
                f"weights must have shape (N={n_rows}, M={n_cols}) (one per query and key "
                f"column), got {tuple(weights.shape)}"
            )
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("weights must be finite and >= 0")
        w = weights.detach()
        return lambda r0, r1, c0, c1: w[r0:r1, c0:c1]
    if hasattr(weights, "tile"):
        shape = getattr(weights, "shape", None)
        if shape is not None and tuple(shape) != (n_rows, n_cols):
            raise ValueError(
                f"weights cover {tuple(shape)} pairs but the problem is ({n_rows}, {n_cols})"
            )
        return weights.tile
    if callable(weights):
        return weights
    raise ValueError(f"weights must be a tensor, a .tile object or a callable, got {weights!r:.60}")


def info_nce_with_negatives(
    query: Tensor,
    key: Tensor,
    *,
    queue: Optional[Tensor] = None,
    extra: Optional[Tensor] = None,
    extra_valid: Optional[Tensor] = None,
    weights=None,
    in_batch_negatives: bool = True,
    temperature=0.07,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """InfoNCE of ``query`` (N, d) against ``key`` (M >= N, d) with a ``queue`` (K, d), per-anchor
    ``extra`` negatives (N, h, d) (``extra_valid`` (N, h) bool) and key ``weights`` (N, M).

    With only ``queue`` or only ``extra`` it equals ``info_nce``; with ``weights`` of ones as well.
    ``in_batch_negatives=False`` keeps only each query's own key among the keys (MoCo's logits
    ``[q.k+, q Q^T]``, as a diagonal weight on the key columns).
    """
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
    if queue is not None:
        check_embeddings("queue", queue)
        check_compatible("query", query, "queue", queue)
    if extra is not None:
        check_embeddings("extra", extra, ndim=3)
        check_compatible("query", query, "extra", extra)
        if extra.shape[0] != N:
            raise ValueError(f"extra must have shape (N={N}, h, d), got {tuple(extra.shape)}")
        if extra_valid is not None and (
            not isinstance(extra_valid, Tensor)
            or extra_valid.dtype != torch.bool
            or extra_valid.shape != extra.shape[:2]
        ):
            raise ValueError(
                f"extra_valid must be a bool tensor of shape {tuple(extra.shape[:2])}, got "
                f"{getattr(extra_valid, 'shape', extra_valid)}"
            )
    elif extra_valid is not None:
        raise ValueError("extra_valid given without extra")
    wfn = weight_function(weights, N, M)
    if not in_batch_negatives:
        user = wfn

        def wfn(r0, r1, c0, c1):
            rows = torch.arange(r0, r1, device=query.device)[:, None]
            cols = torch.arange(c0, c1, device=query.device)[None, :]
            eye = (rows == cols).to(query.dtype)
            return eye if user is None else eye * user(r0, r1, c0, c1).to(query.dtype)

    k = kappa(query, temperature, None, n_rows=N)
    q, key_n = prepare(query, normalize), prepare(key, normalize)
    cands = key_n
    if queue is not None:
        cands = torch.cat([key_n, prepare(queue, normalize)])
    side = {"pos": (q * key_n[:N]).sum(-1) * k}
    if extra is not None:
        kr = k if k.dim() == 0 else k[:, None]
        u = torch.einsum("nd,nhd->nh", q, prepare(extra, normalize)) * kr
        if extra_valid is not None:
            u = u.masked_fill(~extra_valid, float("-inf"))
        side["private"] = torch.logsumexp(u, dim=1)
    term = LSETerm()
    if wfn is not None:
        K_extra = cands.shape[0] - M

        def tile(r0, r1, c0, c1):
            if c1 <= M:
                return wfn(r0, r1, c0, c1)
            parts = []
            if c0 < M:
                parts.append(wfn(r0, r1, c0, M))
            ones = torch.ones(r1 - r0, c1 - max(c0, M), dtype=q.dtype, device=q.device)
            parts.append(ones)
            return torch.cat([p.to(q.dtype) for p in parts], dim=1)

        term = LSETerm(weights=tile if K_extra else wfn)
    w = row_weight(reduction, N)

    def row_fn(st, sd):
        lse = st["lse"][0]
        if "private" in sd:
            lse = torch.logaddexp(lse, sd["private"])
        if wfn is not None and bool(torch.isneginf(lse).any()):
            raise ValueError(
                f"weights leave {int(torch.isneginf(lse).sum())} queries with an empty "
                "denominator (every weight 0 and no other negative), e.g. MEOW nodes sharing "
                "a cluster with every node at every granularity"
            )
        return w * (lse - sd["pos"])

    spec = RowSpec(terms=(term,), row_fn=row_fn, row_side=side)
    return run(q, cands, spec, k, reduction, eng)
