"""Multi-view and multi-modal objectives: MV-InfoNCE, MV-DHEL, Symile, alignment / uniformity,
CLIP + alignment + uniformity. Engine (every path, small tiles) == dense references written from
the official code's formulas; closed-form oracles; invariances; gradcheck; bad input;
one API style (twins, reductions, aliases, exactness)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import contrastkit as ck
from contrastkit.losses.infonce.clip import clip
from contrastkit.losses.multiview import (
    MVDHEL,
    Alignment,
    CLIPAlignUniform,
    CrossUniformity,
    MVInfoNCE,
    Symile,
    Uniformity,
    alignment,
    clip_align_uniform,
    clip_align_uniform_terms,
    cross_uniformity,
    mv_dhel,
    mv_info_nce,
    symile,
    uniformity,
)
from contrastkit.metrics import geometry

ENGINES = [
    {"backend": "dense"},
    {"backend": "tiled"},
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled", "chunk_size": 64},
    {"backend": "auto"},
]


def rnd(*shape, seed=0, dtype=torch.float64, grad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    return x.requires_grad_(grad)


# ------------------------------------------------------------------------------------------
# dense references (plain torch on materialised matrices, official formulas)
# ------------------------------------------------------------------------------------------
def ref_mv_info_nce(views, tau):
    """pakoromilas/Multi-View-CL MVINFONCE: exp-sums over the full (VN, VN) matrix."""
    V, N, d = views.shape
    z = F.normalize(views.reshape(V * N, d), dim=1)
    sim = torch.exp(z @ z.T / tau)
    sim = sim.masked_select(~torch.eye(V * N, dtype=torch.bool)).view(V * N, -1)
    den = torch.cat(torch.split(sim, N), dim=1).sum(-1)
    zv = z.view(V, N, d)
    pos = 0
    for a in range(V):
        for b in range(a + 1, V):
            pos = pos + torch.exp((zv[a] * zv[b]).sum(-1) / tau)
    return -torch.log(2 * pos / den)


def ref_mv_dhel(views, tau):
    V, N, d = views.shape
    zv = F.normalize(views, dim=-1)
    neg = []
    for a in range(V):
        s = torch.exp(zv[a] @ zv[a].T / tau)
        neg.append(s.masked_select(~torch.eye(N, dtype=torch.bool)).view(N, -1).sum(-1))
    pos = 0
    for a in range(V):
        for b in range(a + 1, V):
            pos = pos + torch.exp((zv[a] * zv[b]).sum(-1) / tau)
    return -torch.log(pos / torch.stack(neg).prod(0))


def ref_uniformity(x, t=2.0, normalize=True):
    x = F.normalize(x, dim=-1) if normalize else x
    n = x.shape[0]
    sq = torch.cdist(x, x).pow(2)
    off = ~torch.eye(n, dtype=torch.bool)
    return torch.log(torch.exp(-t * sq[off]).mean())


def ref_cross_uniformity(x, y, t=2.0):
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    sq = (x[:, None] - y[None]).pow(2).sum(-1)
    off = ~torch.eye(x.shape[0], dtype=torch.bool)
    return torch.log(torch.exp(-t * sq[off]).mean())


def ref_symile(reps, t, sampling="n"):
    """rajesh-lab/symile Symile.forward, transcribed (global-RNG permutations, same order)."""
    N = reps[0].shape[0]
    losses = []
    for i, r in enumerate(reps):
        others = [x for j, x in enumerate(reps) if j != i]
        if sampling == "n":
            c = torch.ones_like(r)
            for o in others:
                c = c * o[torch.randperm(N)]
            logits = r @ c.T
            p = r.clone()
            for o in others:
                p = p * o
            logits = torch.where(torch.eye(N) > 0.5, p.sum(1), logits)
        else:
            y, z = others
            prods = []
            for _ in range(N):
                prods.append(y * z)
                z = torch.roll(z, shifts=1, dims=0)
            logits = r @ torch.cat(prods).T
        losses.append(F.cross_entropy(t * logits, torch.arange(N)))
    return sum(losses) / len(losses)


def ref_clip(x, y, t):
    logits = t * F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T
    lab = torch.arange(x.shape[0])
    return 0.5 * (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab))


# ------------------------------------------------------------------------------------------
# engine == dense references, values and gradients
# ------------------------------------------------------------------------------------------
def _unit(reps):
    return [F.normalize(x, dim=-1) for x in reps]


def _sym_inputs(N, d, M=3, seed=0):
    return [
        F.normalize(rnd(N, d, seed=seed + m, grad=False), dim=-1).requires_grad_() for m in range(M)
    ]


CASES = {
    "mv_info_nce": (
        lambda N, d: (rnd(3, N, d),),
        lambda x, **e: mv_info_nce(x, temperature=0.3, **e),
        lambda x: ref_mv_info_nce(x, 0.3).mean(),
    ),
    "mv_info_nce_v2": (
        lambda N, d: (rnd(2, N, d, seed=4),),
        lambda x, **e: mv_info_nce(x, temperature=0.5, **e),
        lambda x: ref_mv_info_nce(x, 0.5).mean(),
    ),
    "mv_dhel": (
        lambda N, d: (rnd(4, N, d, seed=1),),
        lambda x, **e: mv_dhel(x, temperature=0.25, **e),
        lambda x: ref_mv_dhel(x, 0.25).mean(),
    ),
    "uniformity": (
        lambda N, d: (rnd(N, d, seed=2),),
        lambda x, **e: uniformity(x, **e),
        lambda x: ref_uniformity(x),
    ),
    "uniformity_pair_t3": (
        lambda N, d: (rnd(N, d, seed=3), rnd(N, d, seed=4)),
        lambda x, y, **e: uniformity(x, y, potential=3.0, **e),
        lambda x, y: 0.5 * (ref_uniformity(x, 3.0) + ref_uniformity(y, 3.0)),
    ),
    "uniformity_unnormalized": (
        lambda N, d: (0.4 * rnd(N, d, seed=5, grad=False).requires_grad_(),),
        lambda x, **e: uniformity(x, normalize=False, **e),
        lambda x: ref_uniformity(x, normalize=False),
    ),
    "cross_uniformity": (
        lambda N, d: (rnd(N, d, seed=6), rnd(N, d, seed=7)),
        lambda x, y, **e: cross_uniformity(x, y, **e),
        lambda x, y: ref_cross_uniformity(x, y),
    ),
    "cuaxu": (
        lambda N, d: (rnd(N, d, seed=8), rnd(N, d, seed=9)),
        lambda x, y, **e: clip_align_uniform(x, y, temperature=0.5, cross_uniformity=True, **e),
        lambda x, y: (
            ref_clip(x, y, 2.0)
            + (F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).pow(2).sum(-1).mean()
            + 0.5 * (ref_uniformity(x) + ref_uniformity(y))
            + ref_cross_uniformity(x, y)
        ),
    ),
    "symile_n": (
        lambda N, d: tuple(_sym_inputs(N, d)),
        lambda *r, **e: (torch.manual_seed(11), symile(list(r), scale=5.0, **e))[1],
        lambda *r: (torch.manual_seed(11), ref_symile(_unit(r), 5.0))[1],
    ),
    "symile_n_squared": (
        lambda N, d: tuple(_sym_inputs(N, d, seed=3)),
        lambda *r, **e: symile(list(r), scale=4.0, negative_sampling="n_squared", **e),
        lambda *r: ref_symile(_unit(r), 4.0, "n_squared"),
    ),
}
NAMES = list(CASES)


def _grads(loss, args):
    return torch.autograd.grad(loss, [a for a in args if a.requires_grad])


# tile size 1 only on the smallest shape (every tile boundary; the two-sweep path loops in Python)
SHAPES = {(2, 3): ENGINES, (7, 5): ENGINES[:2] + ENGINES[3:], (12, 16): ENGINES[3:5]}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("N,d", list(SHAPES))
def test_engine_matches_dense_reference_fp64(name, N, d):
    make, fn, ref = CASES[name]
    args = make(N, d)
    want = ref(*args)
    want_g = _grads(want, args)
    for eng in SHAPES[(N, d)]:
        got = fn(*args, **eng)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=f"{name} {eng}")
        for g, w in zip(_grads(got, args), want_g):
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10, msg=f"{name} {eng} grad")


@pytest.mark.parametrize("name", NAMES)
def test_tiled_equals_dense_fp32(name):
    make, fn, _ = CASES[name]
    args = [a.detach().float().requires_grad_() for a in make(19, 12)]
    dense = fn(*args, backend="dense")
    dense_g = _grads(dense, args)
    for chunk in (None, 8):
        tiled = fn(*args, backend="tiled", chunk_size=chunk)
        torch.testing.assert_close(tiled, dense, rtol=2e-5, atol=2e-5)
        for g, w in zip(_grads(tiled, args), dense_g):
            assert float((g - w).abs().max() / w.abs().max().clamp(min=1e-6)) <= 2e-5, name


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    make, fn, _ = CASES[name]
    args = make(4, 3)
    assert torch.autograd.gradcheck(
        lambda *xs: fn(*xs, backend="tiled", chunk_size=2), args, eps=1e-6, atol=1e-6
    )


def test_gradcheck_learnable_temperature_and_scale():
    x = rnd(3, 4, 3)
    tau = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    for fn in (mv_info_nce, mv_dhel):

        def f(x, t, fn=fn):
            return fn(x, temperature=t, backend="tiled", chunk_size=2)

        assert torch.autograd.gradcheck(f, (x, tau))
    reps = _sym_inputs(4, 3)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    perms = "identity"
    assert torch.autograd.gradcheck(
        lambda a, b, c, s: symile(
            [a, b, c], scale=s, permutations=perms, backend="tiled", chunk_size=2
        ),
        (*reps, scale),
    )


@pytest.mark.parametrize("fn", [mv_info_nce, mv_dhel])
def test_multiview_reduction_none_and_sum(fn):
    x = rnd(3, 6, 4)
    rows = fn(x, reduction="none", backend="tiled", chunk_size=4)
    assert rows.shape == (6,)
    ref = ref_mv_info_nce(x, 0.5) if fn is mv_info_nce else ref_mv_dhel(x, 0.2)
    torch.testing.assert_close(rows, ref)
    torch.testing.assert_close(fn(x, reduction="sum"), rows.sum())
    torch.testing.assert_close(fn(x), rows.mean())


# ------------------------------------------------------------------------------------------
# MV-InfoNCE / MV-DHEL oracles and invariances
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("V,N,tau", [(2, 5, 0.5), (3, 7, 0.1), (5, 4, 0.2)])
def test_multiview_identical_embeddings_closed_forms(V, N, tau):
    x = rnd(1, 1, 6).detach().expand(V, N, 6).contiguous()
    got = mv_info_nce(x, temperature=tau, backend="tiled", chunk_size=3)
    assert math.isclose(float(got), math.log((V * N - 1) / (V - 1)), rel_tol=1e-9)
    got = mv_dhel(x, temperature=tau, backend="tiled", chunk_size=3)
    want = V * math.log(N - 1) - math.log(V * (V - 1) / 2) + (V - 1) / tau
    assert math.isclose(float(got), want, rel_tol=1e-9)


def test_mv_info_nce_two_views_vs_nt_xent():
    """V = 2 pools the two views' denominators before the log: by Jensen it is
    >= NT-Xent, with equality when both views' denominators coincide (identical views)."""
    z1, z2 = rnd(9, 6, seed=1), rnd(9, 6, seed=2)
    mv = mv_info_nce([z1, z2], temperature=0.5)
    nt = ck.nt_xent(z1, z2, temperature=0.5)
    assert float(mv.detach()) > float(nt.detach()) + 1e-6
    torch.testing.assert_close(
        mv_info_nce([z1, z1], temperature=0.5, backend="tiled", chunk_size=4),
        ck.nt_xent(z1, z1, temperature=0.5),
    )


def test_mv_dhel_two_views_equals_ntxent_hps():
    """V = 2 is the official NTXentHPS: -log(pos / (R_real R_aug))."""
    z1, z2 = rnd(8, 5, seed=3), rnd(8, 5, seed=4)
    a, b = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    off = ~torch.eye(8, dtype=torch.bool)
    r1 = torch.exp(a @ a.T / 0.3)[off].view(8, -1).sum(-1)
    r2 = torch.exp(b @ b.T / 0.3)[off].view(8, -1).sum(-1)
    hps = -(torch.log(torch.exp((a * b).sum(-1) / 0.3) / (r1 * r2))).mean()
    torch.testing.assert_close(
        mv_dhel([z1, z2], temperature=0.3, backend="tiled", chunk_size=3), hps
    )


@pytest.mark.parametrize("fn", [mv_info_nce, mv_dhel])
def test_multiview_layouts_and_invariances(fn):
    x = rnd(3, 8, 5, seed=7, grad=False)
    base = fn(x)
    # official layout (V N, d) view-major, list of views, module twin
    torch.testing.assert_close(fn(x.reshape(24, 5), n_views=3), base)
    torch.testing.assert_close(fn(list(x.unbind(0))), base)
    module = MVInfoNCE(temperature=0.5) if fn is mv_info_nce else MVDHEL(temperature=0.2)
    torch.testing.assert_close(module(x), base)
    # positive rescaling of inputs, a sample permutation shared by all views, view order
    scale = torch.rand(3, 8, 1, dtype=x.dtype) + 0.5
    torch.testing.assert_close(fn(x * scale), base)
    perm = torch.randperm(8)
    torch.testing.assert_close(fn(x[:, perm]), base)
    torch.testing.assert_close(fn(x.flip(0)), base)
    # a sample permutation in one view only breaks the positives: the loss changes
    y = x.clone()
    y[1] = y[1, perm]
    assert not torch.allclose(fn(y), base)


def test_mv_info_nce_large_many_views_is_finite():
    """Log space: 8 views at tau 0.05 (the official exp-product form overflows in fp32)."""
    x = rnd(8, 24, 16, dtype=torch.float32, grad=True)
    for fn in (mv_info_nce, mv_dhel):
        loss = fn(x, temperature=0.05, backend="tiled", chunk_size=64)
        (g,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and torch.isfinite(g).all()


# ------------------------------------------------------------------------------------------
# alignment / uniformity / CUA oracles
# ------------------------------------------------------------------------------------------
def test_losses_agree_with_geometry_metrics():
    x, y = rnd(20, 8, seed=1, grad=False), rnd(20, 8, seed=2, grad=False)
    for alpha in (2.0, 1.0, 3.0):
        assert math.isclose(
            float(alignment(x, y, alpha=alpha)), geometry.alignment(x, y, alpha), rel_tol=1e-6
        )
    for t in (2.0, 0.5):
        assert math.isclose(
            float(uniformity(x, potential=t, backend="tiled", chunk_size=7)),
            geometry.uniformity(x, t),
            rel_tol=1e-9,
        )
        assert math.isclose(
            float(uniformity(x, y, potential=t)), geometry.uniformity(x, t, y=y), rel_tol=1e-9
        )


def test_alignment_uniformity_closed_forms():
    e = torch.eye(6, 8, dtype=torch.float64)
    assert math.isclose(float(uniformity(e)), -4.0, rel_tol=1e-12)  # -2t, t = 2
    assert math.isclose(
        float(uniformity(e, potential=3.0, backend="tiled", chunk_size=2)), -6.0, rel_tol=1e-12
    )
    same = rnd(1, 8).detach().expand(5, 8)
    assert abs(float(uniformity(same))) < 1e-12
    x = rnd(5, 8)
    assert float(alignment(x, x).detach()) == 0.0
    (g,) = torch.autograd.grad(alignment(x, x.detach(), alpha=1.0), x)
    assert torch.isfinite(g).all()
    # antipodal pairs: ||x - y|| = 2
    assert math.isclose(float(alignment(x, -x, alpha=3.0).detach()), 8.0, rel_tol=1e-12)
    rows = alignment(x, -x, reduction="none")
    torch.testing.assert_close(rows, torch.full((5,), 4.0, dtype=torch.float64))


def test_clip_align_uniform_oracles():
    x, y = rnd(10, 6, seed=1), rnd(10, 6, seed=2)
    # extra terms off -> CLIP with the fixed scale t = 100 (temperature 0.01)
    off = clip_align_uniform(x, y, align_weight=0, uniform_weight=0)
    torch.testing.assert_close(off, clip(x, y, scale=100.0))
    terms = clip_align_uniform_terms(x, y, cross_uniformity=True)
    torch.testing.assert_close(terms["align"], alignment(x, y))
    torch.testing.assert_close(terms["uniform"], uniformity(x, y))
    torch.testing.assert_close(terms["cross_uniform"], cross_uniformity(x, y))
    total = terms["clip"] + terms["align"] + terms["uniform"] + terms["cross_uniform"]
    torch.testing.assert_close(terms["loss"], total)
    # module twin (fixed scale 100) equals the functional
    torch.testing.assert_close(CLIPAlignUniform(cross_uniformity=True)(x, y), terms["loss"])
    torch.testing.assert_close(clip_align_uniform(x, y, cross_uniformity=True), terms["loss"])
    m_terms = CLIPAlignUniform(cross_uniformity=True).terms(x, y)
    for k in terms:
        torch.testing.assert_close(m_terms[k], terms[k])
    # one vector everywhere: align = unif = xunif = 0, CLIP = log N
    one = rnd(1, 6).detach().expand(10, 6)
    t = clip_align_uniform_terms(one, one, cross_uniformity=True)
    assert math.isclose(float(t["clip"]), math.log(10), rel_tol=1e-12)
    for k in ("align", "uniform", "cross_uniform"):
        assert abs(float(t[k])) < 1e-12
    # orthonormal sets: each uniformity is -4
    e = torch.eye(5, 7, dtype=torch.float64)
    t = clip_align_uniform_terms(e, e.roll(1, dims=1))
    assert math.isclose(float(t["uniform"]), -4.0, rel_tol=1e-12)


def test_alignment_uniformity_modules():
    x, y = rnd(9, 4, seed=1), rnd(9, 4, seed=2)
    torch.testing.assert_close(Alignment()(x, y), alignment(x, y))
    torch.testing.assert_close(
        Uniformity(potential=1.5, chunk_size=4)(x, y), uniformity(x, y, potential=1.5)
    )
    # a learnable CUA scale gets a gradient
    m = CLIPAlignUniform(learnable=True, init_temperature=0.1)
    m(x, y).backward()
    assert m.logit_scale.grad is not None and torch.isfinite(m.logit_scale.grad)


# ------------------------------------------------------------------------------------------
# Symile oracles
# ------------------------------------------------------------------------------------------
def test_symile_two_modalities_identity_is_clip():
    x, y = rnd(8, 5, seed=1), rnd(8, 5, seed=2)
    got = symile([x, y], scale=7.0, permutations="identity", backend="tiled", chunk_size=3)
    torch.testing.assert_close(got, clip(x, y, scale=7.0))


def test_symile_seeded_like_official_and_generator():
    reps = _sym_inputs(9, 4, M=4)
    torch.manual_seed(3)
    want = ref_symile(reps, 6.0)
    torch.manual_seed(3)
    torch.testing.assert_close(symile(reps, scale=6.0, backend="tiled", chunk_size=4), want)
    # an explicit generator reproduces the same draws
    a = symile(reps, scale=6.0, generator=torch.Generator().manual_seed(1))
    b = symile(reps, scale=6.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    # explicit permutations (as drawn by the generator) give the same loss
    g = torch.Generator().manual_seed(1)
    perms = [[torch.randperm(9, generator=g) for _ in range(3)] for _ in range(4)]
    torch.testing.assert_close(symile(reps, scale=6.0, permutations=perms), a)


@pytest.mark.parametrize("M", [3, 4])
def test_symile_identical_embeddings(M):
    one = F.normalize(rnd(1, 6).detach(), dim=-1).expand(7, 6)
    got = symile([one] * M, scale=3.0)
    assert math.isclose(float(got), math.log(7), rel_tol=1e-9)
    if M == 3:
        got = symile([one] * 3, scale=3.0, negative_sampling="n_squared", chunk_size=5)
        assert math.isclose(float(got), 2 * math.log(7), rel_tol=1e-9)


def test_symile_single_row_is_zero_with_finite_gradient():
    reps = [rnd(1, 4, seed=m) for m in range(3)]
    for eng in ENGINES:
        loss = symile(reps, **eng)
        assert float(loss) == 0.0
        assert all(torch.isfinite(g).all() for g in torch.autograd.grad(loss, reps))


def test_symile_module_and_reductions():
    reps = _sym_inputs(6, 4)
    m = Symile(init_temperature=0.2)
    torch.manual_seed(0)
    a = m(*reps)
    torch.manual_seed(0)
    b = symile(reps, scale=5.0)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    rows = symile(reps, scale=5.0, permutations="identity", reduction="none")
    assert rows.shape == (3, 6)
    torch.testing.assert_close(rows.mean(), symile(reps, scale=5.0, permutations="identity"))
    torch.testing.assert_close(
        rows.sum() / 3, symile(reps, scale=5.0, permutations="identity", reduction="sum")
    )
    a.backward()
    assert m.logit_scale.grad is not None


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def r(*shape):
    return torch.randn(*shape)


BAD = [
    ("at least 2 views", lambda: mv_info_nce(r(1, 4, 3))),
    ("n_views", lambda: mv_info_nce(r(8, 3))),
    ("not a multiple of n_views", lambda: mv_dhel(r(7, 3), n_views=2)),
    ("at least 2 samples", lambda: mv_dhel(r(3, 1, 4))),
    ("views[1]", lambda: mv_info_nce([r(4, 3), r(5, 3)])),
    ("NaN", lambda: mv_info_nce(torch.full((2, 3, 4), float("nan")))),
    ("temperature", lambda: mv_info_nce(r(2, 3, 4), temperature=0)),
    ("temperature must be a scalar", lambda: mv_dhel(r(2, 3, 4), temperature=torch.ones(6))),
    ("temperature", lambda: MVDHEL(temperature=-1)),
    ("reduction", lambda: mv_info_nce(r(2, 3, 4), reduction="avg")),
    ("chunk_size", lambda: mv_dhel(r(2, 3, 4), chunk_size=0)),
    ("x needs at least 2 rows", lambda: uniformity(r(1, 4))),
    ("potential must be finite and > 0", lambda: uniformity(r(4, 3), potential=0.0)),
    ("alpha", lambda: alignment(r(4, 3), r(4, 3), alpha=-1.0)),
    ("y must have as many rows", lambda: alignment(r(4, 3), r(5, 3))),
    ("feature dimension", lambda: cross_uniformity(r(4, 3), r(4, 5))),
    ("align_weight", lambda: clip_align_uniform(r(4, 3), r(4, 3), align_weight=-1)),
    ("image needs at least 2 rows", lambda: CLIPAlignUniform()(r(1, 3), r(1, 3))),
    ("at least 2 modalities", lambda: symile([r(4, 3)])),
    ("negative_sampling", lambda: symile([r(4, 3)] * 3, negative_sampling="all")),
    ("M=3", lambda: symile([r(4, 3)] * 4, negative_sampling="n_squared")),
    ("representations[2]", lambda: symile([r(4, 3), r(4, 3), r(5, 3)])),
    (
        "not a permutation",
        lambda: symile([r(3, 2)] * 2, permutations=[[torch.zeros(3).long()]] * 2),
    ),
    ("permutations must hold", lambda: symile([r(3, 2)] * 3, permutations=[[torch.arange(3)]])),
    ("negative_sampling", lambda: Symile(negative_sampling="x")(r(4, 3), r(4, 3), r(4, 3))),
]


@pytest.mark.parametrize("needle,call", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_named_error(needle, call):
    with pytest.raises(ValueError) as err:
        call()
    assert needle in str(err.value)


def test_doc_example_runs():
    import pathlib
    import re

    page = pathlib.Path(__file__).parents[1] / "docs" / "objectives" / "multiview.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, str(page), "exec"), namespace)
        assert torch.isfinite(namespace["loss"])


def test_benchmark_hook_engine_equals_dense():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "objectives_multiview.py"
    spec = importlib.util.spec_from_file_location("_bench_objectives_multiview", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    names = [n for n in bench.CASES if not n.endswith("-dense")]
    assert set(bench.CASES) == set(names) | {n + "-dense" for n in names}
    for name in names:
        tiled = bench.CASES[name](24, 8, torch.Generator().manual_seed(0))()
        dense = bench.CASES[name + "-dense"](24, 8, torch.Generator().manual_seed(0))()
        assert tiled.dim() == 0 and tiled.requires_grad
        torch.testing.assert_close(tiled, dense, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# one API style: module twin == functional, reductions, aliases
# ------------------------------------------------------------------------------------------
def _two(N=7, d=5):
    return rnd(N, d, seed=1), rnd(N, d, seed=2)


TWINS = {
    "mv_info_nce": (
        lambda: (rnd(3, 7, 5),),
        MVInfoNCE(temperature=0.3, backend="tiled", chunk_size=4),
        lambda x: mv_info_nce(x, temperature=0.3, backend="tiled", chunk_size=4),
    ),
    "mv_dhel": (
        lambda: (rnd(3, 7, 5),),
        MVDHEL(temperature=0.4, reduction="sum"),
        lambda x: mv_dhel(x, temperature=0.4, reduction="sum"),
    ),
    "symile": (
        lambda: tuple(_sym_inputs(6, 4)),
        Symile(init_temperature=0.25, permutations="identity").double(),
        lambda a, b, c: symile(a, b, c, scale=4.0, permutations="identity"),
    ),
    "alignment": (_two, Alignment(alpha=3.0), lambda x, y: alignment(x, y, alpha=3.0)),
    "uniformity": (
        _two,
        Uniformity(potential=1.5, backend="tiled", chunk_size=3),
        lambda x, y: uniformity(x, y, potential=1.5),
    ),
    "cross_uniformity": (
        _two,
        CrossUniformity(potential=3.0),
        lambda x, y: cross_uniformity(x, y, potential=3.0),
    ),
    "clip_align_uniform": (
        _two,
        CLIPAlignUniform(init_temperature=0.5, cross_uniformity=True, align_weight=0.5).double(),
        lambda x, y: clip_align_uniform(
            x, y, temperature=0.5, cross_uniformity=True, align_weight=0.5
        ),
    ),
}


@pytest.mark.parametrize("name", list(TWINS))
def test_module_twin_equals_functional(name):
    make, module, fn = TWINS[name]
    args = make()
    got, want = module(*args), fn(*args)
    torch.testing.assert_close(got, want)
    for g, w in zip(_grads(got, args), _grads(want, args)):
        torch.testing.assert_close(g, w)


def test_twins_are_declared_from_their_functionals():
    for cls, fn in [
        (MVInfoNCE, mv_info_nce),
        (MVDHEL, mv_dhel),
        (Symile, symile),
        (Alignment, alignment),
        (Uniformity, uniformity),
        (CrossUniformity, cross_uniformity),
        (CLIPAlignUniform, clip_align_uniform),
    ]:
        assert cls.functional is fn
    assert Symile().logit_scale.requires_grad
    assert not CLIPAlignUniform().logit_scale.requires_grad  # fixed t = 100, as the paper
    assert math.isclose(CLIPAlignUniform().scale.temperature, 0.01, rel_tol=1e-6)


def test_symile_forward_takes_modalities_and_per_call_options():
    reps = _sym_inputs(6, 4)
    m = Symile(init_temperature=0.25).double()
    want = symile(reps, scale=4.0, permutations="identity")
    torch.testing.assert_close(m(*reps, permutations="identity"), want)
    torch.testing.assert_close(m(reps, permutations="identity"), want)
    torch.testing.assert_close(m(torch.stack(reps), permutations="identity"), want)
    torch.testing.assert_close(symile(*reps, scale=4.0, permutations="identity"), want)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(m(*reps, generator=g1), symile(reps, scale=4.0, generator=g2))


REDUCIBLE = {
    "mv_info_nce": (lambda: (rnd(3, 7, 5),), lambda x, **o: mv_info_nce(x, **o)),
    "mv_dhel": (lambda: (rnd(4, 7, 5),), lambda x, **o: mv_dhel(x, backend="tiled", **o)),
    "alignment": (_two, lambda x, y, **o: alignment(x, y, alpha=1.5, **o)),
    "symile": (
        lambda: tuple(_sym_inputs(6, 4)),
        lambda *r, **o: symile(*r, scale=3.0, permutations="identity", **o) * 3,
    ),
}


@pytest.mark.parametrize("name", list(REDUCIBLE))
def test_reduction_none_rows_sum_and_mean(name):
    make, fn = REDUCIBLE[name]
    args = make()
    rows = fn(*args, reduction="none")
    if name == "symile":  # (M, N) rows; "sum" and "mean" average the M anchor modalities
        rows = rows / 3
        torch.testing.assert_close(fn(*args, reduction="sum"), rows.sum())
        torch.testing.assert_close(fn(*args, reduction="mean"), rows.sum() / 6)
        return
    torch.testing.assert_close(fn(*args, reduction="sum"), rows.sum())
    torch.testing.assert_close(fn(*args, reduction="mean"), rows.mean())


def test_aliases_are_the_same_objects():
    import contrastkit.functional as CF
    import contrastkit.losses as CL
    import contrastkit.losses.multiview as MV
    from contrastkit.objective import entries

    pairs = {
        "alignment_loss": alignment,
        "AlignmentLoss": Alignment,
        "uniformity_loss": uniformity,
        "UniformityLoss": Uniformity,
        "cross_uniformity_loss": cross_uniformity,
    }
    for name, obj in pairs.items():
        assert getattr(MV, name) is obj, name
        assert getattr(CL, name) is obj, name
        assert getattr(ck, name) is obj, name
        if not isinstance(obj, type):
            assert getattr(CF, name) is obj, name
    fam = {e.name: e for e in entries("multiview")}
    assert set(fam) == {
        "mv_info_nce",
        "mv_dhel",
        "symile",
        "alignment",
        "uniformity",
        "cross_uniformity",
        "clip_align_uniform",
    }
    assert fam["alignment"].functional_aliases == ("alignment_loss",)
    assert fam["uniformity"].module_aliases == ("UniformityLoss",)
    assert fam["cross_uniformity"].functional_aliases == ("cross_uniformity_loss",)


def test_exactness_declared():
    for fn in (
        mv_info_nce,
        mv_dhel,
        alignment,
        uniformity,
        cross_uniformity,
        clip_align_uniform,
        clip_align_uniform_terms,
        symile,
    ):
        assert fn.exact_under_group is True, fn.__name__
