"""Triton kernels of the GPU backend (imported only when Triton is; see ``docs/gpu.md``).

Every kernel recomputes logit tiles ``s = A[rows] @ B[cols]^T`` (fp32 accumulation over ``d`` in
``BLOCK_K`` slices) and works in base 2: ``u2_ij = k2_i s_ij`` with ``k2 = kappa * log2(e)``.
Excluded pairs (self at ``i + self_offset``, up to ``P`` indices per row, equal/different labels)
are evaluated in the tile from O(N + M) data. Nothing of size ``N x M`` is ever written.

* ``_fwd_kernel``: one program per block of anchor rows sweeps every column block with an online
  maximum (row log-sum-exps, exact); with ``COLUMNS`` it also adds ``exp2(u2_ij - c_j)`` for a
  per-column shift ``c`` fixed beforehand into column sums (``atomic_add``), so row and column
  statistics come from the same pass (the caller checks the column sums and recomputes any
  column whose shift was unsafe with ``_col_kernel``).
* ``_col_kernel``: exact column log-sum-exps (online maximum down the rows) for a list of columns.
* ``_bwd_a_kernel`` / ``_bwd_b_kernel``: FlashAttention-2 style backward. With
  ``du_ij = g_i exp(u_ij - lse_i) + h_j exp(u_ij - col_lse_j)`` on kept pairs,
  ``dA_i = kappa_i sum_j du_ij b_j``, ``d kappa_i = sum_j du_ij s_ij`` (rows, in the first kernel)
  and ``dB_j = sum_i du_ij kappa_i a_i`` (columns, in the second); each program owns its output
  block (``BLOCK_DS`` columns of ``d``), so no atomics are needed.
"""

from __future__ import annotations

import triton
import triton.language as tl

LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _logits(
    A,
    B,
    rows,
    cols,
    rmask,
    cmask,
    D,
    sa,
    sb,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """fp32 tile ``A[rows] @ B[cols]^T`` (rows/cols are int64 offsets). ``UPCAST`` converts the
    operands to fp32 first (exact for bf16; used by the interpreter, whose dot cannot read
    bf16)."""
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, D, BK):
        ks = k0 + tl.arange(0, BK)
        km = ks < D
        a = tl.load(
            A + rows[:, None] * sa + ks[None, :], mask=rmask[:, None] & km[None, :], other=0.0
        )
        b = tl.load(
            B + cols[:, None] * sb + ks[None, :], mask=cmask[:, None] & km[None, :], other=0.0
        )
        if UPCAST:
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PREC)
    return acc


@triton.jit
def _crosses(r0, c0, BM: tl.constexpr, BN: tl.constexpr, off):
    """Does the tile ``[r0, r0 + BM) x [c0, c0 + BN)`` hold a pair ``(i, i + off)``?"""
    return (r0 + off < c0 + BN) & (c0 < r0 + BM + off)


@triton.jit
def _kept(
    rows,
    cols,
    rmask,
    cmask,
    IDX,
    idx_stride,
    RL,
    CL,
    self_off,
    near_self,
    HAS_SELF: tl.constexpr,
    P: tl.constexpr,
    LABELS: tl.constexpr,
):
    """Bool tile: pair in range and not excluded. LABELS: 0 none, 1 drop equal, 2 keep equal.
    ``near_self``: the tile may hold a self pair (the comparison is skipped otherwise)."""
    keep = rmask[:, None] & cmask[None, :]
    if HAS_SELF:
        if near_self:
            keep = keep & (cols[None, :] != rows[:, None] + self_off)
    for p in tl.static_range(P):
        ix = tl.load(IDX + rows * idx_stride + p, mask=rmask, other=-1).to(tl.int64)
        keep = keep & (cols[None, :] != ix[:, None])
    if LABELS != 0:
        rl = tl.load(RL + rows, mask=rmask, other=0)
        cl = tl.load(CL + cols, mask=cmask, other=0)
        same = rl[:, None] == cl[None, :]
        if LABELS == 1:
            keep = keep & (same == 0)
        else:
            keep = keep & same
    return keep


@triton.jit
def _fwd_kernel(
    A,
    B,
    K2,
    LSE,
    CSUM,
    CSHIFT,
    SDIAG,
    IDX,
    RL,
    CL,
    N,
    M,
    D,
    sa,
    sb,
    idx_stride,
    self_off,
    diag_off,
    HAS_SELF: tl.constexpr,
    P: tl.constexpr,
    LABELS: tl.constexpr,
    COLUMNS: tl.constexpr,
    DIAG: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BM + tl.arange(0, BM)
    rmask = rows < N
    k2 = tl.load(K2 + rows, mask=rmask, other=0.0)
    m = tl.full((BM,), float("-inf"), dtype=tl.float32)
    acc = tl.zeros((BM,), dtype=tl.float32)
    sd = tl.zeros((BM,), dtype=tl.float32)
    for c0 in range(0, M, BN):
        cols = c0 + tl.arange(0, BN).to(tl.int64)
        cmask = cols < M
        s = _logits(A, B, rows, cols, rmask, cmask, D, sa, sb, BM, BN, BK, PREC, UPCAST)
        near_self = _crosses(pid * BM, c0, BM, BN, self_off)
        keep = _kept(
            rows, cols, rmask, cmask, IDX, idx_stride, RL, CL, self_off, near_self, HAS_SELF, P,
            LABELS,
        )  # fmt: skip
        u = tl.where(keep, s * k2[:, None], float("-inf"))
        m_new = tl.maximum(m, tl.max(u, axis=1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        acc = acc * tl.exp2(m - shift) + tl.sum(tl.exp2(u - shift[:, None]), axis=1)
        m = m_new
        if COLUMNS:
            c = tl.load(CSHIFT + cols, mask=cmask, other=0.0)
            e = tl.exp2(u - c[None, :])
            tl.atomic_add(CSUM + cols, tl.sum(e, axis=0), mask=cmask, sem="relaxed")
        if DIAG:
            if _crosses(pid * BM, c0, BM, BN, diag_off):
                on = (cols[None, :] == rows[:, None] + diag_off) & rmask[:, None] & cmask[None, :]
                sd += tl.sum(tl.where(on, s, 0.0), axis=1)
    lse2 = tl.where(
        m == float("-inf"), float("-inf"), m + tl.log2(tl.where(m == float("-inf"), 1.0, acc))
    )
    tl.store(LSE + rows, lse2 * LN2, mask=rmask)
    if DIAG:
        tl.store(SDIAG + rows, sd, mask=rmask)


@triton.jit
def _col_kernel(
    A,
    B,
    K2,
    CLSE,
    COLS,
    n_sel,
    IDX,
    RL,
    CL,
    N,
    D,
    sa,
    sb,
    idx_stride,
    self_off,
    HAS_SELF: tl.constexpr,
    P: tl.constexpr,
    LABELS: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BN + tl.arange(0, BN)
    cmask = offs < n_sel
    cols = tl.load(COLS + offs, mask=cmask, other=0).to(tl.int64)
    m = tl.full((BN,), float("-inf"), dtype=tl.float32)
    acc = tl.zeros((BN,), dtype=tl.float32)
    for r0 in range(0, N, BM):
        rows = r0 + tl.arange(0, BM).to(tl.int64)
        rmask = rows < N
        k2 = tl.load(K2 + rows, mask=rmask, other=0.0)
        s = _logits(A, B, rows, cols, rmask, cmask, D, sa, sb, BM, BN, BK, PREC, UPCAST)
        near_self = True  # gathered columns: compare everywhere
        keep = _kept(
            rows, cols, rmask, cmask, IDX, idx_stride, RL, CL, self_off, near_self, HAS_SELF, P,
            LABELS,
        )  # fmt: skip
        u = tl.where(keep, s * k2[:, None], float("-inf"))
        m_new = tl.maximum(m, tl.max(u, axis=0))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        acc = acc * tl.exp2(m - shift) + tl.sum(tl.exp2(u - shift[None, :]), axis=0)
        m = m_new
    lse2 = tl.where(
        m == float("-inf"), float("-inf"), m + tl.log2(tl.where(m == float("-inf"), 1.0, acc))
    )
    tl.store(CLSE + offs, lse2 * LN2, mask=cmask)


@triton.jit
def _grad_tile(
    s, k2, lse2, g, CLSE2, H, rows, cols, rmask, cmask, keep, gd, diag_off, near_diag,
    COLUMNS: tl.constexpr, DIAG: tl.constexpr,
):  # fmt: skip
    """``du`` on a tile: row softmax times ``g`` (+ column softmax times ``h``), 0 off the kept
    pairs (+ ``gd_i`` at the pair ``(i, i + diag_off)``, whatever the mask). ``lse2``/``CLSE2``
    are base-2 statistics with -inf replaced by 0."""
    u = s * k2[:, None]
    p = tl.exp2(u - lse2[:, None]) * g[:, None]
    if COLUMNS:
        cl = tl.load(CLSE2 + cols, mask=cmask, other=0.0)
        h = tl.load(H + cols, mask=cmask, other=0.0)
        p += tl.exp2(u - cl[None, :]) * h[None, :]
    du = tl.where(keep, p, 0.0)
    if DIAG:
        if near_diag:
            on = (cols[None, :] == rows[:, None] + diag_off) & rmask[:, None] & cmask[None, :]
            du += tl.where(on, gd[:, None], 0.0)
    return du


@triton.jit
def _bwd_a_kernel(
    A,
    B,
    K2,
    LSE2,
    G,
    CLSE2,
    H,
    GD,
    DA,
    DK,
    IDX,
    RL,
    CL,
    N,
    M,
    D,
    sa,
    sb,
    sda,
    idx_stride,
    self_off,
    diag_off,
    HAS_SELF: tl.constexpr,
    P: tl.constexpr,
    LABELS: tl.constexpr,
    COLUMNS: tl.constexpr,
    DIAG: tl.constexpr,
    KGRAD: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    BDS: tl.constexpr,
):
    pid = tl.program_id(0)
    pd = tl.program_id(1)
    rows = pid.to(tl.int64) * BM + tl.arange(0, BM)
    rmask = rows < N
    ds = pd * BDS + tl.arange(0, BDS)
    dmask = ds < D
    k2 = tl.load(K2 + rows, mask=rmask, other=0.0)
    lse2 = tl.load(LSE2 + rows, mask=rmask, other=0.0)
    g = tl.load(G + rows, mask=rmask, other=0.0)
    gd = g
    if DIAG:
        gd = tl.load(GD + rows, mask=rmask, other=0.0)
    acc = tl.zeros((BM, BDS), dtype=tl.float32)
    dk = tl.zeros((BM,), dtype=tl.float32)
    for c0 in range(0, M, BN):
        cols = c0 + tl.arange(0, BN).to(tl.int64)
        cmask = cols < M
        s = _logits(A, B, rows, cols, rmask, cmask, D, sa, sb, BM, BN, BK, PREC, UPCAST)
        near_self = _crosses(pid * BM, c0, BM, BN, self_off)
        keep = _kept(
            rows, cols, rmask, cmask, IDX, idx_stride, RL, CL, self_off, near_self, HAS_SELF, P,
            LABELS,
        )  # fmt: skip
        near_diag = _crosses(pid * BM, c0, BM, BN, diag_off)
        du = _grad_tile(
            s, k2, lse2, g, CLSE2, H, rows, cols, rmask, cmask, keep, gd, diag_off, near_diag,
            COLUMNS, DIAG,
        )  # fmt: skip
        if KGRAD:
            dk += tl.sum(du * s, axis=1)
        b = tl.load(
            B + cols[:, None] * sb + ds[None, :], mask=cmask[:, None] & dmask[None, :], other=0.0
        )
        w = du.to(b.dtype)  # softmax weights rounded to the input dtype, as FlashAttention
        if UPCAST:
            w, b = w.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(w, b, acc, input_precision=PREC)
    acc = acc * (k2 * LN2)[:, None]
    tl.store(DA + rows[:, None] * sda + ds[None, :], acc, mask=rmask[:, None] & dmask[None, :])
    if KGRAD:
        if pd == 0:
            tl.store(DK + rows, dk, mask=rmask)


@triton.jit
def _bwd_b_kernel(
    A,
    B,
    K2,
    LSE2,
    G,
    CLSE2,
    H,
    GD,
    DB,
    IDX,
    RL,
    CL,
    N,
    M,
    D,
    sa,
    sb,
    sdb,
    idx_stride,
    self_off,
    diag_off,
    HAS_SELF: tl.constexpr,
    P: tl.constexpr,
    LABELS: tl.constexpr,
    COLUMNS: tl.constexpr,
    DIAG: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    BDS: tl.constexpr,
):
    pid = tl.program_id(0)
    pd = tl.program_id(1)
    cols = pid.to(tl.int64) * BN + tl.arange(0, BN)
    cmask = cols < M
    ds = pd * BDS + tl.arange(0, BDS)
    dmask = ds < D
    acc = tl.zeros((BN, BDS), dtype=tl.float32)
    for r0 in range(0, N, BM):
        rows = r0 + tl.arange(0, BM).to(tl.int64)
        rmask = rows < N
        k2 = tl.load(K2 + rows, mask=rmask, other=0.0)
        lse2 = tl.load(LSE2 + rows, mask=rmask, other=0.0)
        g = tl.load(G + rows, mask=rmask, other=0.0)
        gd = g
        if DIAG:
            gd = tl.load(GD + rows, mask=rmask, other=0.0)
        s = _logits(A, B, rows, cols, rmask, cmask, D, sa, sb, BM, BN, BK, PREC, UPCAST)
        near_self = _crosses(r0, pid * BN, BM, BN, self_off)
        keep = _kept(
            rows, cols, rmask, cmask, IDX, idx_stride, RL, CL, self_off, near_self, HAS_SELF, P,
            LABELS,
        )  # fmt: skip
        near_diag = _crosses(r0, pid * BN, BM, BN, diag_off)
        du = _grad_tile(
            s, k2, lse2, g, CLSE2, H, rows, cols, rmask, cmask, keep, gd, diag_off, near_diag,
            COLUMNS, DIAG,
        )  # fmt: skip
        du = du * (k2 * LN2)[:, None]  # kappa_i folded into the weights
        a = tl.load(
            A + rows[:, None] * sa + ds[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0
        )
        w = du.to(a.dtype)
        if UPCAST:
            w, a = w.to(tl.float32), a.to(tl.float32)
        acc = tl.dot(tl.trans(w), a, acc, input_precision=PREC)
    tl.store(DB + cols[:, None] * sdb + ds[None, :], acc, mask=cmask[:, None] & dmask[None, :])


__all__ = ["_fwd_kernel", "_col_kernel", "_bwd_a_kernel", "_bwd_b_kernel", "triton"]
