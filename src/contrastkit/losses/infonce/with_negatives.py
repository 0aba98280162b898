"""InfoNCE with every kind of extra negative at once: a queue, mined negatives and weights in one
engine call.

    l_i = -u_ii + log( sum_j w_ij exp(u_ij) + sum_q exp(u_iq) + sum_h v_ih exp(u_ih) )

:func:`~contrastkit.losses.infonce.info_nce.info_nce` takes a queue *or* per-anchor negatives;
this objective takes both at once, plus a validity mask of the per-anchor negatives and
weights on the key columns, which is what the pieces of :mod:`contrastkit.negatives` produce.
It shares info_nce's input checks and per-anchor log-sum-exp; it is rank-local (its weights
address the columns of this rank's keys).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings
from ...engine import LSETerm, RowSpec
from ...negatives.compose import weight_function
from ...objective import (
    Objective,
    engine_args,
    kappa,
    prepare,
    rank_local_objective,
    row_weight,
    run,
)
from .info_nce import check_query_key, private_lse

__all__ = ["info_nce_with_negatives", "InfoNCEWithNegatives"]


@rank_local_objective
def info_nce_with_negatives(
    query: Tensor,
    key: Tensor,
    queue: Optional[Tensor] = None,
    extra: Optional[Tensor] = None,
    extra_valid: Optional[Tensor] = None,
    weights=None,
    *,
    in_batch_negatives: bool = True,
    temperature=0.07,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """InfoNCE with a queue, per-anchor negatives (masked) and key weights at once; see
    :class:`InfoNCEWithNegatives`."""
    eng = engine_args(chunk_size, backend)
    N, M = check_query_key(query, key)
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

    k = kappa(query, temperature, None, n_rows=N, group=None)
    q, key_n = prepare(query, normalize), prepare(key, normalize)
    cands = key_n
    if queue is not None:
        cands = torch.cat([key_n, prepare(queue, normalize)])
    side = {"pos": (q * key_n[:N]).sum(-1) * k}
    if extra is not None:
        side["private"] = private_lse(q, prepare(extra, normalize), k, extra_valid)
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
    w = row_weight(reduction, N, group=None)

    def row_fn(st, sd):
        lse = st.lse[0]
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
    return run(q, cands, spec, k, reduction, eng, group=None)


class InfoNCEWithNegatives(Objective, functional=info_nce_with_negatives):
    """InfoNCE with every kind of extra negative at once: the batch's keys (optionally
    weighted), a shared queue and per-anchor negatives with a validity mask, in one engine call.

    Compared with :class:`InfoNCE` it adds exactly four things: a ``queue`` *and* per-anchor
    ``extra`` negatives in the same call (``info_nce`` takes one or the other), the validity
    mask ``extra_valid`` of the per-anchor negatives (a miner's ``-1`` slots), and ``weights``
    ``w_ij`` (no gradient) on the key columns, the diagonal included: ``w_ii = 0`` removes the
    positive from the denominator (MEOW); a query left with an empty denominator is a
    ``ValueError``. Without these it equals ``info_nce`` (weights of ones included). The
    key/queue sum runs on the tiled engine (memory O(N + M)); the per-anchor sum is O(N h d)
    plain autograd. Rank-local: under a process group it raises unless the caller asks for a
    per-rank loss with ``contrastkit.distributed.local()``.

    Formula::

        u = cos / tau
        l_i = -u_ii + log( sum_j w_ij exp(u_ij) + sum_q exp(u_iq) + sum_h v_ih exp(u_ih) )
        (in_batch_negatives=False: w_ij = 0 for j != i, MoCo's logits [q.k+, q Q^T])

    Args:
        in_batch_negatives (bool, default True): ``False`` keeps only each query's own key
            among the keys (a diagonal weight on the key columns).
        temperature (float | Tensor, default 0.07): tau; a 0-dim tensor or one per query (N,).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (one per query).
        normalize (bool, default True): L2-normalise every input.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``query``: (N, d) float.
        - ``key``: (M, d) float, M >= N; key ``i`` is query ``i``'s positive.
        - ``queue`` (optional): (K, d) float; negatives shared by every query (MoCo).
        - ``extra`` (optional): (N, h, d) float; per-anchor negatives (mined, synthesised).
        - ``extra_valid`` (optional): (N, h) bool; ``False`` slots of ``extra`` are left out.
        - ``weights`` (optional): the key-column weights, a dense (N, M) tensor >= 0, an object
          with ``tile(r0, r1, c0, c1)`` (``negatives.ClusterNegativeWeights``) or such a
          callable.
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        q, k = torch.randn(8, 16), torch.randn(8, 16)
        queue, mined = torch.randn(32, 16), torch.randn(8, 3, 16)
        loss_fn = ck.InfoNCEWithNegatives(temperature=0.1)
        loss = loss_fn(q, k, queue, mined, weights=torch.ones(8, 8))

    See also:
        :class:`InfoNCE`, :class:`MinedInfoNCE` (UniME: positive and mined negatives only),
        ``contrastkit.negatives`` (miners, MoCHi mixing, MEOW / gCooL weights).

    References:
        He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
        arXiv:1911.05722. Kalantidis et al., "Hard Negative Mixing for Contrastive Learning"
        (MoCHi), NeurIPS 2020, arXiv:2010.01028. Yu, Li, "Heterogeneous Graph Contrastive
        Learning with Meta-path Contexts and Weighted Negative Samples" (MEOW), SDM 2023.
    """
