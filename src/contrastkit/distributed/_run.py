"""The distributed counterpart of ``losses._common.run``: local anchors, global candidates.

Rank ``r`` holds anchors ``A_r`` (N, d) and candidates ``B_r`` (M, d). The global problem is the
rank-major concatenation ``A = cat_r A_r``, ``B = cat_r B_r``. Rank ``r`` computes the rows of
its own anchors against the gathered ``B`` (the engine tiles them; the similarity matrix is never
formed). Two-sided objectives:

* plain specs (CLIP, symmetric InfoNCE; ``RowSpec.plain``) with ``strategy="gather"`` run the
  single sweep of one process on this rank's rows (:func:`_two_sided_single_sweep`): the
  partial column log-sum-exps over this rank's anchors are combined across ranks (two
  all-reduces of ``W M`` floats), ``col_fn`` is evaluated on this rank's own columns and its
  coefficients all-gathered (``W M`` floats), then one sweep with both softmaxes gives the
  complete ``dA_r`` and this rank's part of ``dB``, reduce-scattered: ``8 N (W M) d`` FLOPs per
  rank (``8 N_global M_global d`` over the group, as one process), one side gathered;
* others (ring strategy, soft targets, label masks, ``reduction="none"``, very large ``W M``
  where the single sweep gives way to the two-sweep path, CUDA tensors: their one-sided passes
  run on the Triton kernels) compute the columns of their own candidates as rows of the
  transposed problem ``B_r`` against the gathered ``A``: both sides gathered,
  ``2 x 6 N (W M) d`` FLOPs per rank.
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


#: how plain two-sided specs run under the gather strategy: "single" (one sweep, column
#: statistics combined across ranks) or "two-pass" (the transposed problem as a second pass,
#: both sides gathered). The latter is kept for benchmarks/bench_distributed.py's comparison.
SYMMETRIC_ROUTE = "single"


class _GroupColumns:
    """:class:`contrastkit.engine.fused.ColumnGroup` over the ranks of ``ctx``: this rank owns
    the gathered columns ``[r M, (r + 1) M)``."""

    def __init__(self, ctx: _ops.Context, own: tuple[int, int]):
        self.ctx = ctx
        self.own = own

    def combine(self, partial: Tensor) -> Tensor:
        return _ops.logsumexp_across(self.ctx, partial)

    def gather(self, coef: Tensor) -> Tensor:
        return _ops.all_gather_values(self.ctx, coef)


def _single_sweep_route(ctx, anchors: Tensor, candidates: Tensor, spec: RowSpec, k, reduce, kw):
    """Whether a two-sided spec takes :func:`_two_sided_single_sweep` (see the module doc).

    The two routes issue different collectives, so the choice reads only what every rank
    shares (the spec's kind, the exchanged shapes, the strategy, the device), never the
    per-rank ``chunk_size`` / ``backend`` (not compared across ranks)."""
    from ..engine.dispatch import FUSED_MAX_ELEMS, fused_block_rows

    if not (spec.columns and spec.col_fn is not None and spec.plain and reduce):
        return False
    if ctx.strategy != "gather" or SYMMETRIC_ROUTE != "single":
        return False
    if anchors.is_cuda:  # the Triton kernels take the one-sided passes
        return False
    M = ctx.world * candidates.shape[0]
    return fused_block_rows(M, None) * M <= FUSED_MAX_ELEMS


def _two_sided_single_sweep(ctx, A: Tensor, B: Tensor, spec: RowSpec, k: Tensor, engine_kw):
    """``sum_i row_fn_i + sum_j col_fn_j`` counted once over the group: rows of this rank's
    anchors and columns of this rank's candidates (``col_side`` is in local columns), from one
    sweep of this rank's anchors against every rank's candidates with global column
    statistics. ``dB`` of the gathered candidates is partial and reduce-scattered."""
    M = B.shape[0]
    shift = ctx.rank * M
    Bg = _ops.gather(ctx, B)
    spec = replace(
        spec, terms=tuple(replace(t, exclude=_shift(t.exclude, ctx, shift)) for t in spec.terms)
    )
    if spec.positive is not None:
        spec = replace(spec, positive=spec.positive + shift)
    cols = _GroupColumns(ctx, (shift, shift + M))
    return contrast(A, Bg, spec, k, reduce=True, column_group=cols, **engine_kw)


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
        raise _ops.not_supported(
            "an objective with soft targets (in-batch KL, momentum distillation, ConR) "
            "with strategy='ring'"
        )
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
    if _single_sweep_route(ctx, anchors, candidates, spec, k, reduce, engine_kw):
        total = _two_sided_single_sweep(ctx, anchors, candidates, spec, k, engine_kw)
        return _ops.global_loss(ctx, total)
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
