"""Engine behaviour: low precision, large logit scales, path choice, no N x M allocation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import contrastkit as ck
from contrastkit.engine import (
    ColumnStatistics,
    LSETerm,
    PairMask,
    RowSpec,
    RowStatistics,
    SoftTargets,
    choose_path,
    contrast,
    dispatch,
    fused,
)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_fp32(dtype):
    g = torch.Generator().manual_seed(0)
    q32, k32 = torch.randn(2, 64, 32, generator=g)
    q = q32.to(dtype).requires_grad_()
    k = k32.to(dtype).requires_grad_()
    loss = ck.info_nce(q, k, temperature=0.05, backend="tiled", chunk_size=16)
    assert loss.dtype == torch.float32
    loss.backward()
    assert q.grad.dtype == dtype and k.grad.dtype == dtype
    want = ck.info_nce(q.detach().float(), k.detach().float(), temperature=0.05, backend="dense")
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["dense", "tiled"])
def test_logit_scale_100_does_not_overflow(backend):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 48, 16, generator=g)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        a = x.to(dtype).detach().clone().requires_grad_()
        b = (-x).to(dtype).detach().clone().requires_grad_()  # worst case: anti-aligned pairs
        loss = ck.clip_loss(a, b, scale=100.0, backend=backend, chunk_size=16)
        loss.backward()
        assert torch.isfinite(loss) and float(loss.detach()) > 100  # about 200 - log-terms
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    loss = ck.info_nce(x, y, scale=100.0, backend=backend, chunk_size=16)
    ref = F.cross_entropy(100 * F.normalize(x, dim=1) @ F.normalize(y, dim=1).T, torch.arange(48))
    torch.testing.assert_close(loss, ref)


def test_path_choice():
    spec = RowSpec()
    assert choose_path(8, 8, spec, True, "auto", None) == "dense"
    assert choose_path(4096, 4096, spec, True, "auto", None) == "fused"
    assert choose_path(4096, 4096, spec, False, "auto", None) == "recompute"
    assert choose_path(4096, 4096, RowSpec(columns=True), True, "auto", None) == "fused"
    two_lse = RowSpec(terms=(LSETerm(), LSETerm(r=2.0)), columns=True)
    assert choose_path(4096, 4096, two_lse, True, "auto", None) == "recompute"
    # when a row block of every candidate would not fit the buffer, fall back to tiles
    huge = dispatch.FUSED_MAX_ELEMS // dispatch.MIN_ROWS + 1
    assert choose_path(64, huge, spec, True, "tiled", None) == "recompute"
    assert choose_path(4096, 4096, spec, True, "dense", None) == "dense"
    with pytest.raises(ValueError, match="backend"):
        choose_path(4, 4, spec, True, "cuda", None)


def test_tiled_never_allocates_the_full_matrix(monkeypatch):
    """Run with a tiny buffer budget and check every allocated logit tile is small."""
    sizes = []
    real_mm = torch.mm

    def spy(a, b, *args, **kw):
        out = real_mm(a, b, *args, **kw)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(dispatch, "TILE_ELEMS", 64 * 300)
    monkeypatch.setattr(dispatch, "MIN_ROWS", 64)
    monkeypatch.setattr(torch, "mm", spy)
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 300, 8, generator=g)
    q.requires_grad_(), k.requires_grad_()
    ck.info_nce(q, k, backend="tiled").backward()  # single sweep
    ck.info_nce(q, k, symmetric=True, backend="tiled").backward()  # two sweeps
    assert sizes and max(sizes) <= 64 * 300 < 300 * 300


def test_soft_targets_and_label_masks_in_tile():
    """A spec mixing a label mask, soft targets and columns matches the dense evaluation."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(11, 4, generator=g, dtype=torch.float64, requires_grad=True)
    rl = torch.randint(0, 3, (9,), generator=g)
    cl = torch.randint(0, 3, (11,), generator=g)
    P = torch.rand(9, 11, generator=g, dtype=torch.float64)
    kappa = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    spec = RowSpec(
        terms=(
            LSETerm(exclude=PairMask(row_labels=rl, col_labels=cl, labels="same")),
            LSETerm(r=0.5, exclude=PairMask(self_offset=1)),
        ),
        soft_targets=SoftTargets(lambda r0, r1, c0, c1: P[r0:r1, c0:c1]),
        columns=True,
        row_fn=lambda st, sd: st.lse[0] * 0.3 + st.lse[1] - st.tgt / st.mass,
        col_fn=lambda st, sd: st.lse - st.tgt / st.mass,
    )
    # rows where every candidate has the same label would be -inf: avoid by construction
    spec.terms[0].exclude.row_labels[0] = 99
    vals = {}
    for backend, chunk in (("dense", None), ("tiled", 2), ("tiled", 4)):
        loss = contrast(A, B, spec, kappa, backend=backend, chunk_size=chunk)
        finite = torch.isfinite(loss)
        grads = torch.autograd.grad(loss, [A, B, kappa]) if finite else None
        vals[(backend, chunk)] = (loss, grads)
    (l0, g0) = vals[("dense", None)]
    for l1, g1 in vals.values():
        torch.testing.assert_close(l1, l0)
        if g0 is not None:
            for a, b in zip(g1, g0):
                torch.testing.assert_close(a, b)


def test_no_grad_forward_skips_gradient_work():
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(2, 40, 8, generator=g)
    with torch.no_grad():
        a = ck.info_nce(q, k, backend="tiled", chunk_size=7)
    b = ck.info_nce(q, k, backend="dense")
    torch.testing.assert_close(a, b)
    assert math.isfinite(float(a))


def test_symmetric_shared_exponential_falls_back_exactly(monkeypatch):
    """A row whose logits all sit far below the largest column LSE takes the exact route."""
    from contrastkit.engine import fused

    calls = []
    real = fused._plain_block
    monkeypatch.setattr(fused, "_plain_block", lambda *a, **k: calls.append(1) or real(*a, **k))
    e = torch.eye(4, dtype=torch.float64)
    x = torch.stack([e[0], -e[0], e[2], e[3]]).requires_grad_()
    y = torch.stack([e[0], e[1], -e[2], e[3]]).requires_grad_()
    tiled = ck.clip_loss(x, y, scale=100.0, backend="tiled", chunk_size=2)
    gt = torch.autograd.grad(tiled, [x, y])
    assert calls, "the exact route was not taken"
    dense = ck.clip_loss(x, y, scale=100.0, backend="dense")
    gd = torch.autograd.grad(dense, [x, y])
    torch.testing.assert_close(tiled, dense)
    for a, b in zip(gt, gd):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "exclude",
    [
        PairMask(),
        PairMask(self_offset=1),
        PairMask(index=torch.tensor([2, 0, -1, 5, 1, 3, 4])),
        PairMask(dense=torch.rand(7, 9, generator=torch.Generator().manual_seed(0)) < 0.3),
    ],
    ids=["none", "self_offset", "index", "dense_mask"],
)
def test_two_sided_plain_spec_with_exclusions(exclude):
    """Column pre-pass (transposed, chunked) and shared exponential under exclusions."""
    g = torch.Generator().manual_seed(5)
    A = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kappa = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    spec = RowSpec(
        terms=(LSETerm(exclude=exclude),),
        row_fn=lambda st, sd: st.lse[0] * 0.2,
        columns=True,
        col_fn=lambda st, sd: st.lse * 0.3,
    )
    ref = contrast(A, B, spec, kappa, backend="dense")
    gref = torch.autograd.grad(ref, [A, B, kappa])
    for chunk in (2, 3, None):
        got = contrast(A, B, spec, kappa, backend="tiled", chunk_size=chunk)
        torch.testing.assert_close(got, ref)
        for a, b in zip(torch.autograd.grad(got, [A, B, kappa]), gref):
            torch.testing.assert_close(a, b)


def test_negative_weights_per_tile():
    """Float weights from a per-tile function (here from labels) match the dense formula."""
    g = torch.Generator().manual_seed(6)
    A = torch.randn(8, 4, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ya, yb = torch.randint(0, 4, (8,), generator=g), torch.randint(0, 4, (10,), generator=g)
    kappa = torch.tensor(3.0, dtype=torch.float64)

    def weights(r0, r1, c0, c1):  # label-distance weights, zero for the same label
        return (ya[r0:r1, None] - yb[None, c0:c1]).abs().to(torch.float64) / 3

    spec = RowSpec(
        terms=(LSETerm(weights=weights, exclude=PairMask(self_offset=0)),),
        row_fn=lambda st, sd: st.lse[0],
    )
    u = kappa * A @ B.T
    w = weights(0, 8, 0, 10).clone()
    w[torch.arange(8), torch.arange(8)] = 0
    ref = torch.logsumexp(u + torch.log(w), dim=1).sum()
    gref = torch.autograd.grad(ref, [A, B])
    for backend, chunk in (("dense", None), ("tiled", 3), ("tiled", None)):
        got = contrast(A, B, spec, kappa, backend=backend, chunk_size=chunk)
        torch.testing.assert_close(got, ref)
        for a, b in zip(torch.autograd.grad(got, [A, B]), gref):
            torch.testing.assert_close(a, b)
    rows, _ = contrast(A, B, spec, kappa, backend="tiled", chunk_size=4, reduce=False)
    torch.testing.assert_close(rows.sum(), ref)


def _positive_spec(kind: str, positive: Tensor) -> RowSpec:
    row_fn = lambda st, sd: 0.7 * st.ce + 0.1 * st.lse[0]  # noqa: E731 (both statistics)
    if kind == "plain":
        return RowSpec(
            terms=(LSETerm(exclude=PairMask(self_offset=1)),), row_fn=row_fn, positive=positive
        )
    if kind == "weighted":
        w = lambda r0, r1, c0, c1: torch.full((r1 - r0, c1 - c0), 0.5, dtype=torch.float64)  # noqa
        return RowSpec(terms=(LSETerm(weights=w),), row_fn=row_fn, positive=positive)
    if kind == "two_terms":
        return RowSpec(
            terms=(LSETerm(exclude=PairMask(self_offset=1)), LSETerm(r=0.5)),
            row_fn=lambda st, sd: row_fn(st, sd) + 0.2 * st.lse[1],
            positive=positive,
        )
    return RowSpec(  # "columns": plain and two-sided (no shared exponential)
        terms=(LSETerm(exclude=PairMask(self_offset=1)),),
        row_fn=row_fn,
        positive=positive,
        columns=True,
        col_fn=lambda st, sd: 0.3 * st.lse,
    )


@pytest.mark.parametrize("kind", ["plain", "weighted", "two_terms", "columns"])
def test_positive_statistic_every_path(kind):
    """``"ce"`` = lse_0 - u_i,positive(i) and its gradients on every path (dense, single sweep,
    two sweeps with full-width and with column tiles, where positives are read in a pre-pass)."""
    g = torch.Generator().manual_seed(7)
    A = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kappa = (1.5 + torch.rand(7, generator=g, dtype=torch.float64)).requires_grad_()
    positive = torch.tensor([0, 8, 5, 0, 2, 7, 1])  # never the excluded column i + 1
    spec = _positive_spec(kind, positive)
    u = kappa[:, None] * A @ B.T
    self_pair = torch.arange(9)[None, :] == torch.arange(7)[:, None] + 1
    x = u.masked_fill(self_pair, float("-inf"))
    if kind == "weighted":
        x = u + math.log(0.5)
    lse = torch.logsumexp(x, dim=1)
    rows = 0.7 * (lse - u[torch.arange(7), positive]) + 0.1 * lse
    if kind == "two_terms":
        rows = rows + 0.2 * torch.logsumexp(0.5 * u, dim=1)
    ref = rows.sum() + (0.3 * torch.logsumexp(x, dim=0).sum() if kind == "columns" else 0)
    gref = torch.autograd.grad(ref, [A, B, kappa])
    for backend, chunk, reduce in [
        ("dense", None, True),
        ("tiled", None, True),
        ("tiled", 3, True),
        ("tiled", None, False),
        ("tiled", 3, False),
    ]:
        got = contrast(A, B, spec, kappa, backend=backend, chunk_size=chunk, reduce=reduce)
        if not reduce:
            got = got[0].sum() + (0 if got[1] is None else got[1].sum())
        torch.testing.assert_close(got, ref, msg=f"{backend} {chunk} {reduce}")
        for a, b in zip(torch.autograd.grad(got, [A, B, kappa]), gref):
            torch.testing.assert_close(a, b, msg=f"{backend} {chunk} {reduce}")


@pytest.mark.parametrize("kind", ["plain", "weighted"])
def test_positive_cancels_exactly(kind):
    """A row whose only candidate is its positive has ce = 0 exactly in fp32 on every path:
    the positive logit is the very value reduced by the LSE (a separate dot product is not)."""
    g = torch.Generator().manual_seed(8)
    A, B = torch.randn(2, 6, 5, generator=g)
    positive = torch.tensor([3, 0, 5, 1, 2, 4])
    others = torch.stack([torch.tensor([j for j in range(6) if j != p]) for p in positive])
    w = None
    if kind == "weighted":
        keep = torch.zeros(6, 6)
        keep[torch.arange(6), positive] = 1
        w = lambda r0, r1, c0, c1: keep[r0:r1, c0:c1]  # noqa: E731
    exclude = PairMask(index=others) if w is None else PairMask()
    spec = RowSpec(
        terms=(LSETerm(exclude=exclude, weights=w),),
        row_fn=lambda st, sd: st.ce,
        positive=positive,
    )
    kappa = torch.tensor(10.0)
    for backend, chunk, reduce in [
        ("dense", None, False),
        ("tiled", 4, False),
        ("tiled", None, False),
        ("tiled", 2, False),
    ]:
        rows, _ = contrast(A, B, spec, kappa, backend=backend, chunk_size=chunk, reduce=reduce)
        assert torch.equal(rows, torch.zeros(6)), (backend, chunk, rows)
    for chunk in (None, 4):  # single sweep
        loss = contrast(A, B, spec, kappa, backend="tiled", chunk_size=chunk)
        assert float(loss) == 0.0


def test_positive_index_is_checked():
    A = torch.randn(3, 4)
    for bad in (torch.tensor([0, 1]), torch.tensor([0, 1, 3]), torch.tensor([0.0, 1.0, 2.0])):
        spec = RowSpec(row_fn=lambda st, sd: st.ce, positive=bad)
        with pytest.raises(ValueError, match="RowSpec.positive"):
            contrast(A, A, spec, torch.tensor(1.0))
    spec = RowSpec(terms=(LSETerm(r=2.0),), positive=torch.arange(3))
    with pytest.raises(ValueError, match="r = 1"):
        contrast(A, A, spec, torch.tensor(1.0))


def test_empty_reduction_has_zero_gradient_on_every_path():
    """A row whose every weight is 0 has lse = -inf and contributes no gradient; the dense path's
    autograd used to give NaN (0 * exp(-inf + inf)) for every input."""
    g = torch.Generator().manual_seed(9)
    A = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.ones(5, 6, dtype=torch.float64)
    w[2] = 0  # row 2: every weight 0 (ConR's rows without positives or confused negatives)
    spec = RowSpec(
        terms=(LSETerm(weights=lambda r0, r1, c0, c1: w[r0:r1, c0:c1]),),
        row_fn=lambda st, sd: torch.where(
            torch.isfinite(st.lse[0]), st.lse[0], torch.zeros_like(st.lse[0])
        ),
    )
    kappa = torch.tensor(2.0, dtype=torch.float64)
    want = torch.logsumexp(kappa * A[[0, 1, 3, 4]] @ B.T, dim=1).sum()
    gwant = torch.autograd.grad(want, [A, B])
    for backend, chunk in (("dense", None), ("tiled", None), ("tiled", 2)):
        got = contrast(A, B, spec, kappa, backend=backend, chunk_size=chunk)
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(got, [A, B]), gwant):
            torch.testing.assert_close(a, b)


def test_row_spec_is_frozen():
    spec = RowSpec(row_fn=lambda st, sd: st.lse[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.columns = True
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.row_fn = None
    two_sided = dataclasses.replace(spec, columns=True, col_fn=lambda st, sd: st.lse)
    assert two_sided.columns and not spec.columns


ENGINE_RUNS = [("dense", None), ("tiled", None), ("tiled", 3), ("tiled", 5)]


@pytest.mark.parametrize("reduce", [True, False], ids=["fused", "recompute"])
def test_row_fn_receives_a_statistics_record(reduce):
    """``row_fn`` reads attributes of a :class:`RowStatistics` (``col_fn`` of a
    :class:`ColumnStatistics`, whose log-sum-exp is ``.lse``) on every path, and the loss equals
    the dense reference."""
    g = torch.Generator().manual_seed(10)
    A = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kappa = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    seen = set()

    def row_fn(st, sd):
        assert isinstance(st, RowStatistics) and st.lse.shape[0] == 1
        assert st.ce is None and st.phi is None and st.tgt is None and st.mass is None
        seen.add("row")
        return 0.4 * st.lse[0]

    def col_fn(st, sd):
        assert isinstance(st, ColumnStatistics) and st.lse.dim() == 1
        assert st.tgt is None and st.mass is None
        seen.add("col")
        return 0.6 * st.lse

    for columns in (False, True):
        spec = RowSpec(
            terms=(LSETerm(exclude=PairMask(self_offset=1)),),
            row_fn=row_fn,
            columns=columns,
            col_fn=col_fn if columns else None,
        )
        u = kappa * A @ B.T
        x = u.masked_fill(torch.arange(9)[None, :] == torch.arange(7)[:, None] + 1, -math.inf)
        ref = 0.4 * torch.logsumexp(x, dim=1).sum()
        if columns:
            ref = ref + 0.6 * torch.logsumexp(x, dim=0).sum()
        gref = torch.autograd.grad(ref, [A, B, kappa])
        for backend, chunk in ENGINE_RUNS:
            got = contrast(A, B, spec, kappa, backend=backend, chunk_size=chunk, reduce=reduce)
            if not reduce:
                got = got[0].sum() + (got[1].sum() if columns else 0)
            torch.testing.assert_close(got, ref, msg=f"{backend} {chunk} {columns}")
            for a, b in zip(torch.autograd.grad(got, [A, B, kappa]), gref):
                torch.testing.assert_close(a, b, msg=f"{backend} {chunk} {columns}")
    assert seen == {"row", "col"}


def test_statistics_records_with_every_field():
    """Soft targets, the softplus term and ``positive`` reach ``row_fn``/``col_fn`` as record
    attributes, and the tiled paths match the dense one."""
    g = torch.Generator().manual_seed(11)
    A = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    P = torch.rand(6, 8, generator=g, dtype=torch.float64)
    kappa = torch.tensor(1.5, dtype=torch.float64)
    bias = torch.tensor(-0.5, dtype=torch.float64, requires_grad=True)
    spec = RowSpec(
        terms=(LSETerm(), LSETerm(r=0.5)),
        softplus_bias=bias,
        soft_targets=SoftTargets(lambda r0, r1, c0, c1: P[r0:r1, c0:c1]),
        positive=torch.tensor([1, 0, 7, 3, 3, 5]),
        row_fn=lambda st, sd: st.ce + 0.1 * st.lse[1] + 0.01 * st.phi - st.tgt / st.mass,
    )
    ref = contrast(A, B, spec, kappa, backend="dense")
    gref = torch.autograd.grad(ref, [A, B, bias])
    for backend, chunk in ENGINE_RUNS[1:]:
        for reduce in (True, False):
            got = contrast(A, B, spec, kappa, backend=backend, chunk_size=chunk, reduce=reduce)
            got = got if reduce else got[0].sum()
            torch.testing.assert_close(got, ref)
            for a, b in zip(torch.autograd.grad(got, [A, B, bias]), gref):
                torch.testing.assert_close(a, b)
    columns = dataclasses.replace(
        spec,
        positive=None,
        row_fn=lambda st, sd: st.lse[0] - st.tgt / st.mass,
        columns=True,
        col_fn=lambda st, sd: st.lse - st.tgt / st.mass,
    )
    ref = contrast(A, B, columns, kappa, backend="dense")
    for backend, chunk in ENGINE_RUNS[1:]:
        torch.testing.assert_close(
            contrast(A, B, columns, kappa, backend=backend, chunk_size=chunk), ref
        )


def _moment_problem(seed=12, N=9, M=600, d=4):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(M, d, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.rand(N, M, generator=g, dtype=torch.float64)
    W[W < 0.3] = 0
    W[3] = 0  # an empty row: lse = -inf, mom = 0, no gradient
    P = torch.rand(N, M, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (N,), generator=g), torch.randint(0, 4, (M,), generator=g)
    side = torch.randn(N, generator=g, dtype=torch.float64, requires_grad=True)
    return A, B, W, P, labels, side


def _dense_moment_loss(A, B, kappa, mask, w, r, P, side):
    """float64 reference: lse, mom = sum_j softmax(r u + log w)_ij u_ij, targets by autograd."""
    u = kappa * A @ B.T
    w = w.masked_fill(mask, 0)
    ok = (w > 0).any(1)  # empty rows reduced from zeros: no NaN in the reference's gradient
    lse = torch.logsumexp(torch.where(ok[:, None], r * u + torch.log(w), 0), 1)
    pi = torch.where(ok[:, None], w * torch.exp(r * u - torch.where(ok, lse, 0)[:, None]), 0)
    mom = (pi * u).sum(1)
    out = torch.where(ok, 0.3 * lse, 0) + torch.sin(mom) * side
    if P is not None:
        out = out + 0.2 * (P * u).sum(1) / P.sum(1)
    return out.sum()


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("soft", [False, True], ids=["no_targets", "targets"])
@pytest.mark.parametrize("labels", [False, True], ids=["self", "labels"])
@pytest.mark.parametrize("r", [1.0, 0.5])
def test_first_moment_statistic_every_path(monkeypatch, weights, soft, labels, r):
    """``RowSpec.moment``: ``mom = sum_j pi_ij u_ij`` under term 0's softmax (weights, label and
    self exclusions, ``r``) with soft targets beside it; values and gradients (anchors,
    candidates, kappa, side inputs) equal the float64 dense formula on the dense, single-sweep
    (in-cache route, several column chunks) and two-sweep (merged across column tiles) paths."""
    A, B, W, P, (lr, lc), side = _moment_problem()
    N, M = W.shape
    kappa = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(N, M, dtype=torch.bool)
    mask[torch.arange(N), torch.arange(N) + 2] = True
    if labels:
        mask |= lr[:, None] == lc[None, :]
    w = W if weights else torch.ones(N, M, dtype=torch.float64)
    want = _dense_moment_loss(A, B, kappa, mask, w, r, P if soft else None, side)
    gwant = torch.autograd.grad(want, [A, B, kappa, side])

    def row_fn(st, sd):
        assert st.mom is not None and st.mom.shape == st.lse[0].shape
        ok = torch.isfinite(st.lse[0])
        out = torch.where(ok, 0.3 * st.lse[0], 0) + torch.sin(st.mom) * sd["s"]
        return out if st.tgt is None else out + 0.2 * st.tgt / st.mass

    exclude = PairMask(
        self_offset=2,
        row_labels=lr if labels else None,
        col_labels=lc if labels else None,
        labels="same" if labels else None,
    )
    spec = RowSpec(
        terms=(
            LSETerm(
                r=r,
                exclude=exclude,
                weights=(lambda r0, r1, c0, c1: W[r0:r1, c0:c1]) if weights else None,
            ),
        ),
        soft_targets=SoftTargets(lambda r0, r1, c0, c1: P[r0:r1, c0:c1]) if soft else None,
        moment=True,
        row_fn=row_fn,
        row_side={"s": side},
    )
    assert not spec.plain
    runs = [("dense", None, True), ("tiled", None, True), ("tiled", 4, True)]
    runs += [("tiled", None, False), ("tiled", 4, False), ("tiled", 250, False)]
    for chunk_elems in (fused.CHUNK_ELEMS, 1000):  # 1000: chunks of 256 columns
        monkeypatch.setattr(fused, "CHUNK_ELEMS", chunk_elems)
        for backend, chunk, reduce in runs:
            got = contrast(A, B, spec, kappa, backend=backend, chunk_size=chunk, reduce=reduce)
            got = got if reduce else got[0].sum()
            msg = f"{backend} {chunk} {reduce} {chunk_elems}"
            torch.testing.assert_close(got, want, msg=msg)
            grads = torch.autograd.grad(got, [A, B, kappa, side])
            for a, b in zip(grads, gwant):
                torch.testing.assert_close(a, b, msg=msg)


def test_first_moment_gradcheck():
    g = torch.Generator().manual_seed(13)
    A = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kappa = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0)),),
        moment=True,
        row_fn=lambda st, sd: st.mom**2 - 0.5 * st.lse[0] * st.mom,
    )
    for backend, chunk, reduce in (("tiled", 2, True), ("tiled", None, True), ("tiled", 3, False)):

        def f(a, b, k, backend=backend, chunk=chunk, reduce=reduce):
            out = contrast(a, b, spec, k, backend=backend, chunk_size=chunk, reduce=reduce)
            return out if reduce else out[0]

        assert torch.autograd.gradcheck(f, (A, B, kappa))
    with pytest.raises(ValueError, match="moment"):
        contrast(A, B, RowSpec(terms=(), moment=True, row_fn=lambda st, sd: st.mom), kappa)


def test_single_term_route_is_in_cache_and_stable(monkeypatch):
    """Weighted, labelled and soft-target single-term specs take the in-cache route of the
    single sweep (no full-width tile statistics), and fp32 stays finite at kappa = 100 when the
    largest logit of a row has weight 0 (the row maximum is taken over kept pairs only)."""
    g = torch.Generator().manual_seed(14)
    A = F.normalize(torch.randn(300, 8, generator=g), dim=1).requires_grad_()
    B = F.normalize(torch.randn(300, 8, generator=g), dim=1).requires_grad_()
    kappa = torch.tensor(100.0)
    far = torch.ones(300, 300)
    far[torch.arange(300), torch.arange(300)] = 0  # drop the (large) diagonal logits
    spec = RowSpec(
        terms=(LSETerm(weights=lambda r0, r1, c0, c1: far[r0:r1, c0:c1]),),
        moment=True,
        row_fn=lambda st, sd: st.lse[0] - st.mom,
    )
    A64, B64 = A.detach().double().requires_grad_(), B.detach().double().requires_grad_()
    want = contrast(A64, B64, spec, kappa.double(), backend="dense")
    gwant = torch.autograd.grad(want, [A64, B64])

    def no_full_tiles(*args, **kwargs):
        raise AssertionError("full-width tile statistics on the single-term route")

    dense = contrast(A, B, spec, kappa, backend="dense")  # fp32 on materialised logits
    gdense = torch.autograd.grad(dense, [A, B])
    monkeypatch.setattr(fused, "tile_stats", no_full_tiles)
    got = contrast(A, B, spec, kappa, backend="tiled")
    assert torch.isfinite(got)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    for a, b, c in zip(torch.autograd.grad(got, [A, B]), gwant, gdense):
        # |u| ~ 100: the moment's gradient pi (1 + u - mom) is as exact as fp32 logits allow
        err, dense_err = (a.double() - b).abs().max(), (c.double() - b).abs().max()
        assert err <= max(2 * dense_err, 1e-4), (err, dense_err)


@pytest.mark.parametrize("per_row_kappa", [False, True], ids=["scalar_kappa", "row_kappa"])
def test_plain_rows_in_cache_route_for_reduce_false(monkeypatch, per_row_kappa):
    """``reduce=False`` on a plain one-sided spec (MV-InfoNCE, uniformity: rows combined after
    the sweep) takes the in-cache route (forward sweep, recomputed in backward): per-row values
    and gradients of anchors, candidates and kappa equal the dense path, in one and in several
    column chunks, with self and index exclusions and a row whose every pair is excluded."""
    g = torch.Generator().manual_seed(15)
    N, M = 7, 600
    A = torch.randn(N, 4, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(M, 4, generator=g, dtype=torch.float64, requires_grad=True)
    shape = (N,) if per_row_kappa else ()
    kappa = (torch.rand(shape, generator=g, dtype=torch.float64) + 1).requires_grad_()
    index = torch.randint(0, M, (N, 3), generator=g)
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=5, index=index)),),
        row_fn=lambda st, sd: st.lse[0],
    )
    assert fused.plain_rows(spec)
    coef = torch.randn(N, generator=g, dtype=torch.float64)
    want = contrast(A, B, spec, kappa, backend="dense", reduce=False)[0]
    gwant = torch.autograd.grad((want * coef).sum(), [A, B, kappa])
    calls = []
    real = fused.PlainRows.apply
    monkeypatch.setattr(fused.PlainRows, "apply", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(dispatch.PlainRows, "apply", fused.PlainRows.apply)
    for chunk_elems in (fused.CHUNK_ELEMS, 1000):
        monkeypatch.setattr(fused, "CHUNK_ELEMS", chunk_elems)
        got, cols = contrast(A, B, spec, kappa, backend="tiled", reduce=False)
        assert cols is None
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad((got * coef).sum(), [A, B, kappa]), gwant):
            torch.testing.assert_close(a, b)
    assert len(calls) == 2
    # an empty row: lse = -inf, no gradient
    lonely = RowSpec(terms=(LSETerm(exclude=PairMask(self_offset=0)),), row_fn=spec.row_fn)
    one = A[:1].detach().requires_grad_()
    rows, _ = contrast(
        one, one, lonely, torch.tensor(2.0, dtype=torch.float64), reduce=False, backend="tiled"
    )
    assert torch.isneginf(rows).all()
    (grad,) = torch.autograd.grad(
        torch.where(torch.isinf(rows), 0.0, rows).sum() + 0 * one.sum(), [one]
    )
    assert torch.equal(grad, torch.zeros_like(grad))


def test_row_groups_couple_consecutive_rows_in_one_sweep():
    """``RowSpec.row_group``: the single sweep's row blocks hold whole groups (block sizes that
    do not divide the group are rounded up), so ``row_fn`` may combine a group's rows, here a
    log-sum-exp over each group of 3 (MV-InfoNCE's views); every path equals the dense one, and
    a group size that does not divide N is refused."""
    g = torch.Generator().manual_seed(16)
    A = torch.randn(12, 4, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(40, 4, generator=g, dtype=torch.float64, requires_grad=True)
    kappa = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    side = torch.randn(12, generator=g, dtype=torch.float64, requires_grad=True)
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=2)),),
        row_fn=lambda st, sd: torch.logsumexp(st.lse[0].view(-1, 3), 1) * sd["s"].view(-1, 3)[:, 0],
        row_side={"s": side},
        row_group=3,
    )
    want = contrast(A, B, spec, kappa, backend="dense")
    gwant = torch.autograd.grad(want, [A, B, kappa, side])
    for chunk in (None, 2, 4, 5):
        got = contrast(A, B, spec, kappa, backend="tiled", chunk_size=chunk)
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(got, [A, B, kappa, side]), gwant):
            torch.testing.assert_close(a, b)
        rows, _ = contrast(A, B, spec, kappa, backend="tiled", chunk_size=chunk, reduce=False)
        assert rows.shape == (4,)
        torch.testing.assert_close(rows.sum(), want)
    with pytest.raises(ValueError, match="row_group"):
        contrast(A[:10], B, dataclasses.replace(spec, row_group=3), kappa)


def _softmax_targets_problem(seed=17, N=9, M=600, d=4):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(M, d, generator=g, dtype=torch.float64, requires_grad=True)
    # base-2 teacher logits: some pairs without target (-inf), row 4 without any target
    T2 = 3 * torch.randn(N, M, generator=g, dtype=torch.float64)
    T2[torch.rand(N, M, generator=g) < 0.2] = float("-inf")
    T2[4] = float("-inf")
    W = torch.rand(N, M, generator=g, dtype=torch.float64)
    W[W < 0.2] = 0
    positive = torch.randint(0, M, (N,), generator=g)
    side = torch.randn(N, generator=g, dtype=torch.float64, requires_grad=True)
    return A, B, T2, W, positive, side


def _dense_softmax_targets_loss(A, B, kappa, T2, w, positive, side):
    """float64 reference: p = softmax_2(T2) (0 on a row of -inf), tgt = sum_j p u, mass,
    ce = lse - u_pos with lse over the kept, weighted pairs."""
    u = kappa * A @ B.T
    lse = torch.logsumexp(u + torch.log(w), 1)
    ok = torch.isfinite(T2).any(1)
    p = torch.where(ok[:, None], torch.softmax(T2 * math.log(2.0), 1), 0)
    tgt, mass = (p * u).sum(1), p.sum(1)
    ce = lse - u[torch.arange(len(u)), positive]
    return (0.3 * ce + 0.5 * (mass * lse - tgt) + torch.sin(tgt) * side).sum()


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("returns", ["out", "new"])
def test_softmax_soft_targets_with_positive_on_the_single_term_route(monkeypatch, weights, returns):
    """``SoftTargets.logits`` (targets a row softmax of base-2 logits, normalised in the sweep)
    beside ``RowSpec.positive`` on the in-cache single-term route: values and gradients
    (anchors, candidates, kappa, side) equal the float64 dense formula in one and in several
    column chunks and row blocks, with pairs and a whole row without targets; ``logits`` is
    called once per chunk and ``fn`` (the dense path's targets) never; a tile ``logits``
    returns instead of filling ``out`` is copied, not overwritten; candidates without
    gradient give the anchors the same gradient."""
    A, B, T2, W, positive, side = _softmax_targets_problem()
    N, M = T2.shape
    T2_before = T2.clone()
    kappa = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    w = W if weights else torch.ones(N, M, dtype=torch.float64)
    want = _dense_softmax_targets_loss(A, B, kappa, T2, w, positive, side)
    gwant = torch.autograd.grad(want, [A, B, kappa, side])
    calls = {"logits": 0, "fn": 0}

    def logits(r0, r1, c0, c1, out):
        calls["logits"] += 1
        assert out.shape == (r1 - r0, c1 - c0) and out.is_contiguous()
        if returns == "out":
            return out.copy_(T2[r0:r1, c0:c1])
        return T2[r0:r1, c0:c1]  # the caller's own data: must not be written

    def fn(r0, r1, c0, c1):
        calls["fn"] += 1
        t = T2[r0:r1] * math.log(2.0)
        p = torch.softmax(t, 1)
        return torch.where(torch.isfinite(t).any(1, keepdim=True), p, 0)[:, c0:c1]

    def row_fn(st, sd):
        assert st.ce is not None and st.tgt is not None and st.mass is not None
        return 0.3 * st.ce + 0.5 * (st.mass * st.lse[0] - st.tgt) + torch.sin(st.tgt) * sd["s"]

    spec = RowSpec(
        terms=(LSETerm(weights=(lambda r0, r1, c0, c1: W[r0:r1, c0:c1]) if weights else None),),
        soft_targets=SoftTargets(fn, logits=logits),
        positive=positive,
        row_fn=row_fn,
        row_side={"s": side},
    )
    assert fused.single_term(spec)
    for chunk_elems in (fused.CHUNK_ELEMS, 1000):  # 1000: chunks of 256 columns
        monkeypatch.setattr(fused, "CHUNK_ELEMS", chunk_elems)
        for chunk in (None, 4):
            calls.update(logits=0, fn=0)
            got = contrast(A, B, spec, kappa, backend="tiled", chunk_size=chunk)
            rows = math.ceil(N / (chunk or N))
            assert calls == {
                "logits": rows * len(fused.column_chunks(M, min(chunk or N, N))),
                "fn": 0,
            }
            msg = f"{chunk} {chunk_elems}"
            torch.testing.assert_close(got, want, msg=msg)
            grads = torch.autograd.grad(got, [A, B, kappa, side])
            for a, b in zip(grads, gwant):
                torch.testing.assert_close(a, b, msg=msg)
            # candidates without gradient (a teacher's, a queue): the anchors' gradient stays
            got = contrast(A, B.detach(), spec, kappa, backend="tiled", chunk_size=chunk)
            torch.testing.assert_close(torch.autograd.grad(got, [A])[0], gwant[0], msg=msg)
    assert torch.equal(T2, T2_before)
    dense = contrast(A, B, spec, kappa, backend="dense")  # fn's targets
    assert calls["fn"] > 0
    torch.testing.assert_close(dense, want)


def test_softmax_soft_targets_gradcheck():
    A, B, T2, _, positive, side = _softmax_targets_problem(seed=18, N=5, M=7, d=3)
    spec = RowSpec(
        soft_targets=SoftTargets(
            lambda r0, r1, c0, c1: torch.zeros(r1 - r0, c1 - c0, dtype=T2.dtype),  # unused
            logits=lambda r0, r1, c0, c1, out: out.copy_(T2[r0:r1, c0:c1]),
        ),
        positive=positive,
        row_fn=lambda st, sd: 0.3 * st.ce + 0.5 * (st.mass * st.lse[0] - st.tgt) + st.tgt**2,
    )
    kappa = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    for chunk in (2, None):

        def f(a, b, k, chunk=chunk):
            return contrast(a, b, spec, k, backend="tiled", chunk_size=chunk)

        assert torch.autograd.gradcheck(f, (A, B, kappa))


def _no_full_tiles(*args, **kwargs):
    raise AssertionError("full-width tile statistics instead of the in-cache route")


@pytest.mark.parametrize("per_row_kappa", [False, True], ids=["scalar_kappa", "row_kappa"])
def test_multi_term_route_is_in_cache_and_exact(monkeypatch, per_row_kappa):
    """Several plain log-sum-exps with per-term r and one shared sparse exclusion (HCL's two
    terms) take the in-cache multi-term route: values and gradients of anchors, candidates and
    kappa equal a dense float64 reference, in one and in several column chunks and row blocks."""
    g = torch.Generator().manual_seed(21)
    N, M = 9, 600
    A = torch.randn(N, 4, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(M, 4, generator=g, dtype=torch.float64, requires_grad=True)
    shape = (N,) if per_row_kappa else ()
    kappa = (torch.rand(shape, generator=g, dtype=torch.float64) + 1).requires_grad_()
    ex = PairMask(self_offset=3, index=torch.randint(0, M, (N, 2), generator=g))
    w = torch.randn(N, generator=g, dtype=torch.float64)
    spec = RowSpec(
        terms=(LSETerm(r=1.5, exclude=ex), LSETerm(r=0.5, exclude=ex), LSETerm(r=3.0, exclude=ex)),
        row_fn=lambda st, sd: sd["w"] * st.lse[0] - 0.7 * st.lse[1] + 0.01 * st.lse[2] ** 2,
        row_side={"w": w},
    )
    assert fused.multi_term(spec) and not fused.single_term(spec)
    # independent reference: the dense logits, masked by hand
    u = (A * (kappa if kappa.dim() == 0 else kappa[:, None])) @ B.t()
    mask = torch.zeros(N, M, dtype=torch.bool)
    mask[torch.arange(N), torch.arange(N) + 3] = True
    mask[torch.arange(N)[:, None], ex.index] = True
    lse = [torch.logsumexp((r * u).masked_fill(mask, -math.inf), dim=1) for r in (1.5, 0.5, 3.0)]
    want = (w * lse[0] - 0.7 * lse[1] + 0.01 * lse[2] ** 2).sum()
    gwant = torch.autograd.grad(want, [A, B, kappa])
    monkeypatch.setattr(fused, "tile_stats", _no_full_tiles)
    for chunk_elems, chunk_size in ((fused.CHUNK_ELEMS, None), (1000, None), (1000, 4)):
        monkeypatch.setattr(fused, "CHUNK_ELEMS", chunk_elems)
        got = contrast(A, B, spec, kappa, backend="tiled", chunk_size=chunk_size)
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(got, [A, B, kappa]), gwant):
            torch.testing.assert_close(a, b)
    # an empty row: every lse is -inf, and its gradient is 0 (not NaN)
    lonely = RowSpec(
        terms=(LSETerm(r=2.0, exclude=PairMask(self_offset=0)),) * 2,
        row_fn=lambda st, sd: torch.where(torch.isinf(st.lse), 0.0, st.lse).sum(dim=0),
    )
    one = A[:1].detach().requires_grad_()
    out = contrast(one, one, lonely, torch.tensor(2.0, dtype=torch.float64), backend="tiled")
    (grad,) = torch.autograd.grad(out + 0 * one.sum(), [one])
    assert torch.equal(grad, torch.zeros_like(grad))


def test_multi_term_route_stable_at_large_kappa():
    """fp32 at kappa = 100 with r = 2: the chunk shifts keep every term finite and equal to the
    float64 reference."""
    g = torch.Generator().manual_seed(22)
    A = F.normalize(torch.randn(200, 8, generator=g), dim=1).requires_grad_()
    B = F.normalize(torch.randn(300, 8, generator=g), dim=1).requires_grad_()
    ex = PairMask(self_offset=0)
    spec = RowSpec(
        terms=(LSETerm(r=2.0, exclude=ex), LSETerm(r=1.0, exclude=ex)),
        row_fn=lambda st, sd: st.lse[0] - st.lse[1],
    )
    kappa = torch.tensor(100.0)
    A64, B64 = A.detach().double().requires_grad_(), B.detach().double().requires_grad_()
    want = contrast(A64, B64, spec, kappa.double(), backend="dense")
    gwant = torch.autograd.grad(want, [A64, B64])
    dense = contrast(A, B, spec, kappa, backend="dense")  # fp32 on materialised logits
    gdense = torch.autograd.grad(dense, [A, B])
    got = contrast(A, B, spec, kappa, backend="tiled", chunk_size=64)
    assert torch.isfinite(got)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-3)
    for a, b, c in zip(torch.autograd.grad(got, [A, B]), gwant, gdense):
        # |u| ~ 100: as exact as fp32 logits allow (within twice the dense path's error)
        err, dense_err = (a.double() - b).abs().max(), (c.double() - b).abs().max()
        assert err <= max(2 * dense_err, 1e-4), (err, dense_err)


def test_multi_term_gradcheck():
    g = torch.Generator().manual_seed(23)
    A = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ex = PairMask(index=torch.tensor([1, 2, 0, 6, 3]))
    spec = RowSpec(
        terms=(LSETerm(r=1.2, exclude=ex), LSETerm(r=0.3, exclude=ex)),
        row_fn=lambda st, sd: st.lse[0] - 2.0 * st.lse[1] + 0.1 * st.lse[0] ** 2,
    )
    kappa = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    for chunk in (2, None):

        def f(a, b, k, chunk=chunk):
            return contrast(a, b, spec, k, backend="tiled", chunk_size=chunk)

        assert torch.autograd.gradcheck(f, (A, B, kappa))


@pytest.mark.parametrize("per_row_kappa", [False, True], ids=["scalar_kappa", "row_kappa"])
def test_softplus_route_is_in_cache_and_exact(monkeypatch, per_row_kappa):
    """A softplus-only spec (SigLIP) takes the in-cache softplus route: values and gradients of
    anchors, candidates, kappa and the bias equal a dense float64 reference, in one and in
    several column chunks and row blocks."""
    g = torch.Generator().manual_seed(24)
    N, M = 9, 600
    A = torch.randn(N, 4, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(M, 4, generator=g, dtype=torch.float64, requires_grad=True)
    shape = (N,) if per_row_kappa else ()
    kappa = (torch.rand(shape, generator=g, dtype=torch.float64) + 1).requires_grad_()
    bias = torch.tensor(-2.5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(N, generator=g, dtype=torch.float64)
    spec = RowSpec(
        terms=(),
        softplus_bias=bias,
        row_fn=lambda st, sd: sd["w"] * st.phi + 0.01 * st.phi**2,
        row_side={"w": w},
    )
    assert fused.softplus_only(spec)
    u = (A * (kappa if kappa.dim() == 0 else kappa[:, None])) @ B.t()
    phi = F.softplus(u + bias).sum(dim=1)
    want = (w * phi + 0.01 * phi**2).sum()
    gwant = torch.autograd.grad(want, [A, B, kappa, bias])
    monkeypatch.setattr(fused, "tile_stats", _no_full_tiles)
    for chunk_elems, chunk_size in ((fused.CHUNK_ELEMS, None), (1000, None), (1000, 4)):
        monkeypatch.setattr(fused, "CHUNK_ELEMS", chunk_elems)
        got = contrast(A, B, spec, kappa, backend="tiled", chunk_size=chunk_size)
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(got, [A, B, kappa, bias]), gwant):
            torch.testing.assert_close(a, b)


def test_softplus_gradcheck():
    g = torch.Generator().manual_seed(25)
    A = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kappa = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    for chunk in (2, None):

        def f(a, b, k, bb, chunk=chunk):
            spec = RowSpec(terms=(), softplus_bias=bb, row_fn=lambda st, sd: st.phi.sin())
            return contrast(a, b, spec, k, backend="tiled", chunk_size=chunk)

        assert torch.autograd.gradcheck(f, (A, B, kappa, bias))
