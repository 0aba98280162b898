"""The distributed counterpart of ``losses._common.run``: local anchors, global candidates.

Rank ``r`` holds anchors ``A_r`` (N, d) and candidates ``B_r`` (M, d). The global problem is the
rank-major concatenation ``A = cat_r A_r``, ``B = cat_r B_r``. Rank ``r`` computes the rows of
its own anchors against the gathered ``B`` (the engine tiles them; the similarity matrix is never
formed) and, for two-sided objectives, the columns of its own candidates as rows of the
transposed problem ``B_r`` against the gathered ``A`` (no cross-rank column statistics needed).
Pair masks (and ``RowSpec.positive``) given in local columns are shifted to global ones by the
rank offset. The ring strategy does not read positives from the tile (its shards merge plain
log-sum-exps): it computes them with a separate dot product (``engine.spec.without_positive``).
Per-tile functions see local rows and, on the gathered candidates, global columns: soft targets
are written that way (CWCL gathers its target embeddings); per-tile weights are accepted when the
objective says so with the attribute ``global_columns = True`` on the function (ConR, SupReMix:
labels gathered), and refused otherwise.
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor

from ..engine import (
    ColumnStatistics,
    LSETerm,
    PairMask,
    RowSpec,
    RowStatistics,
    SoftTargets,
    contrast,
)
from ..engine.spec import without_positive
from . import _ops


def _shift(mask: PairMask, ctx: _ops.Context, col_offset: int) -> PairMask:
    """A mask in local candidate columns -> the same mask in global columns."""
    if mask.dense is not None:
        raise _ops.not_supported("a dense pair mask")
    kw = {}
    if mask.self_offset is not None:
        kw["self_offset"] = mask.self_offset + col_offset
    if mask.index is not None:
        idx = mask.index
        kw["index"] = idx.where(idx < 0, idx + col_offset)
    if mask.labels is not None:
        kw["col_labels"] = _ops.gather(ctx, mask.col_labels, check="col_labels")
    return replace(mask, **kw)


def _transpose(mask: PairMask) -> PairMask:
    """The column mask of a two-sided objective as a row mask of the transposed problem
    (rows: this rank's candidates; columns: this rank's anchors), in local columns."""
    if mask.dense is not None or mask.index is not None:
        raise _ops.not_supported("an index or dense mask on a two-sided objective")
    return PairMask(
        self_offset=None if mask.self_offset is None else -mask.self_offset,
        row_labels=mask.col_labels,
        col_labels=mask.row_labels,
        labels=mask.labels,
    )


def _rows_global(ctx, A, B, spec: RowSpec, k: Tensor, reduce: bool, engine_kw: dict):
    """``sum_i row_fn_i`` (or the rows) of local anchors ``A`` against every rank's ``B``;
    ``spec`` is one-sided with masks in local columns."""
    if ctx.strategy == "ring":
        from ..engine.dispatch import recompute_tile
        from ._ring import ring_row_statistics

        bias = spec.softplus_bias
        spec = without_positive(spec, A, B, k)  # positive columns are local ones here
        tile = recompute_tile(B.shape[0], engine_kw.get("chunk_size"))
        stats = ring_row_statistics(A, B, k, bias, ctx, spec, tile)
        rows = spec.row_fn(stats, spec.row_side)
        return rows.sum() if reduce else (rows, None)
    Bg = _ops.gather(ctx, B)
    shift = ctx.rank * B.shape[0]
    spec = replace(
        spec, terms=tuple(replace(t, exclude=_shift(t.exclude, ctx, shift)) for t in spec.terms)
    )
    if spec.positive is not None:
        spec = replace(spec, positive=spec.positive + shift)
    return contrast(A, Bg, spec, k, reduce=reduce, **engine_kw)


def _as_columns(stats: RowStatistics) -> ColumnStatistics:
    """Row statistics of the transposed problem as the column statistics of the original."""
    return ColumnStatistics(lse=stats.lse[0], tgt=stats.tgt, mass=stats.mass)


def run_distributed(
    ctx: _ops.Context,
    anchors: Tensor,
    candidates: Tensor,
    spec: RowSpec,
    k: Tensor,
    reduction: str,
    engine_kw: dict,
):
    if spec.soft_targets is not None and ctx.strategy == "ring":
        raise _ops.not_supported("an objective with soft targets (CWCL) with strategy='ring'")
    if spec.soft_targets is not None and spec.columns and spec.soft_targets.transposed is None:
        raise _ops.not_supported("a two-sided objective whose soft targets have no transpose")
    for t in spec.terms:
        if t.weights is None:
            continue
        if not getattr(t.weights, "global_columns", False):
            raise _ops.not_supported("an objective with per-tile weights")
        if ctx.strategy == "ring" or spec.columns:
            raise _ops.not_supported("per-tile weights with strategy='ring' or columns")
    _ops.check_same(ctx, anchors=anchors, candidates=candidates)
    N = anchors.shape[0]
    reduce = reduction != "none"
    row_spec = replace(spec, columns=False, col_fn=None, col_side={})
    rows = _rows_global(ctx, anchors, candidates, row_spec, k, reduce, engine_kw)
    cols = None
    if spec.columns and spec.col_fn is not None:
        if k.dim() != 0:
            raise _ops.not_supported("a per-anchor temperature on a two-sided objective")
        col_fn = spec.col_fn
        soft = spec.soft_targets
        col_spec = RowSpec(
            terms=(LSETerm(exclude=_transpose(spec.terms[0].exclude)),),
            row_fn=lambda st, sd: col_fn(_as_columns(st), sd),
            row_side=spec.col_side,
            soft_targets=None if soft is None else SoftTargets(soft.transposed),
        )
        cols = _rows_global(ctx, candidates, anchors, col_spec, k, reduce, engine_kw)
    if reduce:
        total = rows if cols is None else rows + cols
        return _ops.global_loss(ctx, total)
    rows = rows[0]
    if cols is not None:
        rows = rows + cols[0][:N]
    return _ops.scale_grad(rows, ctx.scale)
