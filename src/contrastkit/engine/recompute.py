"""Two-sweep path: forward keeps only per-row/per-column statistics, backward recomputes tiles.

Forward streams ``b x t`` tiles, merging partial log-sum-exps with ``logaddexp`` into
preallocated row and column accumulators (both in the same sweep), and returns the O(N + M)
statistics as differentiable outputs; the objective combines them with ordinary autograd.
Backward recomputes every tile's logits and turns the incoming ``d loss / d stat`` into ``dA``,
``dB`` (as Inf-CL does).

FLOPs: ``2 N M d`` forward + ``2 N M d`` recompute + ``4 N M d`` gradients = **8 N M d**.
Needed when a row's weights depend on reductions known only after the full sweep (column softmax
of symmetric losses) or when the caller needs per-row losses (``reduction="none"``).
Memory ``O((N + M) d + b t)``: one reusable logit tile plus the temporaries of one tile.

With ``RowSpec.positive`` every tile reduces ``u_ij - c_i`` for term 0, ``c_i`` being row
``i``'s positive logit read from the tile that holds it; when a row block spans several column
tiles, those holding positives are computed once more first, to read ``c`` (the same GEMM on the
same operands gives the same values).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

from .spec import (
    ColumnStatistics,
    RowSpec,
    RowStatistics,
    differentiable,
    map_statistics,
    merges_as_moment,
    merges_by_logaddexp,
    present_fields,
)
from .tiles import NEG_INF, _finite_or_zero, positive_entries, tile_grad, tile_stats

#: row statistics and column statistics (``None`` when the spec has no columns)
Stats = tuple[RowStatistics, Optional[ColumnStatistics]]


def statistic_names(spec: RowSpec) -> tuple[tuple[str, ...], Optional[tuple[str, ...]]]:
    """Fields of the :class:`RowStatistics` the sweep computes for ``spec``, and of the
    :class:`ColumnStatistics` (``None`` when ``spec`` has no columns)."""
    rows = ["lse"] if len(spec.terms) else []
    if spec.positive is not None:
        rows.append("ce")
    if spec.softplus_bias is not None:
        rows.append("phi")
    if spec.soft_targets is not None:
        rows += ["tgt", "mass"]
    if spec.moment:
        rows.append("mom")
    if not spec.columns:
        return tuple(rows), None
    cols = ["lse"] + (["tgt", "mass"] if spec.soft_targets is not None else [])
    return tuple(rows), tuple(cols)


def flatten_statistics(stats: Stats) -> list[Tensor]:
    """The present tensors of ``(rows, cols)``: rows' fields, then columns', in field order."""
    return [getattr(r, f.name) for r in stats if r is not None for f in present_fields(r)]


def unflatten_statistics(spec: RowSpec, tensors: Sequence[Tensor]) -> Stats:
    """Inverse of :func:`flatten_statistics` for the statistics of ``spec``."""
    row_names, col_names = statistic_names(spec)
    rows = RowStatistics(**dict(zip(row_names, tensors)))
    if col_names is None:
        return rows, None
    return rows, ColumnStatistics(**dict(zip(col_names, tensors[len(row_names) :])))


def kappa_block(kappa: Tensor, r0: int, r1: int) -> Tensor:
    return kappa if kappa.dim() == 0 else kappa[r0:r1, None]


def add_kappa_grad(dkappa: Tensor, kappa: Tensor, A_blk: Tensor, gA: Tensor, r0: int, r1: int):
    """``d l / d kappa_i = sum_j du_ij s_ij = <a_i, dA_i> / kappa_i``: free, from the block's
    anchor gradient (``u_ij = kappa_i s_ij`` in every term, rows and columns alike)."""
    per_row = (A_blk * gA).sum(dim=1) / (kappa[r0:r1] if kappa.dim() else kappa)
    if kappa.dim():
        dkappa[r0:r1] = per_row
    else:
        dkappa += per_row.sum()


def column_tiles(B: Tensor, size: int) -> Iterator[tuple[int, int, Tensor]]:
    """Column tiles ``(c0, c1, B[c0:c1])`` of the candidates, ``size`` rows of ``B`` each."""
    M = B.shape[0]
    for c0 in range(0, M, size):
        c1 = min(c0 + size, M)
        yield c0, c1, B[c0:c1]


def logits_tile(buf: Tensor, a: Tensor, Bt: Tensor, spec: RowSpec, r0, r1, c0, c1) -> Tensor:
    """``u = a @ Bt^T`` into a reused buffer; for plain specs the excluded entries are set to
    -inf in place (so later passes can work in place too)."""
    u = buf[: a.shape[0], : Bt.shape[0]]
    torch.mm(a, Bt.t(), out=u)
    if spec.plain:
        rr, cc = spec.terms[0].exclude.sparse_entries(r0, r1, c0, c1, a.device)
        if rr.numel():
            u[rr, cc] = NEG_INF
    return u


def _empty_stats(spec: RowSpec, N: int, M: int, like: Tensor) -> Stats:
    """Accumulators: ``-inf`` for log-sum-exps, 0 for sums (``lse`` ``(K, N)``, other rows
    ``(N,)``, columns ``(M,)``)."""
    row_names, col_names = statistic_names(spec)

    def full(f, shape):
        value = NEG_INF if merges_by_logaddexp(f) else 0.0
        return torch.full(shape, value, dtype=like.dtype, device=like.device)

    rows = RowStatistics(
        **{
            f.name: full(f, (len(spec.terms), N) if f.name == "lse" else (N,))
            for f in fields(RowStatistics)
            if f.name in row_names
        }
    )
    if col_names is None:
        return rows, None
    cols = ColumnStatistics(
        **{f.name: full(f, (M,)) for f in fields(ColumnStatistics) if f.name in col_names}
    )
    return rows, cols


def merge_statistics(dst, part) -> None:
    """Merge the partial statistics ``part`` into the accumulator views ``dst`` (same record
    kind; ``dst`` holds every field of ``part``): ``logaddexp`` or addition, in place; a moment
    (``mom``) as the mean of both parts weighted by their share of term 0's merged sum (first,
    while ``dst.lse`` still holds the accumulated partial)."""
    fs = present_fields(part)
    for f in fs:
        if merges_as_moment(f):
            old, new = dst.lse[0], part.lse[0]
            total = _finite_or_zero(torch.logaddexp(old, new))
            d = getattr(dst, f.name)
            d.mul_(torch.exp(old - total)).add_(getattr(part, f.name) * torch.exp(new - total))
    for f in fs:
        d, v = getattr(dst, f.name), getattr(part, f.name)
        if merges_as_moment(f):
            continue
        if merges_by_logaddexp(f):
            torch.logaddexp(d, v, out=d)
        else:
            d.add_(v)


def _row_slice(stats: RowStatistics, r0: int, r1: int) -> RowStatistics:
    return map_statistics(lambda f, v: v[..., r0:r1], stats)


def _col_slice(stats: ColumnStatistics, c0: int, c1: int) -> ColumnStatistics:
    return map_statistics(lambda f, v: v[c0:c1], stats)


def _positive_shift(buf: Tensor, a: Tensor, B: Tensor, spec: RowSpec, r0, r1, tt) -> Tensor:
    """Rows ``r0:r1``'s positive logits, read from the tiles that hold them (a pre-pass for row
    blocks that span several column tiles)."""
    c = torch.empty(r1 - r0, dtype=a.dtype, device=a.device)
    for c0, c1, Bt in column_tiles(B, tt):
        rows, cols = positive_entries(spec, r0, r1, c0, c1)
        if rows.numel():
            c[rows] = logits_tile(buf, a, Bt, spec, r0, r1, c0, c1)[rows, cols]
    return c


def row_statistics_forward(
    A: Tensor, B: Tensor, kappa: Tensor, spec: RowSpec, tile: tuple[int, int]
) -> Stats:
    """The row statistics of ``spec`` (and its column statistics, else ``None``) of anchors
    ``A`` (N, d) against candidates ``B`` (M, d), swept in ``tile = (rows, columns)`` tiles.
    No autograd: the results carry no graph (see :func:`row_statistics`)."""
    N, M = A.shape[0], B.shape[0]
    bt, tt = tile
    rows_acc, cols_acc = _empty_stats(spec, N, M, A)
    buf = torch.empty(min(bt, N), min(tt, M), dtype=A.dtype, device=A.device)
    for r0 in range(0, N, bt):
        r1 = min(r0 + bt, N)
        a = A[r0:r1] * kappa_block(kappa, r0, r1)
        acc = _row_slice(rows_acc, r0, r1)
        shift = None  # positive logits: read from the tile when it spans every column
        if spec.positive is not None and tt < M:
            shift = _positive_shift(buf, a, B, spec, r0, r1, tt)
        for c0, c1, Bt in column_tiles(B, tt):
            u = logits_tile(buf, a, Bt, spec, r0, r1, c0, c1)
            col = None
            if spec.plain and spec.positive is not None:
                c = shift if shift is not None else u[positive_entries(spec, r0, r1, c0, c1)]
                ce = torch.logsumexp(u - c[:, None], dim=1)
                row = RowStatistics(lse=(ce + c)[None], ce=ce)
                if spec.columns:
                    col = ColumnStatistics(lse=torch.logsumexp(u, dim=0))
            elif spec.plain:
                row = RowStatistics(lse=torch.logsumexp(u, dim=1)[None])
                if spec.columns:
                    col = ColumnStatistics(lse=torch.logsumexp(u, dim=0))
            else:
                row, col = tile_stats(u, spec, r0, r1, c0, c1, shift)
            merge_statistics(acc, row)
            if col is not None and cols_acc is not None:
                merge_statistics(_col_slice(cols_acc, c0, c1), col)
    return rows_acc, cols_acc


def _coefficients(stats, grads):
    """``d loss / d stat`` per differentiable statistic (0 where no gradient came in)."""
    if stats is None:
        return None
    return map_statistics(
        lambda f, v, g: (torch.zeros_like(v) if g is None else g) if differentiable(f) else None,
        stats,
        grads,
    )


def row_statistics_backward(
    A: Tensor,
    B: Tensor,
    kappa: Tensor,
    spec: RowSpec,
    tile: tuple[int, int],
    stats: Stats,
    grads: Stats,
    kappa_grad: bool = True,
) -> tuple[Tensor, Tensor, Optional[Tensor], Tensor]:
    """Gradients ``(dA, dB, d kappa, d bias)`` of the statistics :func:`row_statistics_forward`
    returned (``stats``, the *final* reductions), given ``grads``: the incoming ``d loss / d
    stat`` in records of the same shape (a ``None`` field: no gradient). Tiles are recomputed.
    ``d kappa`` is ``None`` unless ``kappa_grad``; ``d bias`` (of ``spec.softplus_bias``) is a
    0-dim tensor, 0 without the softplus term."""
    row_stats, col_stats = stats
    coef_rows, coef_cols = _coefficients(row_stats, grads[0]), _coefficients(col_stats, grads[1])
    bt, tt = tile
    N, M = A.shape[0], B.shape[0]
    dA, dB = torch.zeros_like(A), torch.zeros_like(B)
    dkappa = torch.zeros_like(kappa) if kappa_grad else None
    dbias = torch.zeros((), dtype=A.dtype, device=A.device)
    buf = torch.empty(min(bt, N), min(tt, M), dtype=A.dtype, device=A.device)
    if spec.plain:  # one term: lse is present (and the column lse with columns)
        assert row_stats.lse is not None
        lse_r = _finite_or_zero(row_stats.lse[0])
        lse_c = g_c = None
        if col_stats is not None and coef_cols is not None:
            assert col_stats.lse is not None and coef_cols.lse is not None
            lse_c, g_c = _finite_or_zero(col_stats.lse), coef_cols.lse
    for r0 in range(0, N, bt):
        r1 = min(r0 + bt, N)
        kb = kappa_block(kappa, r0, r1)
        a = A[r0:r1] * kb
        row = _row_slice(row_stats, r0, r1)
        coef = _row_slice(coef_rows, r0, r1)
        gA = torch.zeros_like(a)
        for c0, c1, Bt in column_tiles(B, tt):
            u = logits_tile(buf, a, Bt, spec, r0, r1, c0, c1)
            if spec.plain:
                # du = G_i softmax_row + G_j softmax_col, built in place on the tile
                assert coef.lse is not None
                g = coef.lse[0] + coef.ce if coef.ce is not None else coef.lse[0]
                du = torch.sub(u, lse_r[r0:r1, None]).exp_().mul_(g[:, None])
                if lse_c is not None and g_c is not None:  # columns
                    u.sub_(lse_c[None, c0:c1]).exp_().mul_(g_c[None, c0:c1])
                    du.add_(u)
                if coef.ce is not None:  # d ce / d u_i,pos(i) has a -1 besides the softmax
                    rows, cols = positive_entries(spec, r0, r1, c0, c1)
                    du[rows, cols] -= coef.ce[rows]
            else:
                col = col_coef = None
                if col_stats is not None and coef_cols is not None:
                    col, col_coef = _col_slice(col_stats, c0, c1), _col_slice(coef_cols, c0, c1)
                du, db = tile_grad(u, spec, r0, r1, c0, c1, row, coef, col, col_coef)
                if db is not None:
                    dbias += db
            gA.addmm_(du, Bt)
            dB[c0:c1].addmm_(du.t(), a)
        gA.mul_(kb)
        dA[r0:r1] = gA
        if dkappa is not None:
            add_kappa_grad(dkappa, kappa, A[r0:r1], gA, r0, r1)
    return dA, dB, dkappa, dbias


def _constants(stats: Stats) -> list[Tensor]:
    """The statistics that carry no gradient (``mass``)."""
    return [
        getattr(r, f.name)
        for r in stats
        if r is not None
        for f in present_fields(r)
        if not differentiable(f)
    ]


class RowSweep(torch.autograd.Function):
    """:func:`row_statistics_forward` / :func:`row_statistics_backward` as an autograd function
    on flat tuples (:func:`flatten_statistics`); use :func:`row_statistics`."""

    @staticmethod
    def forward(ctx, A, B, kappa, bias, spec, tile):
        outs = flatten_statistics(row_statistics_forward(A, B, kappa, spec, tile))
        ctx.spec, ctx.tile = spec, tile
        ctx.save_for_backward(A, B, kappa, *outs)
        ctx.mark_non_differentiable(*_constants(unflatten_statistics(spec, outs)))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        A, B, kappa, *outs = ctx.saved_tensors
        spec = ctx.spec
        dA, dB, dkappa, dbias = row_statistics_backward(
            A,
            B,
            kappa,
            spec,
            ctx.tile,
            unflatten_statistics(spec, outs),
            unflatten_statistics(spec, grads),
            kappa_grad=ctx.needs_input_grad[2],
        )
        return dA, dB, dkappa, (dbias if ctx.needs_input_grad[3] else None), None, None


def row_statistics(A: Tensor, B: Tensor, kappa: Tensor, bias, spec: RowSpec, tile) -> Stats:
    """Differentiable :func:`row_statistics_forward` (in ``A``, ``B``, ``kappa`` and the
    softplus ``bias``, which must be ``spec.softplus_bias``)."""
    return unflatten_statistics(spec, RowSweep.apply(A, B, kappa, bias, spec, tile))
