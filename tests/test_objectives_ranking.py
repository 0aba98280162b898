"""Ranking and STS objectives: CoSENT, AnglE's angle loss, ListNet, Plackett-Luce and the
Matryoshka wrapper. Dense float64 loop references, value and gradient equality, gradcheck,
closed-form oracles, parity with sentence-transformers' CoSENTLoss / AnglELoss /
MatryoshkaLoss, half precision, module twins, bad input."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses.infonce import MultipleNegativesRanking, info_nce
from contrastkit.losses.ranking import (
    AnglE,
    CoSENT,
    ListNet,
    Matryoshka,
    PlackettLuce,
    angle,
    angle_similarity,
    cosent,
    list_net,
    matryoshka,
    plackett_luce,
    ranked_pairs_lse,
)
from contrastkit.objective import REGISTRY

import peers

TWINS = {"cosent": (cosent, CoSENT), "angle": (angle, AnglE)}  # pair-label objectives


def rnd(*shape, seed=0, dtype=torch.float64, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)


def graded(n, seed=0, levels=4):
    """Labels on a few levels, so that ties occur."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n,), generator=g).to(torch.float64) / (levels - 1)


# ------------------------------------------------------------------------------------------
# dense references
# ------------------------------------------------------------------------------------------
def ref_lse_pairs(s, y):
    """log(1 + sum over every ordered pair (a, b) with y_a > y_b of exp(s_b - s_a)), by loops."""
    terms = [0 * s.sum()]  # the 1 inside the log (connected to s, so a batch of one differentiates)
    for a in range(len(s)):
        for b in range(len(s)):
            if y[a] > y[b]:
                terms.append(s[b] - s[a])
    return torch.logsumexp(torch.stack(terms), 0)


def ref_cosent(x1, x2, y, scale=20.0):
    return ref_lse_pairs(scale * F.cosine_similarity(x1, x2, dim=-1), y)


def ref_angle_score(x, y):
    """The complex division of the AnglE paper written out: x = a + ib, y = c + id (halves),
    x / y = ((ac + bd) + i(bc - ad)) / |y|^2, times |y| / |x|, summed over real and imaginary
    parts, absolute value."""
    a, b = x.chunk(2, dim=-1)
    c, d = y.chunk(2, dim=-1)
    z = (c * c + d * d).sum(-1, keepdim=True)
    re, im = (a * c + b * d) / z, (b * c - a * d) / z
    nx = (a * a + b * b).sum(-1, keepdim=True).sqrt()
    ny = z.sqrt()
    re, im = re / (nx / ny), im / (nx / ny)
    return torch.cat([re, im], dim=-1).sum(-1).abs()


def ref_angle(x1, x2, y, scale=20.0):
    return ref_lse_pairs(scale * ref_angle_score(x1, x2), y)


REFS = {"cosent": ref_cosent, "angle": ref_angle}


# ------------------------------------------------------------------------------------------
# value, gradient, gradcheck
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TWINS))
@pytest.mark.parametrize("n,seed", [(1, 0), (2, 1), (7, 2), (16, 3)])
def test_equals_dense_reference(name, n, seed):
    fn, _ = TWINS[name]
    x1, x2 = rnd(n, 6, seed=seed), rnd(n, 6, seed=seed + 10)
    y = graded(n, seed=seed)
    got = fn(x1, x2, y, scale=20.0)
    want = REFS[name](x1, x2, y)
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, (x1, x2)), torch.autograd.grad(want, (x1, x2))):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_gradcheck(name):
    fn, _ = TWINS[name]
    x1, x2 = rnd(6, 4, seed=1), rnd(6, 4, seed=2)
    y = torch.tensor([0.3, 0.1, 0.3, 0.9, 0.0, 0.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, y, scale=2.0), (x1, x2))
    # a learnable (tensor) scale gets its gradient too
    s = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, t: fn(a, x2.detach(), y, scale=t), (x1, s))


def test_ranked_pairs_lse_equals_dense_with_many_ties():
    s = rnd(40, seed=5)
    y = graded(40, seed=6, levels=3)
    torch.testing.assert_close(ranked_pairs_lse(s, y), ref_lse_pairs(s, y))
    ga = torch.autograd.grad(ranked_pairs_lse(s, y), s)[0]
    gb = torch.autograd.grad(ref_lse_pairs(s, y), s)[0]
    torch.testing.assert_close(ga, gb)


# ------------------------------------------------------------------------------------------
# oracles
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TWINS))
def test_equal_scores_give_log_one_plus_pairs(name):
    fn, _ = TWINS[name]
    x = rnd(1, 8, seed=3, grad=False).expand(5, 8)
    y = torch.tensor([0.0, 1.0, 1.0, 2.0, 3.0])
    pairs = sum(int(y[a] > y[b]) for a in range(5) for b in range(5))  # 9 (one tie)
    assert pairs == 9
    torch.testing.assert_close(fn(x, x, y), torch.tensor(math.log(1 + pairs), dtype=x.dtype))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_one_pair_or_all_tied_is_zero_with_zero_gradient(name):
    fn, _ = TWINS[name]
    for n, y in ((1, torch.tensor([0.4])), (5, torch.full((5,), 0.7))):
        x1, x2 = rnd(n, 4, seed=n), rnd(n, 4, seed=n + 1)
        out = fn(x1, x2, y)
        assert float(out.detach()) == 0.0
        g1, g2 = torch.autograd.grad(out, (x1, x2))
        assert not g1.any() and not g2.any()


@pytest.mark.parametrize("name", sorted(TWINS))
def test_only_label_order_matters(name):
    fn, _ = TWINS[name]
    x1, x2 = rnd(9, 6, seed=4, grad=False), rnd(9, 6, seed=5, grad=False)
    y = graded(9, seed=7, levels=5)
    base = fn(x1, x2, y)
    for transform in (lambda t: 3 * t - 1, torch.exp, lambda t: t**3 + 10, torch.atan):
        torch.testing.assert_close(fn(x1, x2, transform(y)), base)
    # labels as integers (ranks) and a permuted batch: the same loss
    ranks = torch.unique(y, return_inverse=True)[1]
    torch.testing.assert_close(fn(x1, x2, ranks), base)
    p = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fn(x1[p], x2[p], y[p]), base)


def test_shift_invariance_of_the_scores():
    s, y = rnd(12, seed=8, grad=False), graded(12, seed=9)
    torch.testing.assert_close(ranked_pairs_lse(s + 7.5, y), ranked_pairs_lse(s, y))


def test_perfectly_ordered_with_large_gaps_is_near_zero():
    # cosines increasing with the label, gaps of 0.4 at scale 20: exp(-8) per adjacent pair
    y = torch.arange(6, dtype=torch.float64)
    theta = torch.linspace(-1, 1, 6, dtype=torch.float64).acos()
    x1 = torch.stack([torch.ones(6), torch.zeros(6)], 1).double()
    x2 = torch.stack([theta.cos(), theta.sin()], 1)
    torch.testing.assert_close(F.cosine_similarity(x1, x2), torch.linspace(-1, 1, 6).double())
    assert float(cosent(x1, x2, y)) < 5 * math.exp(-8) * 1.01
    assert float(cosent(x1, x2, -y)) > 20.0  # the reverse order is heavily penalised


def test_angle_score_closed_forms():
    x = rnd(5, 8, seed=11, grad=False)
    one = torch.ones(5, dtype=torch.float64)
    for other in (x, -x, 2 * x):
        torch.testing.assert_close(angle_similarity(x, other), one)
    # y = exp(i theta) x coordinate by coordinate: |cos(theta) - sin(theta)|
    a, b = x.chunk(2, dim=-1)
    for theta in (0.3, math.pi / 4, math.pi / 2, 2.0, -1.0):
        c, s = math.cos(theta), math.sin(theta)
        y = torch.cat([c * a - s * b, s * a + c * b], dim=-1)
        want = torch.full((5,), abs(c - s), dtype=torch.float64)
        torch.testing.assert_close(angle_similarity(x, y), want, atol=1e-12, rtol=0)
    # the reference's complex division, and the odd-dimension zero padding
    y = rnd(5, 8, seed=12, grad=False)
    torch.testing.assert_close(angle_similarity(x, y), ref_angle_score(x, y))
    x7, y7 = x[:, :7], y[:, :7]
    torch.testing.assert_close(
        angle_similarity(x7, y7), ref_angle_score(F.pad(x7, (0, 1)), F.pad(y7, (0, 1)))
    )


def test_angle_is_cosent_on_the_angle_score():
    x1, x2, y = rnd(10, 6, seed=13), rnd(10, 6, seed=14), graded(10, seed=15)
    torch.testing.assert_close(
        angle(x1, x2, y, scale=7.0), ranked_pairs_lse(7.0 * angle_similarity(x1, x2), y)
    )


# ------------------------------------------------------------------------------------------
# options, module twins, registry
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TWINS))
def test_module_equals_functional_and_scale_temperature(name):
    fn, Module = TWINS[name]
    x1, x2, y = rnd(8, 6, seed=16), rnd(8, 6, seed=17), graded(8, seed=18)
    torch.testing.assert_close(Module()(x1, x2, y), fn(x1, x2, y))
    torch.testing.assert_close(fn(x1, x2, y), fn(x1, x2, y, scale=20.0))
    torch.testing.assert_close(fn(x1, x2, y, temperature=0.05), fn(x1, x2, y, scale=20.0))
    torch.testing.assert_close(Module(scale=5.0)(x1, x2, y), fn(x1, x2, y, scale=5.0))
    torch.testing.assert_close(Module(temperature=0.5)(x1, x2, y), fn(x1, x2, y, scale=2.0))
    torch.testing.assert_close(Module()(x1, x2, y, scale=3.0), fn(x1, x2, y, scale=3.0))
    assert Module.options == ("scale", "temperature")
    with pytest.raises(ValueError, match="scale"):
        Module(scale=-1.0)
    with pytest.raises(ValueError, match="temperature or scale"):
        fn(x1, x2, y, scale=20.0, temperature=0.05)
    with pytest.raises(TypeError):
        Module(reduction="mean")  # a single log-sum-exp: no reduction


@pytest.mark.parametrize("name", sorted(TWINS))
def test_bool_labels_are_two_levels(name):
    fn, _ = TWINS[name]
    x1, x2 = rnd(6, 4, seed=19), rnd(6, 4, seed=20)
    yb = torch.tensor([True, False, True, True, False, False])
    torch.testing.assert_close(fn(x1, x2, yb), fn(x1, x2, yb.double()))


def test_registered_and_exact():
    for name, (fn, Module) in TWINS.items():
        entry = REGISTRY[name]
        assert entry.functional is fn and entry.module is Module and entry.family == "ranking"
        assert name.replace("_", "") == Module.__name__.lower()
        assert fn.exact_under_group is True


# ------------------------------------------------------------------------------------------
# half precision
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", sorted(TWINS))
def test_half_precision_finite(name, dtype):
    fn, _ = TWINS[name]
    x1 = (40 * rnd(16, 8, seed=21, grad=False)).to(dtype).requires_grad_()
    x2 = (40 * rnd(16, 8, seed=22, grad=False)).to(dtype).requires_grad_()
    y = graded(16, seed=23).to(dtype)
    out = fn(x1, x2, y, scale=100.0)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    want = fn(x1.detach().double(), x2.detach().double(), y.double(), scale=100.0)
    torch.testing.assert_close(out.double(), want, rtol=0.05, atol=0.05)
    out.backward()
    assert x1.grad.dtype == dtype and torch.isfinite(x1.grad).all()
    assert torch.isfinite(x2.grad).all()


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TWINS))
def test_bad_inputs_name_the_argument(name):
    fn, _ = TWINS[name]
    x1, x2, y = rnd(4, 6), rnd(4, 6, seed=1), graded(4)
    bad = [
        ("x1", (x1[0], x2, y), {}),
        ("x1", (x1.long(), x2, y), {}),
        ("x1", (x1[:0], x2[:0], y[:0]), {}),
        ("x1", (torch.full((4, 6), float("nan")), x2, y), {}),
        ("x2", (x1, x2[:3], y), {}),
        ("x2", (x1, x2[:, :5], y), {}),
        ("x2", (x1, x2.float(), y), {}),
        ("x2", (x1, torch.full((4, 6), float("inf")), y), {}),
        ("labels", (x1, x2, y[:3]), {}),
        ("labels", (x1, x2, y[None]), {}),
        ("labels", (x1, x2, y.tolist()), {}),
        ("labels", (x1, x2, torch.tensor([0.1, float("nan"), 0.2, 0.3])), {}),
        ("labels", (x1, x2, torch.tensor([0.1, float("inf"), 0.2, 0.3])), {}),
        ("labels", (x1, x2, y.to(torch.complex64)), {}),
        ("scale", (x1, x2, y), {"scale": 0.0}),
        ("scale", (x1, x2, y), {"scale": float("nan")}),
        ("scale", (x1, x2, y), {"scale": torch.full((4,), 20.0)}),
        ("scale", (x1, x2, y), {"scale": "20"}),
        ("temperature", (x1, x2, y), {"temperature": -0.1}),
        ("temperature", (x1, x2, y), {"temperature": torch.tensor(float("inf"))}),
    ]
    for arg, inputs, kw in bad:
        with pytest.raises(ValueError, match=arg):
            fn(*inputs, **kw)


# ------------------------------------------------------------------------------------------
# sentence-transformers parity
# ------------------------------------------------------------------------------------------
def _st_loss(cls_name):
    if peers.st_mnrl() is None:
        pytest.skip(peers.SKIP_REASONS["st_mnrl"])
    losses = peers._st_losses_module()
    cls = getattr(losses, cls_name, None)
    if cls is None:
        pytest.skip(f"this sentence-transformers has no {cls_name}")
    return lambda **kw: cls(peers._placeholder_model(), **kw)


@pytest.mark.parametrize("name,peer", [("cosent", "CoSENTLoss"), ("angle", "AnglELoss")])
@pytest.mark.parametrize("d", [8, 7])
@pytest.mark.parametrize("scale", [20.0, 3.0])
def test_sentence_transformers_parity(name, peer, d, scale):
    make = _st_loss(peer)
    fn, _ = TWINS[name]
    for seed in range(3):
        x1, x2 = rnd(12, d, seed=seed), rnd(12, d, seed=seed + 50)
        y = graded(12, seed=seed + 100)
        want = make(scale=scale).compute_loss_from_embeddings([x1, x2], y)
        got = fn(x1, x2, y, scale=scale)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        for g, w in zip(torch.autograd.grad(got, (x1, x2)), torch.autograd.grad(want, (x1, x2))):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    # float32 and integer labels as sentence-transformers gets them from a dataset
    x1, x2 = rnd(32, d, seed=9, dtype=torch.float32), rnd(32, d, seed=8, dtype=torch.float32)
    y = torch.randint(0, 6, (32,), generator=torch.Generator().manual_seed(1))
    want = make(scale=scale).compute_loss_from_embeddings([x1, x2], y)
    torch.testing.assert_close(fn(x1, x2, y, scale=scale), want)


# ------------------------------------------------------------------------------------------
# ListNet and Plackett-Luce (in-batch, graded relevance)
# ------------------------------------------------------------------------------------------
LISTWISE = {"list_net": (list_net, ListNet), "plackett_luce": (plackett_luce, PlackettLuce)}


def grades(n, m, seed=0):
    """Sparse grades in {0, 1, 2, 3} with ties; row 0 has every column judged, the last row
    none (no term)."""
    g = torch.Generator().manual_seed(seed)
    rel = torch.randint(0, 4, (n, m), generator=g).double()
    rel *= (torch.rand(n, m, generator=g) < 0.5).double()
    rel[0] = torch.arange(m, 0, -1).double() % 4 + 1
    rel[-1] = 0
    return rel


def ref_list_net(q, c, rel, tau, target="softmax", t_g=1.0, normalize=True):
    rows = []
    for i in range(q.shape[0]):
        qi, cc = (F.normalize(q[i], dim=0), F.normalize(c, dim=1)) if normalize else (q[i], c)
        u = (cc @ qi) / tau
        if target == "softmax":
            phi = torch.exp(rel[i] / t_g)
        else:
            phi = 2.0 ** rel[i] - 1 if target == "exp2" else rel[i]
        if float(phi.sum()) == 0:
            continue
        p = phi / phi.sum()
        rows.append(-(p * (u - torch.logsumexp(u, 0))).sum())
    return torch.stack(rows).mean()


def ref_plackett_luce(q, c, rel, tau, normalize=True):
    rows = []
    for i in range(q.shape[0]):
        qi, cc = (F.normalize(q[i], dim=0), F.normalize(c, dim=1)) if normalize else (q[i], c)
        u = (cc @ qi) / tau
        relevant = sorted(
            (j for j in range(len(u)) if rel[i, j] > 0), key=lambda j: (-float(rel[i, j]), j)
        )
        if not relevant:
            continue
        rest = [j for j in range(len(u)) if rel[i, j] == 0]
        total = 0 * u.sum()
        for r, j in enumerate(relevant):
            pool = relevant[r:] + rest
            total = total - (u[j] - torch.logsumexp(u[pool], 0))
        rows.append(total)
    return torch.stack(rows).mean()


@pytest.mark.parametrize(
    "kw", [{}, {"target": "exp2"}, {"target": "linear"}, {"target_temperature": 0.5}]
)
@pytest.mark.parametrize("normalize", [True, False])
def test_list_net_equals_dense_reference(kw, normalize):
    q, c, rel = rnd(5, 4, seed=30), rnd(7, 4, seed=31), grades(5, 7, seed=32)
    got = list_net(q, c, rel, temperature=0.5, normalize=normalize, **kw)
    t_g = kw.get("target_temperature", 1.0)
    target = kw.get("target", "softmax")
    want = ref_list_net(q, c, rel, 0.5, target, t_g, normalize)
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, (q, c)), torch.autograd.grad(want, (q, c))):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("normalize", [True, False])
def test_plackett_luce_equals_dense_reference(normalize):
    q, c, rel = rnd(5, 4, seed=33), rnd(7, 4, seed=34), grades(5, 7, seed=35)
    got = plackett_luce(q, c, rel, temperature=0.5, normalize=normalize)
    want = ref_plackett_luce(q, c, rel, 0.5, normalize)
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, (q, c)), torch.autograd.grad(want, (q, c))):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("name", sorted(LISTWISE))
def test_listwise_gradcheck_and_reductions(name):
    fn, Module = LISTWISE[name]
    q, c, rel = rnd(4, 3, seed=36), rnd(5, 3, seed=37), grades(4, 5, seed=38)
    t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, tt: fn(a, b, rel, temperature=tt), (q, c, t))
    rows = fn(q, c, rel, reduction="none")
    assert rows.shape == (4,)
    torch.testing.assert_close(fn(q, c, rel, reduction="sum"), rows.sum())
    counted = rows.shape[0] if name == "list_net" else int((rel > 0).any(1).sum())
    torch.testing.assert_close(fn(q, c, rel), rows.sum() / counted)
    torch.testing.assert_close(Module(temperature=0.2)(q, c, rel), fn(q, c, rel, temperature=0.2))
    none = torch.zeros(4, 5, dtype=torch.float64)  # no relevant column anywhere: 0, not NaN
    assert float(plackett_luce(q, c, none).detach()) == 0.0
    assert float(list_net(q, c, none, target="linear").detach()) == 0.0


def test_list_net_one_relevant_is_info_nce():
    q, c = rnd(6, 5, seed=39), rnd(6, 5, seed=40)
    rel = torch.eye(6, dtype=torch.float64) * 2.0
    u = F.normalize(q, dim=1) @ F.normalize(c, dim=1).T / 0.1
    want = F.cross_entropy(u, torch.arange(6))
    for target in ("exp2", "linear"):
        torch.testing.assert_close(list_net(q, c, rel, temperature=0.1, target=target), want)


def test_list_net_gradient_of_each_row_sums_to_zero():
    # candidates = identity, no normalisation: the scores are the query rows themselves
    u = rnd(3, 5, seed=41)
    loss = list_net(
        u,
        torch.eye(5, dtype=torch.float64),
        grades(3, 5, seed=42),
        temperature=1.0,
        normalize=False,
        reduction="sum",
    )
    (g,) = torch.autograd.grad(loss, u)
    torch.testing.assert_close(g.sum(1), torch.zeros(3, dtype=torch.float64))


def test_plackett_luce_oracles():
    eye = torch.eye(2, dtype=torch.float64)
    u = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    rel = torch.tensor([[2.0, 1.0]], dtype=torch.float64)  # both relevant: U empty
    got = plackett_luce(u, eye, rel, temperature=1.0, normalize=False)
    torch.testing.assert_close(got, torch.log1p(torch.exp(u[0, 1] - u[0, 0])))
    # ordered consistently with large gaps, U empty: -> 0; always >= 0
    m = 5
    s = torch.linspace(50, 0, m, dtype=torch.float64)[None]
    rel = torch.arange(m, 0, -1, dtype=torch.float64)[None]
    eye = torch.eye(m, dtype=torch.float64)
    assert float(plackett_luce(s, eye, rel, temperature=1.0, normalize=False)) < 4.01 * math.exp(
        -12.5
    )
    q, c, rel = rnd(6, 4, seed=43), rnd(8, 4, seed=44), grades(6, 8, seed=45)
    assert bool((plackett_luce(q, c, rel, reduction="none") >= 0).all())


@pytest.mark.parametrize("name", sorted(LISTWISE))
def test_listwise_bad_inputs_and_half(name):
    fn, _ = LISTWISE[name]
    q, c, rel = rnd(4, 6), rnd(5, 6, seed=1), grades(4, 5)
    bad = [
        ("query", (q[0], c, rel), {}),
        ("candidates", (q, c[:, :3], rel), {}),
        ("relevance", (q, c, rel[:, :4]), {}),
        ("relevance", (q, c, -rel - 1), {}),
        ("relevance", (q, c, rel.tolist()), {}),
        ("temperature", (q, c, rel), {"temperature": 0.0}),
        ("reduction", (q, c, rel), {"reduction": "avg"}),
    ]
    if name == "list_net":
        bad += [("target", (q, c, rel), {"target": "ndcg"})]
        bad += [("target_temperature", (q, c, rel), {"target_temperature": -1.0})]
    for arg, inputs, kw in bad:
        with pytest.raises(ValueError, match=arg):
            fn(*inputs, **kw)
    assert not fn.exact_under_group and REGISTRY[name].family == "ranking"
    for dtype in (torch.float16, torch.bfloat16):
        a = (40 * rnd(4, 6, seed=2, grad=False)).to(dtype).requires_grad_()
        b = (40 * rnd(5, 6, seed=3, grad=False)).to(dtype).requires_grad_()
        out = fn(a, b, rel, temperature=0.01)
        assert torch.isfinite(out)
        out.backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


# ------------------------------------------------------------------------------------------
# Matryoshka wrapper
# ------------------------------------------------------------------------------------------
def dot_nce(a, b):
    """A dot-product InfoNCE (no normalisation inside): re-normalisation shows."""
    u = a @ b.T
    return F.cross_entropy(u, torch.arange(a.shape[0]))


def test_matryoshka_is_the_weighted_sum_of_prefix_losses():
    a, p = rnd(6, 8, seed=50), rnd(6, 8, seed=51)
    dims, weights = (8, 4, 2), (1.0, 0.5, 2.0)
    got = matryoshka(a, p, objective=dot_nce, dims=dims, weights=weights)
    want = sum(
        w * dot_nce(F.normalize(a[:, :k], dim=1), F.normalize(p[:, :k], dim=1))
        for k, w in zip(dims, weights)
    )
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, (a, p)), torch.autograd.grad(want, (a, p))):
        torch.testing.assert_close(g, w)
    # without re-normalisation: plain prefixes
    got = matryoshka(a, p, objective=dot_nce, dims=dims, normalize=False)
    torch.testing.assert_close(got, sum(dot_nce(a[:, :k], p[:, :k]) for k in dims))
    # dims = [d], weight 1: the objective itself (it normalises, or normalize=False)
    mnrl = MultipleNegativesRanking()
    torch.testing.assert_close(matryoshka(a, p, objective=mnrl, dims=[8]), mnrl(a, p))
    torch.testing.assert_close(
        matryoshka(a, p, objective=dot_nce, dims=[8], normalize=False), dot_nce(a, p)
    )


def test_matryoshka_prefix_gradient_and_other_inputs():
    a, p = rnd(5, 6, seed=52), rnd(5, 6, seed=53)
    (g,) = torch.autograd.grad(matryoshka(a, p, objective=dot_nce, dims=(3,)), a)
    assert not g[:, 3:].any() and g[:, :3].abs().sum() > 0
    # labels (1-D) pass unchanged; the wrapped objective gets its options by partial
    y = graded(5, seed=54)
    fn = functools.partial(cosent, scale=10.0)
    got = matryoshka(a, p, y, objective=fn, dims=(6, 2))
    torch.testing.assert_close(
        got, cosent(a, p, y, scale=10.0) + cosent(a[:, :2], p[:, :2], y, scale=10.0)
    )
    assert torch.autograd.gradcheck(
        lambda x1, x2: matryoshka(x1, x2, objective=dot_nce, dims=(6, 4, 1), weights=(1, 2, 3)),
        (rnd(4, 6, seed=55), rnd(4, 6, seed=56)),
    )


def test_matryoshka_module_and_bad_inputs():
    a, p = rnd(6, 8, seed=57), rnd(6, 8, seed=58)
    module = Matryoshka(objective=MultipleNegativesRanking(), dims=(8, 4))
    assert isinstance(module.objective, MultipleNegativesRanking)  # a submodule: follows .to()
    want = matryoshka(a, p, objective=MultipleNegativesRanking(), dims=(8, 4))
    torch.testing.assert_close(module(a, p), want)
    torch.testing.assert_close(
        module(a, p, dims=(2,)), matryoshka(a, p, objective=MultipleNegativesRanking(), dims=(2,))
    )
    with pytest.raises(TypeError, match="missing required option"):
        Matryoshka(dims=(4,))
    bad = [
        ("dims", {"dims": ()}),
        ("dims", {"dims": (9,)}),
        ("dims", {"dims": (0, 4)}),
        ("dims", {"dims": (4, 4)}),
        ("dims", {"dims": 4}),
        ("dims", {"dims": (4.0,)}),
        ("weights", {"dims": (8, 4), "weights": (1.0,)}),
        ("weights", {"dims": (8,), "weights": (float("nan"),)}),
        ("objective", {"dims": (8,), "objective": "info_nce"}),
    ]
    for arg, kw in bad:
        kw = {"objective": dot_nce, **kw}
        with pytest.raises(ValueError, match=arg):
            matryoshka(a, p, **kw)
    with pytest.raises(ValueError, match="inputs"):
        matryoshka(objective=dot_nce, dims=(4,))
    with pytest.raises(ValueError, match="inputs"):
        matryoshka(a.long(), p, objective=dot_nce, dims=(4,))
    assert matryoshka.exact_under_group and REGISTRY["matryoshka"].module is Matryoshka


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_matryoshka_half_precision(dtype):
    a = (40 * rnd(8, 16, seed=59, grad=False)).to(dtype).requires_grad_()
    p = (40 * rnd(8, 16, seed=60, grad=False)).to(dtype).requires_grad_()
    fn = functools.partial(info_nce, temperature=0.01)
    out = matryoshka(a, p, objective=fn, dims=(16, 8, 4))
    assert torch.isfinite(out)
    out.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(p.grad).all()


class _EmbeddingModel(torch.nn.Module):
    """Stands in for a SentenceTransformer: each "feature" dict holds its embeddings."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, features):
        return {"sentence_embedding": features["embedding"]}

    def get_embedding_dimension(self):
        return self.d


@pytest.mark.parametrize("weights", [None, (1.0, 0.5, 0.25)])
def test_matryoshka_sentence_transformers_parity(weights):
    _st_loss("MatryoshkaLoss")
    losses = peers._st_losses_module()
    a, p, n = rnd(8, 16, seed=61), rnd(8, 16, seed=62), rnd(8, 16, seed=63)
    model = _EmbeddingModel(16)
    inner = losses.MultipleNegativesRankingLoss(model)
    st = losses.MatryoshkaLoss(
        model,
        inner,
        [4, 16, 8],
        matryoshka_weights=(None if weights is None else [weights[2], weights[0], weights[1]]),
    )
    feats = [{"embedding": x} for x in (a, p, n)]
    want = st(feats, None)
    got = matryoshka(
        a, p, n, objective=MultipleNegativesRanking(), dims=(16, 8, 4), weights=weights
    )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad(got, (a, p, n)), torch.autograd.grad(want, (a, p, n))):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
