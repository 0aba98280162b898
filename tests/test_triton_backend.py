"""GPU backend (Triton kernels): values and gradients against the float64 dense references and the
torch engine; fallback decisions. On CPU through Triton's interpreter at small shapes; on a CUDA
device the same checks at large shapes."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (optional test dependency)", allow_module_level=True)
if not CUDA:
    # read by triton.jit when the kernels module is decorated: must be set before it is imported
    os.environ["TRITON_INTERPRET"] = "1"

import contrastkit as ck  # noqa: E402
import contrastkit.engine as engine  # noqa: E402
from contrastkit.engine import LSETerm, PairMask, RowSpec, SoftTargets, contrast  # noqa: E402
from contrastkit.engine.gpu import EmbeddingSoftTargets, covers, maybe_contrast  # noqa: E402
from contrastkit.engine.gpu import backend as gb  # noqa: E402

import reference as ref  # noqa: E402

DEV = "cuda" if CUDA else "cpu"
# fp32 kernels against float64 references
RTOL, ATOL = 2e-5, 2e-6
SHAPES = [(1, 8), (17, 33), (64, 8), (130, 33)]


@pytest.fixture(autouse=True)
def _exact_fp32():
    if CUDA:
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32 = old
    else:
        yield


@pytest.fixture
def on_kernels(monkeypatch):
    """Route every objective's engine call to the kernels; fail if a spec is not covered."""
    calls = []

    def kernel_contrast(anchors, candidates, spec, kappa, *, reduce=True, **_):
        ok, why = covers(spec, anchors, candidates, kappa)
        assert ok, why
        calls.append(spec)
        return gb.contrast_triton(anchors, candidates, spec, kappa, reduce=reduce)

    monkeypatch.setattr(engine, "contrast", kernel_contrast)
    return calls


def _randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _leaves(*xs):
    return [x.detach().clone().to(DEV).requires_grad_() for x in xs]


def _close(got, want, rtol=RTOL, atol=ATOL, msg=""):
    torch.testing.assert_close(
        got.detach().double().cpu(), want.detach().double().cpu(), rtol=rtol, atol=atol, msg=msg
    )


def _check(fn, ref_fn, inputs, rtol=RTOL, atol=ATOL):
    """``fn`` (kernels, fp32) and ``ref_fn`` (float64 on CPU) agree in value and gradients."""
    got_in = _leaves(*inputs)
    want_in = [x.detach().double().clone().requires_grad_() for x in inputs]
    got, want = fn(*got_in), ref_fn(*want_in)
    _close(got, want, rtol, atol, "value")
    gg = torch.autograd.grad(got, got_in)
    gw = torch.autograd.grad(want, want_in)
    for i, (a, b) in enumerate(zip(gg, gw)):
        _close(a, b, rtol, atol * 10, f"gradient of input {i}")


# ---- objectives on the kernels vs the float64 references -----------------------------------


@pytest.mark.parametrize("N,d", SHAPES)
def test_info_nce(on_kernels, N, d):
    q, k = _randn(N, d, seed=1), _randn(N + 3, d, seed=2)  # M = N + 3: more keys than queries
    t = torch.tensor(0.07)
    _check(
        lambda q, k, t: ck.info_nce(q, k, temperature=t),
        lambda q, k, t: ref.info_nce(q, k, temperature=t).mean(),
        (q, k, t),
    )
    assert on_kernels and not on_kernels[-1].columns


@pytest.mark.parametrize("N,d", [(2, 8)] + SHAPES[1:])  # N = 1: no negatives, a ValueError
def test_clip_symmetric_with_learnable_scale(on_kernels, N, d):
    x, y = _randn(N, d, seed=3), _randn(N, d, seed=4)
    s = torch.tensor(14.0)
    _check(
        lambda x, y, s: ck.clip_loss(x, y, scale=s),
        lambda x, y, s: ref.clip(x, y, s),
        (x, y, s),
    )
    assert on_kernels[-1].columns  # one fused pass for rows and columns


def test_clip_module_logit_scale_gradient(on_kernels):
    """CLIPLoss owns logit_scale = log(1/tau): its gradient flows through kappa = exp(.)."""
    x, y = _randn(40, 16, seed=5), _randn(40, 16, seed=6)
    mod = ck.CLIPLoss(init_temperature=0.05).to(DEV)
    xg, yg = _leaves(x, y)
    loss = mod(xg, yg)
    loss.backward()
    ls = mod.logit_scale.detach().double().cpu().requires_grad_()
    want = ref.clip(x.double().requires_grad_(), y.double(), ls.exp())
    want.backward()
    _close(loss, want)
    _close(mod.logit_scale.grad, ls.grad, atol=1e-5)


@pytest.mark.parametrize("N,d", [(2, 8), (17, 33), (64, 8)])
def test_dcl_positive_excluded(on_kernels, N, d):
    z1, z2 = _randn(N, d, seed=7), _randn(N, d, seed=8)
    _check(
        lambda a, b: ck.dcl(a, b, temperature=0.1),
        lambda a, b: ref.dcl(a, b, temperature=0.1).mean(),
        (z1, z2),
    )
    ex = on_kernels[-1].terms[0].exclude
    assert ex.index is not None and ex.self_offset == 0


@pytest.mark.parametrize("N,d", [(17, 33), (64, 8)])
def test_nt_xent(on_kernels, N, d):
    z1, z2 = _randn(N, d, seed=9), _randn(N, d, seed=10)
    _check(
        lambda a, b: ck.nt_xent(a, b, temperature=0.2),
        lambda a, b: ref.nt_xent(a, b, temperature=0.2).mean(),
        (z1, z2),
    )


@pytest.mark.parametrize("N,V,d", [(17, 2, 33), (40, 1, 8)])
def test_supcon(on_kernels, N, V, d):
    f = _randn(N, V, d, seed=11)
    labels = torch.randint(0, 5, (N,), generator=torch.Generator().manual_seed(0))

    def want(x):
        rows, has = ref.supcon(x, labels, temperature=0.1)
        return rows[has].mean()

    _check(lambda x: ck.supcon(x, labels.to(DEV), temperature=0.1), want, (f,))


def test_per_row_temperature(on_kernels):
    N, M, d = 33, 45, 16
    q, k = _randn(N, d, seed=12), _randn(M, d, seed=13)
    t = 0.05 + torch.rand(N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def want(q, k, t):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / t[:, None]
        return F.cross_entropy(logits, torch.arange(N))

    _check(lambda q, k, t: ck.info_nce(q, k, temperature=t), want, (q, k, t.float()))


@pytest.mark.parametrize("N,d", [(17, 33), (64, 8)])
def test_cwcl_soft_targets_from_embeddings(N, d):
    """CWCL's targets as a second pair of embeddings (closed-form linear terms, kernel LSEs)."""
    p, q = _randn(N, d, seed=14), _randn(N, d, seed=15)
    t0 = torch.tensor(0.1)

    def got(q, t):
        pn, qn = F.normalize(p.to(DEV), dim=1), F.normalize(q, dim=1)
        w = 0.5 / N
        spec = RowSpec(
            soft_targets=EmbeddingSoftTargets(pn, pn, 0.5, 0.5),
            row_fn=lambda st, sd: w * (st.lse[0] - st.tgt / st.mass),
            columns=True,
            col_fn=lambda st, sd: w * (st.lse - st.tgt / st.mass),
        )
        return gb.contrast_triton(pn, qn, spec, 1.0 / t)

    _check(got, lambda q, t: ref.cwcl(p.double(), q, t).mean(), (q, t0))
    # the same targets on the torch engine (per-tile fn of the same object) agree too
    pn, qn = F.normalize(p, dim=1), F.normalize(q, dim=1)
    spec = RowSpec(
        soft_targets=EmbeddingSoftTargets(pn, pn, 0.5, 0.5),
        row_fn=lambda st, sd: st.lse[0] - st.tgt / st.mass,
        columns=True,
        col_fn=lambda st, sd: st.lse - st.tgt / st.mass,
    )
    a = contrast(pn, qn, spec, torch.tensor(10.0), backend="tiled", chunk_size=7)
    _close(gb.contrast_triton(pn.to(DEV), qn.to(DEV), spec, torch.tensor(10.0, device=DEV)), a)


# ---- engine-level specs: masks compared in the tile, statistics, edge cases -----------------


def _engine_pair(spec_fn, A, B, kap, reduce=True, config=None, atol=1e-5):
    """(kernels, torch two-sweep path) with values and gradients in A, B, kappa."""
    outs = []
    for run in ("kernels", "torch"):
        if run == "kernels":
            a, b, k = _leaves(A, B, kap)
        else:
            a, b, k = (x.detach().clone().requires_grad_() for x in (A, B, kap))
        spec = spec_fn(a.device)
        if run == "kernels":
            val = gb.contrast_triton(a, b, spec, k, reduce=reduce, config=config)
        else:
            val = contrast(a, b, spec, k, reduce=reduce, backend="tiled", chunk_size=5)
        if not reduce:
            val = val[0].sum() + (val[1].sum() if val[1] is not None else 0)
        outs.append((val, torch.autograd.grad(val, [a, b, k])))
    (v1, g1), (v2, g2) = outs
    _close(v1, v2, rtol=1e-5, atol=atol)
    for x, y in zip(g1, g2):
        _close(x, y, rtol=1e-5, atol=atol)


def _labels(n, seed):
    return torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(seed))


SMALL_TILES = gb.Config(fwd=(16, 16, 16), bwd=(16, 16, 16), stages=1)
SMALL = gb.Config(fwd=(16, 16, 16), bwd=(16, 16, 16), ds=16, stages=1)  # d in 16-wide slices


@pytest.mark.parametrize("mode", ["same", "different"])
def test_label_masks_compared_in_tile(mode):
    N, M, d = 37, 34, 12  # ragged against 16-wide tiles
    rl, cl = _labels(N, 0), _labels(M, 1)
    w = torch.linspace(0.5, 1.5, N)
    h = torch.linspace(1.0, 0.2, M)

    def spec(dev):
        ex = PairMask(self_offset=3, row_labels=rl.to(dev), col_labels=cl.to(dev), labels=mode)
        return RowSpec(
            terms=(LSETerm(exclude=ex),),
            row_fn=lambda st, sd: w.to(dev) * st.lse[0],
            columns=True,
            col_fn=lambda st, sd: h.to(dev) * st.lse,
        )

    A, B = F.normalize(_randn(N, d, seed=20), dim=1), F.normalize(_randn(M, d, seed=21), dim=1)
    _engine_pair(spec, A, B, torch.tensor(5.0), config=SMALL_TILES)


def test_index_exclusions_2d_per_row_kappa_reduce_none():
    N, M, d = 29, 41, 20
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(-1, M, (N, 3), generator=g)  # -1 entries are ignored
    kap = 2.0 + 8 * torch.rand(N, generator=g)

    def spec(dev):
        ex = PairMask(index=idx.to(dev))
        return RowSpec(terms=(LSETerm(exclude=ex),), row_fn=lambda st, sd: st.lse[0])

    A, B = F.normalize(_randn(N, d, seed=22), dim=1), F.normalize(_randn(M, d, seed=23), dim=1)
    _engine_pair(spec, A, B, kap, reduce=False, config=SMALL)


def test_empty_rows_and_columns_are_minus_inf():
    """Unique labels with labels='different': every pair is excluded; the kernels return -inf
    (as the torch engine) and zero gradients."""
    N, d = 9, 8
    lab = torch.arange(N)
    spec = RowSpec(
        terms=(
            LSETerm(exclude=PairMask(row_labels=lab, col_labels=lab + 100, labels="different")),
        ),
        row_fn=lambda st, sd: st.lse[0],
        columns=True,
        col_fn=lambda st, sd: st.lse,
    )
    (A,) = _leaves(_randn(N, d, seed=24))
    k = torch.tensor(3.0, device=DEV)
    rows, cols = gb.contrast_triton(A, A.detach(), spec, k, reduce=False)
    assert torch.isneginf(rows).all() and torch.isneginf(cols).all()


@pytest.mark.parametrize("offset", [0, 5, -4])
def test_diagonal_statistic_in_kernel(offset):
    """``diagonal=o``: the paired logit u_i,i+o (and per column u_j-o,j) from the kernels, its
    gradient folded into the backward; per-row kappa with gradient."""
    N, M, d = 37, 45, 20
    A = F.normalize(_randn(N, d, seed=40), dim=1)
    B = F.normalize(_randn(M, d, seed=41), dim=1)
    kap = 3.0 + 5 * torch.rand(N, generator=torch.Generator().manual_seed(2))
    w, h = torch.linspace(0.5, 1.5, N), torch.linspace(1.0, 0.1, M)

    def got(a, b, k):
        dev = a.device
        spec = RowSpec(
            row_fn=lambda st, sd: w.to(dev) * (st.lse[0] - st.diag),
            columns=True,
            col_fn=lambda st, sd: h.to(dev) * (st.lse - st.diag),
        )
        return gb.contrast_triton(a, b, spec, k, diagonal=offset, config=SMALL_TILES)

    def want(a, b, k):
        u = k[:, None] * a @ b.T
        i = torch.arange(N)
        on = (i + offset >= 0) & (i + offset < M)
        diag = torch.zeros(N, dtype=u.dtype).masked_scatter(on, u[i[on], i[on] + offset])
        j = torch.arange(M)
        onc = (j - offset >= 0) & (j - offset < N)
        cdiag = torch.zeros(M, dtype=u.dtype).masked_scatter(onc, u[j[onc] - offset, j[onc]])
        rows = w.double() * (torch.logsumexp(u, 1) - diag)
        return rows.sum() + (h.double() * (torch.logsumexp(u, 0) - cdiag)).sum()

    _check(got, want, (A, B, kap))


@pytest.mark.filterwarnings("ignore:overflow encountered")  # the interpreter's numpy exp2
def test_column_shift_fallback_is_exact(monkeypatch):
    """Anti-aligned pairs at logit scale 100: the known logit of every column is far below the
    column maximum, so the fused column sums overflow or underflow; those columns are
    recomputed exactly."""
    hits = []
    exact = gb._col_lse_exact

    def spy(*args):
        hits.append(args[4].numel())
        return exact(*args)

    monkeypatch.setattr(gb, "_col_lse_exact", spy)
    N, d = 40, 16
    x = F.normalize(_randn(N, d, seed=25), dim=1)
    y = -x.clone()
    y[: N // 2] = F.normalize(_randn(N // 2, d, seed=26), dim=1) * 1e-3  # tiny norms
    s = torch.tensor(100.0)

    def spec(dev):
        return RowSpec(row_fn=lambda st, sd: st.lse[0], columns=True, col_fn=lambda st, sd: st.lse)

    # gradients reach 200 here: fp32 rounding of either path is ~1e-5 of that
    _engine_pair(spec, x, y, s, atol=2e-3)
    assert hits and hits[0] > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_fp32_accumulation(dtype):
    N, d = 48, 33
    x = F.normalize(_randn(N, d, seed=27), dim=1).to(dtype)
    y = F.normalize(_randn(N, d, seed=28), dim=1).to(dtype)
    a, b = _leaves(x, y)
    k = torch.tensor(20.0, device=DEV)
    spec = RowSpec(
        row_fn=lambda st, sd: (st.lse[0] - st.diag) / N,
        columns=True,
        col_fn=lambda st, sd: (st.lse - st.diag) / N,
    )
    loss = gb.contrast_triton(a, b, spec, k, diagonal=0)
    assert loss.dtype == torch.float32
    loss.backward()
    assert a.grad.dtype == dtype and b.grad.dtype == dtype
    xr, yr = x.double().requires_grad_(), y.double().requires_grad_()
    logits = 20.0 * xr @ yr.T  # the same rounded inputs in float64, used as given
    lab = torch.arange(N)
    want = F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)
    want.backward()
    # bf16 inputs are exact; the softmax weights are rounded to the input dtype for the
    # gradient GEMMs (as FlashAttention does): gradients agree to that dtype's precision
    _close(loss, want, rtol=1e-3, atol=1e-3)
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    _close(a.grad, xr.grad, rtol=tol, atol=tol)
    _close(b.grad, yr.grad, rtol=tol, atol=tol)


def test_cwcl_objective_on_kernels(on_kernels):
    """ck.cwcl hands the engine CLIP's two log-sum-exps (its soft-target terms are closed-form
    sums outside the engine): the kernels take it (on_kernels asserts coverage), values and
    gradients as the float64 reference."""
    N, d = 33, 20
    p, q, tg = _randn(N, d, seed=60), _randn(N, d, seed=61), _randn(N, 12, seed=62)
    t0 = torch.tensor(0.1)
    _check(
        lambda q, t: ck.cwcl(p.to(DEV), q, temperature=t),
        lambda q, t: ref.cwcl(p.double(), q, t).mean(),
        (q, t0),
    )
    assert on_kernels[-1].soft_targets is None and on_kernels[-1].columns
    _check(
        lambda q: ck.cwcl(p.to(DEV), q, tg.to(DEV), temperature=0.2),
        lambda q: ref.cwcl(p.double(), q, 0.2, targets=tg.double()).mean(),
        (q,),
    )


# ---- library objectives keep fp16/bf16 for the kernels (statistics in fp32) ------------------

HALF_OBJECTIVES = {
    "info_nce": (lambda a, b: ck.info_nce(a, b, temperature=0.1), False),
    "info_nce_queue": (lambda a, b: ck.info_nce(a[:20], b[:20], b[20:], temperature=0.1), False),
    "info_nce_moco": (
        lambda a, b: ck.info_nce(a[:20], b[:20], b[20:], temperature=0.1, in_batch_negatives=False),
        False,
    ),
    "clip": (lambda a, b: ck.clip_loss(a, b, scale=10.0), True),
    "nt_xent": (lambda a, b: ck.nt_xent(a, b, temperature=0.2), False),
    "dcl": (lambda a, b: ck.dcl(a, b, temperature=0.2), False),
    "supcon": (
        lambda a, b: ck.supcon(torch.stack([a, b], 1), torch.arange(40, device=a.device) % 7),
        False,
    ),
    "cwcl": (lambda a, b: ck.cwcl(a, b, temperature=0.1), True),
}


@pytest.fixture
def half_on_kernels(monkeypatch, on_kernels):
    """The objectives' GPU decision (``_common.half_path``) as on a CUDA device with a problem
    above the dense threshold, and a spy on the dtypes the kernels receive."""
    import contrastkit.engine.dispatch as dispatch
    import contrastkit.objective.inputs as common

    monkeypatch.setattr(common, "gpu_device", lambda x: True)
    monkeypatch.setattr(dispatch, "DENSE_MAX_PAIRS", 0)
    monkeypatch.setattr(dispatch, "DENSE_MAX_PAIRS_COLUMNS", -1)
    dtypes = []
    real = gb.contrast_triton

    def spy(anchors, candidates, *a, **k):
        dtypes.append((anchors.dtype, candidates.dtype))
        return real(anchors, candidates, *a, **k)

    monkeypatch.setattr(gb, "contrast_triton", spy)
    return dtypes


@pytest.mark.parametrize("name", sorted(HALF_OBJECTIVES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_objectives_keep_half_inputs_on_kernels(half_on_kernels, name, dtype):
    """bf16/fp16 embeddings reach the kernels in their dtype (normalised in fp32, rounded once);
    loss and gradients agree with the fp32 torch engine on the same (rounded) inputs within that
    dtype's precision, the loss is fp32 and the gradients come back in the input dtype."""
    fn, _ = HALF_OBJECTIVES[name]
    x = _randn(40, 24, seed=70).to(dtype)
    y = _randn(40, 24, seed=71).to(dtype)
    a, b = _leaves(x, y)
    loss = fn(a, b)
    assert half_on_kernels and all(dt == (dtype, dtype) for dt in half_on_kernels), half_on_kernels
    assert loss.dtype == torch.float32
    ga, gb_ = torch.autograd.grad(loss, [a, b], allow_unused=True)
    # fp32 reference: the same rounded inputs, torch engine (the fixture's patch is bypassed)
    xr, yr = (t.detach().float().clone().requires_grad_() for t in (x, y))
    want = _torch_engine(fn, xr, yr)
    wa, wb = torch.autograd.grad(want, [xr, yr], allow_unused=True)
    # inputs rounded to the half dtype after normalisation, softmax weights rounded for the
    # gradient GEMMs (measured: bf16 loss 2e-3, gradients 1e-2 of their maximum; fp16 1e-4, 1e-3)
    bf16 = dtype == torch.bfloat16
    _close(loss, want, rtol=1e-3 if bf16 else 1e-4, atol=5e-3 if bf16 else 5e-4)
    tol = 2e-2 if bf16 else 3e-3
    for got, ref_g in ((ga, wa), (gb_, wb)):
        if ref_g is None:
            continue
        assert got.dtype == dtype
        _close(got, ref_g, rtol=tol, atol=tol * float(ref_g.abs().max()))


def _torch_engine(fn, *inputs):
    """``fn`` on the torch engine, with the monkeypatched kernel routing switched off."""
    import contrastkit.engine.dispatch as dispatch

    saved = engine.contrast
    engine.contrast = dispatch.contrast
    try:
        return fn(*inputs)
    finally:
        engine.contrast = saved


def test_gradcache_and_autocast_reach_the_kernels_in_half(half_on_kernels):
    """GradCache hands its cached embeddings (the encoder's dtype and device) to the loss
    unchanged: bf16 embeddings reach the kernels in bf16, and the encoder gets the gradient of
    the plain step. Under autocast (the training CLI's bf16 precision) the same holds, and
    CWCL's closed-form target statistics stay fp32."""
    from contrastkit.gradcache import GradCache

    torch.manual_seed(0)
    enc = torch.nn.Linear(12, 16).to(DEV)
    x, y = torch.randn(40, 12, device=DEV), torch.randn(40, 12, device=DEV)

    def bf16_enc(t):
        return enc(t).to(torch.bfloat16)

    loss = GradCache([bf16_enc, bf16_enc], ck.CLIPLoss().to(DEV), chunk_size=16).step(x, y)
    assert half_on_kernels and all(d == (torch.bfloat16,) * 2 for d in half_on_kernels)
    got = enc.weight.grad.clone()
    enc.zero_grad()
    want = ck.CLIPLoss().to(DEV)(bf16_enc(x), bf16_enc(y))
    want.backward()
    _close(loss, want, rtol=1e-6, atol=1e-6)
    _close(got, enc.weight.grad, rtol=1e-3, atol=1e-4)
    half_on_kernels.clear()
    with torch.autocast(DEV, dtype=torch.bfloat16):
        loss = ck.cwcl(enc(x), enc(y), temperature=0.1)
    assert half_on_kernels == [(torch.bfloat16, torch.bfloat16)]
    want = ck.cwcl(enc(x).bfloat16().float(), enc(y).bfloat16().float(), temperature=0.1)
    _close(loss, want, rtol=1e-3, atol=5e-3)
    t = F.normalize(x[:, :8], dim=1)
    with torch.autocast(DEV, dtype=torch.bfloat16):
        a, b = enc(x), enc(y)
        k = torch.tensor(10.0, device=DEV)
        stats = gb._target_stats(a, b, k, EmbeddingSoftTargets(t, t), True)
    assert all(v.dtype == torch.float32 for v in stats)  # tgt, mass, col_tgt, col_mass


def test_half_path_decision(monkeypatch):
    """Who keeps fp16/bf16: CUDA tensors (patched here), Triton enabled, backend='auto' without
    chunk_size, above the dense threshold, one dtype; everything else is upcast as before."""
    import contrastkit.objective.inputs as common

    x = torch.zeros(4, 8, dtype=torch.bfloat16)
    eng = {"backend": "auto", "chunk_size": None}
    big = (1024, 1024)
    assert not common.half_path(eng, *big, False, x)  # CPU tensors: never
    monkeypatch.setattr(common, "gpu_device", lambda t: True)
    assert common.half_path(eng, *big, False, x)
    assert common.half_path(eng, *big, False, x.half(), x.half())
    assert not common.half_path(eng, *big, False, x, x.half())  # mixed dtypes
    assert not common.half_path(eng, *big, False, x.float())  # fp32: nothing to keep
    assert not common.half_path({"backend": "tiled", "chunk_size": None}, *big, False, x)
    assert not common.half_path({"backend": "auto", "chunk_size": 64}, *big, False, x)
    assert not common.half_path(eng, 256, 256, False, x)  # dense path: fp32 as before
    assert not common.half_path(eng, 1024, 1024, True, x)  # two-sided dense up to 1024^2
    assert common.half_path(eng, 1025, 1024, True, x)
    monkeypatch.setenv("CONTRASTKIT_TRITON", "0")
    assert not common.half_path(eng, *big, False, x)
    # prepare: kept only when asked, normalised in fp32 and rounded once
    z = _randn(5, 8, seed=72).to(torch.bfloat16) * 3
    kept = common.prepare(z, True, keep_half=True)
    assert kept.dtype == torch.bfloat16
    assert torch.equal(kept, F.normalize(z.float(), dim=-1).to(torch.bfloat16))
    assert common.prepare(z, True).dtype == torch.float32
    assert common.prepare(z.double(), True, keep_half=True).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_row_dot_half_is_fp32_and_keeps_half_inputs(dtype):
    """Positive logits of half rows: fp32, the same values and gradients as the fp32 expression,
    and the autograd graph holds the half inputs only."""
    import contrastkit.objective.inputs as common

    a0, b0 = _randn(30, 16, seed=76).to(dtype), _randn(30, 16, seed=77).to(dtype)
    a, b = _leaves(a0, b0)
    got = common.row_dot(a, b)
    assert got.dtype == torch.float32
    saved = got.grad_fn.saved_tensors
    assert all(t.dtype == dtype for t in saved) and len(saved) == 2
    g = torch.linspace(-1, 1, 30, device=DEV)
    ga, gb_ = torch.autograd.grad(got, [a, b], g)
    a2, b2 = _leaves(a0, b0)
    want = (a2.float() * b2.float()).sum(-1)
    wa, wb = torch.autograd.grad(want, [a2, b2], g)
    assert torch.equal(got, want) and torch.equal(ga, wa) and torch.equal(gb_, wb)
    assert ga.dtype == dtype


@pytest.mark.skipif(CUDA, reason="checks the CPU behaviour of the objectives")
def test_cpu_half_inputs_still_upcast(monkeypatch):
    """On CPU (no patch), bf16 embeddings reach the engine in fp32, as before."""
    import contrastkit.engine.dispatch as dispatch

    seen = []
    real = dispatch.contrast

    def spy(anchors, candidates, *a, **k):
        seen.append(anchors.dtype)
        return real(anchors, candidates, *a, **k)

    monkeypatch.setattr(engine, "contrast", spy)
    x = _randn(600, 8, seed=73).to(torch.bfloat16)
    ck.clip_loss(x, x.flip(0))
    ck.cwcl(x, x.flip(0))
    assert seen == [torch.float32, torch.float32]


# ---- autotuning: candidates filtered for sm_90, one timed choice per shape class -------------


def test_tile_candidates_and_filter():
    for dt in (torch.bfloat16, torch.float16, torch.float32):
        for kind in ("fwd", "bwd"):
            cands = gb.tile_candidates(kind, 512, dt)
            assert cands[0] == gb.CANDIDATES[gb._dtype_class(dt)][kind][0]  # the seed first
            assert len(cands) >= 2 and all(gb.fits(kind, c, 512, dt) for c in cands)
            assert gb.tile_candidates(kind, 512, dt, interpret=True) == [gb.INTERPRET_PARTS[kind]]
    # the former fixed defaults are the seeds
    assert gb.default_config(512, False, torch.bfloat16) == gb.Config(bwd_stages=3)
    fp32 = gb.default_config(512, False, torch.float32)
    assert (fp32.fwd, fp32.bwd, fp32.ds) == ((64, 64, 32), (64, 32, 32), None)
    # too much shared memory: 4 stages of 128 x 128 x 256 bf16 operand tiles (512 KiB)
    assert not gb.fits("fwd", ((128, 128, 256), 16, 4), 512, torch.bfloat16)
    # more accumulators per thread than the seed: these spilled (ptxas, sm_90: 256 and 1636
    # bytes of spill stores)
    assert not gb.fits("fwd", ((128, 128, 64), 8, 3), 512, torch.bfloat16)
    assert not gb.fits("bwd", ((64, 64, 16), None, 8, 3), 512, torch.float32)
    assert not gb.fits("bwd", ((128, 64, 64), None, 8, 3), 512, torch.bfloat16)  # 128x256 acc
    # 512-wide gradient slices: rejected at d = 512, the seed's accumulators at d = 64
    assert not gb.fits("bwd", ((64, 64, 64), 512, 8, 3), 512, torch.bfloat16)
    assert gb.fits("bwd", ((64, 64, 64), 512, 8, 3), 64, torch.bfloat16)
    # shape classes: powers of two in N and M, padded d, flags
    k = gb.shape_class("fwd", 1000, 4096, 100, torch.bfloat16, True)
    assert k == gb.shape_class("fwd", 1024, 3000, 128, torch.bfloat16, True)
    assert k != gb.shape_class("fwd", 1025, 4096, 100, torch.bfloat16, True)
    assert k != gb.shape_class("fwd", 1000, 4096, 100, torch.float16, True)
    assert k != gb.shape_class("fwd", 1000, 4096, 100, torch.bfloat16, False)


def test_autotune_picks_fastest_and_caches(monkeypatch):
    monkeypatch.setattr(gb, "TUNED", {})
    times = {"a": 3.0, "b": 1.0, "c": 2.0, "bad": None}
    runs = []

    def run(part):
        runs.append(part)
        if times[part] is None:
            raise RuntimeError("out of resources")

    def timer(fn):
        fn()
        return times[runs[-1]]

    assert gb.autotune(("k", 1), ["a", "bad", "b", "c"], run, timer) == "b"
    assert runs == ["a", "bad", "b", "c"]
    assert gb.autotune(("k", 1), ["a", "bad", "b", "c"], run, timer) == "b"  # cached
    assert len(runs) == 4
    assert gb.autotune(("k", 2), ["only"], run, timer) == "only" and len(runs) == 4  # untimed
    assert gb.autotune(("k", 3), ["bad", "bad"], run, timer) == "bad"  # all fail: the seed
    assert gb.TUNED == {("k", 1): "b", ("k", 2): "only", ("k", 3): "bad"}


def test_autotuned_launches_on_slices_are_exact(monkeypatch):
    """The timing closures (forward on a slice of rows, backward on slices of rows and columns)
    run in the interpreter with two candidates; the chosen configuration gives the torch
    engine's values and gradients, and each shape class is tuned once."""
    monkeypatch.setattr(gb, "TUNED", {})
    monkeypatch.setattr(gb, "TUNE_ROWS", 20)
    parts = {
        "fwd": [((16, 16, 16), 8, 1), ((32, 32, 32), 8, 1)],
        "bwd": [((16, 16, 16), 16, 8, 1), ((32, 32, 32), 64, 8, 1)],
    }
    monkeypatch.setattr(gb, "tile_candidates", lambda kind, D, dt, interpret=False: parts[kind])
    timed = []

    def timer(fn):
        fn()
        timed.append(1)
        return float(len(timed) % 2)  # the second candidate of each kind is faster

    monkeypatch.setattr(gb, "_cuda_time", timer)
    N, M, d = 37, 45, 20
    lab_r, lab_c = _labels(N, 5), _labels(M, 6)

    def spec(dev):
        ex = PairMask(
            self_offset=1,
            index=(torch.arange(N, device=dev) * 7) % M,
            row_labels=lab_r.to(dev),
            col_labels=lab_c.to(dev),
            labels="same",
        )
        return RowSpec(
            terms=(LSETerm(exclude=ex),),
            row_fn=lambda st, sd: st.lse[0],
            columns=True,
            col_fn=lambda st, sd: 0.5 * st.lse,
        )

    A, B = F.normalize(_randn(N, d, seed=74), dim=1), F.normalize(_randn(M, d, seed=75), dim=1)
    _engine_pair(spec, A, B, torch.tensor(4.0))
    assert len(timed) == 4  # two forward and two backward candidates, timed once
    assert sorted(v for v in gb.TUNED.values()) == sorted([parts["fwd"][1], parts["bwd"][1]])
    _engine_pair(spec, A, B, torch.tensor(4.0))  # same shape class: cached
    assert len(timed) == 4


# ---- fallback decision and the engine hook --------------------------------------------------


def test_covers_decision():
    A, B = torch.randn(6, 4, device=DEV), torch.randn(7, 4, device=DEV)
    k = torch.tensor(2.0, device=DEV)
    yes = [
        RowSpec(),
        RowSpec(columns=True),
        RowSpec(terms=(LSETerm(exclude=PairMask(self_offset=0, index=torch.arange(6))),)),
        RowSpec(terms=(LSETerm(exclude=PairMask(index=torch.zeros(6, 8, dtype=torch.long))),)),
        RowSpec(
            terms=(
                LSETerm(
                    exclude=PairMask(
                        row_labels=torch.arange(6), col_labels=torch.arange(7), labels="same"
                    )
                ),
            )
        ),
        RowSpec(soft_targets=EmbeddingSoftTargets(A, B), columns=True),
    ]
    for spec in yes:
        assert covers(spec, A, B, k) == (True, None)
    assert covers(RowSpec(), A, B, torch.rand(6, device=DEV))[0]
    no = {
        "2 log-sum-exp terms": RowSpec(terms=(LSETerm(), LSETerm(r=2.0))),
        "r = 2.0": RowSpec(terms=(LSETerm(r=2.0),)),
        "per-pair weights": RowSpec(terms=(LSETerm(weights=lambda *a: torch.ones(1)),)),
        "dense pair mask": RowSpec(
            terms=(LSETerm(exclude=PairMask(dense=torch.zeros(6, 7, dtype=torch.bool))),)
        ),
        "9 excluded indices": RowSpec(
            terms=(LSETerm(exclude=PairMask(index=torch.zeros(6, 9, dtype=torch.long))),)
        ),
        "softplus": RowSpec(softplus_bias=torch.tensor(0.0)),
        "per-tile function": RowSpec(soft_targets=SoftTargets(lambda *a: torch.ones(1))),
    }
    for why, spec in no.items():
        ok, reason = covers(spec, A, B, k)
        assert not ok and why in reason, (why, reason)
    ok, reason = covers(RowSpec(), A.double(), B.double(), k)
    assert not ok and "float64" in reason
    ok, reason = covers(RowSpec(), A, B, torch.rand(5, device=DEV))
    assert not ok and "kappa" in reason
    # the hook gives uncovered specs back to the torch path
    assert maybe_contrast(A, B, no["softplus"], k, True) is None
    with pytest.raises(ValueError, match="do not cover this problem: .*softplus"):
        gb.contrast_triton(A, B, no["softplus"], k)
    with pytest.raises(ValueError, match="precision"):
        gb.contrast_triton(A, B, RowSpec(row_fn=lambda st, sd: st.lse[0]), k, precision="x")


@pytest.mark.skipif(CUDA, reason="checks the CPU behaviour of the engine hook")
def test_cpu_contrast_never_reaches_the_kernels(monkeypatch):
    import contrastkit.engine.gpu as gpu

    def boom(*a, **k):
        raise AssertionError("the GPU hook was called for CPU tensors")

    monkeypatch.setattr(gpu, "maybe_contrast", boom)
    x, y = torch.randn(600, 8), torch.randn(600, 8)  # above the dense threshold: torch tiled
    got = ck.clip_loss(x, y, scale=10.0)
    torch.testing.assert_close(got, ck.clip_loss(x, y, scale=10.0, backend="dense"))


# ---- CUDA: large shapes (skipped without a GPU) ---------------------------------------------

cuda_only = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (large shapes)")


@cuda_only
@pytest.mark.parametrize("N,d", [(4096, 128), (8191, 512)])
def test_cuda_auto_routes_to_kernels_large(N, d):
    import contrastkit.engine.gpu as gpu

    calls = []
    real = gpu.maybe_contrast

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append(out is not None)
        return out

    gpu.maybe_contrast = spy
    try:
        x, y = _randn(N, d, seed=30), _randn(N, d, seed=31)
        _check(
            lambda x, y: ck.clip_loss(x, y, scale=50.0), lambda x, y: ref.clip(x, y, 50.0), (x, y)
        )
        _check(
            lambda x, y: ck.info_nce(x, y, temperature=0.05),
            lambda x, y: ref.info_nce(x, y, temperature=0.05).mean(),
            (x, y),
        )
    finally:
        gpu.maybe_contrast = real
    assert calls and all(calls)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_clip_every_dtype_vs_float64(dtype):
    """CLIP with the paired logits from the kernels, every input dtype, learnable scale: large
    on a GPU (N = 16,384, d = 256), small in the interpreter."""
    N, d = (16384, 256) if CUDA else (48, 40)
    x = F.normalize(_randn(N, d, seed=32), dim=1).to(dtype)
    y = F.normalize(_randn(N, d, seed=33), dim=1).to(dtype)
    a, b = _leaves(x, y)
    k = torch.tensor(14.0, device=DEV, requires_grad=True)
    spec = RowSpec(
        row_fn=lambda st, sd: (st.lse[0] - st.diag) / (2 * N),
        columns=True,
        col_fn=lambda st, sd: (st.lse - st.diag) / (2 * N),
    )
    loss = gb.contrast_triton(a, b, spec, k, diagonal=0)
    loss.backward()
    xr = x.double().to(DEV).requires_grad_()  # the same (rounded) inputs in float64
    yr = y.double().to(DEV).requires_grad_()
    kr = torch.tensor(14.0, dtype=torch.float64, device=DEV, requires_grad=True)
    logits = kr * xr @ yr.T
    lab = torch.arange(N, device=DEV)
    want = (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)) / 2
    want.backward()
    # gradients: fp32 exact; fp16/bf16 round the softmax weights of the gradient GEMMs and
    # store the gradient in the input dtype
    tol = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}[dtype]
    _close(loss, want, rtol=1e-5, atol=1e-5)
    for got, ref_g in ((a.grad, xr.grad), (b.grad, yr.grad)):
        _close(got, ref_g, rtol=tol, atol=tol * float(ref_g.abs().max()))
    _close(k.grad, kr.grad, rtol=1e-4, atol=1e-5)


# ---- the GPU benchmark script: loss definitions agree; no GPU -> clear message, status 2 -----


def _bench():
    import importlib.util as iu
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_triton.py"
    spec = iu.spec_from_file_location("bench_triton", path)
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("kind", ["infonce", "clip"])
def test_bench_losses_agree(kind):
    bench = _bench()
    x = F.normalize(_randn(40, 16, seed=50), dim=1)
    y = F.normalize(_randn(40, 16, seed=51), dim=1)
    vals = []
    for method in (f"ck-{kind}", f"dense-{kind}"):
        q, k = _leaves(x, y)
        t = torch.tensor(2.0, device=DEV, requires_grad=True)
        loss = bench._loss_fn(method, q, k, t, bench.parse_config(bench.SWEEP[0]))()
        vals.append((loss, torch.autograd.grad(loss, [q, k, t])))
    _close(vals[0][0], vals[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(vals[0][1], vals[1][1]):
        _close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(CUDA, reason="checks the message printed without a GPU")
def test_bench_without_gpu_exits_with_message(capsys):
    assert _bench().main(["--n", "1024"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


# ---- the kernels compile for an H100 (sm_90) with Triton's own ptxas, no GPU needed -----------

_COMPILE = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from contrastkit.engine.gpu import kernels as K
from contrastkit.engine.gpu.backend import _ds_eff, tile_candidates
import re, subprocess, tempfile
from triton.backends.nvidia.compiler import get_ptxas

SPILL_LIMIT = 32  # bytes of spill stores ptxas may report per kernel (the seeds: at most 24)

INTS = ("N", "M", "D", "sa", "sb", "sda", "sdb", "idx_stride", "self_off", "diag_off", "n_sel")
D = 512  # the widest gradient slices (256): the largest accumulators of every candidate
for dt, tdt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
    masks = dict(HAS_SELF=True, P=2, LABELS=2, PREC="ieee", UPCAST=False)
    jobs = []
    for (bm, bn, bk), warps, stages in tile_candidates("fwd", D, tdt):
        fwd = dict(masks, BM=bm, BN=bn, BK=bk)
        jobs.append((K._fwd_kernel, dict(fwd, COLUMNS=True, DIAG=True), warps, stages))
        jobs.append((K._col_kernel, fwd, warps, stages))
    for (bm, bn, bk), ds, warps, stages in tile_candidates("bwd", D, tdt):
        bwd = dict(masks, BM=bm, BN=bn, BK=bk, BDS=_ds_eff(ds, D), COLUMNS=True, DIAG=True)
        jobs.append((K._bwd_a_kernel, dict(bwd, KGRAD=True), warps, stages))
        jobs.append((K._bwd_b_kernel, bwd, warps, stages))
    for fn, consts, warps, stages in jobs:
        sig = {}
        for a in fn.arg_names:
            if a in consts:
                sig[a] = "constexpr"
            elif a in INTS:
                sig[a] = "i32"
            elif a in ("IDX", "RL", "CL", "COLS"):
                sig[a] = "*i64"
            else:
                sig[a] = "*" + dt if a in ("A", "B", "DA", "DB") else "*fp32"
        opts = {"num_warps": warps, "num_stages": stages}
        src = ASTSource(fn, sig, consts)
        out = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
        assert out.asm["cubin"], fn.__name__
        name = (fn.__name__, dt, consts["BM"], consts["BN"], consts["BK"], warps, stages)
        with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
            f.write(out.asm["ptx"])
            f.flush()
            cmd = [get_ptxas(90).path, "-arch=sm_90a", "-v", f.name, "-o", os.devnull]
            report = subprocess.run(cmd, capture_output=True, text=True).stderr
        stores = [int(x) for x in re.findall(r"(\d+) bytes spill stores", report)]
        # the exact column kernel (a rare fallback for unsafe column shifts) is exempt: it
        # spills with the forward tiles (424 bytes for the bf16 seed)
        ok = fn is K._col_kernel or (stores and max(stores) <= SPILL_LIMIT)
        assert ok, (name, report[-2000:])
        print("compiled", *name, "spill stores", max(stores), flush=True)
    print("jobs", len(jobs), flush=True)
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    """The interpreter does not run Triton's compiler (it missed a non-constexpr global once):
    build every kernel, in every autotuning candidate configuration, to an sm_90 cubin in a
    clean process."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-c", _COMPILE], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = sum(
        2 * (len(gb.tile_candidates("fwd", 512, dt)) + len(gb.tile_candidates("bwd", 512, dt)))
        for dt in (torch.bfloat16, torch.float32)
    )
    assert proc.stdout.count("compiled") == expected >= 8
