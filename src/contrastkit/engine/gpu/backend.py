"""The Triton backend behind :func:`contrastkit.engine.contrast` (imports Triton).

:class:`TritonStats` returns the row log-sum-exps (and column log-sum-exps for two-sided specs)
of a covered :class:`RowSpec`; its backward recomputes tiles (FlashAttention-2 style) to give
``dA``, ``dB`` and ``d kappa``. The objective's ``row_fn``/``col_fn`` then run on these O(N + M)
statistics with ordinary autograd, exactly as in the torch two-sweep path.

FLOPs: ``2 N M d`` forward (row and column statistics in one pass) + ``2 x 4 N M d`` backward
(each backward kernel recomputes the logits once per ``d`` slice it owns).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import triton
from torch import Tensor

from ..spec import ColumnStatistics, RowSpec, RowStatistics, without_positive
from . import kernels as K
from .coverage import EmbeddingSoftTargets, covers

__all__ = [
    "Config",
    "TritonStats",
    "autotune",
    "contrast_triton",
    "default_config",
    "fits",
    "shape_class",
    "tile_candidates",
]

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
    further slice recomputes the logits once more); ``bwd_stages``: pipeline stages of the
    backward kernels (``None``: ``stages``).

    ``contrast_triton(config=None)`` (the engine's choice) picks the forward and the backward
    part separately by timing the candidates of :func:`tile_candidates` once per shape class
    (:func:`autotune`); a ``Config`` given explicitly is used as it is."""

    fwd: tuple = (128, 64, 64)
    bwd: tuple = (64, 64, 64)
    ds: Optional[int] = None
    fwd_warps: int = 8
    bwd_warps: int = 8
    stages: int = 3
    bwd_stages: Optional[int] = None

    def fwd_part(self) -> tuple:
        """``(tiles, warps, stages)`` of the forward and exact-column kernels."""
        return (tuple(self.fwd), self.fwd_warps, self.stages)

    def bwd_part(self) -> tuple:
        """``(tiles, ds, warps, stages)`` of the two backward kernels."""
        stages = self.stages if self.bwd_stages is None else self.bwd_stages
        return (tuple(self.bwd), self.ds, self.bwd_warps, stages)


#: widest gradient slice by default (wider accumulators spill registers on sm_90)
DEFAULT_DS = 256

# ---- autotuning: a small candidate set per dtype, filtered for sm_90, timed per shape class ----

#: forward candidates ``(tiles, warps, stages)`` and backward candidates ``(tiles, ds, warps,
#: stages)`` per dtype class; the first of each is the seed (the former fixed default). ptxas
#: (sm_90, d = 512) reports at most 24 bytes of spill stores for any of them;
#: ``test_kernels_compile_for_sm90`` compiles every candidate and checks that bound (32 bytes).
CANDIDATES = {
    "half": {
        "fwd": (((128, 64, 64), 8, 3), ((64, 128, 64), 8, 3), ((128, 64, 32), 8, 4)),
        "bwd": (((64, 64, 64), None, 8, 3), ((64, 32, 64), None, 8, 3), ((64, 64, 32), None, 8, 4)),
    },
    "fp32": {
        "fwd": (((64, 64, 32), 8, 3), ((64, 32, 32), 4, 3), ((128, 32, 32), 8, 3)),
        "bwd": (((64, 32, 32), None, 8, 3), ((32, 32, 32), None, 8, 3), ((32, 64, 32), None, 8, 3)),
    },
}
#: the interpreter runs one small configuration (several tiles per test problem, fast numpy)
INTERPRET_PARTS = {"fwd": ((32, 32, 32), 8, 1), "bwd": ((32, 32, 32), 64, 8, 1)}
#: sm_90's dynamic shared memory per block (bytes), a limit of the filter
SMEM_LIMIT = 227 * 1024
#: timing: rows (forward, dA) or columns (dB) of the real problem a candidate is timed on (per
#: program work is unchanged, the grid covers the GPU a few times), and timed repetitions
TUNE_ROWS = 1 << 15
TUNE_REPS = 2
#: shape class -> chosen part; in-process, filled on the first call of each class
TUNED: dict = {}


def _dtype_class(dtype: torch.dtype) -> str:
    return "fp32" if dtype == torch.float32 else "half"


def _ds_eff(ds: Optional[int], D: int) -> int:
    return min(ds or DEFAULT_DS, max(16, triton.next_power_of_2(D)))


def _usage(kind: str, part: tuple, D: int, nb: int) -> tuple:
    """(shared memory bytes, fp32 accumulator registers per thread) of a candidate, estimated:
    the pipelined operand tiles (and, backward, the gradient GEMM's operand and weights); the
    logit tile (and, backward, the gradient accumulator) spread over the threads."""
    if kind == "fwd":
        (bm, bn, bk), warps, stages = part
        return stages * (bm + bn) * bk * nb, bm * bn / (32 * warps)
    (bm, bn, bk), ds, warps, stages = part
    acc = max(bm, bn) * _ds_eff(ds, D) + bm * bn
    return stages * (bm + bn) * bk * nb + acc * nb, acc / (32 * warps)


def fits(kind: str, part: tuple, D: int, dtype: torch.dtype) -> bool:
    """sm_90 filter of a candidate: its shared memory fits a block (``SMEM_LIMIT``), and it
    needs no more fp32 accumulator registers per thread than the seed of its kind and dtype
    (which ptxas compiles without notable spills; more accumulators spilled in every case
    measured, e.g. 128 x 128 forward tiles on 8 warps)."""
    nb = torch.finfo(dtype).bits // 8
    smem, regs = _usage(kind, part, D, nb)
    seed = CANDIDATES[_dtype_class(dtype)][kind][0]
    return smem <= SMEM_LIMIT and regs <= _usage(kind, seed, D, nb)[1]


def tile_candidates(kind: str, D: int, dtype: torch.dtype, interpret: bool = False) -> list:
    """The candidates of ``kind`` (``"fwd"`` / ``"bwd"``) that pass :func:`fits` (seed first);
    a single configuration under ``TRITON_INTERPRET=1``."""
    if interpret:
        return [INTERPRET_PARTS[kind]]
    seed, *rest = CANDIDATES[_dtype_class(dtype)][kind]
    return [seed] + [c for c in rest if fits(kind, c, D, dtype)]


def _bucket(n: int) -> int:
    """ceil(log2 n): problems within a factor of two share a class."""
    return max(int(n) - 1, 0).bit_length()


def shape_class(kind: str, N: int, M: int, D: int, dtype: torch.dtype, *flags) -> tuple:
    """Cache key: kernel kind, dtype, N and M buckets (powers of two), padded ``d``, flags."""
    return (kind, str(dtype), _bucket(N), _bucket(M), max(16, triton.next_power_of_2(D))) + flags


def _cuda_time(fn) -> float:
    fn()  # compiles this configuration and warms up
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(TUNE_REPS):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / TUNE_REPS


def autotune(key: tuple, cands: list, run, timer=None):
    """The fastest of ``cands`` for shape class ``key``: ``run(part)`` launches the kernels with
    that part (on a slice of the real problem), ``timer(fn)`` times it (CUDA events by
    default). Cached in :data:`TUNED`; one candidate is returned untimed; a candidate that fails
    (e.g. out of shared memory on a smaller GPU) is skipped, and if all fail the seed is kept
    (the real launch then reports the error)."""
    hit = TUNED.get(key)
    if hit is not None:
        return hit
    best = cands[0]
    if len(cands) > 1:
        timer = timer or _cuda_time
        best_t = float("inf")
        for part in cands:
            try:
                t = timer(functools.partial(run, part))
            except Exception:  # a compile or launch failure: not a candidate on this GPU
                continue
            if t < best_t:
                best, best_t = part, t
    TUNED[key] = best
    return best


def default_config(d: int, interpret: bool, dtype: torch.dtype = torch.bfloat16) -> Config:
    """The seed configuration per input dtype (fp32 tiles are twice the bytes: smaller tiles,
    no spills); under the interpreter, small tiles."""
    f = tile_candidates("fwd", d, dtype, interpret)[0]
    b = tile_candidates("bwd", d, dtype, interpret)[0]
    return Config(
        fwd=f[0], fwd_warps=f[1], stages=f[2], bwd=b[0], ds=b[1], bwd_warps=b[2], bwd_stages=b[3]
    )


def _interpret() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _upcast(A: Tensor) -> bool:
    """The interpreter's dot cannot read bf16 (stored as raw 16-bit words): convert first."""
    return A.dtype == torch.bfloat16 and _interpret()


def _mask_args(spec: RowSpec, N: int, device) -> dict:
    ex = spec.terms[0].exclude
    dummy_i = torch.zeros(1, dtype=torch.int64, device=device)
    out: dict[str, Any] = {
        "has_self": ex.self_offset is not None,
        "self_off": int(ex.self_offset or 0),
    }
    if ex.index is not None:
        idx = ex.index if ex.index.dim() == 2 else ex.index[:, None]
        out["idx"] = idx.to(device=device, dtype=torch.int64).contiguous()
        out["P"] = idx.shape[1]
    else:
        out["idx"], out["P"] = dummy_i, 0
    if ex.labels is not None:
        assert ex.row_labels is not None and ex.col_labels is not None  # checked by covers()
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


def _col_lse_exact(A, B, k2, mk, cols: Tensor, part: tuple, prec: str) -> Tensor:
    (bm, bn, bk), warps, stages = part
    cols = cols.to(torch.int64).contiguous()
    out = torch.empty(cols.shape[0], dtype=torch.float32, device=A.device)
    grid = (triton.cdiv(cols.shape[0], bn),)
    K._col_kernel[grid](
        A, B, k2, out, cols, cols.shape[0], mk["idx"], mk["rl"], mk["cl"], A.shape[0], A.shape[1],
        A.stride(0), B.stride(0), mk["idx"].stride(0), mk["self_off"], HAS_SELF=mk["has_self"],
        P=mk["P"], LABELS=mk["labels"], PREC=prec, UPCAST=_upcast(A), BM=bm, BN=bn, BK=bk,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def _rows_of(mk: dict, n: int) -> dict:
    """Mask arguments for the first ``n`` rows (timing on a slice of the problem)."""
    out = dict(mk)
    if mk["P"]:
        out["idx"] = mk["idx"][:n]
    if mk["labels"]:
        out["rl"] = mk["rl"][:n]
    return out


def _cols_of(mk: dict, m: int) -> dict:
    out = dict(mk)
    if mk["labels"]:
        out["cl"] = mk["cl"][:m]
    return out


def _fwd(A, B, k2, mk, shift, columns, diagonal, prec, part):
    """One forward launch: ``(lse, column sums, paired logits)`` (fp32; unused ones are
    placeholders)."""
    (bm, bn, bk), warps, stages = part
    N, M, D = A.shape[0], B.shape[0], A.shape[1]
    f32 = dict(dtype=torch.float32, device=A.device)
    lse = torch.empty(N, **f32)
    csum = torch.zeros(M, **f32) if columns else lse
    has_diag = diagonal is not None
    sdiag = torch.zeros(N, **f32) if has_diag else lse
    K._fwd_kernel[(triton.cdiv(N, bm),)](
        A, B, k2, lse, csum, shift, sdiag, mk["idx"], mk["rl"], mk["cl"], N, M, D,
        A.stride(0), B.stride(0), mk["idx"].stride(0), mk["self_off"], int(diagonal or 0),
        HAS_SELF=mk["has_self"], P=mk["P"], LABELS=mk["labels"], COLUMNS=columns,
        DIAG=has_diag, PREC=prec, UPCAST=_upcast(A), BM=bm, BN=bn, BK=bk,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return lse, csum, sdiag


def _bwd_a(A, B, stats, mk, columns, diagonal, prec, part, need_k):
    """``dA`` (input dtype) and ``d kappa_i`` (fp32, or a placeholder)."""
    (bm, bn, bk), ds, warps, stages = part
    N, M, D = A.shape[0], B.shape[0], A.shape[1]
    ds = _ds_eff(ds, D)
    da = torch.empty(N, D, dtype=A.dtype, device=A.device)  # fp32 sums, stored rounded
    dk = torch.empty(N, dtype=torch.float32, device=A.device) if need_k else stats[0]
    K._bwd_a_kernel[(triton.cdiv(N, bm), triton.cdiv(D, ds))](
        A, B, *stats, da, dk, mk["idx"], mk["rl"], mk["cl"], N, M, D, A.stride(0), B.stride(0),
        da.stride(0), mk["idx"].stride(0), mk["self_off"], int(diagonal or 0),
        HAS_SELF=mk["has_self"], P=mk["P"], LABELS=mk["labels"], COLUMNS=columns,
        DIAG=diagonal is not None, KGRAD=bool(need_k), PREC=prec, UPCAST=_upcast(A), BM=bm, BN=bn,
        BK=bk, BDS=ds, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return da, dk


def _bwd_b(A, B, stats, mk, columns, diagonal, prec, part):
    (bm, bn, bk), ds, warps, stages = part
    N, M, D = A.shape[0], B.shape[0], A.shape[1]
    ds = _ds_eff(ds, D)
    db = torch.empty(M, D, dtype=B.dtype, device=B.device)
    K._bwd_b_kernel[(triton.cdiv(M, bn), triton.cdiv(D, ds))](
        A, B, *stats, db, mk["idx"], mk["rl"], mk["cl"], N, M, D, A.stride(0), B.stride(0),
        db.stride(0), mk["idx"].stride(0), mk["self_off"], int(diagonal or 0),
        HAS_SELF=mk["has_self"], P=mk["P"], LABELS=mk["labels"], COLUMNS=columns,
        DIAG=diagonal is not None, PREC=prec, UPCAST=_upcast(A), BM=bm, BN=bn, BK=bk, BDS=ds,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return db


def _fwd_part(cfg, A, B, k2, mk, shift, columns, diagonal, prec) -> tuple:
    if cfg is not None:
        return cfg.fwd_part()
    N, M, D = A.shape[0], B.shape[0], A.shape[1]
    cands = tile_candidates("fwd", D, A.dtype, _interpret())
    key = shape_class("fwd", N, M, D, A.dtype, columns, diagonal is not None, prec)
    n = min(N, TUNE_ROWS)
    sub = (A[:n], B, k2[:n], _rows_of(mk, n), shift, columns, diagonal, prec)
    return autotune(key, cands, lambda part: _fwd(*sub, part))


def _bwd_part(cfg, A, B, stats, mk, columns, diagonal, prec) -> tuple:
    if cfg is not None:
        return cfg.bwd_part()
    N, M, D = A.shape[0], B.shape[0], A.shape[1]
    cands = tile_candidates("bwd", D, A.dtype, _interpret())
    key = shape_class("bwd", N, M, D, A.dtype, columns, diagonal is not None, prec)
    n, m = min(N, TUNE_ROWS), min(M, TUNE_ROWS)
    k2, lse2, g, clse2, h, gd = stats
    rows = (k2[:n], lse2[:n], g[:n], clse2, h, gd[:n])
    cols = (k2, lse2, g, clse2[:m], h[:m], gd)

    def run(part):  # both kernels, on a slice of rows (dA) and of columns (dB)
        _bwd_a(A[:n], B, rows, _rows_of(mk, n), columns, diagonal, prec, part, True)
        _bwd_b(A, B[:m], cols, _cols_of(mk, m), columns, diagonal, prec, part)

    return autotune(key, cands, run)


class TritonStats(torch.autograd.Function):
    """Statistics of a covered spec: ``lse (N,)``, then ``col_lse (M,)`` when ``columns``, then
    ``diag (N,)`` (``u_i,i+diagonal``, 0 where that column does not exist) when ``diagonal`` is
    not None. Always returns a tuple."""

    @staticmethod
    def forward(ctx, A, B, kappa, spec, columns, cfg, precision, diagonal):
        N = A.shape[0]
        A, B = A.contiguous(), B.contiguous()
        mk = _mask_args(spec, N, A.device)
        k2 = (kappa.detach().to(A.device, torch.float32) * LOG2E).expand(N).contiguous()
        prec = _dot_precision(A.dtype, precision)
        shift = _column_shift(A, B, k2, mk) if columns else k2  # k2: unused placeholder
        part = _fwd_part(cfg, A, B, k2, mk, shift, columns, diagonal, prec)
        lse, csum, sdiag = _fwd(A, B, k2, mk, shift, columns, diagonal, prec, part)
        outs = [lse]
        if columns:
            col_lse = (shift + torch.log2(csum)) * LN2
            bad = ~(csum >= 2.0**SAFE_LOG2) | ~torch.isfinite(csum)
            if bool(bad.any()):
                sel = bad.nonzero().flatten()
                col_lse[sel] = _col_lse_exact(A, B, k2, mk, sel, part, prec)
            outs.append(col_lse)
        if diagonal is not None:
            outs.append(sdiag * (k2 * LN2))
        ctx.save_for_backward(A, B, kappa, k2, *outs)
        ctx.mk, ctx.cfg, ctx.prec, ctx.columns, ctx.diagonal = mk, cfg, prec, columns, diagonal
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        A, B, kappa, k2, *outs = ctx.saved_tensors
        mk, prec, columns, diagonal = ctx.mk, ctx.prec, ctx.columns, ctx.diagonal
        N, M = A.shape[0], B.shape[0]

        def base2(lse):  # -inf (empty reductions) -> 0 so exp2(-inf - 0) = 0
            x = lse * LOG2E
            return torch.where(torch.isfinite(x), x, torch.zeros_like(x)).contiguous()

        def coef(g, n):
            if g is None:
                return torch.zeros(n, dtype=torch.float32, device=A.device)
            return g.float().contiguous()

        lse2, g = base2(outs[0]), coef(grads[0], N)
        clse2, h = (base2(outs[1]), coef(grads[1], M)) if columns else (lse2, g)
        gd = coef(grads[-1], N) if diagonal is not None else g  # g: unused placeholder
        need_a, need_b, need_k = ctx.needs_input_grad[:3]
        stats = (k2, lse2, g, clse2, h, gd)
        part = _bwd_part(ctx.cfg, A, B, stats, mk, columns, diagonal, prec)
        dA = dB = dkappa = None
        if need_a or need_k:
            da, dk = _bwd_a(A, B, stats, mk, columns, diagonal, prec, part, need_k)
            dA = da if need_a else None
            if need_k:
                dkappa = (dk if kappa.dim() else dk.sum()).to(kappa.dtype)
        if need_b:
            dB = _bwd_b(A, B, stats, mk, columns, diagonal, prec, part)
        return dA, dB, dkappa, None, None, None, None, None


def _target_stats(A: Tensor, B: Tensor, kappa: Tensor, st: EmbeddingSoftTargets, columns: bool):
    """Closed forms of ``(tgt, mass, col_tgt, col_mass)`` (the column ones ``None`` without
    ``columns``) for ``p_ij = alpha <t_i, s_j> + beta`` (differentiable in ``A``, ``B``,
    ``kappa``; computed in fp32 or wider, also under autocast)."""
    with torch.autocast(A.device.type, enabled=False):
        return _target_stats_wide(A, B, kappa, st, columns)


def _target_stats_wide(A, B, kappa, st: EmbeddingSoftTargets, columns: bool):
    dt = torch.promote_types(A.dtype, torch.float32)
    A, B, kap = A.to(dt), B.to(dt), kappa.to(dt)
    T, S = st.rows.to(dt), st.cols.to(dt)
    N, M = A.shape[0], B.shape[0]
    kr = kap if kap.dim() == 0 else kap[:, None]
    tgt = kap * (st.alpha * ((T @ (S.t() @ B)) * A).sum(dim=1) + st.beta * (A @ B.sum(dim=0)))
    mass = (st.alpha * (T @ S.sum(dim=0)) + st.beta * M).detach()
    col_tgt = col_mass = None
    if columns:
        Ak = A * kr
        col_tgt = st.alpha * ((S @ (T.t() @ Ak)) * B).sum(dim=1) + st.beta * (B @ Ak.sum(dim=0))
        col_mass = (st.alpha * (S @ T.sum(dim=0)) + st.beta * N).detach()
    return tgt, mass, col_tgt, col_mass


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
    ``precision="tf32"`` is given. ``diagonal=o`` adds the row statistic ``diag`` (N,)
    (:class:`~contrastkit.engine.RowStatistics`), the logit ``u_i,i+o`` of each row's paired
    column (0 where it does not exist; exclusions do not apply), and for two-sided specs the
    column statistic ``diag`` (M,) (:class:`~contrastkit.engine.ColumnStatistics`): its gradient
    is folded into the kernels, so a paired positive (InfoNCE, CLIP) costs no ``(N, d)``
    temporaries. ``spec.positive`` is served by
    :func:`~contrastkit.engine.spec.without_positive` (a separate dot product, so ``ce`` is only
    as exact as ``lse``). Raises ``ValueError`` for a spec the kernels do not cover
    (:func:`covers` says why).
    """
    if not isinstance(kappa, Tensor):
        kappa = torch.tensor(float(kappa), device=anchors.device)
    ok, why = covers(spec, anchors, candidates, kappa)
    if not ok:
        raise ValueError(f"the Triton kernels do not cover this problem: {why}")
    if precision not in (None, "ieee", "tf32"):
        raise ValueError(f"precision must be None, 'ieee' or 'tf32', got {precision!r}")
    cfg = config  # None: autotuned per shape class (one configuration under the interpreter)
    kap = kappa.float() if kappa.dtype in (torch.float16, torch.bfloat16) else kappa
    if diagonal is not None and not isinstance(diagonal, int):
        raise ValueError(f"diagonal must be an int column offset or None, got {diagonal!r}")
    if spec.positive is not None:  # the kernels do not read it from their tiles: dot product
        dt = torch.promote_types(anchors.dtype, torch.float32)
        spec = without_positive(spec, anchors.to(dt), candidates, kap.to(dt))
    columns = bool(spec.columns)
    outs = TritonStats.apply(anchors, candidates, kap, spec, columns, cfg, precision, diagonal)
    diag = col_diag = tgt = mass = col_tgt = col_mass = None
    if diagonal is not None:
        N, M = anchors.shape[0], candidates.shape[0]
        diag = outs[-1]
        if columns:  # column j's pair (j - diagonal, j)
            pair = torch.arange(M, device=anchors.device) - diagonal
            valid = (pair >= 0) & (pair < N)
            col_diag = torch.where(valid, outs[-1][pair.clamp(0, N - 1)], 0.0)
    if spec.soft_targets is not None:
        assert isinstance(spec.soft_targets, EmbeddingSoftTargets)  # checked by covers()
        tgt, mass, col_tgt, col_mass = _target_stats(
            anchors, candidates, kap, spec.soft_targets, spec.columns
        )
    rows = RowStatistics(lse=outs[0][None], tgt=tgt, mass=mass, diag=diag)
    cols = None
    if columns:
        cols = ColumnStatistics(lse=outs[1], tgt=col_tgt, mass=col_mass, diag=col_diag)
    row_vals = spec.row_fn(rows, spec.row_side) if spec.row_fn is not None else None
    col_vals = None
    if spec.columns and spec.col_fn is not None and cols is not None:
        col_vals = spec.col_fn(cols, spec.col_side)
    if not reduce:
        return row_vals, col_vals
    total = row_vals.sum() if row_vals is not None else torch.zeros((), device=anchors.device)
    if col_vals is not None:
        total = total + col_vals.sum()
    return total
