"""Preference objectives: DPO (conservative), IPO, NPO, D2O, SparsePO, S-VCO, SimPO, CPO, ORPO,
SLiC-HF and the log-probability helpers. Float64 references written here (loops over pairs and
tokens), value and gradient equality, gradcheck, paper and code oracles, TRL parity (when trl is
installed), half precision, module twins, reductions, empty batches, bad input."""

from __future__ import annotations

import math
import re
import textwrap
import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses.preference import (
    CPO,
    D2O,
    DPO,
    IPO,
    NPO,
    ORPO,
    SVCO,
    SimPO,
    SLiCHF,
    SparsePO,
    cpo,
    d2o,
    dpo,
    ipo,
    npo,
    orpo,
    sequence_log_probs,
    simpo,
    slic_hf,
    sparse_po,
    svco,
    token_kl,
    token_log_probs,
)
from contrastkit.objective import REGISTRY

N, K, LW, LL, V = 5, 3, 6, 4, 7
LOG2 = math.log(2.0)


def rnd(*shape, seed=0, scale=1.0, shift=0.0, grad=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = shift + scale * torch.randn(*shape, generator=g, dtype=dtype)
    return x.requires_grad_(grad)


def seq(n=N, seed=0):
    """Policy chosen/rejected and reference chosen/rejected sequence log-probs (about -20)."""
    return (
        rnd(n, seed=seed, scale=3, shift=-20),
        rnd(n, seed=seed + 1, scale=3, shift=-20),
        rnd(n, seed=seed + 2, scale=3, shift=-20, grad=False),
        rnd(n, seed=seed + 3, scale=3, shift=-20, grad=False),
    )


def masks(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    mw = torch.rand(n, LW, generator=g) < 0.7
    ml = torch.rand(n, LL, generator=g) < 0.7
    mw[:, 0] = ml[:, 0] = False  # a prompt position
    mw[:, 1] = ml[:, 1] = True  # at least one response token
    return mw, ml


def sparse_inputs(n=N, seed=0):
    pc = rnd(n, LW, seed=seed, shift=-2)
    pr = rnd(n, LL, seed=seed + 1, shift=-2)
    rc = rnd(n, LW, seed=seed + 2, shift=-2, grad=False)
    rr = rnd(n, LL, seed=seed + 3, shift=-2, grad=False)
    mw, ml = masks(n, seed)
    g = torch.Generator().manual_seed(seed + 4)
    ww = torch.rand(n, LW, generator=g, dtype=torch.float64).requires_grad_()
    wl = torch.rand(n, LL, generator=g, dtype=torch.float64).requires_grad_()
    kw_ = rnd(n, LW, seed=seed + 5).abs().detach().requires_grad_()
    kl_ = rnd(n, LL, seed=seed + 6).abs().detach().requires_grad_()
    dw = torch.rand(n, LW, generator=g, dtype=torch.float64).requires_grad_()
    dl = torch.rand(n, LL, generator=g, dtype=torch.float64).requires_grad_()
    return pc, pr, rc, rr, mw, ml, ww, wl, kw_, kl_, dw, dl


def value_and_grads(fn, leaves):
    leaves = [x.detach().clone().requires_grad_() for x in leaves]
    out = fn(*leaves)
    grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    return out.detach(), grads


def assert_same(fn_a, fn_b, leaves, **tol):
    va, ga = value_and_grads(fn_a, leaves)
    vb, gb = value_and_grads(fn_b, leaves)
    torch.testing.assert_close(va, vb, **tol)
    for a, b in zip(ga, gb):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, **tol)


def reduce_ref(rows, reduction):
    if reduction == "none":
        return torch.stack(rows) if rows else torch.zeros(0, dtype=torch.float64)
    total = sum(rows, torch.zeros((), dtype=torch.float64))
    return total if reduction == "sum" else total / max(len(rows), 1)


def log_sigmoid(z):
    """log(1 / (1 + exp(-z))), written out (float64, moderate z)."""
    return -torch.log1p(torch.exp(-z)) if z >= 0 else z - torch.log1p(torch.exp(z))


# ------------------------------------------------------------------------------------------
# float64 references (loops over pairs and tokens)
# ------------------------------------------------------------------------------------------
def ref_dpo(pc, pr, rc, rr, beta=0.1, eps=0.0, reduction="mean"):
    rows = []
    for i in range(pc.shape[0]):
        h = (pc[i] - rc[i]) - (pr[i] - rr[i])
        rows.append(-(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h))
    return reduce_ref(rows, reduction)


def ref_ipo(pc, pr, rc, rr, beta=0.1, reduction="mean"):
    rows = []
    for i in range(pc.shape[0]):
        h = (pc[i] - rc[i]) - (pr[i] - rr[i])
        rows.append((h - 1 / (2 * beta)) ** 2)
    return reduce_ref(rows, reduction)


def ref_npo(p, r, beta=0.1, reduction="mean"):
    rows = [2 / beta * torch.log1p((p[i] - r[i]).mul(beta).exp()) for i in range(p.shape[0])]
    return reduce_ref(rows, reduction)


def ref_d2o(ps, pr, rs, rr, beta=0.1, alpha=0.1, reduction="mean"):
    rows = []
    for i in range(ps.shape[0]):
        s = sum(ps[i, k] - rs[i, k] for k in range(ps.shape[1])) / ps.shape[1]
        rows.append(-log_sigmoid(beta * s - alpha * (pr[i] - rr[i])))
    return reduce_ref(rows, reduction)


def ref_sparse_po(pc, pr, rc, rr, mw, ml, ww=None, wl=None, kw_=None, kl_=None, dw=None,
                  dl=None, beta=0.1, lu=0.001, ld=0.001, reduction="mean"):  # fmt: skip
    rows = []
    for i in range(pc.shape[0]):
        u = d = l1 = 0.0
        for t in range(pc.shape[1]):
            if mw[i, t]:
                m = 1.0 if ww is None else ww[i, t]
                u = u + m * (pc[i, t] - rc[i, t])
                if ww is not None:
                    l1 = l1 + lu * abs(ww[i, t])
                if kw_ is not None:
                    md = 1.0 if dw is None else dw[i, t]
                    d = d + md * (-kw_[i, t])  # the code's k_t = -KL_t
                    if dw is not None:
                        l1 = l1 + ld * abs(dw[i, t])
        for t in range(pr.shape[1]):
            if ml[i, t]:
                m = 1.0 if wl is None else wl[i, t]
                u = u - m * (pr[i, t] - rr[i, t])
                if wl is not None:
                    l1 = l1 + lu * abs(wl[i, t])
                if kl_ is not None:
                    md = 1.0 if dl is None else dl[i, t]
                    d = d - md * (-kl_[i, t])
                    if dl is not None:
                        l1 = l1 + ld * abs(dl[i, t])
        rows.append(-log_sigmoid(beta * (u - d)) + l1)
    return reduce_ref(rows, reduction)


def ref_svco(p, r, betas=(0.1, 0.1, 0.1, 0.1), reduction="mean"):
    rows = []
    for i in range(p.shape[0]):

        def rho(resp, cond, i=i):
            return p[i, resp, cond] - r[i, resp, cond]

        margins = [
            rho(0, 0) - rho(0, 2),
            rho(0, 2) - rho(0, 1),
            rho(1, 1) - rho(1, 2),
            rho(1, 2) - rho(1, 0),
        ]
        rows.append(sum(-log_sigmoid(b * m) for b, m in zip(betas, margins) if b > 0))
    return reduce_ref(rows, reduction)


def ref_simpo(w, l_, beta=2.0, gamma=0.5, eps=0.0, reduction="mean"):
    rows = []
    for i in range(w.shape[0]):
        z = beta * (w[i] - l_[i]) - gamma
        rows.append(-(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z))
    return reduce_ref(rows, reduction)


def ref_cpo(w, l_, lengths=None, beta=0.1, lam=1.0, eps=0.0, reduction="mean"):
    rows = []
    for i in range(w.shape[0]):
        z = beta * (w[i] - l_[i])
        n = 1.0 if lengths is None else float(lengths[i])
        rows.append(-(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z) - lam * w[i] / n)
    return reduce_ref(rows, reduction)


def ref_orpo(w, l_, beta=0.1, reduction="mean"):
    rows = []
    for i in range(w.shape[0]):
        pw, pl = torch.exp(w[i]), torch.exp(l_[i])
        log_odds = torch.log(pw / (1 - pw)) - torch.log(pl / (1 - pl))
        rows.append(-w[i] - beta * log_sigmoid(log_odds))
    return reduce_ref(rows, reduction)


def ref_slic(w, l_, target=None, margin=1.0, lam=0.5, reduction="mean"):
    rows = []
    for i in range(w.shape[0]):
        hinge = torch.clamp(margin - w[i] + l_[i], min=0)
        rows.append(hinge - lam * (w[i] if target is None else target[i]))
    return reduce_ref(rows, reduction)


def ref_token_log_probs(logits, labels, ignore=-100):
    B, T, _ = logits.shape
    out = torch.zeros(B, T - 1, dtype=logits.dtype)
    valid = torch.zeros(B, T - 1, dtype=torch.bool)
    for b in range(B):
        for t in range(T - 1):
            y = int(labels[b, t + 1])
            if y != ignore:
                row = logits[b, t]
                out[b, t] = row[y] - torch.log(torch.exp(row).sum())
                valid[b, t] = True
    return out, valid


# ------------------------------------------------------------------------------------------
# values and gradients against the references
# ------------------------------------------------------------------------------------------
REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (0.5, 0.2), (2.0, 0.5)])
def test_dpo_matches_reference(beta, eps, reduction):
    pc, pr, rc, rr = seq()
    assert_same(
        lambda a, b: dpo(a, b, rc, rr, beta=beta, label_smoothing=eps, reduction=reduction),
        lambda a, b: ref_dpo(a, b, rc, rr, beta, eps, reduction),
        [pc, pr],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ipo_matches_reference(reduction):
    pc, pr, rc, rr = seq()
    assert_same(
        lambda a, b: ipo(a, b, rc, rr, beta=0.3, reduction=reduction),
        lambda a, b: ref_ipo(a, b, rc, rr, 0.3, reduction),
        [pc, pr],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_npo_matches_reference(beta, reduction):
    p, _, r, _ = seq()
    assert_same(
        lambda a: npo(a, r, beta=beta, reduction=reduction),
        lambda a: ref_npo(a, r, beta, reduction),
        [p],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_d2o_matches_reference(reduction):
    ps, rs = rnd(N, K, shift=-20, scale=3), rnd(N, K, seed=1, shift=-20, scale=3, grad=False)
    pr, _, rr, _ = seq(seed=2)
    assert_same(
        lambda a, b: d2o(a, b, rs, rr, beta=0.2, alpha=0.05, reduction=reduction),
        lambda a, b: ref_d2o(a, b, rs, rr, 0.2, 0.05, reduction),
        [ps, pr],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("parts", ["plain", "weights", "kl", "all"])
def test_sparse_po_matches_reference(parts, reduction):
    pc, pr, rc, rr, mw, ml, ww, wl, kw_, kl_, dw, dl = sparse_inputs()
    use_w = parts in ("weights", "all")
    use_kl = parts in ("kl", "all")
    use_d = parts == "all"
    leaves = [pc, pr] + ([ww, wl] if use_w else []) + ([kw_, kl_] if use_kl else [])
    leaves += [dw, dl] if use_d else []

    def unpack(xs):
        it = iter(xs)
        a, b = next(it), next(it)
        w1, w2 = (next(it), next(it)) if use_w else (None, None)
        k1, k2 = (next(it), next(it)) if use_kl else (None, None)
        d1, d2 = (next(it), next(it)) if use_d else (None, None)
        return a, b, w1, w2, k1, k2, d1, d2

    def ours(*xs):
        a, b, w1, w2, k1, k2, d1, d2 = unpack(xs)
        return sparse_po(a, b, rc, rr, mw, ml, w1, w2, k1, k2, d1, d2, beta=0.5,
                         reward_l1=0.01, kl_l1=0.02, reduction=reduction)  # fmt: skip

    def ref(*xs):
        a, b, w1, w2, k1, k2, d1, d2 = unpack(xs)
        return ref_sparse_po(a, b, rc, rr, mw, ml, w1, w2, k1, k2, d1, d2, beta=0.5, lu=0.01,
                             ld=0.02, reduction=reduction)  # fmt: skip

    assert_same(ours, ref, leaves)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("betas", [(0.1, 0.1, 0.1, 0.1), (0.5, 0.0, 0.2, 0.0)])
def test_svco_matches_reference(betas, reduction):
    p, r = rnd(N, 2, 3, shift=-20, scale=3), rnd(N, 2, 3, seed=1, shift=-20, scale=3, grad=False)
    assert_same(
        lambda a: svco(a, r, betas=betas, reduction=reduction),
        lambda a: ref_svco(a, r, betas, reduction),
        [p],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_simpo_cpo_orpo_slic_match_references(reduction):
    w, l_ = rnd(N, shift=-1.2, scale=0.3), rnd(N, seed=1, shift=-1.2, scale=0.3)
    lengths = torch.tensor([3, 5, 8, 2, 4])
    target = rnd(N, seed=2, shift=-10)
    cases = [
        (lambda a, b: simpo(a, b, beta=2.5, gamma=0.7, label_smoothing=0.1, reduction=reduction),
         lambda a, b: ref_simpo(a, b, 2.5, 0.7, 0.1, reduction)),
        (lambda a, b: cpo(a, b, beta=0.2, nll_weight=0.7, reduction=reduction),
         lambda a, b: ref_cpo(a, b, None, 0.2, 0.7, 0.0, reduction)),
        (lambda a, b: cpo(a, b, lengths, label_smoothing=0.2, reduction=reduction),
         lambda a, b: ref_cpo(a, b, lengths, 0.1, 1.0, 0.2, reduction)),
        (lambda a, b: orpo(a, b, beta=0.3, reduction=reduction),
         lambda a, b: ref_orpo(a, b, 0.3, reduction)),
        (lambda a, b: slic_hf(a, b, margin=0.2, reduction=reduction),
         lambda a, b: ref_slic(a, b, None, 0.2, 0.5, reduction)),
        (lambda a, b: slic_hf(a, b, target, nll_weight=0.3, reduction=reduction),
         lambda a, b: ref_slic(a, b, target, 1.0, 0.3, reduction)),
    ]  # fmt: skip
    for ours, ref in cases:
        assert_same(ours, ref, [w, l_])


def test_token_log_probs_and_sequence_log_probs_match_reference():
    logits = rnd(3, 6, V, scale=2)
    labels = torch.randint(0, V, (3, 6), generator=torch.Generator().manual_seed(0))
    labels[:, :2] = -100  # prompt
    labels[1, 4:] = -100  # padding
    want, valid = ref_token_log_probs(logits.detach(), labels)
    got, got_valid = token_log_probs(logits, labels)
    assert torch.equal(got_valid, valid)
    torch.testing.assert_close(got.detach(), want)
    assert_same(lambda x: sequence_log_probs(x, labels),
                lambda x: ref_token_log_probs(x, labels)[0].sum(1), [logits])  # fmt: skip
    n_tok = valid.sum(1).to(torch.float64)
    torch.testing.assert_close(
        sequence_log_probs(logits, labels, average=True), want.sum(1) / n_tok
    )
    # a mask instead of -100 labels; shift=False scores the label at the same position
    mask = labels != -100
    ids = labels.clamp(min=0)
    torch.testing.assert_close(sequence_log_probs(logits, ids, mask), got.sum(1))
    no_shift = sequence_log_probs(logits[:, :-1], labels[:, 1:], shift=False)
    torch.testing.assert_close(no_shift, got.sum(1))


def test_token_kl_matches_definition_and_is_nonnegative():
    a, b = rnd(2, 5, V), rnd(2, 5, V, seed=1, grad=False)
    kl = token_kl(a, b)
    assert kl.shape == (2, 4) and bool((kl >= 0).all())
    want = torch.zeros(2, 4, dtype=torch.float64)
    for i in range(2):
        for t in range(4):
            p = torch.softmax(b[i, t], 0)
            want[i, t] = (p * (p.log() - torch.log_softmax(a[i, t].detach(), 0))).sum()
    torch.testing.assert_close(kl.detach(), want)
    assert torch.allclose(token_kl(b, b), torch.zeros(2, 4, dtype=torch.float64), atol=1e-12)
    small_a, small_b = a[:1, :3, :3].detach().requires_grad_(), b[:1, :3, :3]
    assert torch.autograd.gradcheck(lambda x: token_kl(x, small_b), (small_a,))


# ------------------------------------------------------------------------------------------
# gradcheck (float64, small)
# ------------------------------------------------------------------------------------------
def _gradcheck_cases():
    pc, pr, rc, rr = seq(n=3)
    ps = rnd(3, 2, shift=-20)
    rs = ps.detach().clone() + 0.5
    x = sparse_inputs(n=2)
    p = rnd(2, 2, 3, shift=-20)
    r = p.detach().clone() + 1
    w, l_ = rnd(3, shift=-1.2, scale=0.3), rnd(3, seed=1, shift=-1.2, scale=0.3)
    beta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    return {
        "dpo": (lambda a, b: dpo(a, b, rc, rr, label_smoothing=0.1), (pc, pr)),
        "dpo_beta": (lambda b: dpo(pc.detach(), pr.detach(), rc, rr, beta=b), (beta,)),
        "ipo": (lambda a, b: ipo(a, b, rc, rr), (pc, pr)),
        "npo": (lambda a: npo(a, rc), (pc,)),
        "d2o": (lambda a, b: d2o(a, b, rs, rr), (ps, pr)),
        "sparse_po": (
            lambda a, b, w1, w2, k1, k2, d1, d2: sparse_po(a, b, *x[2:6], w1, w2, k1, k2, d1, d2),
            (x[0], x[1], *x[6:]),
        ),
        "svco": (lambda a: svco(a, r), (p,)),
        "simpo": (simpo, (w, l_)),
        "cpo": (cpo, (w, l_)),
        "orpo": (orpo, (w, l_)),
        "slic_hf": (slic_hf, (w, l_)),
    }


@pytest.mark.parametrize(
    "name",
    [
        "dpo",
        "dpo_beta",
        "ipo",
        "npo",
        "d2o",
        "sparse_po",
        "svco",
        "simpo",
        "cpo",
        "orpo",
        "slic_hf",
    ],
)
def test_gradcheck(name):
    fn, args = _gradcheck_cases()[name]
    assert torch.autograd.gradcheck(fn, args, fast_mode=name == "sparse_po")


# ------------------------------------------------------------------------------------------
# oracles
# ------------------------------------------------------------------------------------------
def test_dpo_oracle_policy_equals_reference():
    pc, pr, _, _ = seq()
    loss = dpo(pc, pr, pc.detach(), pr.detach(), beta=0.3, reduction="none")
    torch.testing.assert_close(loss, torch.full((N,), LOG2, dtype=torch.float64))
    # dL/dh = -beta / 2: h moves up with policy_chosen, down with policy_rejected
    gc, gr = torch.autograd.grad(loss.sum(), [pc, pr])
    torch.testing.assert_close(gc, torch.full((N,), -0.15, dtype=torch.float64))
    torch.testing.assert_close(gr, torch.full((N,), 0.15, dtype=torch.float64))


def test_dpo_oracle_swap_and_label_smoothing():
    pc, pr, rc, rr = seq()
    swapped = dpo(pr, pc, rr, rc, reduction="none")
    h = (pc - rc) - (pr - rr)
    torch.testing.assert_close(swapped, -F.logsigmoid(-0.1 * h))
    # eps = 0.5: symmetric in the pair, gradient zero at h = 0
    torch.testing.assert_close(
        dpo(pc, pr, rc, rr, label_smoothing=0.5), dpo(pr, pc, rr, rc, label_smoothing=0.5)
    )
    loss = dpo(pc, pr, pc.detach(), pr.detach(), label_smoothing=0.5)
    gc, gr = torch.autograd.grad(loss, [pc, pr])
    assert gc.abs().max() < 1e-15 and gr.abs().max() < 1e-15
    # conservative DPO is the mix of the loss and the loss of the swapped pair
    torch.testing.assert_close(
        dpo(pc, pr, rc, rr, label_smoothing=0.2),
        0.8 * dpo(pc, pr, rc, rr) + 0.2 * dpo(pr, pc, rr, rc),
    )


def test_ipo_oracle_minimum_at_half_inverse_beta():
    _, pr, rc, rr = seq()
    beta = 0.25
    pc = (rc + (pr.detach() - rr) + 1 / (2 * beta)).requires_grad_()  # h = 1 / (2 beta)
    loss = ipo(pc, pr, rc, rr, beta=beta)
    assert loss.abs() < 1e-20
    assert torch.autograd.grad(loss, pc)[0].abs().max() < 1e-9
    assert ipo(pc + 0.1, pr, rc, rr, beta=beta) > 0


def test_npo_oracles():
    p, _, _, _ = seq()
    beta = 0.2
    loss = npo(p, p.detach(), beta=beta, reduction="sum")
    torch.testing.assert_close(loss, torch.tensor(N * 2 / beta * LOG2, dtype=torch.float64))
    (g,) = torch.autograd.grad(loss, p)  # gradient ascent's at the start: d l / d rho = 1
    torch.testing.assert_close(g, torch.ones(N, dtype=torch.float64))
    # beta -> 0: the loss minus (2 / beta) log 2 tends to the mean log-ratio
    r = p.detach() + torch.linspace(-1, 1, N, dtype=torch.float64)
    small = 1e-6
    torch.testing.assert_close(
        npo(p, r, beta=small) - 2 / small * LOG2, (p - r).mean(), atol=1e-4, rtol=0
    )
    # >= 0 and increasing in rho
    rho = torch.linspace(-30, 30, 61, dtype=torch.float64)
    rows = npo(rho, torch.zeros_like(rho), reduction="none")
    assert bool((rows >= 0).all()) and bool((rows.diff() > 0).all())


def test_d2o_oracles():
    pc, pr, rc, rr = seq()
    # K = 1, alpha = beta, both references pi_ref: DPO with y_w = y_1
    torch.testing.assert_close(
        d2o(pc[:, None], pr, rc[:, None], rr, beta=0.3, alpha=0.3, reduction="none"),
        dpo(pc, pr, rc, rr, beta=0.3, reduction="none"),
    )
    ps = rnd(N, K, shift=-20)
    loss = d2o(ps, pr, ps.detach(), pr.detach(), reduction="none")
    torch.testing.assert_close(loss, torch.full((N,), LOG2, dtype=torch.float64))
    rs = rnd(N, K, seed=3, shift=-20, grad=False)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(d2o(ps, pr, rs, rr), d2o(ps[:, perm], pr, rs[:, perm], rr))


def test_sparse_po_oracles():
    pc, pr, rc, rr, mw, ml, ww, wl, _, _, _, _ = sparse_inputs()
    sums = [(x * m).sum(1) for x, m in ((pc, mw), (pr, ml), (rc, mw), (rr, ml))]
    # masks 1, no KL: DPO on summed log-probabilities
    ones_w, ones_l = torch.ones_like(ww), torch.ones_like(wl)
    plain = sparse_po(pc, pr, rc, rr, mw, ml, reduction="none")
    torch.testing.assert_close(plain, dpo(*sums, reduction="none"))
    torch.testing.assert_close(
        sparse_po(pc, pr, rc, rr, mw, ml, ones_w, ones_l, reward_l1=0.0), dpo(*sums)
    )
    # masks 1 with the KL: TDPO1, sigma(beta (u - delta)), delta = KL_l - KL_w summed
    logits_w, logits_l = rnd(N, LW + 1, V), rnd(N, LL + 1, V, seed=1)
    ref_w, ref_l = rnd(N, LW + 1, V, seed=2), rnd(N, LL + 1, V, seed=3)
    kw_, kl_ = token_kl(logits_w, ref_w), token_kl(logits_l, ref_l)
    assert bool((kw_ >= 0).all()) and bool((kl_ >= 0).all())  # the code's k_t <= 0
    u = (sums[0] - sums[2]) - (sums[1] - sums[3])
    delta = (kl_ * ml).sum(1) - (kw_ * mw).sum(1)
    torch.testing.assert_close(
        sparse_po(pc, pr, rc, rr, mw, ml, None, None, kw_, kl_, reduction="none"),
        -F.logsigmoid(0.1 * (u - delta)),
    )
    # pi = pi_ref: u = d = 0, log 2 plus the L1 terms of the masks
    z_w, z_l = token_kl(ref_w, ref_w), token_kl(ref_l, ref_l)
    loss = sparse_po(pc, pr, pc.detach(), pr.detach(), mw, ml, ww, wl, z_w, z_l, ww, wl,
                     reward_l1=0.01, kl_l1=0.03, reduction="none")  # fmt: skip
    l1 = (ww * mw).sum(1) + (wl * ml).sum(1)
    torch.testing.assert_close(loss, LOG2 + 0.04 * l1)
    # tokens outside the response masks carry nothing
    junk = pc.detach().clone()
    junk[~mw] = 123.0
    torch.testing.assert_close(
        sparse_po(junk, pr, rc, rr, mw, ml), sparse_po(pc, pr, rc, rr, mw, ml)
    )


def test_svco_oracles():
    p = rnd(N, 2, 3, shift=-20)
    loss = svco(p, p.detach(), reduction="none")
    torch.testing.assert_close(loss, torch.full((N,), 4 * LOG2, dtype=torch.float64))
    # the pivot telescopes: with D1 and D2 only, at pi = pi_ref the no-image log-prob of y_w
    # gets no gradient (D1 + D2 = rho(y_w | I_w) - rho(y_w | I_l))
    (g,) = torch.autograd.grad(svco(p, p.detach(), betas=(0.3, 0.3, 0, 0)), p)
    assert g[:, 0, 2].abs().max() < 1e-15 and g[:, 0, 0].abs().min() > 0
    # symmetry: swapping (I_w, y_w) with (I_l, y_l) leaves the loss unchanged
    r = rnd(N, 2, 3, seed=1, shift=-20, grad=False)
    swap = lambda x: x[:, [1, 0]][:, :, [1, 0, 2]]  # noqa: E731
    torch.testing.assert_close(
        svco(p, r, reduction="none"), svco(swap(p), swap(r), reduction="none")
    )


def test_reference_free_variant_oracles():
    pc, pr, _, _ = seq()
    zero = torch.zeros(N, dtype=torch.float64)
    L = 8.0
    # SimPO, gamma = 0, equal lengths: reference-free DPO with beta / |y|
    torch.testing.assert_close(
        simpo(pc / L, pr / L, beta=2.0, gamma=0.0), dpo(pc, pr, zero, zero, beta=2.0 / L)
    )
    # CPO without its NLL term: reference-free DPO
    torch.testing.assert_close(cpo(pc, pr, nll_weight=0.0), dpo(pc, pr, zero, zero))
    # ORPO with equal responses: the NLL plus beta log 2
    w = rnd(N, shift=-1.0, scale=0.2)
    torch.testing.assert_close(orpo(w, w, beta=0.4), (-w + 0.4 * LOG2).mean())
    # ORPO stays finite for log-probabilities near 0 (P near 1) and very negative ones
    extreme = torch.tensor([-1e-9, -50.0], dtype=torch.float64)
    assert torch.isfinite(orpo(extreme, extreme.flip(0)))
    # SLiC-HF: a satisfied margin leaves only the regulariser
    torch.testing.assert_close(slic_hf(pc, pc - 2.0, margin=1.0), (-0.5 * pc).mean())


# ------------------------------------------------------------------------------------------
# TRL parity (the DPO trainer's loss code path on given log-probabilities)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trl():
    import peers

    peers.ensure_torchvision()  # transformers imports torchvision (see tests/peers.py)
    pytest.importorskip("trl", reason="trl is not installed (test extra)")
    try:
        with warnings.catch_warnings():  # trl.experimental warns on import
            warnings.simplefilter("ignore")
            from trl.experimental.cpo.cpo_trainer import CPOTrainer
            from trl.experimental.orpo.orpo_trainer import ORPOTrainer
            from trl.trainer.dpo_trainer import DPOTrainer
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"trl trainers unavailable: {type(exc).__name__}: {exc}"[:200])
    return SimpleNamespace(DPO=DPOTrainer, CPO=CPOTrainer, ORPO=ORPOTrainer)


def _trl_dpo(trl, token_chosen, token_rejected, ref_chosen, ref_rejected, completion_mask,
             loss_type, beta):  # fmt: skip
    """``DPOTrainer._compute_loss`` with precomputed reference log-probs and a stand-in model
    whose output carries the per-token log-probabilities (zero outside the completion)."""
    log_probs = torch.cat([token_chosen, token_rejected])
    B2, T1 = log_probs.shape
    out = SimpleNamespace(
        log_probs=log_probs,
        entropy=torch.zeros(B2, T1),
        mean_logits=torch.zeros(B2, T1),
        is_top1=torch.zeros(B2, T1, dtype=torch.bool),
    )
    acc = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x,
                          gather=lambda x: x)  # fmt: skip
    self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=acc, aux_loss_enabled=False,
        ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=0.0,
        use_weighting=False, _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0, _tp_size=1, args=SimpleNamespace(),
    )  # fmt: skip
    inputs = {
        "input_ids": torch.zeros(B2, T1 + 1, dtype=torch.long),
        "attention_mask": torch.ones(B2, T1 + 1, dtype=torch.long),
        "completion_mask": completion_mask.long(),
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return trl.DPO._compute_loss(self, lambda **kw: out, inputs, return_outputs=False)


def _completion(n, T, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T, (n,), generator=g)
    start = T - lengths
    return torch.arange(T)[None] >= start[:, None]  # (n, T): prompt first, then completion


@pytest.mark.slow  # importing trl's trainers takes about 10 s
@pytest.mark.parametrize("loss_type,beta", [("sigmoid", 0.1), ("sigmoid", 1.5), ("ipo", 0.2)])
def test_dpo_and_ipo_match_trl_dpo_trainer(trl, loss_type, beta):
    T = 7
    mask = torch.cat([_completion(N, T, 0), _completion(N, T, 1)])  # chosen then rejected
    tok = rnd(2 * N, T - 1, shift=-2.0, scale=0.5) * mask[:, 1:]
    tok = tok.detach().requires_grad_()
    rc, rr = rnd(N, seed=5, shift=-6, grad=False), rnd(N, seed=6, shift=-6, grad=False)
    want = _trl_dpo(trl, tok[:N], tok[N:], rc, rr, mask, loss_type, beta)
    (g_want,) = torch.autograd.grad(want, tok)
    pc, pr = tok[:N].sum(1), tok[N:].sum(1)
    if loss_type == "sigmoid":
        got = dpo(pc, pr, rc, rr, beta=beta)
    else:  # TRL's IPO: log-ratios divided by the completion lengths
        lw, ll = mask[:N].sum(1).double(), mask[N:].sum(1).double()
        got = ipo(pc / lw, pr / ll, rc / lw, rr / ll, beta=beta)
    (g_got,) = torch.autograd.grad(got, tok)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g_got, g_want)


@pytest.mark.slow
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.4])
def test_conservative_dpo_simpo_cpo_match_trl_cpo_loss(trl, eps):
    """TRL's ``cpo_loss`` ("sigmoid": conservative with label smoothing, on whatever
    log-probabilities it is given: DPO's log-ratios, or CPO's reference-free log-probs;
    "simpo": SimPO on per-token means)."""
    pc, pr, rc, rr = seq()
    acc = SimpleNamespace(device=torch.device("cpu"))

    def peer(loss_type, beta):
        self = SimpleNamespace(alpha=0.0, beta=beta, label_smoothing=eps, loss_type=loss_type,
                               simpo_gamma=0.6, accelerator=acc)  # fmt: skip
        return lambda a, b: trl.CPO.cpo_loss(self, a, b)[0].mean()

    sigmoid = peer("sigmoid", 0.3)
    assert_same(
        lambda a, b: dpo(a, b, rc, rr, beta=0.3, label_smoothing=eps),
        lambda a, b: sigmoid(a - rc, b - rr),
        [pc, pr],
    )
    assert_same(
        lambda a, b: cpo(a, b, beta=0.3, nll_weight=0.0, label_smoothing=eps),
        sigmoid,
        [pc, pr],
    )
    assert_same(
        lambda a, b: simpo(a, b, beta=2.0, gamma=0.6, label_smoothing=eps),
        peer("simpo", 2.0),
        [(pc / 9.0).detach(), (pr / 7.0).detach()],
    )


@pytest.mark.slow
def test_orpo_and_sequence_log_probs_match_trl(trl):
    w, l_ = rnd(N, shift=-1.2, scale=0.4), rnd(N, seed=1, shift=-1.2, scale=0.4)
    self = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device=torch.device("cpu")))
    # TRL's ORPO loss = NLL (token mean over the chosen tokens) - mean(beta log sigmoid(...));
    # with the per-token mean log-probs given, the NLL term is -mean(w)
    assert_same(
        lambda a, b: orpo(a, b, beta=0.25),
        lambda a, b: -a.mean() - trl.ORPO.odds_ratio_loss(self, a, b)[0].mean(),
        [w, l_],
    )
    logits = rnd(3, 6, V, scale=2, dtype=torch.float32)
    labels = torch.randint(0, V, (3, 6), generator=torch.Generator().manual_seed(1))
    labels[:, :2] = -100
    for average in (False, True):
        torch.testing.assert_close(
            sequence_log_probs(logits, labels, average=average),
            trl.CPO.get_batch_logps(logits, labels, average_log_prob=average),
        )


# ------------------------------------------------------------------------------------------
# module twins, reductions, empty batches, dtypes, the reference's gradient
# ------------------------------------------------------------------------------------------
def _calls():
    pc, pr, rc, rr = seq()
    ps, rs = rnd(N, K, shift=-20), rnd(N, K, seed=1, shift=-20, grad=False)
    x = sparse_inputs()
    p3, r3 = rnd(N, 2, 3, shift=-20), rnd(N, 2, 3, seed=1, shift=-20, grad=False)
    w, l_ = rnd(N, shift=-1.2, scale=0.3), rnd(N, seed=1, shift=-1.2, scale=0.3)
    return {
        "dpo": (dpo, DPO, [pc, pr], [rc, rr], {"beta": 0.2, "label_smoothing": 0.1}),
        "ipo": (ipo, IPO, [pc, pr], [rc, rr], {"beta": 0.2}),
        "npo": (npo, NPO, [pc], [rc], {"beta": 0.2}),
        "d2o": (d2o, D2O, [ps, pr], [rs, rr], {"alpha": 0.3}),
        "sparse_po": (sparse_po, SparsePO, [x[0], x[1]], list(x[2:]), {"beta": 0.4}),
        "svco": (svco, SVCO, [p3], [r3], {"betas": (0.1, 0.2, 0.3, 0.0)}),
        "simpo": (simpo, SimPO, [w, l_], [], {"gamma": 0.2}),
        "cpo": (cpo, CPO, [pc, pr], [torch.arange(1, N + 1)], {"nll_weight": 0.5}),
        "orpo": (orpo, ORPO, [w, l_], [], {"beta": 0.2}),
        "slic_hf": (slic_hf, SLiCHF, [pc, pr], [rc], {"margin": 0.5}),
    }


NAMES = ["dpo", "ipo", "npo", "d2o", "sparse_po", "svco", "simpo", "cpo", "orpo", "slic_hf"]
CLASSES = [DPO, IPO, NPO, D2O, SparsePO, SVCO, SimPO, CPO, ORPO, SLiCHF]


def test_every_preference_objective_is_covered():
    assert sorted(e.name for e in REGISTRY.values() if e.family == "preference") == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_module_equals_functional(name):
    fn, cls, leaves, other, kw = _calls()[name]
    module = cls(**kw)
    torch.testing.assert_close(module(*leaves, *other), fn(*leaves, *other, **kw))
    torch.testing.assert_close(
        module(*leaves, *other, reduction="none"), fn(*leaves, *other, reduction="none", **kw)
    )
    assert fn.__name__.replace("_", "") == cls.__name__.lower()
    assert REGISTRY[name].family == "preference" and REGISTRY[name].module is cls


@pytest.mark.parametrize("name", NAMES)
def test_reductions_consistent(name):
    fn, _, leaves, other, kw = _calls()[name]
    rows = fn(*leaves, *other, reduction="none", **kw)
    assert rows.shape == (N,)
    torch.testing.assert_close(fn(*leaves, *other, reduction="sum", **kw), rows.sum())
    torch.testing.assert_close(fn(*leaves, *other, **kw), rows.mean())


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_is_zero_with_zero_gradient(name):
    fn, _, leaves, other, kw = _calls()[name]
    leaves = [x.detach()[:0].requires_grad_() for x in leaves]
    other = [x[:0] for x in other]
    for reduction in ("mean", "sum"):
        loss = fn(*leaves, *other, reduction=reduction, **kw)
        assert loss.shape == () and float(loss.detach()) == 0.0
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        assert all(g is None or g.numel() == 0 for g in grads)
    assert fn(*leaves, *other, reduction="none", **kw).shape == (0,)


@pytest.mark.parametrize("name", ["dpo", "ipo", "npo", "d2o", "sparse_po", "svco"])
def test_reference_gets_no_gradient(name):
    fn, _, leaves, other, kw = _calls()[name]
    refs = [x.detach().clone().requires_grad_() if x.is_floating_point() else x for x in other]
    n_ref = {"sparse_po": 2}.get(name, len(refs))  # SparsePO: the two reference tensors only
    loss = fn(*leaves, *refs, **kw)
    grads = torch.autograd.grad(loss, refs[:n_ref], allow_unused=True)
    assert all(g is None for g in grads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_half_policy_next_to_fp32_reference(name, dtype):
    fn, _, leaves, other, kw = _calls()[name]
    leaves = [x.detach().to(dtype).requires_grad_() for x in leaves]
    other = [x.float() if x.is_floating_point() else x for x in other]
    out = fn(*leaves, *other, **kw)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    for x in leaves:
        assert x.grad is not None and x.grad.dtype == dtype and torch.isfinite(x.grad).all()


def test_learnable_beta_is_a_parameter():
    pc, pr, rc, rr = seq()
    module = DPO(beta=torch.nn.Parameter(torch.tensor(0.2, dtype=torch.float64)))
    assert any(p is module.beta for p in module.parameters())
    module(pc, pr, rc, rr).backward()
    assert module.beta.grad is not None and torch.isfinite(module.beta.grad)


@pytest.mark.parametrize("cls", CLASSES)
def test_docstring_is_a_manual_with_a_runnable_example(cls):
    doc = cls.__doc__
    for section in ("::", "Args:", "Inputs:", "Example::", "See also:", "References:"):
        assert section in doc, section
    assert re.search(r"arXiv:\d{4}\.\d{5}", doc)
    assert "engine-backed" in doc and "process group" in doc
    example = textwrap.dedent(doc.split("Example::")[1].split("See also:")[0])
    scope: dict = {}
    exec(compile(example, f"<{cls.__name__} example>", "exec"), scope)
    assert torch.isfinite(scope["loss"])


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def _bad_calls():
    pc, pr, rc, rr = [x.detach() for x in seq()]
    x = [t.detach() for t in sparse_inputs()]
    p3 = rnd(N, 2, 3, grad=False)
    nan = pc.clone()
    nan[1] = float("nan")
    logits = rnd(2, 4, V, grad=False)
    labels = torch.randint(0, V, (2, 4))
    return [
        (dpo, (pc, pr[:-1], rc, rr), {}, "policy_rejected"),
        (dpo, (pc, pr, rc[:, None], rr), {}, "reference_chosen"),
        (dpo, (pc, pr, rc, nan), {}, "reference_rejected"),
        (dpo, (pc, pr, rc.long(), rr), {}, "reference_chosen"),
        (dpo, (pc, pr, rc, rr), {"beta": 0.0}, "beta"),
        (dpo, (pc, pr, rc, rr), {"beta": torch.ones(2)}, "beta"),
        (dpo, (pc, pr, rc, rr), {"label_smoothing": 0.7}, "label_smoothing"),
        (dpo, (pc, pr, rc, rr), {"reduction": "avg"}, "reduction"),
        (ipo, (pc.tolist(), pr, rc, rr), {}, "policy_chosen"),
        (npo, (pc, rc[:-1]), {}, "reference_forget"),
        (npo, (pc, rc), {"beta": -1.0}, "beta"),
        (d2o, (pc, pr, rc, rr), {}, "policy_samples"),
        (d2o, (pc[:, None], pr[:-1], rc[:, None], rr), {}, "policy_rejected"),
        (d2o, (pc[:, None], pr, rc[:, None].repeat(1, 2), rr), {}, "reference_samples"),
        (d2o, (pc.new_zeros(N, 0), pr, rc.new_zeros(N, 0), rr), {}, "policy_samples"),
        (d2o, (pc[:, None], pr, rc[:, None], rr), {"alpha": 0.0}, "alpha"),
        (sparse_po, (*x[:4], x[4].float(), x[5]), {}, "chosen_mask"),
        (sparse_po, (*x[:4], x[4], x[5][:, :-1]), {}, "rejected_mask"),
        (sparse_po, (x[0], x[1][:-1], *x[2:6]), {}, "policy_rejected"),
        (sparse_po, (*x[:6], x[6], None), {}, "rejected_weights"),
        (sparse_po, (*x[:6], None, None, x[8], None), {}, "rejected_kl"),
        (sparse_po, (*x[:6], None, None, None, None, x[10], x[11]), {}, "chosen_kl"),
        (sparse_po, (*x[:6], x[6][:, :-1], x[7]), {}, "chosen_weights"),
        (sparse_po, tuple(x[:6]), {"reward_l1": -1.0}, "reward_l1"),
        (svco, (p3[:, :, :2], p3[:, :, :2]), {}, "policy"),
        (svco, (p3, p3[:-1]), {}, "reference"),
        (svco, (p3, p3), {"betas": (0.1, 0.1, 0.1)}, "betas"),
        (svco, (p3, p3), {"betas": (0, 0, 0, 0)}, "betas"),
        (svco, (p3, p3), {"betas": (0.1, -0.1, 0.1, 0.1)}, "betas"),
        (simpo, (pc, pr), {"gamma": -1.0}, "gamma"),
        (cpo, (pc, pr, torch.zeros(N)), {}, "chosen_lengths"),
        (cpo, (pc, pr, torch.ones(N - 1)), {}, "chosen_lengths"),
        (cpo, (pc, pr), {"nll_weight": float("nan")}, "nll_weight"),
        (orpo, (pc.abs(), pr), {}, "policy_chosen"),
        (orpo, (pc, torch.zeros(N, dtype=torch.float64)), {}, "policy_rejected"),
        (slic_hf, (pc, pr, rc[:-1]), {}, "policy_target"),
        (slic_hf, (pc, pr), {"margin": -0.5}, "margin"),
        (token_log_probs, (logits, labels[:, :-1]), {}, "labels"),
        (token_log_probs, (logits, labels.float()), {}, "labels"),
        (token_log_probs, (logits, labels + V), {}, "labels"),
        (token_log_probs, (logits[0], labels), {}, "logits"),
        (token_log_probs, (logits, labels, (labels > 0).float()), {}, "mask"),
        (token_log_probs, (logits, labels, torch.ones(2, 3, dtype=torch.bool)), {}, "mask"),
        (sequence_log_probs, (logits, labels), {"average": 1}, "average"),
        (token_kl, (logits, logits[:, :-1]), {}, "reference_logits"),
        (token_kl, (logits.long(), logits), {}, "policy_logits"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_raises_naming_the_argument(case):
    fn, args, kw, name = _bad_calls()[case]
    with pytest.raises(ValueError, match=name):
        fn(*args, **kw)


def test_docs_example_runs():
    import pathlib

    page = pathlib.Path(__file__).parents[1] / "docs/objectives/preference.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) == 1
    scope: dict = {}
    exec(compile(blocks[0], str(page), "exec"), scope)  # noqa: S102
    loss = scope["loss"]
    assert loss.dim() == 0 and bool(torch.isfinite(loss))
    assert scope["policy_logits"].grad is not None
