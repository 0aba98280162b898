"""Single-sweep path: gradients computed block by block during the forward sweep.

For each block of ``b`` anchor rows the engine computes the ``b x M`` logits against every
candidate (one GEMM into a reusable buffer of ``b * M`` floats, never ``N x M``), reduces them,
evaluates the objective's row function on the block's O(b) statistics, differentiates it with
autograd on those few numbers, and immediately turns the block's softmax weights into gradients
for the anchors and candidates. Backward only scales the saved gradients by the incoming scalar
(as Liger's fused linear cross-entropy and sentence-transformers' cached MNRL do).

FLOPs: ``2 N M d`` (logits) + ``4 N M d`` (``dA = dU B``, ``dB = dU^T A``) = **6 N M d**, no
recomputation, plus O(N M) exponentials. Applies to scalar losses whose rows depend only on
their own reductions (no column softmax); memory ``O((N + M) d + b M)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .spec import RowSpec
from .recompute import kappa_block
from .tiles import NEG_INF, _finite_or_zero, tile_grad, tile_stats


def row_coefficients(spec: RowSpec, stats: dict, side: dict, need_grad: bool):
    """Evaluate ``row_fn`` on a block; return (sum of values, d/dstats, d/dside) via autograd."""
    leaves = {k: v.detach().requires_grad_(need_grad and k != "mass") for k, v in stats.items()}
    side_leaves = {
        k: v.detach().requires_grad_(need_grad and v.is_floating_point()) for k, v in side.items()
    }
    with torch.enable_grad():
        val = spec.row_fn(leaves, side_leaves).sum()
    if not need_grad:
        return val.detach(), None, None
    wrt = [v for v in list(leaves.values()) + list(side_leaves.values()) if v.requires_grad]
    grads = torch.autograd.grad(val, wrt, allow_unused=True) if val.requires_grad else [None] * len(wrt)
    it = iter(grads)
    coef, side_grad = {}, {}
    for k, v in leaves.items():
        if v.requires_grad:
            g = next(it)
            coef[k] = torch.zeros_like(v) if g is None else g
    for k, v in side_leaves.items():
        if v.requires_grad:
            g = next(it)
            side_grad[k] = torch.zeros_like(v) if g is None else g
    return val.detach(), coef, side_grad


class FusedRowLoss(torch.autograd.Function):
    """loss = sum_i row_fn(stats_i, side_i); inputs A (N, d), B (M, d) already in compute dtype."""

    @staticmethod
    def forward(ctx, A, B, kappa, bias, spec, block, side_keys, *side_vals):
        N, M = A.shape[0], B.shape[0]
        need_grad = any(ctx.needs_input_grad[:4]) or any(ctx.needs_input_grad[7:])
        side = dict(zip(side_keys, side_vals))
        dA = torch.zeros_like(A) if need_grad else None
        dB = torch.zeros_like(B) if need_grad else None
        dkappa = torch.zeros_like(kappa) if need_grad and ctx.needs_input_grad[2] else None
        dbias = torch.zeros((), dtype=A.dtype, device=A.device) if need_grad else None
        side_grads = {k: torch.zeros_like(v) for k, v in side.items() if v.is_floating_point()}
        loss = torch.zeros((), dtype=A.dtype, device=A.device)
        buf = torch.empty(min(block, N), M, dtype=A.dtype, device=A.device)
        Bt = B.t()
        for r0 in range(0, N, block):
            r1 = min(r0 + block, N)
            kb = kappa_block(kappa, r0, r1)
            a = A[r0:r1] * kb  # (b, d) scaled anchors: u = a @ B^T
            u = buf[: r1 - r0]
            torch.mm(a, Bt, out=u)
            if spec.simple:
                rr, cc = spec.terms[0].exclude.sparse_entries(r0, r1, 0, M, A.device)
                if rr.numel():
                    u[rr, cc] = NEG_INF
                stats = {"lse": torch.logsumexp(u, dim=1)[None]}
            else:
                stats = tile_stats(u, spec, r0, r1, 0, M)
            side_blk = {k: v[r0:r1] for k, v in side.items()}
            val, coef, sgrad = row_coefficients(spec, stats, side_blk, need_grad)
            loss += val
            if not need_grad:
                continue
            for k, g in sgrad.items():
                side_grads[k][r0:r1] = g
            if spec.simple:
                # in place: u <- exp(u - lse) (masked entries are exp(-inf) = 0); fold the
                # per-row coefficient into the GEMM operands instead of scaling the tile.
                w = coef["lse"][0]
                u.sub_(_finite_or_zero(stats["lse"][0])[:, None]).exp_()
                gA = torch.mm(u, B)
                gA.mul_((w[:, None] * kb) if kappa.dim() else (w[:, None] * kappa))
                dB.addmm_(u.t(), a * w[:, None])
            else:
                du, db = tile_grad(u, spec, r0, r1, 0, M, stats, coef)
                if db is not None:
                    dbias += db
                gA = torch.mm(du, B).mul_(kb)
                dB.addmm_(du.t(), a)
            dA[r0:r1] = gA
            if dkappa is not None:
                # d l / d kappa_i = sum_j du_ij s_ij = <a_i, dA_i> / kappa_i  (no extra sweep)
                per_row = (A[r0:r1] * gA).sum(dim=1) / (kb.squeeze(-1) if kappa.dim() else kappa)
                if kappa.dim():
                    dkappa[r0:r1] = per_row
                else:
                    dkappa += per_row.sum()
        ctx.side_keys = side_keys
        ctx.saved = (dA, dB, dkappa, dbias, side_grads)
        return loss

    @staticmethod
    def backward(ctx, grad):
        dA, dB, dkappa, dbias, side_grads = ctx.saved

        def scale(t):
            return None if t is None else t * grad

        side_out = [scale(side_grads.get(k)) for k in ctx.side_keys]
        return (
            scale(dA),
            scale(dB),
            scale(dkappa),
            scale(dbias) if ctx.needs_input_grad[3] else None,
            None,
            None,
            None,
            *side_out,
        )
