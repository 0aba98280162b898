"""InfoNCE with every kind of extra negative at once: a queue, mined negatives and weights in one
engine call.

    l_i = -u_ii + log( sum_j w_ij exp(u_ij) + sum_q exp(u_iq) + sum_h v_ih exp(u_ih) )

:func:`~contrastkit.losses.infonce.info_nce.info_nce` takes a queue *or* per-anchor negatives;
this objective takes both at once, plus a validity mask of the per-anchor negatives and
weights on the key columns, which is what the pieces of :mod:`contrastkit.negatives` produce.
It shares info_nce's input checks and per-anchor log-sum-exp. Exact under a process group as
``info_nce``: every rank's keys and queue rows are candidates of every query (gathered), the
per-anchor negatives stay local, and ``weights`` address the global key columns (rank-major).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_compatible, check_embeddings
from ...engine import LSETerm, RowSpec
from ...negatives.compose import weight_function
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    global_rows,
    kappa,
    objective_group,
    prepare,
    row_offset,
    row_weight,
    run,
)
from .info_nce import check_query_key, private_lse

__all__ = ["info_nce_with_negatives", "InfoNCEWithNegatives"]


@exact_objective
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
    group = objective_group()
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
    # under a group the weights address the global key columns (every rank's M keys, rank-major;
    # every rank has M keys: the runner checks the shapes)
    world = 1 if group is None else group.world
    wfn = weight_function(weights, N, world * M)
    # MoCo (own key + queue, no weights): the own key is a side term and the engine sweeps the
    # queue alone (no key columns weighted 0, and no per-tile weights: either strategy)
    moco = not in_batch_negatives and wfn is None and queue is not None
    if not in_batch_negatives and not moco:
        user = wfn
        own = row_offset(M, group=group)  # query i's key is global key column own + i

        def wfn(r0, r1, c0, c1):
            rows = torch.arange(r0 + own, r1 + own, device=query.device)[:, None]
            cols = torch.arange(c0, c1, device=query.device)[None, :]
            eye = (rows == cols).to(query.dtype)
            return eye if user is None else eye * user(r0, r1, c0, c1).to(query.dtype)

    k = kappa(query, temperature, None, n_rows=N, group=group)
    q, key_n = prepare(query, normalize), prepare(key, normalize)
    cands = key_n
    if moco and queue is not None:
        cands = prepare(queue, normalize)
    elif queue is not None:
        cands = torch.cat([key_n, prepare(queue, normalize)])
    side = {"pos": (q * key_n[:N]).sum(-1) * k}
    if extra is not None:
        side["private"] = private_lse(q, prepare(extra, normalize), k, extra_valid)
    term = LSETerm()
    if wfn is not None:
        term = LSETerm(weights=_key_column_weights(wfn, M, cands.shape[0], q))
    w = row_weight(reduction, N, group=group)
    empty: list = []  # queries with an empty denominator (counted over ranks under a group)

    def row_fn(st, sd):
        lse = st.lse[0]
        if "private" in sd:
            lse = torch.logaddexp(lse, sd["private"])
        if moco:  # log(exp(u_ii) + rest) - u_ii without cancellation
            return w * F.softplus(lse - sd["pos"])
        if wfn is not None:
            empty.append(int(torch.isneginf(lse).sum()))
            if group is None:
                _check_empty(empty[-1])
        return w * (lse - sd["pos"])

    spec = RowSpec(terms=(term,), row_fn=row_fn, row_side=side)
    out = run(q, cands, spec, k, reduction, eng, group=group)
    if wfn is not None and group is not None:  # every rank raises together
        _check_empty(global_rows(max(empty, default=0), group=group))
    return out


def _check_empty(n_empty: int) -> None:
    if n_empty:
        raise ValueError(
            f"weights leave {n_empty} queries with an empty denominator (every weight 0 and no "
            "other negative), e.g. MEOW nodes sharing a cluster with every node at every "
            "granularity"
        )


def _key_column_weights(wfn, M: int, P: int, q: Tensor):
    """The engine's per-tile weights over the candidate columns: ``wfn`` on key columns, 1 on
    queue columns. The candidates are blocks of ``P`` columns (one per rank under a group:
    that rank's ``M`` keys, then its queue rows); ``wfn`` addresses the key columns of every
    block, numbered rank-major (block ``r``'s key ``o`` is key column ``r M + o``)."""

    def tile(r0, r1, c0, c1):
        parts = []
        c = c0
        while c < c1:
            b, o = divmod(c, P)
            end, key_end = min(c1, (b + 1) * P), min(c1, b * P + M)
            if c < key_end:
                parts.append(wfn(r0, r1, b * M + o, b * M + key_end - b * P).to(q.dtype))
                c = key_end
            if c < end:
                parts.append(torch.ones(r1 - r0, end - c, dtype=q.dtype, device=q.device))
                c = end
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    tile.global_columns = True  # type: ignore[attr-defined]
    return tile


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
    plain autograd. Exact under a process group: as in
    :class:`InfoNCE`, the keys and queue rows of every rank are candidates of every query (a
    queue replicated on every rank would count ``W`` times: hold ``1/W`` of it per rank), the
    per-anchor negatives stay local, and ``weights`` address the global key columns: a rank
    passes its queries' weights over every rank's keys, shape ``(N, W M)``, rank-major (a tile
    function receives this rank's query rows and global key columns); ``strategy="ring"``
    with ``weights`` (or ``in_batch_negatives=False`` without a queue) raises.

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
