"""Ring strategy (as Inf-CL): candidate shards travel around the ring; no rank holds them all.

Forward: ``W`` steps; at step ``t`` rank ``r`` holds shard ``s = (r - t) mod W``, merges the
row statistics of its anchors against it (log-sum-exps with ``logaddexp``, sums added) and passes
it on to rank ``r + 1``. Backward: the shards travel again, each with an accumulator of its
gradient; at every step the engine's two-sweep backward (the plain function
``engine.recompute.row_statistics_backward``) turns the incoming ``d loss / d stat`` and the
*merged* statistics into this rank's ``dA`` and its contribution to the shard's ``dB``; after
the last step every accumulator makes one more hop, to its owner.
Memory per rank: O((N + 2 M) d) instead of O(W M d); bytes per rank: ``(3 W - 2) M d`` elements
against ``2 (W - 1) M d`` for all-gather + reduce-scatter.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..engine.recompute import (
    flatten_statistics,
    merge_statistics,
    row_statistics_backward,
    row_statistics_forward,
    unflatten_statistics,
)
from ..engine.spec import PairMask, RowSpec, RowStatistics, map_statistics
from . import _ops


def shard_mask(mask: PairMask, shift: int) -> PairMask:
    """A mask in the columns of this rank's own shard -> the columns of a shard ``shift``
    columns away (entries that fall outside the shard are ignored by the engine)."""
    if mask.dense is not None or mask.labels is not None:
        raise _ops.not_supported("a dense or label mask with strategy='ring'")
    kw = {}
    if mask.self_offset is not None:
        kw["self_offset"] = mask.self_offset + shift
    if mask.index is not None:
        idx = mask.index
        kw["index"] = idx.where(idx < 0, idx + shift)
    return replace(mask, **kw)


def shard_spec(spec: RowSpec, shift: int) -> RowSpec:
    return replace(
        spec,
        terms=tuple(replace(t, exclude=shard_mask(t.exclude, shift)) for t in spec.terms),
    )


def _ring_pass(ctx: _ops.Context, x: Tensor) -> Tensor:
    """Send ``x`` to rank ``r + 1``, receive the same shape from rank ``r - 1``."""
    dist = _ops._dist()
    x = x.contiguous()
    out = torch.empty_like(x)
    nxt = dist.get_global_rank(ctx.group, (ctx.rank + 1) % ctx.world)
    prv = dist.get_global_rank(ctx.group, (ctx.rank - 1) % ctx.world)
    _ops._count("ring", _ops._nbytes(x))
    ops = [
        dist.P2POp(dist.isend, x, nxt, group=ctx.group),
        dist.P2POp(dist.irecv, out, prv, group=ctx.group),
    ]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return out


class RingRowStats(torch.autograd.Function):
    """Row statistics of local anchors ``A`` against the global candidates (every rank's ``B``)
    as a flat tuple (``engine.recompute.flatten_statistics``); ``spec`` has no columns and
    masks in local columns. Use :func:`ring_row_statistics`."""

    @staticmethod
    def forward(fctx, A, B, kappa, bias, ctx: _ops.Context, spec: RowSpec, tile):
        W, r, M = ctx.world, ctx.rank, B.shape[0]
        merged = None
        shard = B.detach()
        with torch.no_grad():
            for t in range(W):
                s = (r - t) % W
                shard_s = shard_spec(spec, (r - s) * M)
                rows, _ = row_statistics_forward(A, shard, kappa, shard_s, tile)
                if merged is None:
                    merged = map_statistics(lambda f, v: v.clone(), rows)
                else:
                    merge_statistics(merged, rows)
                if t < W - 1:
                    shard = _ring_pass(ctx, shard)
        outs = flatten_statistics((merged, None))
        fctx.meta = (ctx, spec, tile)
        fctx.save_for_backward(A, B, kappa, *outs)
        return tuple(outs)

    @staticmethod
    def backward(fctx, *grads):
        ctx, spec, tile = fctx.meta
        A, B, kappa, *outs = fctx.saved_tensors
        W, r, M = ctx.world, ctx.rank, B.shape[0]
        need = fctx.needs_input_grad
        stats, coefs = unflatten_statistics(spec, outs), unflatten_statistics(spec, grads)
        dA = torch.zeros_like(A)
        dk = torch.zeros_like(kappa) if need[2] else None
        db = None
        shard, acc = B.detach(), torch.zeros_like(B)
        for t in range(W):
            s = (r - t) % W
            shard_s = shard_spec(spec, (r - s) * M)
            gA, gB, gk, gb = row_statistics_backward(
                A, shard, kappa, shard_s, tile, stats, coefs, kappa_grad=need[2]
            )
            dA += gA
            acc += gB
            if gk is not None:
                dk += gk
            if need[3]:
                db = gb if db is None else db + gb
            if t < W - 1:
                both = _ring_pass(ctx, torch.cat([shard, acc]))
                shard, acc = both[:M], both[M:]
        if W > 1:  # the accumulator now holds shard (r + 1)'s full gradient: send it home
            acc = _ring_pass(ctx, acc)
        return dA, acc, dk, db, None, None, None


def ring_row_statistics(
    A: Tensor, B: Tensor, kappa: Tensor, bias, ctx: _ops.Context, spec: RowSpec, tile
) -> RowStatistics:
    """Differentiable row statistics of local anchors ``A`` against every rank's ``B`` (ring)."""
    outs = RingRowStats.apply(A, B, kappa, bias, ctx, spec, tile)
    return unflatten_statistics(spec, outs)[0]
