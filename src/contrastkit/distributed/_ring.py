"""Ring strategy (as Inf-CL): candidate shards travel around the ring; no rank holds them all.

Forward: ``W`` steps; at step ``t`` rank ``r`` holds shard ``s = (r - t) mod W``, merges the
row statistics of its anchors against it (log-sum-exps with ``logaddexp``, sums added) and passes
it on to rank ``r + 1``. Backward: the shards travel again, each with an accumulator of its
gradient; at every step the engine's two-sweep backward turns the incoming ``d loss / d stat``
and the *merged* statistics into this rank's ``dA`` and its contribution to the shard's ``dB``;
after the last step every accumulator makes one more hop, to its owner.
Memory per rank: O((N + 2 M) d) instead of O(W M d); bytes per rank: ``(3 W - 2) M d`` elements
against ``2 (W - 1) M d`` for all-gather + reduce-scatter.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import torch
from torch import Tensor

from ..engine.recompute import RowStats, output_keys
from ..engine.spec import PairMask, RowSpec
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
    """Row statistics of local anchors ``A`` against the global candidates (every rank's ``B``),
    in the order of ``output_keys(spec)``; ``spec`` has no columns and masks in local columns."""

    @staticmethod
    def forward(fctx, A, B, kappa, bias, ctx: _ops.Context, spec: RowSpec, tile):
        W, r, M = ctx.world, ctx.rank, B.shape[0]
        keys = output_keys(spec)
        merged = None
        shard = B.detach()
        with torch.no_grad():
            for t in range(W):
                s = (r - t) % W
                outs = RowStats.apply(A, shard, kappa, bias, shard_spec(spec, (r - s) * M), tile)
                if merged is None:
                    merged = [o.clone() for o in outs]
                else:
                    for k, m, o in zip(keys, merged, outs):
                        if k == "lse":
                            torch.logaddexp(m, o, out=m)
                        else:
                            m.add_(o)
                if t < W - 1:
                    shard = _ring_pass(ctx, shard)
        fctx.meta = (ctx, spec, tile, keys)
        fctx.save_for_backward(A, B, kappa, *merged)
        return tuple(merged)

    @staticmethod
    def backward(fctx, *grads):
        ctx, spec, tile, keys = fctx.meta
        A, B, kappa, *merged = fctx.saved_tensors
        W, r, M = ctx.world, ctx.rank, B.shape[0]
        need = fctx.needs_input_grad
        dA = torch.zeros_like(A)
        dk = torch.zeros_like(kappa) if need[2] else None
        db = None
        shard, acc = B.detach(), torch.zeros_like(B)
        for t in range(W):
            s = (r - t) % W
            fake = SimpleNamespace(
                saved_tensors=(A, shard, kappa, *merged),
                spec=shard_spec(spec, (r - s) * M),
                keys=keys,
                tile=tile,
                needs_input_grad=(True, True, need[2], need[3], False, False),
            )
            gA, gB, gk, gb, _, _ = RowStats.backward(fake, *grads)
            dA += gA
            acc += gB
            if gk is not None:
                dk += gk
            if gb is not None:
                db = gb if db is None else db + gb
            if t < W - 1:
                both = _ring_pass(ctx, torch.cat([shard, acc]))
                shard, acc = both[:M], both[M:]
        if W > 1:  # the accumulator now holds shard (r + 1)'s full gradient: send it home
            acc = _ring_pass(ctx, acc)
        return dA, acc, dk, db, None, None, None
