"""Two-sweep path: forward keeps only per-row/per-column statistics, backward recomputes tiles.

Forward streams ``b x t`` tiles, merging partial log-sum-exps with ``logaddexp`` (row and column
accumulators in the same sweep), and returns the O(N + M) statistics as differentiable outputs;
the objective combines them with ordinary autograd. Backward recomputes every tile's logits and
turns the incoming ``d loss / d stat`` into ``dA``, ``dB`` (as Inf-CL does).

FLOPs: ``2 N M d`` forward + ``2 N M d`` recompute + ``4 N M d`` gradients = **8 N M d**.
Needed when a row's weights depend on reductions known only after the full sweep (column softmax
of symmetric losses) or when the caller needs per-row losses (``reduction="none"``).
Memory ``O((N + M) d + b t)``.
"""

from __future__ import annotations

import torch

from .candidates import LocalCandidates
from .fused import _kappa_block
from .spec import RowSpec
from .tiles import merge_stats, tile_grad, tile_stats

ROW_KEYS = ("lse", "phi", "tgt", "mass")
COL_KEYS = ("col_lse", "col_tgt", "col_mass")


def output_keys(spec: RowSpec) -> list[str]:
    keys = ["lse"] if len(spec.terms) else []
    if spec.softplus_bias is not None:
        keys.append("phi")
    if spec.soft_targets is not None:
        keys += ["tgt", "mass"]
    if spec.columns:
        keys.append("col_lse")
        if spec.soft_targets is not None:
            keys += ["col_tgt", "col_mass"]
    return keys


class RowStats(torch.autograd.Function):
    """Returns the statistics named by :func:`output_keys`, in that order."""

    @staticmethod
    def forward(ctx, A, B, kappa, bias, spec, tile):
        N, M = A.shape[0], B.shape[0]
        bt, tt = tile
        cands = LocalCandidates(B)
        rows = []
        col_acc = None
        for r0 in range(0, N, bt):
            r1 = min(r0 + bt, N)
            a = A[r0:r1] * _kappa_block(kappa, r0, r1)
            acc = None
            for c0, c1, Bt in cands.tiles(tt):
                part = tile_stats(a @ Bt.t(), spec, r0, r1, c0, c1)
                acc = merge_stats(acc, part, axis_rows=True)
                if spec.columns:
                    colpart = {k: part[k] for k in COL_KEYS if k in part}
                    if col_acc is None:
                        col_acc = {k: [] for k in colpart}
                    if r0 == 0:
                        for k, v in colpart.items():
                            col_acc[k].append(v)
                    else:
                        ci = c0 // tt
                        merged = merge_stats(
                            {k: col_acc[k][ci] for k in colpart}, colpart, axis_rows=False
                        )
                        for k, v in merged.items():
                            col_acc[k][ci] = v
            rows.append(acc)
        stats = {k: torch.cat([r[k] for r in rows], dim=-1) for k in ROW_KEYS if k in rows[0]}
        if spec.columns:
            stats.update({k: torch.cat(v) for k, v in col_acc.items()})
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
        N = A.shape[0]
        dA, dB = torch.zeros_like(A), torch.zeros_like(B)
        dkappa = torch.zeros_like(kappa) if ctx.needs_input_grad[2] else None
        dbias = torch.zeros((), dtype=A.dtype, device=A.device)
        cands = LocalCandidates(B)
        for r0 in range(0, N, bt):
            r1 = min(r0 + bt, N)
            kb = _kappa_block(kappa, r0, r1)
            a = A[r0:r1] * kb
            row = {k: stats[k][..., r0:r1] for k in ROW_KEYS if k in stats}
            coef = {k: coefs[k][..., r0:r1] for k in ROW_KEYS if k in coefs}
            gA = torch.zeros_like(a)
            for c0, c1, Bt in cands.tiles(tt):
                col = {k: stats[k][c0:c1] for k in COL_KEYS if k in stats}
                col_coef = {k: coefs[k][c0:c1] for k in COL_KEYS if k in coefs}
                du, db = tile_grad(
                    a @ Bt.t(), spec, r0, r1, c0, c1, row, coef, col or None, col_coef or None
                )
                if db is not None:
                    dbias += db
                gA.addmm_(du, Bt)
                dB[c0:c1].addmm_(du.t(), a)
            gA.mul_(kb)
            dA[r0:r1] = gA
            if dkappa is not None:
                per_row = (A[r0:r1] * gA).sum(dim=1) / (kb.squeeze(-1) if kappa.dim() else kappa)
                if kappa.dim():
                    dkappa[r0:r1] = per_row
                else:
                    dkappa += per_row.sum()
        return dA, dB, dkappa, (dbias if ctx.needs_input_grad[3] else None), None, None
