"""Distillation objectives: MarginMSE, KL distillation over listed candidates and in-batch,
embedding regression, ALBEF momentum distillation, ensemble teacher scores. Float64 references
written here, value and gradient equality, gradcheck, paper and code oracles,
sentence-transformers parity, half precision, module twins, reductions, bad input."""

from __future__ import annotations

import importlib
import math
import re
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F

from contrastkit import info_nce
from contrastkit.losses.distillation import (
    EmbeddingDistillation,
    InBatchKLDistillation,
    KLDistillation,
    MarginMSE,
    MomentumDistillation,
    embedding_distillation,
    ensemble_teacher_scores,
    in_batch_kl_distillation,
    kl_distillation,
    margin_mse,
    momentum_distillation,
)
from contrastkit.objective import REGISTRY

import peers

N, K, D = 5, 4, 6


def rnd(*shape, seed=0, dtype=torch.float64, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)


def inputs(n=N, k=K, d=D, seed=0):
    """Query, listed candidates and teacher scores of a cross-encoder scale (about +-5)."""
    return (
        rnd(n, d, seed=seed),
        rnd(n, k, d, seed=seed + 1),
        3 * rnd(n, k, seed=seed + 2, grad=False),
    )


def st_losses():
    try:
        return peers._st_losses_module()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"sentence-transformers unavailable: {type(exc).__name__}: {exc}"[:200])


def st_make(cls, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(peers._placeholder_model(), **kw)


def value_and_grads(fn, leaves):
    leaves = [x.detach().clone().requires_grad_() for x in leaves]
    out = fn(*leaves)
    grads = torch.autograd.grad(out.sum(), leaves)
    return out.detach(), grads


def assert_same(fn_a, fn_b, leaves, **tol):
    va, ga = value_and_grads(fn_a, leaves)
    vb, gb = value_and_grads(fn_b, leaves)
    torch.testing.assert_close(va, vb, **tol)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **tol)
    return (va - vb).abs().max().item()


# ------------------------------------------------------------------------------------------
# float64 references (loops over queries and candidates)
# ------------------------------------------------------------------------------------------
def ref_scores(q, c, normalize=False):
    if normalize:
        q, c = F.normalize(q, dim=-1), F.normalize(c, dim=-1)
    return torch.stack(
        [torch.stack([(q[i] * c[i, k]).sum() for k in range(c.shape[1])]) for i in range(len(q))]
    )


def ref_margin_mse(q, c, t, normalize=False, reduction="mean"):
    s = ref_scores(q, c, normalize)
    rows = []
    for i in range(len(q)):
        terms = [((s[i, 0] - s[i, k]) - (t[i, 0] - t[i, k])) ** 2 for k in range(1, c.shape[1])]
        rows.append(torch.stack(terms).mean())
    rows = torch.stack(rows)
    return {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]


def ref_kl(
    q,
    c,
    t,
    temperature=1.0,
    teacher_temperature=None,
    squared=True,
    ce=False,
    normalize=False,
    reduction="mean",
):
    tt = temperature if teacher_temperature is None else teacher_temperature
    s = ref_scores(q, c, normalize)
    rows = []
    for i in range(len(q)):
        keep = [k for k in range(c.shape[1]) if t[i, k] != float("-inf")]
        zt = torch.stack([t[i, k] / tt for k in keep])
        zs = torch.stack([s[i, k] / temperature for k in keep])
        p = torch.exp(zt - torch.logsumexp(zt, 0))
        log_q = zs - torch.logsumexp(zs, 0)
        row = -(p * log_q).sum() if ce else (p * (torch.log(p) - log_q)).sum()
        rows.append(row * (temperature**2 if squared else 1.0))
    rows = torch.stack(rows)
    return {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]


def ref_embedding(z, t, distance="mse", normalize=False, reduction="mean"):
    if normalize:
        z, t = F.normalize(z, dim=-1), F.normalize(t, dim=-1)
    rows = []
    for i in range(len(z)):
        diff = z[i] - t[i]
        if distance == "mse":
            rows.append((diff * diff).sum() / z.shape[1])
        elif distance == "l2":
            rows.append(torch.sqrt((diff * diff).sum()))
        else:
            rows.append(1 - (z[i] * t[i]).sum() / (z[i].norm() * t[i].norm()))
    rows = torch.stack(rows)
    return {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]


# ------------------------------------------------------------------------------------------
# MarginMSE
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_margin_mse_matches_reference(normalize, reduction):
    q, c, t = inputs()
    assert_same(
        lambda q, c: margin_mse(q, c, t, normalize=normalize, reduction=reduction),
        lambda q, c: ref_margin_mse(q, c, t, normalize=normalize, reduction=reduction),
        [q, c],
    )


def test_margin_mse_teacher_as_scores_or_margins():
    q, c, t = inputs()
    a = margin_mse(q, c, t)
    torch.testing.assert_close(margin_mse(q, c, t[:, :1] - t[:, 1:]), a)
    q2, c2, t2 = inputs(k=2)
    m = t2[:, 0] - t2[:, 1]
    torch.testing.assert_close(margin_mse(q2, c2, m), margin_mse(q2, c2, t2))
    torch.testing.assert_close(margin_mse(q2, c2, m[:, None]), margin_mse(q2, c2, t2))


def test_margin_mse_gradcheck():
    q, c, t = inputs(n=3, k=3, d=4)
    assert torch.autograd.gradcheck(lambda q, c: margin_mse(q, c, t), (q, c))
    assert torch.autograd.gradcheck(lambda q, c: margin_mse(q, c, t, normalize=True), (q, c))


def test_margin_mse_oracle_equal_margins_zero():
    q, c, _ = inputs()
    s = ref_scores(q, c).detach()
    loss = margin_mse(q, c, s + 7.0)  # teacher = student scores up to a constant
    gq, gc = torch.autograd.grad(loss, (q, c))
    assert abs(loss.item()) < 1e-24
    assert gq.abs().max() < 1e-12 and gc.abs().max() < 1e-12


def test_margin_mse_oracle_single_triple():
    q, c = rnd(1, D), rnd(1, 2, D, seed=1)
    m = torch.tensor([0.7], dtype=torch.float64)
    loss = margin_mse(q, c, m)
    sp, sn = (q[0] * c[0, 0]).sum(), (q[0] * c[0, 1]).sum()
    r = sp - sn - m[0]
    torch.testing.assert_close(loss, r**2)
    gq, gc = torch.autograd.grad(loss, (q, c))
    # d loss / d s_p = 2 (s_p - s_n - m_T); s_p = <q, c_p>
    torch.testing.assert_close(gc[0, 0], 2 * r * q[0])
    torch.testing.assert_close(gq[0], 2 * r * (c[0, 0] - c[0, 1]))


def test_margin_mse_oracle_row_constant_invariance():
    q, c, t = inputs()
    shift = torch.randn(N, 1, dtype=torch.float64) * 3
    # s_ik + shift_i for every k: c_ik + shift_i q_i / ||q_i||^2
    c2 = c + (shift * q / q.pow(2).sum(1, keepdim=True))[:, None, :]
    torch.testing.assert_close(margin_mse(q, c2, t), margin_mse(q, c, t))
    torch.testing.assert_close(margin_mse(q, c, t + shift), margin_mse(q, c, t))


@pytest.mark.parametrize("k", [2, 4])
def test_margin_mse_matches_sentence_transformers(k):
    L = st_losses()
    q, c, t = inputs(k=k)
    peer = st_make(L.MarginMSELoss)
    labels = (t[:, 0] - t[:, 1]) if k == 2 else (t[:, :1] - t[:, 1:])
    diff = assert_same(
        lambda q, c: margin_mse(q, c, labels),
        lambda q, c: peer.compute_loss_from_embeddings([q, *c.unbind(1)], labels),
        [q, c],
    )
    assert diff < 1e-12
    # sentence-transformers also takes the teacher's raw scores (N, K)
    torch.testing.assert_close(
        margin_mse(q, c, t), peer.compute_loss_from_embeddings([q, *c.unbind(1)], t)
    )


# ------------------------------------------------------------------------------------------
# KL distillation
# ------------------------------------------------------------------------------------------
KL_OPTIONS = [
    {},
    {"temperature": 2.0},
    {"temperature": 0.5, "teacher_temperature": 3.0},
    {"temperature": 2.0, "temperature_squared": False},
    {"divergence": "cross_entropy", "temperature": 0.7},
    {"normalize": True, "temperature": 0.1},
]


def _ref_kw(kw):
    r = dict(kw)
    r["squared"] = r.pop("temperature_squared", True)
    r["ce"] = r.pop("divergence", "kl") == "cross_entropy"
    return r


@pytest.mark.parametrize(
    "kw", KL_OPTIONS, ids=lambda kw: "-".join(map(str, kw.values())) or "default"
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kl_distillation_matches_reference(kw, reduction):
    q, c, t = inputs()
    assert_same(
        lambda q, c: kl_distillation(q, c, t, reduction=reduction, **kw),
        lambda q, c: ref_kl(q, c, t, reduction=reduction, **_ref_kw(kw)),
        [q, c],
    )


def test_kl_distillation_padding_drops_the_candidate():
    q, c, t = inputs()
    t = t.clone()
    t[1, 2] = float("-inf")
    t[3, 0] = float("-inf")
    kw = {"temperature": 0.5, "reduction": "none"}
    assert_same(
        lambda q, c: kl_distillation(q, c, t, **kw),
        lambda q, c: ref_kl(q, c, t, **kw),
        [q, c],
    )
    rows = kl_distillation(q, c, t, **kw)
    keep = [0, 1, 3]
    alone = kl_distillation(q[1:2], c[1:2, keep], t[1:2, keep], **kw)
    torch.testing.assert_close(rows[1:2], alone)
    # a row with one candidate left: loss 0
    t[4, 1:] = float("-inf")
    assert kl_distillation(q, c, t, **kw)[4].abs() < 1e-15


def test_kl_distillation_gradcheck():
    q, c, t = inputs(n=3, k=3, d=4)
    for kw in ({"temperature": 0.7, "teacher_temperature": 2.0}, {"normalize": True}):
        assert torch.autograd.gradcheck(lambda q, c, kw=kw: kl_distillation(q, c, t, **kw), (q, c))
    t = t.clone()
    t[0, 1] = float("-inf")
    assert torch.autograd.gradcheck(lambda q, c: kl_distillation(q, c, t), (q, c))


def test_kl_distillation_oracle_teacher_equals_student():
    q, c, _ = inputs()
    s = ref_scores(q, c).detach()
    loss = kl_distillation(q, c, s, temperature=0.5)
    gq, gc = torch.autograd.grad(loss, (q, c))
    assert abs(loss.item()) < 1e-14
    assert gq.abs().max() < 1e-12 and gc.abs().max() < 1e-12


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_kl_distillation_oracle_one_hot_teacher_is_infonce(temperature):
    q, c, _ = inputs()
    t = torch.zeros(N, K, dtype=torch.float64)
    t[:, 0] = 1e4  # p = one-hot on the positive (exp(-1e4) = 0 in float64)
    s = ref_scores(q, c)
    infonce = F.cross_entropy(s / temperature, torch.zeros(N, dtype=torch.long))
    out = kl_distillation(q, c, t, temperature=temperature, temperature_squared=False)
    torch.testing.assert_close(out, infonce)


def test_kl_distillation_oracle_row_constant_invariance():
    q, c, t = inputs()
    shift = torch.randn(N, 1, dtype=torch.float64) * 3
    c2 = c + (shift * q / q.pow(2).sum(1, keepdim=True))[:, None, :]
    base = kl_distillation(q, c, t, temperature=0.5)
    torch.testing.assert_close(kl_distillation(q, c2, t, temperature=0.5), base)
    torch.testing.assert_close(kl_distillation(q, c, t + shift, temperature=0.5), base)


def test_kl_distillation_oracle_score_gradient_rows_sum_to_zero():
    q, c, t = inputs()
    (gc,) = torch.autograd.grad(kl_distillation(q, c, t, temperature=0.5), (c,))
    # dot-product scores: d loss / d c_ik = (d loss / d s_ik) q_i
    g = (gc * q[:, None, :]).sum(-1) / q.pow(2).sum(1, keepdim=True)
    torch.testing.assert_close(g.sum(1), torch.zeros(N, dtype=torch.float64))
    # T (q - p) / N per score (mean over queries, T^2 times 1/T)
    s = ref_scores(q, c).detach()
    expected = 0.5 * (torch.softmax(s / 0.5, 1) - torch.softmax(t / 0.5, 1)) / N
    torch.testing.assert_close(g, expected)


def test_kl_distillation_cross_entropy_is_kl_plus_teacher_entropy():
    q, c, t = inputs()
    p = torch.softmax(t / 2.0, 1)
    entropy = -(p * p.log()).sum(1).mean()
    kl = kl_distillation(q, c, t, temperature=2.0, temperature_squared=False)
    ce = kl_distillation(
        q, c, t, temperature=2.0, temperature_squared=False, divergence="cross_entropy"
    )
    torch.testing.assert_close(ce, kl + entropy)


@pytest.mark.parametrize(
    "kw",
    [{}, {"temperature": 2.0}, {"temperature": 0.5, "teacher_temperature": 3.0}],
    ids=["default", "T2", "T0.5-Tt3"],
)
def test_kl_distillation_matches_sentence_transformers(kw):
    L = st_losses()
    q, c, t = inputs()
    st_kw = dict(kw)
    if "teacher_temperature" in st_kw:
        st_kw["student_temperature"] = st_kw.pop("temperature")
    peer = st_make(L.DistillKLDivLoss, **st_kw)

    def theirs(q, c):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return peer.compute_loss_from_embeddings([q, *c.unbind(1)], t)

    diff = assert_same(lambda q, c: kl_distillation(q, c, t, **kw), theirs, [q, c])
    assert diff < 1e-12


def test_kl_distillation_teacher_gets_no_gradient():
    q, c, t = inputs()
    t = t.clone().requires_grad_()
    tt = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    kl_distillation(q, c, t, teacher_temperature=tt).backward()
    assert t.grad is None and tt.grad is None and q.grad is not None


# ------------------------------------------------------------------------------------------
# embedding regression
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["mse", "l2", "cosine"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_embedding_distillation_matches_reference(distance, normalize, reduction):
    z, t = rnd(N, D), rnd(N, D, seed=1, grad=False)
    kw = {"distance": distance, "normalize": normalize, "reduction": reduction}
    assert_same(
        lambda z: embedding_distillation(z, t, **kw), lambda z: ref_embedding(z, t, **kw), [z]
    )


@pytest.mark.parametrize("distance", ["mse", "l2", "cosine"])
def test_embedding_distillation_gradcheck(distance):
    z, t = rnd(3, 4), rnd(3, 4, seed=1, grad=False)
    assert torch.autograd.gradcheck(lambda z: embedding_distillation(z, t, distance=distance), (z,))


@pytest.mark.parametrize("distance", ["mse", "l2", "cosine"])
def test_embedding_distillation_oracle_student_equals_teacher(distance):
    z = rnd(N, D)
    loss = embedding_distillation(z, z.detach().clone(), distance=distance)
    (g,) = torch.autograd.grad(loss, (z,))
    assert abs(loss.item()) < 1e-12 and torch.isfinite(g).all() and g.abs().max() < 1e-7


def test_embedding_distillation_oracle_unit_mse_is_twice_cosine():
    z, t = rnd(N, D), rnd(N, D, seed=1, grad=False)
    mse = embedding_distillation(z, t, normalize=True, reduction="none")
    cos = embedding_distillation(z, t, distance="cosine", reduction="none")
    torch.testing.assert_close(D * mse, 2 * cos)
    # a sum of squared differences of normalised features (DeGLA) = d x the sum reduction
    total = (F.normalize(z, dim=-1) - F.normalize(t, dim=-1)).pow(2).sum()
    torch.testing.assert_close(
        D * embedding_distillation(z, t, normalize=True, reduction="sum"), total
    )


@pytest.mark.parametrize("distance", ["mse", "l2", "cosine"])
def test_embedding_distillation_matches_sentence_transformers(distance):
    L = st_losses()
    z, t = rnd(N, D), rnd(N, D, seed=1, grad=False)
    peer = (
        st_make(L.MSELoss)
        if distance == "mse"
        else st_make(L.EmbedDistillLoss, distance_metric=distance)
    )
    diff = assert_same(
        lambda z: embedding_distillation(z, t, distance=distance),
        lambda z: peer.compute_loss_from_embeddings([z], [t]),
        [z],
    )
    assert diff < 1e-12


# ------------------------------------------------------------------------------------------
# in-batch KL distillation (teacher embeddings, engine with per-tile soft targets)
# ------------------------------------------------------------------------------------------
M, DT = 9, 7


def in_batch(n=N, m=M, seed=0):
    return (
        rnd(n, D, seed=seed),
        rnd(m, D, seed=seed + 1),
        rnd(n, DT, seed=seed + 2, grad=False),
        rnd(m, DT, seed=seed + 3, grad=False),
    )


def ref_in_batch(
    q,
    c,
    tq,
    tc,
    temperature=1.0,
    teacher_temperature=None,
    squared=True,
    ce=False,
    normalize=False,
    reduction="mean",
):
    """The dense N x M matrices, row by row (``ce``: unused, the KL form only)."""
    tt = temperature if teacher_temperature is None else teacher_temperature
    if normalize:
        q, c, tq, tc = (F.normalize(x, dim=-1) for x in (q, c, tq, tc))
    rows = []
    for i in range(len(q)):
        zt = (tq[i] @ tc.T) / tt
        zs = (q[i] @ c.T) / temperature
        log_p = zt - torch.logsumexp(zt, 0)
        log_q = zs - torch.logsumexp(zs, 0)
        rows.append((log_p.exp() * (log_p - log_q)).sum() * (temperature**2 if squared else 1))
    rows = torch.stack(rows)
    return {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]


ENGINE = [
    {"backend": "dense"},
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled", "chunk_size": 64},
    {"backend": "tiled"},
]


@pytest.mark.parametrize("eng", ENGINE, ids=lambda e: "-".join(map(str, e.values())))
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"temperature": 0.5, "teacher_temperature": 2.0},
        {"normalize": True, "temperature": 0.1},
        {"temperature": 2.0, "temperature_squared": False},
    ],
    ids=["default", "T-Tt", "cosine", "no-T2"],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_in_batch_kl_distillation_matches_reference(eng, kw, reduction):
    q, c, tq, tc = in_batch()
    assert_same(
        lambda q, c: in_batch_kl_distillation(q, c, tq, tc, reduction=reduction, **kw, **eng),
        lambda q, c: ref_in_batch(q, c, tq, tc, reduction=reduction, **_ref_kw(kw)),
        [q, c],
    )


def test_in_batch_kl_distillation_equals_listed_form():
    q, c, tq, tc = in_batch()
    listed = kl_distillation(q, c.expand(N, M, D), tq @ tc.T, temperature=0.5)
    torch.testing.assert_close(
        in_batch_kl_distillation(q, c, tq, tc, temperature=0.5, backend="tiled", chunk_size=2),
        listed,
    )


def test_in_batch_kl_distillation_gradcheck():
    q, c, tq, tc = in_batch(n=3, m=4)
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    for eng in ({"backend": "dense"}, {"backend": "tiled", "chunk_size": 3}):
        assert torch.autograd.gradcheck(
            lambda q, c, tau, eng=eng: in_batch_kl_distillation(
                q, c, tq, tc, temperature=tau, teacher_temperature=1.5, **eng
            ),
            (q, c, tau),
        )


def test_in_batch_kl_distillation_oracle_teacher_equals_student():
    q, c, _, _ = in_batch()
    loss = in_batch_kl_distillation(
        q, c, q.detach(), c.detach(), temperature=0.3, backend="tiled", chunk_size=4
    )
    gq, gc = torch.autograd.grad(loss, (q, c))
    assert abs(loss.item()) < 1e-13
    assert gq.abs().max() < 1e-12 and gc.abs().max() < 1e-12


def test_in_batch_kl_distillation_oracle_one_hot_teacher_is_infonce():
    q, c, _, _ = in_batch(n=N, m=N)
    eye = torch.eye(N, dtype=torch.float64)  # t_ij = 1[i = j] / 1e-3: p is the diagonal
    out = in_batch_kl_distillation(
        q,
        c,
        eye,
        eye,
        temperature=0.2,
        teacher_temperature=1e-3,
        temperature_squared=False,
        backend="tiled",
        chunk_size=2,
    )
    infonce = F.cross_entropy(q @ c.T / 0.2, torch.arange(N))
    torch.testing.assert_close(out, infonce)


def test_in_batch_kl_distillation_matches_sentence_transformers():
    L = st_losses()
    q, c, tq, tc = in_batch()
    peer = st_make(L.DistillKLDivLoss, student_temperature=0.5, teacher_temperature=2.0)

    def theirs(q, c):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return peer.compute_loss_from_embeddings([q, *c.expand(N, M, D).unbind(1)], tq @ tc.T)

    diff = assert_same(
        lambda q, c: in_batch_kl_distillation(
            q, c, tq, tc, temperature=0.5, teacher_temperature=2.0, backend="tiled", chunk_size=4
        ),
        theirs,
        [q, c],
    )
    assert diff < 1e-12


def test_in_batch_kl_distillation_teacher_gets_no_gradient():
    q, c, tq, tc = in_batch()
    tq, tc = tq.clone().requires_grad_(), tc.clone().requires_grad_()
    in_batch_kl_distillation(q, c, tq, tc, backend="tiled", chunk_size=3).backward()
    assert tq.grad is None and tc.grad is None and q.grad is not None and c.grad is not None


# ------------------------------------------------------------------------------------------
# shared: half precision, modules, reductions, registry, examples, bad input
# ------------------------------------------------------------------------------------------
def _calls():
    q, c, t = inputs()
    t_pad = t.clone()
    t_pad[0, 1] = float("-inf")
    z, zt = rnd(N, D), rnd(N, D, seed=1, grad=False)
    return {
        "margin_mse": (margin_mse, MarginMSE, [q, c], [t], {"normalize": True}),
        "kl_distillation": (
            kl_distillation,
            KLDistillation,
            [q, c],
            [t_pad],
            {"temperature": 0.05, "teacher_temperature": 0.5},
        ),
        "in_batch_kl_distillation": (
            in_batch_kl_distillation,
            InBatchKLDistillation,
            [q, c[:, 0]],
            [c[:, 1].detach(), c[:, 2].detach()],
            {"temperature": 0.05, "normalize": True, "backend": "tiled", "chunk_size": 2},
        ),
        "embedding_distillation": (
            embedding_distillation,
            EmbeddingDistillation,
            [z],
            [zt],
            {"distance": "cosine"},
        ),
    }


NAMES = ["margin_mse", "kl_distillation", "in_batch_kl_distillation", "embedding_distillation"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_finite(name, dtype):
    fn, _, leaves, other, kw = _calls()[name]
    leaves = [(10 * x.detach()).to(dtype).requires_grad_() for x in leaves]
    other = [x.to(dtype) if x.is_floating_point() else x for x in other]
    out = fn(*leaves, *other, **kw)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.backward()
    for x in leaves:
        assert x.grad is not None and x.grad.dtype == dtype and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_module_equals_functional(name):
    fn, cls, leaves, other, kw = _calls()[name]
    module = cls(**kw)
    torch.testing.assert_close(module(*leaves, *other), fn(*leaves, *other, **kw))
    torch.testing.assert_close(
        module(*leaves, *other, reduction="none"), fn(*leaves, *other, reduction="none", **kw)
    )
    assert fn.__name__.replace("_", "") == cls.__name__.lower()
    assert REGISTRY[name].family == "distillation" and REGISTRY[name].module is cls


@pytest.mark.parametrize("name", NAMES)
def test_reductions_consistent(name):
    fn, _, leaves, other, kw = _calls()[name]
    rows = fn(*leaves, *other, reduction="none", **kw)
    assert rows.shape == (N,)
    torch.testing.assert_close(fn(*leaves, *other, reduction="sum", **kw), rows.sum())
    torch.testing.assert_close(fn(*leaves, *other, **kw), rows.mean())


@pytest.mark.parametrize(
    "cls", [MarginMSE, KLDistillation, InBatchKLDistillation, EmbeddingDistillation]
)
def test_docstring_is_a_manual_with_a_runnable_example(cls):
    doc = cls.__doc__
    for section in ("::", "Args:", "Inputs:", "Example::", "See also:", "References:"):
        assert section in doc, section
    assert re.search(r"arXiv:\d{4}\.\d{5}", doc)
    example = textwrap.dedent(doc.split("Example::")[1].split("See also:")[0])
    scope: dict = {}
    exec(compile(example, f"<{cls.__name__} example>", "exec"), scope)
    assert torch.isfinite(scope["loss"])


def _bad_calls():
    q, c, t = [x.detach() for x in inputs()]
    z = q
    nan_t = t.clone()
    nan_t[0, 0] = float("nan")
    pinf = t.clone()
    pinf[0, 0] = float("inf")
    allpad = t.clone()
    allpad[2] = float("-inf")
    return [
        (margin_mse, (q[:-1], c, t), {}, "candidates"),
        (margin_mse, (q, c[:, :1], t[:, :1]), {}, "candidates"),
        (margin_mse, (q, c[..., :-1], t), {}, "candidates"),
        (margin_mse, (q, c[:, 0], t), {}, "candidates"),
        (margin_mse, (q, c, t[:, :2]), {}, "teacher"),
        (margin_mse, (q, c, t[:, 0]), {}, "teacher"),
        (margin_mse, (q, c, nan_t), {}, "teacher"),
        (margin_mse, (q, c, pinf), {}, "teacher"),
        (margin_mse, (q, c, t.tolist()), {}, "teacher"),
        (margin_mse, (q.long(), c, t), {}, "query"),
        (margin_mse, (q, c, t), {"reduction": "avg"}, "reduction"),
        (kl_distillation, (q, c, t), {"temperature": 0.0}, "temperature"),
        (kl_distillation, (q, c, t), {"temperature": torch.ones(3)}, "temperature"),
        (kl_distillation, (q, c, t), {"teacher_temperature": -1.0}, "teacher_temperature"),
        (kl_distillation, (q, c, t), {"divergence": "js"}, "divergence"),
        (kl_distillation, (q, c, t), {"temperature_squared": 1}, "temperature_squared"),
        (kl_distillation, (q, c, t[:, :-1]), {}, "teacher_scores"),
        (kl_distillation, (q, c, nan_t), {}, "teacher_scores"),
        (kl_distillation, (q, c, pinf), {}, "teacher_scores"),
        (kl_distillation, (q, c, allpad), {}, "teacher_scores"),
        (kl_distillation, (q, c.float(), t), {}, "candidates"),
        (in_batch_kl_distillation, (q, c[:, 0], q[:-1], c[:, 1]), {}, "teacher_query"),
        (in_batch_kl_distillation, (q, c[:, 0], q, c[:-1, 1]), {}, "teacher_candidates"),
        (in_batch_kl_distillation, (q, c[:, 0], q, c[:, 1, :-1]), {}, "teacher_candidates"),
        (in_batch_kl_distillation, (q, c[:, 0, :-1], q, c[:, 1]), {}, "candidates"),
        (in_batch_kl_distillation, (q, c[:, 0], nan_t, c[:, 1]), {}, "teacher_query"),
        (in_batch_kl_distillation, (q, c[:, 0], q, c[:, 1]), {"temperature": -1}, "temperature"),
        (
            in_batch_kl_distillation,
            (q, c[:, 0], q, c[:, 1]),
            {"teacher_temperature": torch.tensor(1.0)},
            "teacher_temperature",
        ),
        (in_batch_kl_distillation, (q, c[:, 0], q, c[:, 1]), {"backend": "gpu?"}, "backend"),
        (embedding_distillation, (z, z[:-1]), {}, "teacher"),
        (embedding_distillation, (z, z[:, :-1]), {}, "teacher"),
        (embedding_distillation, (z, z.clone().fill_(float("nan"))), {}, "teacher"),
        (embedding_distillation, (z[:0], z[:0]), {}, "student"),
        (embedding_distillation, (z, z), {"distance": "dot"}, "distance"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_raises_naming_the_argument(case):
    fn, args, kw, name = _bad_calls()[case]
    with pytest.raises(ValueError, match=name):
        fn(*args, **kw)


def test_kl_distillation_learnable_temperature():
    q, c, t = inputs(n=3, k=3, d=4)
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, c, tau: kl_distillation(q, c, t, temperature=tau, teacher_temperature=1.0),
        (q, c, tau),
    )
    module = KLDistillation(temperature=torch.nn.Parameter(torch.tensor(0.7)))
    assert any(p is module.temperature for p in module.parameters())
    module(q.float(), c.float(), t.float()).backward()
    assert module.temperature.grad is not None and torch.isfinite(module.temperature.grad)


# ------------------------------------------------------------------------------------------
# ALBEF momentum distillation (image-text contrastive part; engine with per-tile soft targets)
# ------------------------------------------------------------------------------------------
Q = 7  # queue rows


def albef_inputs(n=N, d=D, q=Q, seed=0):
    """Student features, momentum features near them (a momentum encoder lags the student),
    and queues of unit vectors (random, as ALBEF's initial queues)."""
    v, t = rnd(n, d, seed=seed), rnd(n, d, seed=seed + 1)
    vm = (v + 0.3 * rnd(n, d, seed=seed + 2, grad=False)).detach()
    tm = (t + 0.3 * rnd(n, d, seed=seed + 3, grad=False)).detach()
    qv = F.normalize(rnd(q, d, seed=seed + 4, grad=False), dim=1)
    qt = F.normalize(rnd(q, d, seed=seed + 5, grad=False), dim=1)
    return v, t, vm, tm, qv, qt


def ref_albef(v, t, vm, tm, qv=None, qt=None, alpha=0.4, temperature=0.07, reduction="mean"):
    """A transcription of the ITA block of ALBEF.forward (models/model_pretrain.py): normalised
    features, candidates = [momentum batch ; queue], targets alpha * momentum softmax +
    (1 - alpha) * the diagonal, cross-entropy with log_softmax, mean, both directions halved."""
    v, t = F.normalize(v, dim=-1), F.normalize(t, dim=-1)
    vm, tm = F.normalize(vm, dim=-1), F.normalize(tm, dim=-1)
    image_all = vm if qv is None else torch.cat([vm, F.normalize(qv, dim=-1)])
    text_all = tm if qt is None else torch.cat([tm, F.normalize(qt, dim=-1)])
    temp = temperature
    with torch.no_grad():
        tt = temp.detach() if isinstance(temp, torch.Tensor) else temp
        sim_i2t_m = vm @ text_all.T / tt
        sim_t2i_m = tm @ image_all.T / tt
        sim_targets = torch.zeros_like(sim_i2t_m)
        sim_targets.fill_diagonal_(1)
        y_i2t = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * sim_targets
        sim_targets = torch.zeros_like(sim_t2i_m)
        sim_targets.fill_diagonal_(1)
        y_t2i = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * sim_targets
    sim_i2t = v @ text_all.T / temp
    sim_t2i = t @ image_all.T / temp
    rows_i2t = -torch.sum(F.log_softmax(sim_i2t, dim=1) * y_i2t, dim=1)
    rows_t2i = -torch.sum(F.log_softmax(sim_t2i, dim=1) * y_t2i, dim=1)
    rows = (rows_i2t + rows_t2i) / 2
    return {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]


ALBEF_ENGINE = [
    {"backend": "dense"},
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled", "chunk_size": 64},
]


@pytest.mark.parametrize("eng", ALBEF_ENGINE, ids=lambda e: "-".join(map(str, e.values())))
@pytest.mark.parametrize(
    "kw",
    [{}, {"alpha": 0.0}, {"alpha": 1.0, "temperature": 0.3}, {"queue": False, "alpha": 0.7}],
    ids=["default", "alpha0", "alpha1", "no-queue"],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_momentum_distillation_matches_albef_transcription(eng, kw, reduction):
    v, t, vm, tm, qv, qt = albef_inputs()
    kw = dict(kw)
    queues = (qv, qt) if kw.pop("queue", True) else ()
    assert_same(
        lambda v, t: momentum_distillation(v, t, vm, tm, *queues, reduction=reduction, **kw, **eng),
        lambda v, t: ref_albef(v, t, vm, tm, *queues, reduction=reduction, **kw),
        [v, t],
    )


def test_momentum_distillation_learnable_temperature_gradcheck():
    v, t, vm, tm, qv, qt = albef_inputs(n=3, d=4, q=2)
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    for eng in ({"backend": "dense"}, {"backend": "tiled", "chunk_size": 2}):
        assert torch.autograd.gradcheck(
            lambda v, t, eng=eng: momentum_distillation(
                v, t, vm, tm, qv, qt, temperature=tau, **eng
            ),
            (v, t),
        )
    # tau also sets the targets' sharpness, without gradient there (ALBEF computes them under
    # no_grad), so a finite difference in tau is not the gradient: compare with the
    # transcription instead
    assert_same(
        lambda tau: momentum_distillation(v, t, vm, tm, qv, qt, temperature=tau, chunk_size=2),
        lambda tau: ref_albef(v, t, vm, tm, qv, qt, temperature=tau),
        [tau],
    )


def test_momentum_distillation_oracle_alpha_zero_is_infonce_with_a_queue():
    v, t, vm, tm, qv, qt = albef_inputs()
    got = momentum_distillation(v, t, vm, tm, qv, qt, alpha=0.0, temperature=0.1)
    i2t = info_nce(v, tm, qt, temperature=0.1)  # MoCo-style: keys = momentum features
    t2i = info_nce(t, vm, qv, temperature=0.1)
    torch.testing.assert_close(got, (i2t + t2i) / 2)


def test_momentum_distillation_oracle_identical_momentum_and_alpha_one_has_zero_gradient():
    v, t, _, _, qv, qt = albef_inputs()
    tau = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    loss = momentum_distillation(
        v, t, v.detach(), t.detach(), qv, qt, alpha=1.0, temperature=tau, chunk_size=3
    )
    gv, gt, gtau = torch.autograd.grad(loss, (v, t, tau))
    assert max(gv.abs().max(), gt.abs().max(), gtau.abs()) < 1e-12
    # the value is then the entropy of the student's softmaxes (cross-entropy, not KL)
    vn, tn = F.normalize(v, dim=-1).detach(), F.normalize(t, dim=-1).detach()

    def entropy(u):
        p = torch.softmax(u / 0.2, 1)
        return -(p * p.log()).sum(1).mean()

    want = (entropy(vn @ torch.cat([tn, qt]).T) + entropy(tn @ torch.cat([vn, qv]).T)) / 2
    torch.testing.assert_close(loss.detach(), want)


def test_momentum_distillation_one_pair_needs_a_queue():
    v, t, vm, tm, qv, qt = albef_inputs(n=1)
    one = momentum_distillation(v, t, vm, tm, qv, qt)  # the queues are the negatives
    torch.testing.assert_close(one, ref_albef(v, t, vm, tm, qv, qt))
    with pytest.raises(ValueError, match="no negatives"):
        momentum_distillation(v, t, vm, tm, qv)  # t2i has a single candidate


def test_momentum_distillation_no_gradient_reaches_momentum_features_or_queues():
    v, t, vm, tm, qv, qt = albef_inputs()
    vm, tm, qv, qt = (x.clone().requires_grad_() for x in (vm, tm, qv, qt))
    momentum_distillation(v, t, vm, tm, qv, qt, backend="tiled", chunk_size=3).backward()
    assert all(x.grad is None for x in (vm, tm, qv, qt))
    assert v.grad is not None and t.grad is not None


def test_momentum_distillation_module_state_queue_and_clamp():
    d, size = 4, 10
    itc = MomentumDistillation(dim=d, queue_size=size, generator=torch.Generator().manual_seed(0))
    assert len(itc.image_queue) == size and any(p is itc.temperature for p in itc.parameters())
    v, t, vm, tm, _, _ = albef_inputs(n=3, d=d)
    v, t, vm, tm = (x.float() for x in (v, t, vm, tm))
    before_i, before_t = itc.image_queue.keys, itc.text_queue.keys
    with torch.no_grad():
        itc.temperature.fill_(5.0)  # outside (0.001, 0.5): clamped in place at the call
    loss = itc(v, t, vm, tm)
    assert float(itc.temperature.detach()) == 0.5
    want = momentum_distillation(v, t, vm, tm, before_i, before_t, temperature=0.5)
    torch.testing.assert_close(loss, want)
    # the normalised momentum features were enqueued (newest last)
    torch.testing.assert_close(itc.image_queue.keys[-3:], F.normalize(vm, dim=-1))
    torch.testing.assert_close(itc.text_queue.keys[-3:], F.normalize(tm, dim=-1))
    # alpha per call (ALBEF's warm-up) and without queues
    no_q = MomentumDistillation(dim=d, queue_size=None, alpha=0.4)
    torch.testing.assert_close(
        no_q(v, t, vm, tm, alpha=0.1), momentum_distillation(v, t, vm, tm, alpha=0.1)
    )
    loss.backward()
    assert itc.temperature.grad is not None and torch.isfinite(itc.temperature.grad)


def test_momentum_distillation_half_precision_and_reductions():
    v, t, vm, tm, qv, qt = albef_inputs()
    kw = {"temperature": 0.01, "backend": "tiled", "chunk_size": 2}
    rows = momentum_distillation(v, t, vm, tm, qv, qt, reduction="none", **kw)
    assert rows.shape == (N,)
    torch.testing.assert_close(momentum_distillation(v, t, vm, tm, qv, qt, **kw), rows.mean())
    torch.testing.assert_close(
        momentum_distillation(v, t, vm, tm, qv, qt, reduction="sum", **kw), rows.sum()
    )
    for dtype in (torch.float16, torch.bfloat16):
        leaves = [(10 * x.detach()).to(dtype).requires_grad_() for x in (v, t)]
        other = [x.to(dtype) for x in (vm, tm, qv, qt)]
        out = momentum_distillation(*leaves, *other, **kw)
        assert out.dtype == torch.float32 and torch.isfinite(out)
        out.backward()
        assert all(x.grad.dtype == dtype and torch.isfinite(x.grad).all() for x in leaves)


@pytest.mark.parametrize("temperature", [0.07, 0.001], ids=["albef", "clamp-low"])
def test_momentum_distillation_in_sweep_teacher_softmax(monkeypatch, temperature):
    """The tiled single sweep normalises the momentum softmax in the sweep (no teacher
    log-sum-exp pre-pass) over several column chunks and row blocks: fp32 values and gradients
    equal the float64 ALBEF transcription, also at ALBEF's lowest temperature (base-2 teacher
    logits up to about 1,440: the chunk maxima keep them finite)."""
    import importlib

    from contrastkit.engine import fused

    md_module = importlib.import_module("contrastkit.losses.distillation.momentum_distillation")

    def no_prepass(*args):
        raise AssertionError("teacher log-sum-exp pre-pass on the single sweep")

    monkeypatch.setattr(fused, "CHUNK_ELEMS", 1000)  # chunks of 256 columns
    v, t, vm, tm, qv, qt = albef_inputs(n=96, d=8, q=200, seed=3)
    leaves32 = [x.detach().float().requires_grad_() for x in (v, t)]
    other32 = [x.float() for x in (vm, tm, qv, qt)]
    want, g64 = value_and_grads(
        lambda v, t: ref_albef(v, t, vm, tm, qv, qt, temperature=temperature), [v, t]
    )
    for eng in ({"backend": "dense"}, {"backend": "tiled"}, {"backend": "tiled", "chunk_size": 64}):
        got, g32 = value_and_grads(
            lambda v, t, eng=eng: momentum_distillation(
                v, t, *other32, temperature=temperature, **eng
            ),
            leaves32,
        )
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        if eng["backend"] == "dense":  # fp32 on materialised logits: the error fp32 allows
            dense_err = [(a.double() - b).abs().max() for a, b in zip(g32, g64)]
            monkeypatch.setattr(md_module, "_teacher_lse", no_prepass)  # the dense path's
            continue
        for a, b, e in zip(g32, g64, dense_err):
            err = (a.double() - b).abs().max()
            assert err <= max(2 * e, 1e-5), (eng, err, e)


def test_momentum_distillation_docstring_is_a_manual_with_a_runnable_example():
    test_docstring_is_a_manual_with_a_runnable_example(MomentumDistillation)
    assert REGISTRY["momentum_distillation"].module is MomentumDistillation
    assert momentum_distillation.exact_under_group is True


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t[:-1], vm, tm), "text"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t, vm[:-1], tm), "image_momentum"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t, vm, tm[:, :-1]), "text_momentum"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t, vm, tm, qv[:, :-1]), "image_queue"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t, vm, tm, None, qv.float()), "text_q"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t, vm, tm, alpha=1.5), "alpha"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t, vm, tm, alpha="a"), "alpha"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t, vm, tm, temperature=0), "temper"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t, vm, tm, normalize=1), "normalize"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v, t, vm, tm, backend="x"), "backend"),
        (lambda v, t, vm, tm, qv: MomentumDistillation(4, alpha=-0.1), "alpha"),
        (lambda v, t, vm, tm, qv: MomentumDistillation(4, init_temperature=0.9), "temperature"),
        (lambda v, t, vm, tm, qv: MomentumDistillation(4, queue_size=0), "size"),
        (lambda v, t, vm, tm, qv: momentum_distillation(v[:1], t[:1], vm[:1], tm[:1]), "image"),
    ],
)
def test_momentum_distillation_bad_input_names_the_argument(call, needle):
    v, t, vm, tm, qv, _ = [x.detach() for x in albef_inputs()]
    with pytest.raises(ValueError, match=needle):
        call(v, t, vm, tm, qv)


# ------------------------------------------------------------------------------------------
# heterogeneous ensemble teacher scores
# ------------------------------------------------------------------------------------------
def ref_ensemble(scores, scale=30.0):
    """A transcription of the reference training code's BiEncoderWrapper.get_scores_batch on
    given score matrices: per-row min-max with 1e-6, summed, divided by the teacher count,
    times score_scale."""
    total = 0
    for score in scores:
        max_t = score.max(dim=1).values
        min_t = score.min(dim=1).values
        total += (score - min_t.unsqueeze(-1)) / ((max_t - min_t + 1e-6).unsqueeze(-1))
    return total / len(scores) * scale


def test_ensemble_teacher_scores_transcription_and_oracles():
    dense = (
        F.normalize(rnd(N, D, grad=False), dim=1) @ F.normalize(rnd(K, D, seed=1, grad=False), 1).T
    )
    sparse = 40 * rnd(N, K, seed=2, grad=False).abs()
    got = ensemble_teacher_scores([dense, sparse])
    torch.testing.assert_close(got, ref_ensemble([dense, sparse]))
    one = ensemble_teacher_scores([sparse], scale=10.0)
    torch.testing.assert_close(one, ref_ensemble([sparse], scale=10.0))
    # every row spans [0, scale) (minus the eps effect)
    assert (one.min(1).values == 0).all() and (one.max(1).values < 10).all()
    assert (one.max(1).values > 10 * (1 - 1e-5)).all()
    # invariant to a positive affine rescaling of any teacher (up to eps)
    torch.testing.assert_close(
        ensemble_teacher_scores([3 * dense + 2, sparse]), got, rtol=1e-4, atol=1e-4
    )
    # labels for KL distillation at temperature 1 without T^2 (the reference trainer's use)
    q, c, _ = inputs()
    loss = kl_distillation(q, c, got, temperature=1.0, temperature_squared=False)
    torch.testing.assert_close(loss, ref_kl(q, c, got, squared=False))


def test_ensemble_teacher_scores_bad_input():
    t = rnd(N, K, grad=False)
    for bad, needle in [
        (t, "scores"),
        ([], "scores"),
        ([t, t[:, :-1]], r"scores\[1\]"),
        ([t, t.float()], r"scores\[1\]"),
        ([t[0]], r"scores\[0\]"),
        ([t.long()], r"scores\[0\]"),
        ([t.clone().fill_(float("nan"))], r"scores\[0\]"),
    ]:
        with pytest.raises(ValueError, match=needle):
            ensemble_teacher_scores(bad)
    with pytest.raises(ValueError, match="scale"):
        ensemble_teacher_scores([t], scale=0.0)


# ------------------------------------------------------------------------------------------
# in-batch KL: the teacher pre-pass (base 2, chunked) and the in-sweep teacher softmax
# ------------------------------------------------------------------------------------------
def test_in_batch_kl_teacher_prepass_merges_chunks(monkeypatch):
    """``_teacher_rows`` against float64 log-softmax rows, with column chunks of 1 to 3
    candidates (chunk maxima far apart: a sharp cosine teacher spans about +-290 in base 2,
    where an unshifted ``exp2`` would underflow)."""
    mod = importlib.import_module("contrastkit.losses.distillation.in_batch_kl_distillation")

    _, _, tq, tc = in_batch(n=6, m=11, seed=4)
    tq, tc = F.normalize(tq, dim=-1), F.normalize(tc, dim=-1)
    for tt, elems, rows in [(1.0, 1 << 20, 256), (0.005, 3, 1), (0.005, 4, 2), (0.3, 5, 4)]:
        monkeypatch.setattr(mod, "_CHUNK_ELEMS", elems)
        z = tq @ tc.T / tt
        log_p = torch.log_softmax(z, dim=1)
        want_lse2 = torch.logsumexp(z, dim=1) / math.log(2.0)
        want_neg_h = (log_p.exp() * log_p).sum(1)
        for dt, tol in ((torch.float64, 1e-12), (torch.float32, 2e-4)):
            lse2, neg_h = mod._teacher_rows((tq / (tt * math.log(2.0))).to(dt), tc.to(dt), rows)
            assert lse2.dtype == dt and neg_h.dtype == dt
            torch.testing.assert_close(lse2.double(), want_lse2, rtol=tol, atol=tol)
            torch.testing.assert_close(neg_h.double(), want_neg_h, rtol=tol, atol=tol)


def test_in_batch_kl_sweep_normalises_teacher_logits(monkeypatch):
    """The single sweep gets the teacher as base-2 logits (``SoftTargets.logits``, normalised
    in the sweep) and never calls the per-tile ``fn``; the dense and recompute paths call
    ``fn`` (normalised by the pre-pass). Every path matches the float64 reference, also with a
    sharp teacher in float32."""
    from contrastkit.engine import SoftTargets

    mod = importlib.import_module("contrastkit.losses.distillation.in_batch_kl_distillation")

    calls = {"fn": 0, "logits": 0}

    def counting(fn, logits=None, **kw):
        def fn2(*a):
            calls["fn"] += 1
            return fn(*a)

        def logits2(*a):
            calls["logits"] += 1
            return logits(*a)

        return SoftTargets(fn2, logits=None if logits is None else logits2, **kw)

    monkeypatch.setattr(mod, "SoftTargets", counting)
    q, c, tq, tc = in_batch(n=6, m=10, seed=7)
    kw = {"temperature": 0.1, "teacher_temperature": 0.01, "normalize": True}
    for eng, reduction, used, unused in [
        ({"backend": "tiled", "chunk_size": 4}, "mean", "logits", "fn"),
        ({"backend": "tiled"}, "sum", "logits", "fn"),
        ({"backend": "dense"}, "mean", "fn", "logits"),
        ({"backend": "tiled", "chunk_size": 4}, "none", "fn", "logits"),
    ]:
        calls.update(fn=0, logits=0)
        assert_same(
            lambda q, c, r=reduction, e=eng: in_batch_kl_distillation(
                q, c, tq, tc, reduction=r, **kw, **e
            ),
            lambda q, c, r=reduction: ref_in_batch(q, c, tq, tc, reduction=r, **_ref_kw(kw)),
            [q, c],
        )
        assert calls[used] > 0 and calls[unused] == 0, (eng, reduction, calls)
    q32, c32 = (x.detach().float().requires_grad_() for x in (q, c))
    got = in_batch_kl_distillation(q32, c32, tq.float(), tc.float(), backend="tiled", **kw)
    gq, gc = torch.autograd.grad(got, (q32, c32))
    want = ref_in_batch(q, c, tq, tc, reduction="mean", **_ref_kw(kw))
    wq, wc = torch.autograd.grad(want, (q, c))
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gq.double(), wq, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gc.double(), wc, rtol=1e-4, atol=1e-5)
