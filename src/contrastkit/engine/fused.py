"""Single-sweep path: gradients computed block by block during the forward sweep.

For each block of ``b`` anchor rows the engine computes the ``b x M`` logits against every
candidate (one GEMM into a reusable buffer of ``b * M`` floats, never ``N x M``), reduces them,
evaluates the objective's row function on the block's O(b) statistics, differentiates it with
autograd on those few numbers, and immediately turns the block's softmax weights into gradients
for the anchors and candidates. Backward only scales the saved gradients by the incoming scalar
(as Liger's fused linear cross-entropy and sentence-transformers' cached MNRL do).

FLOPs: ``2 N M d`` (logits) + ``4 N M d`` (``dA = dU B``, ``dB = dU^T A``) = **6 N M d**, no
recomputation, plus O(N M) exponentials. Two-sided objectives with a plain column softmax
(CLIP, symmetric InfoNCE) first run a forward-only sweep for the column log-sum-exps
(``+ 2 N M d`` = 8 N M d in all) and then the same single sweep with both softmaxes.
Memory ``O((N + M) d + b M)``.

Plain specs (one LSE, O(1) exclusions per row) work in base 2 in place: the logits are scaled by
``log2(e)`` inside the anchor scaling (free), shifted by the exact row maximum and
exponentiated with ``exp2``, which is about three times faster than ``exp`` on CPU. With
``RowSpec.positive`` the positive's base-2 logit ``c`` is read from the same chunk and
``ce = (log2(rowsum) + (m - c)) ln 2``: ``m - c`` is 0 when the positive is the row maximum, so
nothing of the size of the logits is rounded (as in ``F.cross_entropy``).

Single-term specs that are not plain (one log-sum-exp with ``r = 1`` and per-tile weights, label
or dense masks, soft targets, a positive or the first moment ``RowSpec.moment``: CACR, ConR,
SupReMix, ALBEF) take the same in-cache base-2 route (:func:`_term_block`): each pair function
is called once per column chunk, its tile multiplies the exponentials in place (no
``log``/``exp`` of weights, no second evaluation for the gradient), and the moment
``sum_j pi_ij u_ij`` is reduced from the chunk's logits beside its row sum. Soft targets given
as a row softmax (``SoftTargets.logits``: a teacher's logits) are normalised in the same sweep
(online softmax, no pre-pass); candidates without gradient skip ``du^T a``.
Specs with several plain log-sum-exps (per-term ``r > 0``, one shared sparse exclusion: HCL's
``r = 1 + beta`` and ``r = beta``) take the multi-term route (:func:`_multi_block`): one GEMM
per chunk, each term's ``exp2(r_t u2 - r_t m_c)`` kept in its own buffer, and the gradient
``sum_t G_t r_t softmax_t`` formed per chunk for one GEMM pair. Softplus-only specs (SigLIP)
take the softplus route (:func:`_softplus_block`): per chunk the GEMM, ``softplus`` summed per
row, ``sigmoid`` kept in place; ``G_phi`` folds into the gradient GEMMs.
``reduce=False`` on plain one-sided specs (rows combined after the sweep: MV-InfoNCE,
uniformity) uses :class:`PlainRows`: the same route forward, and recomputed in backward.
"""

from __future__ import annotations

import math
from typing import Optional, Protocol, Sequence

import torch
from torch import Tensor

from .recompute import add_kappa_grad, kappa_block
from .spec import (
    ColumnStatistics,
    LSETerm,
    PairMask,
    RowSpec,
    RowStatistics,
    StatsT,
    differentiable,
    map_statistics,
    present_fields,
)
from .tiles import NEG_INF, _finite_or_zero, positive_entries, tile_grad, tile_stats

LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)


def row_coefficients(fn, stats: StatsT, side: dict, need_grad: bool):
    """Evaluate ``fn`` on a block's statistics record; return (sum of values, ``d/dstats`` as a
    record of the same kind, ``d/dside``) via autograd. The gradient record holds ``None`` for
    statistics without a gradient (``mass``); it is ``None`` altogether without ``need_grad``."""
    leaves = map_statistics(
        lambda f, v: v.detach().requires_grad_(need_grad and differentiable(f)), stats
    )
    side_leaves = {
        k: v.detach().requires_grad_(need_grad and v.is_floating_point()) for k, v in side.items()
    }
    with torch.enable_grad():
        val = fn(leaves, side_leaves).sum()
    if not need_grad:
        return val.detach(), None, {}
    stat_leaves = [getattr(leaves, f.name) for f in present_fields(leaves)]
    wrt = [v for v in stat_leaves + list(side_leaves.values()) if v.requires_grad]
    grads: Sequence[Optional[Tensor]]
    if val.requires_grad:
        grads = torch.autograd.grad(val, wrt, allow_unused=True)
    else:
        grads = [None] * len(wrt)
    it = iter(grads)

    def coefficient(f, v):
        if not v.requires_grad:
            return None
        g = next(it)
        return torch.zeros_like(v) if g is None else g

    coef = map_statistics(coefficient, leaves)
    side_grad = {}
    for k, v in side_leaves.items():
        if v.requires_grad:
            g = next(it)
            side_grad[k] = torch.zeros_like(v) if g is None else g
    return val.detach(), coef, side_grad


#: logits per in-cache chunk of a row block (4 MiB fp32): elementwise passes over a chunk run
#: from cache instead of memory.
CHUNK_ELEMS = 1 << 20


def column_chunks(M: int, rows: int) -> list[tuple[int, int]]:
    width = max(256, CHUNK_ELEMS // max(rows, 1))
    return [(c0, min(c0 + width, M)) for c0 in range(0, M, width)]


def _plain_block(flat, flat2, a2, B, spec, r0, r1, chunks, col_shift, col_mul):
    """Statistics of a plain spec on a full-width row block, chunk by chunk.

    Each chunk's base-2 logits ``u2 = a2 @ B_c^T`` are masked, optionally turned into column
    softmax weights ``exp2(u2 - col_shift) [* col_mul]`` (kept in ``flat2``), then shifted by the
    chunk's row maximum and exponentiated in place. Chunk maxima are merged afterwards (online
    softmax), so every pass runs while its chunk is in cache. Returns ``(lse, rowsum, scale, E,
    EC, ce)``: natural-log row LSEs, ``sum_j exp2(u2_ij - m_i)``, per-chunk factors ``exp2(m_c -
    m)`` (b, chunks), the chunk views holding ``exp2(u2 - m_c)`` and the column weights, and
    ``lse - u_pos`` (``RowSpec.positive``; else None) from the chunk's own positive logits.
    """
    b = r1 - r0
    ms = torch.empty(b, len(chunks), dtype=a2.dtype, device=a2.device)
    ss = torch.empty_like(ms)
    E, EC = [], []
    pos2 = None if spec.positive is None else torch.empty(b, dtype=a2.dtype, device=a2.device)
    for ci, (c0, c1) in enumerate(chunks):
        uc = flat[b * c0 : b * c1].view(b, c1 - c0)
        torch.mm(a2, B[c0:c1].t(), out=uc)
        if pos2 is not None:
            pr, pc = positive_entries(spec, r0, r1, c0, c1)
            pos2[pr] = uc[pr, pc]
        rr, cc = spec.terms[0].exclude.sparse_entries(r0, r1, c0, c1, uc.device)
        if rr.numel():
            uc[rr, cc] = NEG_INF
        if col_shift is not None:
            ec = flat2[b * c0 : b * c1].view(b, c1 - c0)
            torch.sub(uc, col_shift[c0:c1], out=ec).exp2_()
            if col_mul is not None:
                ec.mul_(col_mul[c0:c1])
            EC.append(ec)
        mc = uc.amax(dim=1)
        ms[:, ci] = mc
        ss[:, ci] = uc.sub_(_finite_or_zero(mc)[:, None]).exp2_().sum(dim=1)
        E.append(uc)
    m = _finite_or_zero(ms.amax(dim=1))
    scale = torch.exp2(ms - m[:, None])
    rowsum = (ss * scale).sum(dim=1)
    lse = (torch.log2(rowsum) + m) * LN2
    ce = None if pos2 is None else (torch.log2(rowsum) + (m - pos2)) * LN2
    return lse, rowsum, scale, E, EC, ce


#: a row whose sum of 2^(u2 - C) falls below 2^SAFE_LOG2 takes the exact two-exponential route
SAFE_LOG2 = -100.0


def _shared_exp_block(flat, tmp, a2, B, spec, r0, r1, chunks, col_shift, v, C):
    """Symmetric plain specs: one exponential serves both softmaxes.

    ``E_ij = exp2(u2_ij - col_shift_j)`` is the column term (``G_j softmax_col`` once the
    positive coefficient is folded into ``col_shift``); with ``v_j = exp2(col_shift_j - C)``
    the row sums are ``s_i = sum_j E_ij v_j = sum_j exp2(u2_ij - C)``, so ``lse_i`` costs a
    matrix-vector product instead of a max, a shift, an exponential and a sum. Exact to fp32
    while ``s_i >= 2^-100`` (terms lost to underflow are then below 2^-49 of the row sum);
    returns None otherwise, and the caller takes the exact route for the block.
    """
    b = r1 - r0
    s = torch.zeros(b, dtype=a2.dtype, device=a2.device)
    E = []
    for c0, c1 in chunks:
        uc = flat[b * c0 : b * c1].view(b, c1 - c0)
        torch.mm(a2, B[c0:c1].t(), out=uc)
        rr, cc = spec.terms[0].exclude.sparse_entries(r0, r1, c0, c1, uc.device)
        if rr.numel():
            uc[rr, cc] = NEG_INF
        uc.sub_(col_shift[c0:c1]).exp2_()
        s.addmv_(uc, v[c0:c1])
        E.append(uc)
    if bool((s < 2.0**SAFE_LOG2).any()):
        return None
    return (torch.log2(s) + C) * LN2, s, E


def single_term(spec: RowSpec) -> bool:
    """Specs the in-cache single-term route computes: one log-sum-exp with ``r = 1`` whose
    exclusions, per-tile weights, soft targets, ``positive`` and first moment are evaluated
    chunk by chunk (each pair function called once per chunk), no softplus term or columns."""
    return (
        not spec.plain
        and len(spec.terms) == 1
        and spec.terms[0].r == 1.0
        and spec.softplus_bias is None
        and not spec.columns
    )


def _drop_zero_weights(u: Tensor, w: Tensor) -> None:
    """``u`` -> about ``-finfo.max`` where ``w <= 0`` (in place), with float arithmetic only
    (boolean masks are several times slower on CPU): ``u + (sign(w) - 1) * big`` adds exactly 0
    to kept pairs; dropped ones then vanish under any shift (``exp2(-big - m) = 0``)."""
    big = torch.finfo(u.dtype).max / 4
    pen = torch.sign(w).clamp_(min=0).sub_(1).mul_(big)
    u.add_(pen)


class BlockTargets:
    """What a :func:`single_term` block keeps for its gradient besides the exponentials: the
    soft-target chunks ``tiles`` (``p`` itself, or with ``SoftTargets.logits`` the unnormalised
    ``2^(t - m_c)`` in a reused buffer, turned into ``p`` by ``factor`` (b, chunks)), and the
    block's positive columns (``RowSpec.positive``; else None)."""

    __slots__ = ("tiles", "factor", "positive")

    def __init__(self) -> None:
        self.tiles: list[Tensor] = []
        self.factor: Optional[Tensor] = None
        self.positive: Optional[Tensor] = None


def _term_block(bufs, a2, B, spec, r0, r1, chunks):
    """Statistics of a :func:`single_term` spec on a full-width row block, chunk by chunk.

    Each chunk's base-2 logits ``u2 = a2 @ B_c^T`` go to ``bufs[0]``; soft targets ``p`` (the
    function's tiles, kept for the gradient) give ``tgt``/``mass`` from the unmasked logits;
    with a moment the logits are kept in ``bufs[1]``. With ``SoftTargets.logits`` the teacher's
    base-2 logits go to a third buffer (appended to ``bufs`` on first use, with a chunk of
    scratch for their products with the logits), are shifted by
    their chunk maximum and exponentiated in place; ``tgt`` is reduced from these unnormalised
    tiles and normalised with the merged teacher row sums afterwards (online softmax: no
    pre-pass). With ``RowSpec.positive`` the positive's logit is read from the chunk (before
    masking) and ``ce = (log2(rowsum) + (m - c)) ln 2``. Excluded pairs (and zero weights) are
    set to ``-inf`` (about ``-finfo.max``) in place, the chunk is shifted by its row maximum,
    exponentiated with ``exp2`` and multiplied by the weights: ``bufs[0]`` then holds
    ``w exp2(u2 - m_c)``. Chunk maxima are merged afterwards.
    Returns ``(stats, rowsum, scale, E, U, T)``: ``rowsum`` = ``sum_j w_ij exp2(u2_ij - m_i)``,
    ``scale`` (b, chunks) = ``exp2(m_c - m)``, the chunk views and a :class:`BlockTargets`.
    """
    b = r1 - r0
    term = spec.terms[0]
    ex = term.exclude
    dev, dt = a2.device, a2.dtype
    ms = torch.empty(b, len(chunks), dtype=dt, device=dev)
    ss = torch.empty_like(ms)
    ts = torch.empty_like(ms) if spec.moment else None
    soft = spec.soft_targets
    logits = None if soft is None else soft.logits
    tgt = torch.zeros(b, dtype=dt, device=dev) if soft is not None else None
    mass = torch.zeros(b, dtype=dt, device=dev) if soft is not None else None
    T = BlockTargets()
    if logits is not None:  # teacher chunk maxima, row sums and sum_j 2^(t - m_c) u2
        if len(bufs) < 3:  # the teacher tiles of a block, and one chunk's products
            bufs.append(torch.empty_like(bufs[0]))
            bufs.append(torch.empty(max(b * (c1 - c0) for c0, c1 in chunks), dtype=dt, device=dev))
        tms, tss, tts = torch.empty_like(ms), torch.empty_like(ms), torch.empty_like(ms)
    pos2 = None
    if spec.positive is not None:
        T.positive = spec.positive[r0:r1]
        pos2 = torch.empty(b, dtype=dt, device=dev)
    E: list[Tensor] = []
    U: list[Tensor] = []
    for ci, (c0, c1) in enumerate(chunks):
        n = b * (c1 - c0)
        pc = None
        if logits is not None:
            pc = bufs[2][b * c0 : b * c0 + n].view(b, c1 - c0)
            got = logits(r0, r1, c0, c1, pc)
            if got is not pc:
                pc.copy_(got.detach())
            tmc = pc.amax(dim=1)
            tms[:, ci] = tmc
            tss[:, ci] = pc.sub_(_finite_or_zero(tmc)[:, None]).exp2_().sum(dim=1)
        uc = bufs[0][b * c0 : b * c0 + n].view(b, c1 - c0)
        torch.mm(a2, B[c0:c1].t(), out=uc)
        if pc is not None:  # (vecdot would allocate its product per chunk)
            tts[:, ci] = torch.mul(pc, uc, out=bufs[3][:n].view(b, c1 - c0)).sum(dim=1)
            T.tiles.append(pc)
        elif soft is not None:  # kept as the function returned them (read-only)
            assert tgt is not None and mass is not None
            pc = soft.fn(r0, r1, c0, c1).detach().to(dt)
            tgt.add_(torch.linalg.vecdot(pc, uc))
            mass.add_(pc.sum(dim=1))
            T.tiles.append(pc)
        if pos2 is not None:
            pr, pcol = positive_entries(spec, r0, r1, c0, c1)
            pos2[pr] = uc[pr, pcol]
        if spec.moment:
            xc = bufs[1][b * c0 : b * c0 + n].view(b, c1 - c0)
            xc.copy_(uc)
            U.append(xc)
        rr, cc = ex.sparse_entries(r0, r1, c0, c1, dev)
        if rr.numel():
            uc[rr, cc] = NEG_INF
        if ex.labels is not None:
            assert ex.row_labels is not None and ex.col_labels is not None
            same = ex.row_labels[r0:r1, None] == ex.col_labels[None, c0:c1]
            uc.masked_fill_(same if ex.labels == "same" else ~same, NEG_INF)
        if ex.dense is not None:
            uc.masked_fill_(ex.dense[r0:r1, c0:c1], NEG_INF)
        wc = None
        if term.weights is not None:
            wc = term.weights(r0, r1, c0, c1).detach().to(dt)
            if bool(wc.min() <= 0):  # the row maximum is over kept pairs only
                _drop_zero_weights(uc, wc)
        mc = uc.amax(dim=1)
        ms[:, ci] = mc
        uc.sub_(_finite_or_zero(mc)[:, None]).exp2_()
        if wc is not None:
            uc.mul_(wc)
        ss[:, ci] = uc.sum(dim=1)
        if ts is not None:
            ts[:, ci] = (uc * U[-1]).sum(dim=1)
        E.append(uc)
    m = _finite_or_zero(ms.amax(dim=1))
    scale = torch.exp2(ms - m[:, None])
    rowsum = (ss * scale).sum(dim=1)
    lse = (torch.log2(rowsum) + m) * LN2
    if logits is not None:  # p = 2^(t - m_c) * 2^(m_c - m_t) / rowsum_t
        tm = _finite_or_zero(tms.amax(dim=1))
        tscale = torch.exp2(tms - tm[:, None])
        trow = (tss * tscale).sum(dim=1)
        tinv = torch.where(trow > 0, 1.0 / trow, torch.zeros_like(trow))
        T.factor = tscale * tinv[:, None]
        tgt = (tts * T.factor).sum(dim=1)
        mass = (trow > 0).to(dt)
    mom = None
    if ts is not None:
        inv = torch.where(rowsum > 0, 1.0 / rowsum, torch.zeros_like(rowsum))
        mom = (ts * scale).sum(dim=1) * inv * LN2
    ce = None if pos2 is None else (torch.log2(rowsum) + (m - pos2)) * LN2
    stats = RowStatistics(
        lse=lse[None], ce=ce, tgt=None if tgt is None else tgt * LN2, mass=mass, mom=mom
    )
    return stats, rowsum, scale, E, U, T


def _term_grad(gA, dB, a, B, chunks, stats, coef, rowsum, scale, E, U, T) -> None:
    """Gradients of a :func:`single_term` block from its chunk views (overwritten):
    ``du = pi (G_lse + Gce + Gmom (1 - mom) + Gmom u) + Gtgt p - Gce [j = pos]``,
    ``pi = E scale / rowsum`` (``T``: the block's :class:`BlockTargets`). Candidates that
    need no gradient (momentum features, queues, a teacher) get none: ``dB`` is left alone,
    which saves the ``2 b M d`` of ``du^T a``."""
    inv = torch.where(rowsum > 0, 1.0 / rowsum, torch.zeros_like(rowsum))
    f1 = coef.lse[0]
    if coef.ce is not None:
        f1 = f1 + coef.ce
    if coef.mom is not None:
        f1 = f1 + coef.mom * (1.0 - stats.mom)
    f1 = (f1 * inv)[:, None] * scale
    f2 = None if coef.mom is None else (coef.mom * inv * LN2)[:, None] * scale
    P = T.tiles
    grad_b = B.requires_grad  # the candidates as FusedRowLoss received them
    gp = None
    if P:  # Gtgt, times the per-chunk normalisation of unnormalised teacher tiles
        gp = coef.tgt[:, None] if T.factor is None else coef.tgt[:, None] * T.factor
    for ci, (c0, c1) in enumerate(chunks):
        fc = f1[:, ci : ci + 1]
        if f2 is None and gp is None:  # fold the row factors into the GEMMs
            gA.addcmul_(torch.mm(E[ci], B[c0:c1]), fc)
            if grad_b:
                dB[c0:c1].addmm_(E[ci].t(), a * fc)
            continue
        if f2 is not None:  # E (f1 + f2 u2), built in the logits' buffer
            du = U[ci].mul_(f2[:, ci : ci + 1]).add_(fc).mul_(E[ci])
        else:
            du = E[ci].mul_(fc)
        if gp is not None:
            du.addcmul_(P[ci], gp if gp.shape[1] == 1 else gp[:, ci : ci + 1])
        gA.addmm_(du, B[c0:c1])
        if grad_b:
            dB[c0:c1].addmm_(du.t(), a)
    if coef.ce is not None:  # d ce / d u_i,pos(i) has a -1 besides the softmax
        assert T.positive is not None
        p, gce = T.positive, coef.ce[:, None]
        gA.sub_(gce * B[p])
        if grad_b:
            dB.index_add_(0, p, gce * a, alpha=-1)


def multi_term(spec: RowSpec) -> bool:
    """Specs the in-cache multi-term route computes: several log-sum-exps with per-term
    ``r > 0`` and one shared O(1)-per-row exclusion (the same :class:`PairMask` object), no
    weights, soft targets, ``positive``, moment, softplus term or columns (HCL's two terms)."""
    terms = spec.terms
    if spec.plain or len(terms) < 2 or spec.columns or spec.moment:
        return False
    if spec.softplus_bias is not None or spec.soft_targets is not None:
        return False
    if spec.positive is not None:
        return False
    ex = terms[0].exclude
    return (
        all(t.exclude is ex and t.weights is None and float(t.r) > 0.0 for t in terms)
        and ex.is_sparse
    )


def _multi_block(bufs, a2, B, spec, r0, r1, chunks):
    """Statistics of a :func:`multi_term` spec on a full-width row block, chunk by chunk.

    Each chunk's base-2 logits ``u2 = a2 @ B_c^T`` (one GEMM) are masked in ``bufs[0]``; with
    the chunk's row maximum ``m_c`` over kept pairs, term ``t`` keeps
    ``exp2(r_t u2 - r_t m_c)`` in ``bufs[t]`` (term 0 in place, last), so every pass runs while
    the chunk is in cache. Chunk maxima are merged afterwards per term (online softmax).
    Returns ``(lse (K, b), rowsum (K, b), scale (K, b, chunks), E)`` with ``E[t][c]`` the
    chunk views of term ``t``.
    """
    b = r1 - r0
    K = len(spec.terms)
    rs = [float(t.r) for t in spec.terms]
    ex = spec.terms[0].exclude
    dev, dt = a2.device, a2.dtype
    ms = torch.empty(K, b, len(chunks), dtype=dt, device=dev)
    ss = torch.empty_like(ms)
    E: list[list[Tensor]] = [[] for _ in range(K)]
    for ci, (c0, c1) in enumerate(chunks):
        n = b * (c1 - c0)
        uc = bufs[0][b * c0 : b * c0 + n].view(b, c1 - c0)
        torch.mm(a2, B[c0:c1].t(), out=uc)
        rr, cc = ex.sparse_entries(r0, r1, c0, c1, dev)
        if rr.numel():
            uc[rr, cc] = NEG_INF
        mx = uc.amax(dim=1)  # -inf for a chunk whose pairs are all excluded
        mc = _finite_or_zero(mx)
        for t in range(K - 1, -1, -1):  # term 0 last: it overwrites the logits
            shift = (mc * -rs[t])[:, None]
            et = uc if t == 0 else bufs[t][b * c0 : b * c0 + n].view(b, c1 - c0)
            torch.add(shift, uc, alpha=rs[t], out=et).exp2_()  # exp2(r u2 - r m_c)
            ms[t, :, ci] = mx * rs[t]
            ss[t, :, ci] = et.sum(dim=1)
            E[t].append(et)
    m = _finite_or_zero(ms.amax(dim=2))
    scale = torch.exp2(ms - m[:, :, None])
    rowsum = (ss * scale).sum(dim=2)
    lse = (torch.log2(rowsum) + m) * LN2  # -inf for an empty row
    return lse, rowsum, scale, E


def _multi_grad(gA, dB, a, B, chunks, spec, coef, rowsum, scale, E) -> None:
    """Gradients of a :func:`multi_term` block from its chunk views (overwritten):
    ``du = sum_t G_t r_t softmax_t``, ``softmax_t = E_t scale_t / rowsum_t``, formed per chunk
    in term 0's views, then one GEMM pair per chunk."""
    K = len(spec.terms)
    rs = torch.tensor([float(t.r) for t in spec.terms], dtype=rowsum.dtype, device=rowsum.device)
    inv = torch.where(rowsum > 0, 1.0 / rowsum, torch.zeros_like(rowsum))
    f = (coef.lse * rs[:, None] * inv)[:, :, None] * scale  # (K, b, chunks)
    grad_b = B.requires_grad
    for ci, (c0, c1) in enumerate(chunks):
        du = E[0][ci].mul_(f[0, :, ci : ci + 1])
        for t in range(1, K):
            du.addcmul_(E[t][ci], f[t, :, ci : ci + 1])
        gA.addmm_(du, B[c0:c1])
        if grad_b:
            dB[c0:c1].addmm_(du.t(), a)


def softplus_only(spec: RowSpec) -> bool:
    """Specs the in-cache softplus route computes: ``phi_i = sum_j softplus(u_ij + bias)`` and
    nothing else (no log-sum-exp terms, soft targets, ``positive`` or columns: SigLIP)."""
    return (
        spec.softplus_bias is not None
        and len(spec.terms) == 0
        and spec.soft_targets is None
        and spec.positive is None
        and not spec.moment
        and not spec.columns
    )


def _softplus_block(buf, tmp, a, B, bias, r0, r1, chunks):
    """``phi (b,)`` of a :func:`softplus_only` spec on a full-width row block, chunk by chunk:
    per chunk one GEMM ``x = a @ B_c^T + bias`` into ``buf``, ``softplus(x)`` summed per row
    from the scratch ``tmp``, and ``sigmoid(x)`` kept in place for the gradient. Returns
    ``(phi, sigsum, S)``: ``sigsum_i = sum_j sigmoid(x_ij)`` and the chunk views."""
    b = r1 - r0
    phi = torch.zeros(b, dtype=a.dtype, device=a.device)
    sig = torch.zeros_like(phi)
    S = []
    for c0, c1 in chunks:
        n = b * (c1 - c0)
        xc = buf[b * c0 : b * c0 + n].view(b, c1 - c0)
        torch.mm(a, B[c0:c1].t(), out=xc)
        xc.add_(bias)
        sp = tmp[:n].view(b, c1 - c0)
        torch.ops.aten.softplus.out(xc, 1, 20, out=sp)
        phi.add_(sp.sum(dim=1))
        sig.add_(xc.sigmoid_().sum(dim=1))
        S.append(xc)
    return phi, sig, S


def _softplus_grad(gA, dB, a, B, chunks, coef, S) -> None:
    """``du = G_phi sigmoid(u + bias)``: the row factor folds into the GEMMs (no pass)."""
    g = coef.phi[:, None]
    grad_b = B.requires_grad
    for ci, (c0, c1) in enumerate(chunks):
        gA.addcmul_(torch.mm(S[ci], B[c0:c1]), g)
        if grad_b:
            dB[c0:c1].addmm_(S[ci].t(), a * g)


def _column_lse(A, B, kappa, spec, block) -> Tensor:
    """Forward-only sweep for the natural-log column log-sum-exps of a plain spec (M,).

    The column LSEs are the row LSEs of the transposed problem (candidates against all
    anchors), so this sweeps blocks of candidates with the same in-cache chunked routine,
    reducing along contiguous rows (several times faster than column reductions)."""
    N, M = A.shape[0], B.shape[0]
    Ak = A * ((kappa if kappa.dim() == 0 else kappa[:, None]) * LOG2E)
    exclude = spec.terms[0].exclude
    if exclude.index is None:
        offset = None if exclude.self_offset is None else -exclude.self_offset
        spec_t = RowSpec(terms=(LSETerm(exclude=PairMask(self_offset=offset)),))
        rows = min(block, M)
        flat = torch.empty(rows * N, dtype=A.dtype, device=A.device)
        chunks = column_chunks(N, rows)
        out = torch.empty(M, dtype=A.dtype, device=A.device)
        for c0 in range(0, M, block):
            c1 = min(c0 + block, M)
            out[c0:c1] = _plain_block(flat, None, B[c0:c1], Ak, spec_t, c0, c1, chunks, None, None)[
                0
            ]
        return out
    # index exclusions: mask the transposed blocks directly (full width, no chunks)
    rr, cc = exclude.sparse_entries(0, N, 0, M, A.device)
    out = torch.empty(M, dtype=A.dtype, device=A.device)
    buf = torch.empty(min(block, M), N, dtype=A.dtype, device=A.device)
    for c0 in range(0, M, block):
        c1 = min(c0 + block, M)
        v = buf[: c1 - c0]
        torch.mm(B[c0:c1], Ak.t(), out=v)
        sel = (cc >= c0) & (cc < c1)
        v[cc[sel] - c0, rr[sel]] = NEG_INF
        m = _finite_or_zero(v.amax(dim=1))
        out[c0:c1] = (torch.log2(v.sub_(m[:, None]).exp2_().sum(dim=1)) + m) * LN2
    return out


class ColumnGroup(Protocol):
    """Column statistics shared with other processes (``contrastkit.distributed``): this
    process holds some of the anchor rows of a two-sided plain spec and every candidate.

    ``combine(partial)`` turns the column log-sum-exps over this process's anchors ``(M,)``
    into those over every process's anchors (the same on every process); ``own = (c0, c1)``
    are the columns whose ``col_fn`` this process evaluates (``col_side`` holds those rows
    only, so every column's value is counted once over the group); ``gather(coef)`` returns the
    ``d loss / d col_lse`` of all ``M`` columns from those of its own columns.
    """

    own: tuple[int, int]

    def combine(self, partial: Tensor) -> Tensor: ...

    def gather(self, coef: Tensor) -> Tensor: ...


class FusedRowLoss(torch.autograd.Function):
    """loss = sum_i row_fn(stats_i, side_i) [+ sum_j col_fn(col stats_j, side_j)].

    Inputs ``A (N, d)``, ``B (M, d)`` in compute dtype; ``block`` = (anchor rows per block,
    candidate rows per block of the column pre-pass); ``cols``: ``None``, or a
    :class:`ColumnGroup` when ``A`` is one process's share of the anchors (the column
    statistics are then combined across processes, and ``dB`` holds this process's part of the
    candidates' gradient); ``side_keys`` are ``("row"|"col", name)``.
    """

    @staticmethod
    def forward(ctx, A, B, kappa, bias, spec, block, cols, side_keys, *side_vals):
        N, M = A.shape[0], B.shape[0]
        need_grad = any(ctx.needs_input_grad[:4]) or any(ctx.needs_input_grad[8:])
        row_side = {k: v for (scope, k), v in zip(side_keys, side_vals) if scope == "row"}
        col_side = {k: v for (scope, k), v in zip(side_keys, side_vals) if scope == "col"}
        dA = torch.zeros_like(A) if need_grad else None
        dB = torch.zeros_like(B) if need_grad else None
        dkappa = torch.zeros_like(kappa) if need_grad and ctx.needs_input_grad[2] else None
        dbias = torch.zeros((), dtype=A.dtype, device=A.device) if need_grad else None
        side_grads = {
            ("row", k): torch.zeros_like(v) for k, v in row_side.items() if v.is_floating_point()
        }
        loss = torch.zeros((), dtype=A.dtype, device=A.device)
        Bt = B.t()
        plain = spec.plain
        col_coef = None
        col_shift: Optional[Tensor]
        if spec.columns:
            if not plain:
                raise ValueError("the single-sweep path supports columns only for plain specs")
            col_lse = _column_lse(A, B, kappa, spec, block[1])
            own = slice(None)
            if cols is not None:  # partial LSEs over this process's anchors -> global ones
                col_lse = cols.combine(col_lse)
                own = slice(*cols.own)
            col_stats = ColumnStatistics(lse=col_lse[own])
            val, cc, sg = row_coefficients(spec.col_fn, col_stats, col_side, need_grad)
            loss += val
            for k, g in sg.items():
                side_grads[("col", k)] = g
            col_coef = cc.lse if need_grad else None
            if cols is not None:  # every process issues the same collectives, grad or not
                own_coef = col_coef if col_coef is not None else torch.zeros_like(col_lse[own])
                coef = cols.gather(own_coef)
                col_coef = coef if need_grad else None
            col_shift = _finite_or_zero(col_lse) * LOG2E
            fold = col_coef is not None and bool((col_coef > 0).all())
            if fold:  # G_j softmax_col = exp2(u2 - lse2_j + log2 G_j): saves a pass
                assert col_coef is not None  # fold implies it
                col_shift = col_shift - torch.log2(col_coef)
        block = block[0]
        buf = torch.empty(min(block, N) * M, dtype=A.dtype, device=A.device)
        buf2 = None  # second buffer of the exact symmetric route, allocated on first use
        chunks = column_chunks(M, min(block, N))
        single = single_term(spec)
        multi = multi_term(spec)
        softplus = softplus_only(spec)
        bufs = [buf, None]
        if single:  # the logits are kept for the moment
            bufs[1] = torch.empty_like(buf) if spec.moment else None
        elif multi:  # one buffer of exponentials per term
            mbufs = [buf] + [torch.empty_like(buf) for _ in spec.terms[1:]]
        elif softplus:  # one chunk of scratch for the softplus values
            rows = min(block, N)
            tmp_sp = torch.empty(
                max(rows * (c1 - c0) for c0, c1 in chunks), dtype=A.dtype, device=A.device
            )
        # the shared exponential shifts rows by a global constant, not by their positive
        shared = spec.columns and (fold or not need_grad) and spec.positive is None
        if shared:
            assert col_shift is not None  # shared implies spec.columns
            C = float(col_shift.max())
            v = torch.exp2(col_shift - C)
            tmp = torch.empty(min(block, N), chunks[0][1], dtype=A.dtype, device=A.device)
        if col_coef is None:
            col_mul = None
            if not spec.columns:
                col_shift = None
        else:
            col_mul = None if fold else col_coef
        for r0 in range(0, N, block):
            r1 = min(r0 + block, N)
            kb = kappa_block(kappa, r0, r1)
            side_blk = {k: v[r0:r1] for k, v in row_side.items()}
            shared_out = None
            if plain and shared:
                a2 = A[r0:r1] * (kb * LOG2E)
                shared_out = _shared_exp_block(
                    buf, tmp, a2, B, spec, r0, r1, chunks, col_shift, v, C
                )
            if shared_out is not None:
                lse, rowsum, E = shared_out
                stats = RowStatistics(lse=lse[None])
            elif plain:
                if spec.columns and buf2 is None:
                    buf2 = torch.empty_like(buf)
                lse, rowsum, scale, E, EC, ce = _plain_block(
                    buf, buf2, A[r0:r1] * (kb * LOG2E), B, spec, r0, r1, chunks, col_shift, col_mul
                )
                stats = RowStatistics(lse=lse[None], ce=ce)
            elif single:
                stats, rowsum, scale, E, U, P = _term_block(
                    bufs, A[r0:r1] * (kb * LOG2E), B, spec, r0, r1, chunks
                )
            elif multi:
                lse, rowsum, scale, E = _multi_block(
                    mbufs, A[r0:r1] * (kb * LOG2E), B, spec, r0, r1, chunks
                )
                stats = RowStatistics(lse=lse)
            elif softplus:
                phi, sigsum, S = _softplus_block(
                    buf, tmp_sp, A[r0:r1] * kb, B, spec.softplus_bias, r0, r1, chunks
                )
                stats = RowStatistics(phi=phi)
            else:
                u = buf[: (r1 - r0) * M].view(r1 - r0, M)
                torch.mm(A[r0:r1] * kb, Bt, out=u)
                stats, _ = tile_stats(u, spec, r0, r1, 0, M)  # no columns here
            val, coef, sgrad = row_coefficients(spec.row_fn, stats, side_blk, need_grad)
            loss += val
            if not need_grad:
                continue
            assert dA is not None and dB is not None and dbias is not None  # need_grad
            for k, g in sgrad.items():
                side_grads[("row", k)][r0:r1] = g
            a = A[r0:r1] * kb  # natural-unit scaled anchors: u = a @ B^T
            if shared_out is not None:
                # du = E * (1 + f v^T), f_i = G_i / s_i: column plus row softmax terms
                f = torch.where(rowsum > 0, coef.lse[0] / rowsum, torch.zeros_like(rowsum))
                gA = torch.zeros_like(a)
                for ci, (c0, c1) in enumerate(chunks):
                    mod = tmp[: r1 - r0, : c1 - c0]
                    torch.mul(f[:, None], v[None, c0:c1], out=mod)  # (addr is 10x slower)
                    du = E[ci].addcmul_(E[ci], mod)
                    gA.addmm_(du, B[c0:c1])
                    dB[c0:c1].addmm_(du.t(), a)
                gA.mul_(kb)
            elif plain:
                # softmax_row = E_c * scale_c / rowsum: fold G / rowsum * scale_c into the GEMMs
                g = coef.lse[0] + coef.ce if coef.ce is not None else coef.lse[0]
                w = torch.where(rowsum > 0, g / rowsum, torch.zeros_like(rowsum))
                f = w[:, None] * scale
                gA = torch.zeros_like(a)
                for ci, (c0, c1) in enumerate(chunks):
                    fc = f[:, ci : ci + 1]
                    if col_coef is None:
                        gA.addcmul_(torch.mm(E[ci], B[c0:c1]), fc)
                        dB[c0:c1].addmm_(E[ci].t(), a * fc)
                    else:
                        du = EC[ci].addcmul_(E[ci], fc)
                        gA.addmm_(du, B[c0:c1])
                        dB[c0:c1].addmm_(du.t(), a)
                if coef.ce is not None:  # d ce / d u_i,pos(i) has a -1 besides the softmax
                    p, gce = spec.positive[r0:r1], coef.ce[:, None]
                    gA.sub_(gce * B[p])
                    dB.index_add_(0, p, gce * a, alpha=-1)
                gA.mul_(kb)
            elif single:
                gA = torch.zeros_like(a)
                _term_grad(gA, dB, a, B, chunks, stats, coef, rowsum, scale, E, U, P)
                gA.mul_(kb)
            elif multi:
                gA = torch.zeros_like(a)
                _multi_grad(gA, dB, a, B, chunks, spec, coef, rowsum, scale, E)
                gA.mul_(kb)
            elif softplus:
                gA = torch.zeros_like(a)
                _softplus_grad(gA, dB, a, B, chunks, coef, S)
                dbias += (coef.phi * sigsum).sum()
                gA.mul_(kb)
            else:
                du, db = tile_grad(u, spec, r0, r1, 0, M, stats, coef)
                if db is not None:
                    dbias += db
                gA = torch.mm(du, B).mul_(kb)
                dB.addmm_(du.t(), a)
            dA[r0:r1] = gA
            if dkappa is not None:
                add_kappa_grad(dkappa, kappa, A[r0:r1], gA, r0, r1)
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
            None,
            *side_out,
        )


def plain_rows(spec: RowSpec) -> bool:
    """Specs whose per-row log-sum-exps :class:`PlainRows` sweeps in cache (``reduce=False``):
    plain, one-sided, no ``positive``."""
    return spec.plain and not spec.columns and spec.positive is None


class PlainRows(torch.autograd.Function):
    """The row log-sum-exps ``(N,)`` of a :func:`plain_rows` spec, for objectives that combine
    rows after the sweep (``reduce=False``: MV-InfoNCE's log-sum-exp over views, uniformity's
    over all rows). Forward sweeps row blocks with the in-cache base-2 route of the single sweep
    (``2 N M d``); backward recomputes each block the same way and applies the incoming
    ``d loss / d lse`` (``6 N M d``): 8 N M d as the two-sweep path, with its elementwise work
    in cache. Inputs ``A``, ``B``, ``kappa`` in compute dtype; ``block`` anchor rows per block.
    """

    @staticmethod
    def forward(ctx, A, B, kappa, spec, block):
        N, M = A.shape[0], B.shape[0]
        rows = min(block, N)
        buf = torch.empty(rows * M, dtype=A.dtype, device=A.device)
        chunks = column_chunks(M, rows)
        lse = torch.empty(N, dtype=A.dtype, device=A.device)
        for r0 in range(0, N, block):
            r1 = min(r0 + block, N)
            a2 = A[r0:r1] * (kappa_block(kappa, r0, r1) * LOG2E)
            lse[r0:r1] = _plain_block(buf, None, a2, B, spec, r0, r1, chunks, None, None)[0]
        ctx.spec, ctx.block = spec, block
        ctx.save_for_backward(A, B, kappa)
        return lse

    @staticmethod
    def backward(ctx, grad):
        A, B, kappa = ctx.saved_tensors
        spec, block = ctx.spec, ctx.block
        N, M = A.shape[0], B.shape[0]
        rows = min(block, N)
        buf = torch.empty(rows * M, dtype=A.dtype, device=A.device)
        chunks = column_chunks(M, rows)
        dA, dB = torch.zeros_like(A), torch.zeros_like(B)
        dkappa = torch.zeros_like(kappa) if ctx.needs_input_grad[2] else None
        for r0 in range(0, N, block):
            r1 = min(r0 + block, N)
            kb = kappa_block(kappa, r0, r1)
            _, rowsum, scale, E, _, _ = _plain_block(
                buf, None, A[r0:r1] * (kb * LOG2E), B, spec, r0, r1, chunks, None, None
            )
            g = grad[r0:r1]
            f = torch.where(rowsum > 0, g / rowsum, torch.zeros_like(rowsum))[:, None] * scale
            a = A[r0:r1] * kb
            gA = torch.zeros_like(a)
            for ci, (c0, c1) in enumerate(chunks):
                fc = f[:, ci : ci + 1]
                gA.addcmul_(torch.mm(E[ci], B[c0:c1]), fc)
                dB[c0:c1].addmm_(E[ci].t(), a * fc)
            gA.mul_(kb)
            dA[r0:r1] = gA
            if dkappa is not None:
                add_kappa_grad(dkappa, kappa, A[r0:r1], gA, r0, r1)
        return dA, dB, dkappa, None, None
