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

import torch
from torch import Tensor

from .candidates import LocalCandidates
from .spec import RowSpec
from .tiles import NEG_INF, _finite_or_zero, positive_entries, tile_grad, tile_stats

ROW_KEYS = ("lse", "ce", "phi", "tgt", "mass")
COL_KEYS = ("col_lse", "col_tgt", "col_mass")


def output_keys(spec: RowSpec) -> list[str]:
    keys = ["lse"] if len(spec.terms) else []
    if spec.positive is not None:
        keys.append("ce")
    if spec.softplus_bias is not None:
        keys.append("phi")
    if spec.soft_targets is not None:
        keys += ["tgt", "mass"]
    if spec.columns:
        keys.append("col_lse")
        if spec.soft_targets is not None:
            keys += ["col_tgt", "col_mass"]
    return keys


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


def _empty_stats(spec: RowSpec, N: int, M: int, like: Tensor) -> dict:
    def full(n, value):
        return torch.full((n,), value, dtype=like.dtype, device=like.device)

    out = {}
    if spec.terms:
        out["lse"] = torch.full((len(spec.terms), N), NEG_INF, dtype=like.dtype, device=like.device)
    if spec.positive is not None:
        out["ce"] = full(N, NEG_INF)
    if spec.softplus_bias is not None:
        out["phi"] = full(N, 0.0)
    if spec.soft_targets is not None:
        out["tgt"], out["mass"] = full(N, 0.0), full(N, 0.0)
    if spec.columns:
        out["col_lse"] = full(M, NEG_INF)
        if spec.soft_targets is not None:
            out["col_tgt"], out["col_mass"] = full(M, 0.0), full(M, 0.0)
    return out


def _merge_into(dst: Tensor, part: Tensor, is_lse: bool) -> None:
    if is_lse:
        torch.logaddexp(dst, part, out=dst)
    else:
        dst.add_(part)


def _positive_shift(buf: Tensor, a: Tensor, cands, spec: RowSpec, r0, r1, tt) -> Tensor:
    """Rows ``r0:r1``'s positive logits, read from the tiles that hold them (a pre-pass for row
    blocks that span several column tiles)."""
    c = torch.empty(r1 - r0, dtype=a.dtype, device=a.device)
    for c0, c1, Bt in cands.tiles(tt):
        rows, cols = positive_entries(spec, r0, r1, c0, c1)
        if rows.numel():
            c[rows] = logits_tile(buf, a, Bt, spec, r0, r1, c0, c1)[rows, cols]
    return c


class RowStats(torch.autograd.Function):
    """Returns the statistics named by :func:`output_keys`, in that order."""

    @staticmethod
    def forward(ctx, A, B, kappa, bias, spec, tile):
        N, M = A.shape[0], B.shape[0]
        bt, tt = tile
        cands = LocalCandidates(B)
        stats = _empty_stats(spec, N, M, A)
        buf = torch.empty(min(bt, N), min(tt, M), dtype=A.dtype, device=A.device)
        for r0 in range(0, N, bt):
            r1 = min(r0 + bt, N)
            a = A[r0:r1] * kappa_block(kappa, r0, r1)
            shift = None  # positive logits: read from the tile when it spans every column
            if spec.positive is not None and tt < M:
                shift = _positive_shift(buf, a, cands, spec, r0, r1, tt)
            for c0, c1, Bt in cands.tiles(tt):
                u = logits_tile(buf, a, Bt, spec, r0, r1, c0, c1)
                if spec.plain and spec.positive is not None:
                    c = shift if shift is not None else u[positive_entries(spec, r0, r1, c0, c1)]
                    ce = torch.logsumexp(u - c[:, None], dim=1)
                    part = {"lse": (ce + c)[None], "ce": ce}
                    if spec.columns:
                        part["col_lse"] = torch.logsumexp(u, dim=0)
                elif spec.plain:
                    part = {"lse": torch.logsumexp(u, dim=1)[None]}
                    if spec.columns:
                        part["col_lse"] = torch.logsumexp(u, dim=0)
                else:
                    part = tile_stats(u, spec, r0, r1, c0, c1, shift)
                for k, v in part.items():
                    dst = stats[k][c0:c1] if k in COL_KEYS else stats[k][..., r0:r1]
                    _merge_into(dst, v, k.endswith("lse") or k == "ce")
        keys = output_keys(spec)
        outs = [stats[k] for k in keys]
        ctx.keys, ctx.spec, ctx.tile = keys, spec, tile
        ctx.save_for_backward(A, B, kappa, *outs)
        ctx.mark_non_differentiable(*[o for k, o in zip(keys, outs) if k.endswith("mass")])
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        A, B, kappa, *outs = ctx.saved_tensors
        spec, keys, (bt, tt) = ctx.spec, ctx.keys, ctx.tile
        stats = dict(zip(keys, outs))
        coefs = {
            k: (torch.zeros_like(o) if g is None else g)
            for k, o, g in zip(keys, outs, grads)
            if not k.endswith("mass")
        }
        N, M = A.shape[0], B.shape[0]
        dA, dB = torch.zeros_like(A), torch.zeros_like(B)
        dkappa = torch.zeros_like(kappa) if ctx.needs_input_grad[2] else None
        dbias = torch.zeros((), dtype=A.dtype, device=A.device)
        cands = LocalCandidates(B)
        buf = torch.empty(min(bt, N), min(tt, M), dtype=A.dtype, device=A.device)
        if spec.plain:
            lse_r = _finite_or_zero(stats["lse"][0])
            lse_c = _finite_or_zero(stats["col_lse"]) if spec.columns else None
        for r0 in range(0, N, bt):
            r1 = min(r0 + bt, N)
            kb = kappa_block(kappa, r0, r1)
            a = A[r0:r1] * kb
            row = {k: stats[k][..., r0:r1] for k in ROW_KEYS if k in stats}
            coef = {k: coefs[k][..., r0:r1] for k in ROW_KEYS if k in coefs}
            gA = torch.zeros_like(a)
            for c0, c1, Bt in cands.tiles(tt):
                u = logits_tile(buf, a, Bt, spec, r0, r1, c0, c1)
                if spec.plain:
                    # du = G_i softmax_row + G_j softmax_col, built in place on the tile
                    g = coef["lse"][0] + coef["ce"] if "ce" in coef else coef["lse"][0]
                    du = torch.sub(u, lse_r[r0:r1, None]).exp_().mul_(g[:, None])
                    if spec.columns:
                        u.sub_(lse_c[None, c0:c1]).exp_().mul_(coefs["col_lse"][None, c0:c1])
                        du.add_(u)
                    if "ce" in coef:  # d ce / d u_i,pos(i) has a -1 besides the softmax
                        rows, cols = positive_entries(spec, r0, r1, c0, c1)
                        du[rows, cols] -= coef["ce"][rows]
                else:
                    col = {k: stats[k][c0:c1] for k in COL_KEYS if k in stats}
                    col_coef = {k: coefs[k][c0:c1] for k in COL_KEYS if k in coefs}
                    du, db = tile_grad(
                        u, spec, r0, r1, c0, c1, row, coef, col or None, col_coef or None
                    )
                    if db is not None:
                        dbias += db
                gA.addmm_(du, Bt)
                dB[c0:c1].addmm_(du.t(), a)
            gA.mul_(kb)
            dA[r0:r1] = gA
            if dkappa is not None:
                add_kappa_grad(dkappa, kappa, A[r0:r1], gA, r0, r1)
        return dA, dB, dkappa, (dbias if ctx.needs_input_grad[3] else None), None, None
