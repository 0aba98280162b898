"""The Triton backend behind :func:`contrastkit.engine.contrast` (imports Triton).

:class:`TritonStats` returns the row log-sum-exps (and column log-sum-exps for two-sided specs)
of a covered :class:`RowSpec`; its backward recomputes tiles (FlashAttention-2 style) to give
``dA``, ``dB`` and ``d kappa``. The objective's ``row_fn``/``col_fn`` then run on these O(N + M)
statistics with ordinary autograd, exactly as in the torch two-sweep path.

FLOPs: ``2 N M d`` forward (row and column statistics in one pass) + ``2 x 4 N M d`` backward
(each backward kernel recomputes the logits once per ``d`` slice it owns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import triton
from torch import Tensor

from ..spec import RowSpec, without_positive
from . import kernels as K
from .coverage import EmbeddingSoftTargets, covers

__all__ = ["Config", "TritonStats", "contrast_triton", "default_config"]

LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)
#: column shifts are placed at most this many bits above a known logit of the column; a column
#: whose shifted sum ends below 2^SAFE_LOG2 (or overflows) is recomputed exactly.
SHIFT_HEADROOM = 40.0
SAFE_LOG2 = -60.0
#: rows per chunk of the O(M d) torch work around the kernels (bounded temporaries)
CHUNK = 1 << 15


@dataclass(frozen=True)
class Config:
    """Tile sizes. ``fwd`` / ``bwd``: (rows, columns, d-slice of the logit GEMM); ``ds``: width
    of the ``d`` slice a backward program accumulates (``None``: all of ``d`` up to 256; each
    further slice recomputes the logits once more).

    The defaults compile for sm_90 without register spills (checked with ptxas; forward
    128 x 64 tiles, backward 64 x 64 tiles with 256-wide gradient slices); which configuration
    is fastest on an H100 is for ``benchmarks/bench_triton.py --sweep`` to measure."""

    fwd: tuple = (128, 64, 64)
    bwd: tuple = (64, 64, 64)
    ds: Optional[int] = None
    fwd_warps: int = 8
    bwd_warps: int = 8
    stages: int = 3


#: widest gradient slice by default (wider accumulators spill registers on sm_90)
DEFAULT_DS = 256


def default_config(d: int, interpret: bool, dtype: torch.dtype = torch.bfloat16) -> Config:
    """Tiles per input dtype (fp32 tiles are twice the bytes: smaller tiles, no spills)."""
    if interpret:  # small tiles: several tiles per problem, fast numpy emulation
        return Config(fwd=(32, 32, 32), bwd=(32, 32, 32), ds=64, stages=1)
    if dtype == torch.float32:
        return Config(fwd=(64, 64, 32), bwd=(64, 32, 32))
    return Config()


def _interpret() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _upcast(A: Tensor) -> bool:
    """The interpreter's dot cannot read bf16 (stored as raw 16-bit words): convert first."""
    return A.dtype == torch.bfloat16 and _interpret()


def _mask_args(spec: RowSpec, N: int, device) -> dict:
    ex = spec.terms[0].exclude
    dummy_i = torch.zeros(1, dtype=torch.int64, device=device)
    out = {"has_self": ex.self_offset is not None, "self_off": int(ex.self_offset or 0)}
    if ex.index is not None:
        idx = ex.index if ex.index.dim() == 2 else ex.index[:, None]
        out["idx"] = idx.to(device=device, dtype=torch.int64).contiguous()
        out["P"] = idx.shape[1]
    else:
        out["idx"], out["P"] = dummy_i, 0
    if ex.labels is not None:
        out["rl"] = ex.row_labels.to(device=device, dtype=torch.int64).contiguous()
        out["cl"] = ex.col_labels.to(device=device, dtype=torch.int64).contiguous()
        out["labels"] = 1 if ex.labels == "same" else 2
    else:
        out["rl"] = out["cl"] = dummy_i
        out["labels"] = 0
    return out


def _excluded_pairs(mk: dict, rows: Tensor, cols: Tensor) -> Tensor:
    """Torch twin of the kernels' mask on a list of (row, col) pairs: True = excluded."""
    out = torch.zeros(rows.shape, dtype=torch.bool, device=rows.device)
    if mk["has_self"]:
        out |= cols == rows + mk["self_off"]
    if mk["P"]:
        out |= (mk["idx"][rows] == cols[:, None]).any(dim=1)
    if mk["labels"]:
        same = mk["rl"][rows] == mk["cl"][cols]
        out |= same if mk["labels"] == 1 else ~same
    return out


def _column_shift(A: Tensor, B: Tensor, k2: Tensor, mk: dict) -> Tensor:
    """Base-2 shift ``c_j`` for the fused column sums: the Cauchy-Schwarz bound
    ``max_i k2_i |a_i| |b_j|`` (no overflow), lowered to ``SHIFT_HEADROOM`` bits above the
    logit of pair ``(j mod N, j)`` when that pair is kept (the positive of paired losses), so that
    the sum does not underflow."""
    N, M = A.shape[0], B.shape[0]

    def norms(X, r0):  # fp32 row norms of a chunk: O(chunk d) temporaries, not O(N d)
        return X[r0 : r0 + CHUNK].float().norm(dim=1)

    a_max = max(float((norms(A, r0) * k2[r0 : r0 + CHUNK]).max()) for r0 in range(0, N, CHUNK))
    bound = torch.empty(M, dtype=torch.float32, device=A.device)
    known = torch.empty(M, dtype=torch.float32, device=A.device)
    for c0 in range(0, M, CHUNK):
        cols = torch.arange(c0, min(c0 + CHUNK, M), device=A.device)
        rows = cols % N
        bound[c0 : c0 + cols.shape[0]] = norms(B, c0) * a_max
        kc = (A[rows].float() * B[cols].float()).sum(dim=1) * k2[rows]
        known[c0 : c0 + cols.shape[0]] = kc.masked_fill(
            _excluded_pairs(mk, rows, cols), float("-inf")
        )
    lowered = torch.minimum(bound, known + SHIFT_HEADROOM)
    return torch.where(torch.isfinite(known), lowered, bound).contiguous()


def _dot_precision(dtype: torch.dtype, precision: Optional[str]) -> str:
    if precision is not None:
        return precision
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"  # the same choice torch's own fp32 matmuls make on this GPU
    return "ieee"


def _col_lse_exact(A, B, k2, mk, cols: Tensor, cfg: Config, prec: str) -> Tensor:
    bm, bn, bk = cfg.fwd
    cols = cols.to(torch.int64).contiguous()
    out = torch.empty(cols.shape[0], dtype=torch.float32, device=A.device)
    grid = (triton.cdiv(cols.shape[0], bn),)
    K._col_kernel[grid](
        A,
        B,
        k2,
        out,
        cols,
        cols.shape[0],
        mk["idx"],
        mk["rl"],
        mk["cl"],
        A.shape[0],
        A.shape[1],
        A.stride(0),
        B.stride(0),
        mk["idx"].stride(0),
        mk["self_off"],
        HAS_SELF=mk["has_self"],
        P=mk["P"],
        LABELS=mk["labels"],
        PREC=prec,
        UPCAST=_upcast(A),
        BM=bm,
        BN=bn,
        BK=bk,
        num_warps=cfg.fwd_warps,
        num_stages=cfg.stages,
    )
    return out


class TritonStats(torch.autograd.Function):
    """Statistics of a covered spec: ``lse (N,)``, then ``col_lse (M,)`` when ``columns``, then
    ``diag (N,)`` (``u_i,i+diagonal``, 0 where that column does not exist) when ``diagonal`` is
    not None. Always returns a tuple."""

    @staticmethod
    def forward(ctx, A, B, kappa, spec, columns, cfg, precision, diagonal):
        N, M, D = A.shape[0], B.shape[0], A.shape[1]
        A, B = A.contiguous(), B.contiguous()
        mk = _mask_args(spec, N, A.device)
        k2 = (kappa.detach().to(A.device, torch.float32) * LOG2E).expand(N).contiguous()
        prec = _dot_precision(A.dtype, precision)
        bm, bn, bk = cfg.fwd
        f32 = dict(dtype=torch.float32, device=A.device)
        lse = torch.empty(N, **f32)
        if columns:
            shift = _column_shift(A, B, k2, mk)
            csum = torch.zeros(M, **f32)
        else:
            shift = csum = lse  # unused placeholders
        has_diag = diagonal is not None
        sdiag = torch.zeros(N, **f32) if has_diag else lse
        K._fwd_kernel[(triton.cdiv(N, bm),)](
            A, B, k2, lse, csum, shift, sdiag, mk["idx"], mk["rl"], mk["cl"], N, M, D,
            A.stride(0), B.stride(0), mk["idx"].stride(0), mk["self_off"], int(diagonal or 0),
            HAS_SELF=mk["has_self"], P=mk["P"], LABELS=mk["labels"], COLUMNS=columns,
            DIAG=has_diag, PREC=prec, UPCAST=_upcast(A), BM=bm, BN=bn, BK=bk,
            num_warps=cfg.fwd_warps, num_stages=cfg.stages,
        )  # fmt: skip
        outs = [lse]
        if columns:
            col_lse = (shift + torch.log2(csum)) * LN2
            bad = ~(csum >= 2.0**SAFE_LOG2) | ~torch.isfinite(csum)
            if bool(bad.any()):
                sel = bad.nonzero().flatten()
                col_lse[sel] = _col_lse_exact(A, B, k2, mk, sel, cfg, prec)
            outs.append(col_lse)
        if has_diag:
            outs.append(sdiag * (k2 * LN2))
        ctx.save_for_backward(A, B, kappa, k2, *outs)
        ctx.mk, ctx.cfg, ctx.prec, ctx.columns, ctx.diagonal = mk, cfg, prec, columns, diagonal
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        A, B, kappa, k2, *outs = ctx.saved_tensors
        mk, cfg, prec, columns = ctx.mk, ctx.cfg, ctx.prec, ctx.columns
        has_diag = ctx.diagonal is not None
        N, M, D = A.shape[0], B.shape[0], A.shape[1]

        def base2(lse):  # -inf (empty reductions) -> 0 so exp2(-inf - 0) = 0
            x = lse * LOG2E
            return torch.where(torch.isfinite(x), x, torch.zeros_like(x)).contiguous()

        def coef(g, n):
            if g is None:
                return torch.zeros(n, dtype=torch.float32, device=A.device)
            return g.float().contiguous()

        lse2, g = base2(outs[0]), coef(grads[0], N)
        clse2, h = (base2(outs[1]), coef(grads[1], M)) if columns else (lse2, g)
        gd = coef(grads[-1], N) if has_diag else g  # g: unused placeholder
        need_a, need_b, need_k = ctx.needs_input_grad[:3]
        bm, bn, bk = cfg.bwd
        full = max(16, triton.next_power_of_2(D))
        ds = min(cfg.ds or DEFAULT_DS, full)
        n_ds = triton.cdiv(D, ds)
        dA = dB = dkappa = None
        common = dict(
            HAS_SELF=mk["has_self"], P=mk["P"], LABELS=mk["labels"], COLUMNS=columns,
            DIAG=has_diag, PREC=prec, UPCAST=_upcast(A), BM=bm, BN=bn, BK=bk, BDS=ds,
            num_warps=cfg.bwd_warps, num_stages=cfg.stages,
        )  # fmt: skip
        stats = (k2, lse2, g, clse2, h, gd)
        masks = (mk["idx"], mk["rl"], mk["cl"], N, M, D)
        if need_a or need_k:
            da = torch.empty(N, D, dtype=A.dtype, device=A.device)  # fp32 sums, stored rounded
            dk = torch.empty(N, dtype=torch.float32, device=A.device) if need_k else k2
            K._bwd_a_kernel[(triton.cdiv(N, bm), n_ds)](
                A, B, *stats, da, dk, *masks, A.stride(0), B.stride(0), da.stride(0),
                mk["idx"].stride(0), mk["self_off"], int(ctx.diagonal or 0),
                KGRAD=bool(need_k), **common,
            )  # fmt: skip
            dA = da if need_a else None
            if need_k:
                dkappa = (dk if kappa.dim() else dk.sum()).to(kappa.dtype)
        if need_b:
            db = torch.empty(M, D, dtype=B.dtype, device=B.device)
            K._bwd_b_kernel[(triton.cdiv(M, bn), n_ds)](
                A, B, *stats, db, *masks, A.stride(0), B.stride(0), db.stride(0),
                mk["idx"].stride(0), mk["self_off"], int(ctx.diagonal or 0), **common,
            )  # fmt: skip
            dB = db
        return dA, dB, dkappa, None, None, None, None, None


def _target_stats(A: Tensor, B: Tensor, kappa: Tensor, st: EmbeddingSoftTargets, columns: bool):
    """Closed forms of ``tgt``/``mass`` (and column twins) for ``p_ij = alpha <t_i, s_j> + beta``
    (differentiable in ``A``, ``B``, ``kappa``; computed in fp32 or wider)."""
    dt = torch.promote_types(A.dtype, torch.float32)
    A, B, kap = A.to(dt), B.to(dt), kappa.to(dt)
    T, S = st.rows.to(dt), st.cols.to(dt)
    N, M = A.shape[0], B.shape[0]
    kr = kap if kap.dim() == 0 else kap[:, None]
    out = {}
    out["tgt"] = kap * (
        st.alpha * ((T @ (S.t() @ B)) * A).sum(dim=1) + st.beta * (A @ B.sum(dim=0))
    )
    out["mass"] = (st.alpha * (T @ S.sum(dim=0)) + st.beta * M).detach()
    if columns:
        Ak = A * kr
        out["col_tgt"] = st.alpha * ((S @ (T.t() @ Ak)) * B).sum(dim=1) + st.beta * (
            B @ Ak.sum(dim=0)
        )
        out["col_mass"] = (st.alpha * (S @ T.sum(dim=0)) + st.beta * N).detach()
    return out


def contrast_triton(
    anchors: Tensor,
    candidates: Tensor,
    spec: RowSpec,
    kappa: Tensor,
    *,
    reduce: bool = True,
    config: Optional[Config] = None,
    precision: Optional[str] = None,
    diagonal: Optional[int] = None,
):
    """:func:`contrastkit.engine.contrast` on the Triton kernels (same return values).

    ``anchors``/``candidates`` keep their dtype (fp16/bf16 are accumulated in fp32); fp32 dots
    are exact (``precision="ieee"``) unless ``torch.backends.cuda.matmul.allow_tf32`` is set or
    ``precision="tf32"`` is given. ``diagonal=o`` adds the statistic ``"diag"`` (N,), the logit
    ``u_i,i+o`` of each row's paired column (0 where it does not exist; exclusions do not apply),
    and for two-sided specs ``"col_diag"`` (M,): its gradient is folded into the kernels, so a
    paired positive (InfoNCE, CLIP) costs no ``(N, d)`` temporaries. ``spec.positive`` is served
    by :func:`~contrastkit.engine.spec.without_positive` (a separate dot product, so ``"ce"`` is
    only as exact as ``lse``). Raises ``ValueError`` for a spec the kernels do not cover
    (:func:`covers` says why).
    """
    if not isinstance(kappa, Tensor):
        kappa = torch.tensor(float(kappa), device=anchors.device)
    ok, why = covers(spec, anchors, candidates, kappa)
    if not ok:
        raise ValueError(f"the Triton kernels do not cover this problem: {why}")
    if precision not in (None, "ieee", "tf32"):
        raise ValueError(f"precision must be None, 'ieee' or 'tf32', got {precision!r}")
    cfg = config or default_config(anchors.shape[1], _interpret(), anchors.dtype)
    kap = kappa.float() if kappa.dtype in (torch.float16, torch.bfloat16) else kappa
    if diagonal is not None and not isinstance(diagonal, int):
        raise ValueError(f"diagonal must be an int column offset or None, got {diagonal!r}")
    if spec.positive is not None:  # the kernels do not read it from their tiles: dot product
        dt = torch.promote_types(anchors.dtype, torch.float32)
        spec = without_positive(spec, anchors.to(dt), candidates.to(dt), kap.to(dt))
    columns = bool(spec.columns)
    outs = TritonStats.apply(anchors, candidates, kap, spec, columns, cfg, precision, diagonal)
    stats = {"lse": outs[0][None]}
    if columns:
        stats["col_lse"] = outs[1]
    if diagonal is not None:
        N, M = anchors.shape[0], candidates.shape[0]
        stats["diag"] = outs[-1]
        if columns:  # column j's pair (j - diagonal, j)
            rows = torch.arange(M, device=anchors.device) - diagonal
            ok = (rows >= 0) & (rows < N)
            stats["col_diag"] = torch.where(ok, outs[-1][rows.clamp(0, N - 1)], 0.0)
    if spec.soft_targets is not None:
        stats.update(_target_stats(anchors, candidates, kap, spec.soft_targets, spec.columns))
    row_stats = {k: v for k, v in stats.items() if not k.startswith("col_")}
    rows = spec.row_fn(row_stats, spec.row_side) if spec.row_fn is not None else None
    cols = None
    if spec.columns and spec.col_fn is not None:
        col_stats = {k: v for k, v in stats.items() if k.startswith("col_")}
        cols = spec.col_fn(col_stats, spec.col_side)
    if not reduce:
        return rows, cols
    total = rows.sum() if rows is not None else torch.zeros((), device=anchors.device)
    if cols is not None:
        total = total + cols.sum()
    return total
