"""Structured objectives: SwAV, MLCD, GroCo, CPRD, ConR, SupReMix, PamC. Each against a plain
dense reference written from the official code or the paper (values and gradients, fp64),
oracles, gradcheck, state, bad input; module twin == functional, reductions and the published
aliases of the family."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses.infonce.supcon import supcon
from contrastkit.losses.structured.conr import ConR, conr
from contrastkit.losses.structured.cprd import (
    PartialRankingDistillation,
    in_batch_hard_negatives,
    partial_ranking_distillation,
)
from contrastkit.losses.structured.groco import GroCo, groco, soft_sort_permutation
from contrastkit.losses.structured.mlcd import MLCD, mlcd
from contrastkit.losses.structured.pamc import PamC, adjacency_power, pamc
from contrastkit.losses.structured.supremix import SupReMix, supremix
from contrastkit.losses.structured.swav import SwAV, sinkhorn_knopp, swav

import peers

DT = torch.float64
ENGINES = [
    {"backend": "dense"},
    {"backend": "tiled"},
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled", "chunk_size": 64},
    {"backend": "auto"},
]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, grad=True, dtype=DT):
    x = torch.randn(*shape, generator=_gen(seed), dtype=dtype)
    return x.requires_grad_(grad)


def _close_grads(got, want, leaves, rtol=1e-8, atol=1e-10):
    g1 = torch.autograd.grad(got, leaves, allow_unused=True)
    g2 = torch.autograd.grad(want, leaves, allow_unused=True)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------
# SwAV
# ----------------------------------------------------------------------------------------------


def ref_sinkhorn(out, eps=0.05, iters=3):
    """facebookresearch/swav distributed_sinkhorn, world size 1, written out."""
    Q = torch.exp(out / eps).t().clone()
    K, B = Q.shape
    Q /= Q.sum()
    for _ in range(iters):
        Q /= Q.sum(dim=1, keepdim=True)
        Q /= K
        Q /= Q.sum(dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def ref_swav(z, W, n_crops, cfa, tau=0.1, eps=0.05, iters=3, queue=None):
    """main_swav.py's loss block: model output = normalize(z) @ W^T."""
    emb = F.normalize(z, dim=1)
    output = emb @ W.t()
    bs = z.shape[0] // n_crops
    loss = 0
    for i, crop_id in enumerate(cfa):
        with torch.no_grad():
            out = output[bs * crop_id : bs * (crop_id + 1)].detach()
            if queue is not None:
                out = torch.cat((queue[i] @ W.detach().t(), out))
            q = ref_sinkhorn(out, eps, iters)[-bs:]
        subloss = 0
        for v in [v for v in range(n_crops) if v != crop_id]:
            x = output[bs * v : bs * (v + 1)] / tau
            subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss += subloss / (n_crops - 1)
    return loss / len(cfa)


@pytest.mark.parametrize("with_queue", [False, True])
@pytest.mark.parametrize("n_crops,cfa", [(2, (0, 1)), (4, (0, 1)), (3, (1,))])
def test_swav_matches_official_port(n_crops, cfa, with_queue):
    B, d, K = 5, 6, 7
    z = _randn(n_crops * B, d, seed=1)
    W = F.normalize(torch.randn(K, d, generator=_gen(2), dtype=DT), dim=1).requires_grad_()
    queue = None
    if with_queue:
        queue = F.normalize(torch.randn(len(cfa), 2 * B, d, generator=_gen(3), dtype=DT), dim=-1)
    got = swav(z, W, n_crops=n_crops, crops_for_assign=cfa, queue=queue)
    want = ref_swav(z, W, n_crops, cfa, queue=queue)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    _close_grads(
        swav(z, W, n_crops=n_crops, crops_for_assign=cfa, queue=queue),
        ref_swav(z, W, n_crops, cfa, queue=queue),
        [z, W],
    )


def test_sinkhorn_marginals_and_port():
    scores = (
        F.normalize(torch.randn(40, 8, generator=_gen(4), dtype=DT), dim=1)
        @ F.normalize(torch.randn(6, 8, generator=_gen(5), dtype=DT), dim=1).t()
    )
    q = sinkhorn_knopp(scores, 0.05, 3)
    torch.testing.assert_close(q, ref_sinkhorn(scores, 0.05, 3), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(q.sum(1), torch.ones(40, dtype=DT))  # every code sums to 1
    assert q.requires_grad is False and bool((q >= 0).all())
    # prototype masses approach B'/K as the iterations converge
    err = [
        float((sinkhorn_knopp(scores, 0.05, n).sum(0) - 40 / 6).abs().max()) for n in (1, 3, 300)
    ]
    assert err[2] < 1e-9 < err[1] < err[0]


def test_sinkhorn_shift_invariance_and_fp32():
    scores = torch.randn(10, 4, generator=_gen(6), dtype=DT)
    torch.testing.assert_close(sinkhorn_knopp(scores + 3.0), sinkhorn_knopp(scores))
    # scores that overflow exp(x / eps) in fp32 without the shift (exp(60 / 0.05))
    big = sinkhorn_knopp((scores.clamp(-1, 1) + 60).float())
    assert torch.isfinite(big).all() and big.dtype == torch.float32
    half = sinkhorn_knopp(scores.clamp(-1, 1).half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.sum(1), torch.ones(10))


def test_swav_uniform_scores_give_log_k():
    K, d = 9, 5
    W = F.normalize(torch.randn(1, d, dtype=DT), dim=1).expand(K, d)  # identical prototypes
    z = torch.randn(3 * 4, d, dtype=DT)
    got = swav(z, W, n_crops=3, crops_for_assign=(0, 1))
    torch.testing.assert_close(got, torch.tensor(math.log(K), dtype=DT))


def test_swav_matches_lightly():
    lt = peers.require("lightly_losses")
    if lt.module is None or not hasattr(lt.module, "SwaVLoss"):
        pytest.skip("lightly SwaVLoss unavailable")
    B, d, K = 6, 5, 8
    z = F.normalize(torch.randn(4 * B, d, generator=_gen(7)), dim=1)
    W = F.normalize(torch.randn(K, d, generator=_gen(8)), dim=1)
    queue = F.normalize(torch.randn(2, 3 * B, d, generator=_gen(9)), dim=-1)
    p = (z @ W.t()).split(B)
    peer = lt.module.SwaVLoss()
    want = peer(list(p[:2]), list(p[2:]), [queue[0] @ W.t(), queue[1] @ W.t()])
    got = swav(z, W, n_crops=4, crops_for_assign=(0, 1), queue=queue)
    torch.testing.assert_close(got, want.reshape(()), rtol=1e-5, atol=1e-6)
    from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

    torch.testing.assert_close(sinkhorn_knopp(p[0]), lightly_sinkhorn(p[0]), rtol=1e-5, atol=1e-7)


def test_swav_queue_state_step_by_step():
    B, d, K, Qlen = 3, 4, 5, 6
    torch.manual_seed(0)
    m = SwAV(d, K, n_crops=3, crops_for_assign=(0, 1), queue_length=Qlen).double()
    m.prototypes.data = torch.randn(K, d, generator=_gen(10), dtype=DT)  # unnormalised
    batches = [torch.randn(3 * B, d, generator=_gen(20 + s), dtype=DT) for s in range(4)]
    expected = torch.zeros(2, Qlen, d, dtype=DT)
    used = []
    for z in batches:
        full_before = bool((expected[0, -1] != 0).any())
        W_before = F.normalize(m.prototypes.detach(), dim=1)
        loss = m(z)
        # prototypes re-normalised in place before the forward
        torch.testing.assert_close(m.prototypes.detach(), W_before)
        want = ref_swav(z, W_before, 3, (0, 1), queue=expected.clone() if full_before else None)
        torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
        used.append(bool(m.queue_in_use))
        # manual FIFO update: newest first, oldest dropped
        zn = F.normalize(z, dim=1)
        for i, a in enumerate((0, 1)):
            expected[i] = torch.cat([zn[a * B : (a + 1) * B], expected[i, :-B]])
        torch.testing.assert_close(m.queue, expected)
        assert m.queue.requires_grad is False
    assert used == [False, False, True, True]  # used once full (after 2 batches), then always
    # the queue and its flag are buffers: a checkpoint resumes the same state
    m2 = SwAV(d, K, n_crops=3, queue_length=Qlen).double()
    m2.load_state_dict(m.state_dict())
    z = batches[0]
    torch.testing.assert_close(m2(z), m(z))
    torch.testing.assert_close(m2.queue, m.queue)
    m.reset_queue(0)
    assert m.queue is None and not bool(m.queue_in_use)


def test_swav_half_precision_inputs_run_in_fp32():
    z = torch.randn(12, 8, generator=_gen(30)).half()
    m = SwAV(8, 5, n_crops=3, queue_length=8)
    for _ in range(3):
        v = m(z)
    assert v.dtype == torch.float32 and torch.isfinite(v)
    torch.testing.assert_close(v, m(z.float()), rtol=1e-2, atol=1e-2)


def test_swav_gradcheck():
    # the codes carry no gradient by design, so hold them fixed: only crop 0 assigns, and
    # gradcheck perturbs the other crops' embeddings
    z0 = torch.randn(3, 4, generator=_gen(13), dtype=DT)
    z = _randn(2 * 3, 4, seed=11)
    W = F.normalize(torch.randn(5, 4, generator=_gen(12), dtype=DT), dim=1)
    assert torch.autograd.gradcheck(
        lambda a: swav(torch.cat([z0, a]), W, n_crops=3, crops_for_assign=(0,)), (z,)
    )


def test_swav_bad_input():
    z, W = torch.randn(6, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="n_crops"):
        swav(z, W, n_crops=4)
    with pytest.raises(ValueError, match="crops_for_assign"):
        swav(z, W, n_crops=2, crops_for_assign=(0, 2))
    with pytest.raises(ValueError, match="feature dimension"):
        swav(z, torch.randn(5, 3))
    with pytest.raises(ValueError, match="queue"):
        swav(z, W, queue=torch.randn(1, 4, 4))
    with pytest.raises(ValueError, match="epsilon"):
        swav(z, W, epsilon=0)
    with pytest.raises(ValueError, match="sinkhorn_iterations"):
        SwAV(4, 5, sinkhorn_iterations=0)
    with pytest.raises(ValueError, match="queue_length"):
        SwAV(4, 5, queue_length=4)(torch.randn(6, 4))  # 4 is not a multiple of B = 3


# ----------------------------------------------------------------------------------------------
# ConR
# ----------------------------------------------------------------------------------------------


def ref_conr(features, targets, preds, w=1.0, weights=None, t=0.07, e=0.01, paper=False):
    """BorealisAI/ConR agedb-dir/loss.py ConR, written out (plus the 'paper' denominator)."""
    B = features.shape[0]
    weights = torch.ones(B, 1, dtype=features.dtype) if weights is None else weights[:, None]
    q = F.normalize(features, dim=1)
    y, p = targets[:, None], preds[:, None]
    l_dist = (y - y.T).abs()
    p_dist = (p - p.T).abs()
    pos_i = l_dist.le(w) & ~torch.eye(B, dtype=torch.bool)
    neg_i = (~l_dist.le(w)) & p_dist.le(w)
    prod = q @ q.T / t
    neg_exp = (weights * torch.exp(l_dist * e) * torch.exp(prod) * neg_i).sum(1)
    if paper:
        den = (torch.exp(prod) * pos_i).sum(1) + neg_exp
    else:
        den = torch.exp(prod * pos_i).sum(1) + neg_exp
    loss = (-torch.log(torch.exp(prod) / den[:, None]) * pos_i).sum(1) / pos_i.sum(1).clamp(min=1)
    keep = pos_i.any(1)
    loss = torch.where(keep, loss * neg_i.any(1), torch.zeros_like(loss))
    return (weights[:, 0] * loss).sum() / keep.sum()


def _conr_inputs(B=14, d=5, seed=0):
    f = _randn(B, d, seed=seed)
    y = torch.randint(0, 6, (B,), generator=_gen(seed + 1)).to(DT)
    yh = y + 1.5 * torch.randn(B, generator=_gen(seed + 2), dtype=DT)
    om = torch.rand(B, generator=_gen(seed + 3), dtype=DT) + 0.5
    return f, y, yh, om


@pytest.mark.parametrize("denominator", ["reference", "paper"])
def test_conr_matches_official_port(denominator):
    f, y, yh, om = _conr_inputs()
    y[0] = 40.0  # an anchor without positives (excluded) and rows without negatives
    paper = denominator == "paper"
    want = ref_conr(f, y, yh, weights=om, paper=paper)
    for eng in ENGINES:
        got = conr(f, y, yh, weights=om, denominator=denominator, **eng)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=str(eng))
        _close_grads(
            conr(f, y, yh, weights=om, denominator=denominator, **eng),
            ref_conr(f, y, yh, weights=om, paper=paper),
            [f],
        )
    rows = conr(f, y, yh, weights=om, denominator=denominator, reduction="none", backend="tiled")
    rows_d = conr(f, y, yh, weights=om, denominator=denominator, reduction="none", backend="dense")
    torch.testing.assert_close(rows, rows_d)
    assert float(rows[0].detach()) == 0.0


def test_conr_oracles():
    f, y, yh, _ = _conr_inputs(seed=3)
    # predictions far apart from every label-far sample: no confused negatives -> 0
    far = y * 100.0
    assert float(conr(f, y, far, backend="tiled", chunk_size=4).detach()) == 0.0
    # all labels equal -> no negatives -> 0
    assert float(conr(f, torch.zeros_like(y), yh).detach()) == 0.0
    # paper mode, omega = 1, e = 0: SupCon L_out over positives + confused negatives
    got = conr(f, y, yh, e=0.0, denominator="paper", backend="tiled", chunk_size=5)
    q = F.normalize(f, dim=1)
    u = q @ q.T / 0.07
    B = len(y)
    pos = ((y[:, None] - y[None]).abs() <= 1) & ~torch.eye(B, dtype=torch.bool)
    neg = ((y[:, None] - y[None]).abs() > 1) & ((yh[:, None] - yh[None]).abs() <= 1)
    lse = torch.logsumexp(u.masked_fill(~(pos | neg), float("-inf")), 1)
    rows = ((lse[:, None] - u) * pos).sum(1) / pos.sum(1).clamp(min=1)
    rows = torch.where(pos.any(1) & neg.any(1), rows, torch.zeros_like(rows))
    torch.testing.assert_close(got, rows.sum() / pos.any(1).sum())
    # linear push (NYUD2): eta = omega e |dy|
    lin = conr(f, y, yh, e=0.2, push="linear", backend="tiled", chunk_size=3)
    lin_d = conr(f, y, yh, e=0.2, push="linear", backend="dense")
    torch.testing.assert_close(lin, lin_d)


def test_conr_gradcheck_and_fp32():
    f, y, yh, om = _conr_inputs(B=6, d=3, seed=5)
    assert torch.autograd.gradcheck(
        lambda a: conr(a, y, yh, weights=om, backend="tiled", chunk_size=2), (f,)
    )
    f32 = torch.randn(37, 24, generator=_gen(9)).requires_grad_()
    y32 = torch.randint(0, 10, (37,), generator=_gen(10)).float()
    p32 = y32 + torch.randn(37, generator=_gen(11)) * 2
    d = conr(f32, y32, p32, backend="dense")
    (gd,) = torch.autograd.grad(d, f32)
    for c in (None, 8, 5):
        t = conr(f32, y32, p32, backend="tiled", chunk_size=c)
        (gt,) = torch.autograd.grad(t, f32)
        torch.testing.assert_close(t, d, rtol=1e-5, atol=1e-6)
        assert float((gt - gd).abs().max() / gd.abs().max()) <= 1e-5


def test_conr_module_and_bad_input():
    f, y, yh, om = _conr_inputs(seed=7)
    torch.testing.assert_close(ConR()(f, y, yh, weights=om), conr(f, y, yh, weights=om))
    with pytest.raises(ValueError, match="targets"):
        conr(f, y[:-1], yh)
    with pytest.raises(ValueError, match="preds"):
        conr(f, y, yh[:, None].repeat(1, 2))
    with pytest.raises(ValueError, match="denominator"):
        ConR(denominator="other")(f, y, yh)
    with pytest.raises(ValueError, match="window"):
        conr(f, y, yh, window=0)
    with pytest.raises(ValueError, match="weights"):
        conr(f, y, yh, weights=-om)


# ----------------------------------------------------------------------------------------------
# MLCD
# ----------------------------------------------------------------------------------------------


def ref_mlcd(e, W, pos, neg, form, g=1.0, m=0.0):
    s = F.normalize(e, dim=1) @ F.normalize(W, dim=1).T
    out = []
    for i in range(e.shape[0]):
        P = [p for p in pos[i].tolist() if p >= 0]
        Nn = [j for j in neg.tolist() if j not in P]
        A = torch.exp(-g * (s[i, P] - m)).sum()
        Bv = torch.exp(g * s[i, Nn]).sum()
        out.append(torch.log1p(A) + torch.log1p(Bv) if form == "mlcd" else torch.log1p(A * Bv))
    return torch.stack(out).mean()


def _mlcd_inputs(N=7, k=15, d=5, seed=0):
    e, W = _randn(N, d, seed=seed), _randn(k, d, seed=seed + 1)
    pos = torch.randint(0, k, (N, 3), generator=_gen(seed + 2))
    pos[1, 2] = -1
    pos[2, :] = -1  # no positives: positive term 0
    return e, W, pos


@pytest.mark.parametrize("form", ["mlcd", "mlc"])
def test_mlcd_matches_reference(form):
    e, W, pos = _mlcd_inputs()
    neg = torch.tensor([0, 2, 3, 5, 7, 8, 11, 14])
    kw = dict(scale=2.0, margin=0.1, form=form, negatives=neg)
    want = ref_mlcd(e, W, pos, neg, form, 2.0, 0.1)
    for eng in ENGINES:
        torch.testing.assert_close(mlcd(e, W, pos, **kw, **eng), want, rtol=1e-10, atol=1e-12)
        _close_grads(mlcd(e, W, pos, **kw, **eng), ref_mlcd(e, W, pos, neg, form, 2.0, 0.1), [e, W])


def test_mlcd_oracles_and_sampling():
    e, W, pos = _mlcd_inputs(seed=3)
    all_c = torch.arange(W.shape[0])
    a = mlcd(e, W, pos, reduction="none")
    b = mlcd(e, W, pos, form="mlc", reduction="none")
    assert bool((a >= b - 1e-12).all())  # log(1 + A + B + AB) >= log(1 + AB)
    torch.testing.assert_close(a.mean(), ref_mlcd(e, W, pos, all_c, "mlcd"))
    # sampled negatives: reproducible with a generator, and equal to passing the same index
    r1 = mlcd(e, W, pos, negative_ratio=0.4, generator=_gen(5))
    idx = torch.randperm(W.shape[0], generator=_gen(5))[:6].sort().values
    torch.testing.assert_close(r1, mlcd(e, W, pos, negatives=idx))
    torch.testing.assert_close(MLCD(negative_ratio=0.4, generator=_gen(5))(e, W, pos), r1)
    # closed form at a glance: one positive at s = 1 and no negatives left -> log(1 + e^-g)
    e1 = torch.tensor([[1.0, 0.0]], dtype=DT)
    W1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT)
    v = mlcd(e1, W1, torch.tensor([[0]]), negatives=torch.tensor([0]), scale=3.0)
    torch.testing.assert_close(v, torch.tensor(math.log1p(math.exp(-3.0)), dtype=DT))


def test_mlcd_gradcheck_and_bad_input():
    e, W, pos = _mlcd_inputs(N=4, k=6, d=3, seed=6)
    pos = pos[:, :2].clamp(max=5)
    assert torch.autograd.gradcheck(
        lambda a, b: mlcd(a, b, pos, scale=2.0, margin=0.2, backend="tiled", chunk_size=2), (e, W)
    )
    with pytest.raises(ValueError, match="positives"):
        mlcd(e, W, torch.full((4, 2), 6))
    with pytest.raises(ValueError, match="positives"):
        mlcd(e, W, pos[:3])
    with pytest.raises(ValueError, match="negative_ratio"):
        mlcd(e, W, pos, negative_ratio=0.0)
    with pytest.raises(ValueError, match="form"):
        MLCD(form="circle")(e, W, pos)
    with pytest.raises(ValueError, match="feature dimension"):
        mlcd(e, W[:, :2], pos)
    with pytest.raises(ValueError, match="negatives"):
        mlcd(e, W, pos, negatives=torch.tensor([], dtype=torch.long))


# ----------------------------------------------------------------------------------------------
# SupReMix
# ----------------------------------------------------------------------------------------------


def ref_supremix(features, labels, mixtures=None, myop_mask=None, myop_label=None, tau=0.3,
                 base=0.3, use_weight=False):  # fmt: skip
    """SupConLoss_v2.forward (cosine, contrast_mode 'all', 'L1_inv'), written out."""
    B = features.shape[0]
    lab = labels.view(-1, 1)
    mask = torch.eq(lab, lab.T).to(features.dtype)
    cf = torch.cat(torch.unbind(features, 1), 0)
    adc = cf @ cf.T / tau
    logits = adc - adc.max(1, keepdim=True)[0].detach()
    mask = mask.repeat(2, 2)
    lm = torch.ones_like(mask)
    lm[torch.arange(2 * B), torch.arange(2 * B)] = 0
    mask = mask * lm
    if mixtures is not None:
        adm = torch.bmm(mixtures, cf.unsqueeze(2)).squeeze(2) / tau
        logits = torch.cat([logits, adm - adm.max(1, keepdim=True)[0].detach()], 1)
        mask = torch.cat([mask, myop_mask.to(mask.dtype)], 1)
        lm = torch.cat([lm, (myop_mask != -1).to(lm.dtype)], 1)
    e = torch.exp(logits) * lm
    if use_weight:
        l2 = labels.repeat(2)
        w = (l2[:, None] - l2[None, :]).abs() + 1
        if mixtures is not None:
            w = torch.cat([w, (l2[:, None] - myop_label).abs() + 1], 1)
        e = e * w
    lp = logits - torch.log(e.sum(1, keepdim=True))
    mlpp = ((mask == 1) * lp).sum(1) / (mask == 1).sum(1)
    return (-(tau / base) * mlpp).mean()


def _supremix_inputs(B=6, d=5, Mx=7, seed=0):
    f = F.normalize(torch.randn(B, 2, d, generator=_gen(seed), dtype=DT), dim=-1).requires_grad_()
    y = torch.tensor([1.0, 2, 1, 3, 2, 2], dtype=DT)[:B]
    mix = F.normalize(torch.randn(2 * B, Mx, d, generator=_gen(seed + 1), dtype=DT), dim=-1)
    mm = torch.randint(-1, 2, (2 * B, Mx), generator=_gen(seed + 2))
    ml = torch.rand(2 * B, Mx, generator=_gen(seed + 3), dtype=DT) * 3
    return f, y, mix, mm, ml


@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("with_mix", [False, True])
def test_supremix_matches_official_port(use_weight, with_mix):
    f, y, mix, mm, ml = _supremix_inputs()
    args = (mix, mm, ml) if with_mix else ()
    want = ref_supremix(f, y, *args, use_weight=use_weight)
    for eng in ENGINES:
        got = supremix(f, y, *args, use_weight=use_weight, normalize=False, **eng)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=str(eng))
        _close_grads(
            supremix(f, y, *args, use_weight=use_weight, normalize=False, **eng),
            ref_supremix(f, y, *args, use_weight=use_weight),
            [f],
        )


def test_supremix_oracles():
    f, y, mix, mm, ml = _supremix_inputs(seed=4)
    # no mixtures, no weights: SupCon L_out with tau / tau_base
    got = supremix(f, y, use_weight=False, temperature=0.3, base_temperature=0.5)
    want = supcon(f, y.long(), temperature=0.3, base_temperature=0.5)
    torch.testing.assert_close(got, want)
    # all labels equal (mixture labels too): distance weights are 1
    same = torch.ones_like(y)
    a = supremix(f, same, mix, mm, torch.ones_like(ml), use_weight=True)
    b = supremix(f, same, mix, mm, torch.ones_like(ml), use_weight=False)
    torch.testing.assert_close(a, b)
    # the reference shift is a per-row constant on the mixture block only
    plain = supremix(f, y, mix, mm, ml, reference_shift=False, backend="tiled", chunk_size=3)
    shifted = supremix(f, y, mix, mm, ml, reference_shift=True, backend="tiled", chunk_size=3)
    assert not torch.allclose(plain, shifted)
    torch.testing.assert_close(
        supremix(f, y, mix, mm, ml, reference_shift=False, backend="dense"), plain
    )


def test_supremix_gradcheck_module_and_bad_input():
    f, y, mix, mm, ml = _supremix_inputs(B=3, d=3, Mx=2, seed=6)
    assert torch.autograd.gradcheck(
        # the reference shift is detached by design (a numerical derivative would see it)
        lambda a: supremix(a, y, mix, mm, ml, reference_shift=False, backend="tiled", chunk_size=2),
        (f,),
    )
    torch.testing.assert_close(SupReMix()(f, y, mix, mm, ml), supremix(f, y, mix, mm, ml))
    with pytest.raises(ValueError, match="mixtures"):
        supremix(f, y, mix[:2], mm, ml)
    with pytest.raises(ValueError, match="mixture_mask"):
        supremix(f, y, mix, mm + 2, ml)
    with pytest.raises(ValueError, match="mixture_labels"):
        supremix(f, y, mix, mm, ml[:, :1])
    with pytest.raises(ValueError, match="labels"):
        supremix(f, y[:2])
    with pytest.raises(ValueError, match="distance"):
        SupReMix(distance="cosine")(f, y)


def test_supremix_mixtures_checked_in_blocks():
    # the finite check of the mixtures runs in row blocks (2^14 rows): a bad value in a later
    # block, and in the first, is still named with its count; integer mixtures are refused
    f, y, mix, mm, ml = _supremix_inputs(B=3, d=3, Mx=2, seed=6)
    big = torch.randn(f.shape[0] * 2, 1 << 13, f.shape[2], dtype=f.dtype)  # 3 blocks of rows
    big_mm = torch.zeros(big.shape[:2], dtype=mm.dtype)
    big_ml = torch.zeros(big.shape[:2], dtype=ml.dtype)
    assert torch.isfinite(supremix(f, y, big, big_mm, big_ml))
    for row, value in ((0, float("nan")), (-1, float("inf"))):
        bad = big.clone()
        bad[row, -1, 0] = value
        with pytest.raises(ValueError, match=r"mixtures contains 1 NaN or Inf"):
            supremix(f, y, bad, big_mm, big_ml)
    with pytest.raises(ValueError, match="mixtures must be a floating-point"):
        supremix(f, y, mix.to(torch.int64), mm, ml)


@pytest.mark.parametrize("name", ["mlcd", "supremix", "conr"])
def test_engine_objectives_fp32_and_reductions(name):
    """fp32, sizes not multiples of the tile: tiled == dense; "sum" and "none" consistent."""
    g = _gen(40)
    if name == "mlcd":
        e, W = torch.randn(37, 24, generator=g), torch.randn(50, 24, generator=g)
        pos = torch.randint(0, 50, (37, 4), generator=g)
        args, leaves = (e.requires_grad_(), W.requires_grad_(), pos), [e, W]
        fn, kw = mlcd, {"scale": 8.0, "margin": 0.1}
    elif name == "supremix":
        f = torch.nn.functional.normalize(torch.randn(19, 2, 24, generator=g), dim=-1)
        y = torch.randint(0, 5, (19,), generator=g).float()
        mix = torch.nn.functional.normalize(torch.randn(38, 3, 24, generator=g), dim=-1)
        mm = torch.randint(-1, 2, (38, 3), generator=g)
        ml = 5 * torch.rand(38, 3, generator=g)
        args, leaves = (f.requires_grad_(), y, mix, mm, ml), [f]
        fn, kw = supremix, {}
    else:
        f = torch.randn(37, 24, generator=g)
        y = torch.randint(0, 10, (37,), generator=g).float()
        args, leaves = (f.requires_grad_(), y, y + 2 * torch.randn(37, generator=g)), [f]
        fn, kw = conr, {}
    dense = fn(*args, backend="dense", **kw)
    dense_g = torch.autograd.grad(dense, leaves)
    for chunk in (None, 5):
        tiled = fn(*args, backend="tiled", chunk_size=chunk, **kw)
        torch.testing.assert_close(tiled, dense, rtol=1e-5, atol=1e-6)
        for a, b in zip(torch.autograd.grad(tiled, leaves), dense_g):
            assert float((a - b).abs().max() / b.abs().max().clamp(min=1e-6)) <= 1e-5
    rows = fn(*args, backend="tiled", chunk_size=4, reduction="none", **kw)
    rows_d = fn(*args, backend="dense", reduction="none", **kw)
    total = fn(*args, backend="tiled", chunk_size=4, reduction="sum", **kw)
    torch.testing.assert_close(rows, rows_d, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, rows.sum(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# GroCo
# ----------------------------------------------------------------------------------------------


def ref_odd_even_matrices(n):
    """Odd-even transposition network as (split_a, split_b, combine_min, combine_max) layers,
    unpaired wires as self-comparators with weight 1/2 (the diffsort construction)."""
    layers = []
    for layer in range(n):
        pairs = [(i, i + 1) for i in range(layer % 2, n - 1, 2)]
        used = {w for p in pairs for w in p}
        pairs += [(w, w) for w in range(n) if w not in used]
        k = len(pairs)
        sa, sb = torch.zeros(k, n, dtype=DT), torch.zeros(k, n, dtype=DT)
        cmin, cmax = torch.zeros(n, k, dtype=DT), torch.zeros(n, k, dtype=DT)
        for c, (a, b) in enumerate(pairs):
            sa[c, a] = sb[c, b] = 1
            f = 0.5 if a == b else 1.0
            cmin[a, c] = f
            cmax[b, c] = f
        layers.append((sa, sb, cmin, cmax))
    return layers


def ref_diffsort(x, steepness):
    """diffsort execute_sort with 'cauchy' interpolation; products written as broadcast sums
    (tiny batched GEMMs stall under CPU contention)."""

    def mm(u, m):  # u @ m over the last axis
        return (u[..., :, None] * m).sum(-2)

    X = torch.eye(x.shape[1], dtype=x.dtype).repeat(x.shape[0], 1, 1)
    for sa, sb, cmin, cmax in ref_odd_even_matrices(x.shape[1]):
        a, b = mm(x, sa.T), mm(x, sb.T)
        alpha = torch.atan((b - a) * steepness) / math.pi + 0.5
        aX, bX = mm(X, sa.T), mm(X, sb.T)
        w_min = alpha.unsqueeze(-2) * aX + (1 - alpha).unsqueeze(-2) * bX
        w_max = (1 - alpha).unsqueeze(-2) * aX + alpha.unsqueeze(-2) * bX
        X = mm(w_max, cmax.T) + mm(w_min, cmin.T)
        x = mm(alpha * a + (1 - alpha) * b, cmin.T) + mm((1 - alpha) * a + alpha * b, cmax.T)
    return x, X


def ref_groco(views, n_pos, topk, steepness=1.0):
    """learning_by_sorting GroCo.forward / compute_loss (single process, stop_grad), written out."""
    V = views.shape[0]
    bce = torch.nn.BCELoss()
    total = 0
    for a in range(V):
        anchor = views[a]
        pos = torch.stack(
            [F.cosine_similarity(anchor, views[p].detach(), dim=1) for p in range(n_pos) if p != a],
            dim=1,
        )
        neg = F.cosine_similarity(anchor[:, None], anchor.detach()[None], dim=-1)
        neg = neg.masked_fill(torch.eye(len(anchor), dtype=torch.bool), -float("inf"))
        pos, _ = torch.sort(pos, dim=1)
        neg, _ = torch.topk(neg, k=topk, dim=1)
        sims = torch.cat((torch.flip(neg, dims=[1]), pos), dim=1)
        _, perm = ref_diffsort(sims, steepness)
        n = sims.shape[1]
        target = torch.eye(n, dtype=DT)[None].repeat(len(anchor), 1, 1)
        p_neg = perm[:, :, :topk].sum(2, keepdim=True).clip(0, 1)
        p_pos = perm[:, :, topk:].sum(2, keepdim=True).clip(0, 1)
        t_neg = target[:, :, :topk].sum(2, keepdim=True)
        t_pos = target[:, :, topk:].sum(2, keepdim=True)
        total = total + (bce(p_pos, t_pos) + bce(p_neg, t_neg)) / 2
    return total / V


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_soft_sort_matches_network_matrices(n):
    x = _randn(3, n, seed=n)
    got_x, got_X = soft_sort_permutation(x, 2.0)
    want_x, want_X = ref_diffsort(x, 2.0)
    torch.testing.assert_close(got_x, want_x)
    torch.testing.assert_close(got_X, want_X)
    # doubly stochastic: rows and columns of X sum to 1
    torch.testing.assert_close(got_X.sum(1), torch.ones(3, n, dtype=DT))
    torch.testing.assert_close(got_X.sum(2), torch.ones(3, n, dtype=DT))


@pytest.mark.parametrize("V,n_pos", [(2, None), (4, None), (4, 2)])
def test_groco_matches_official_port(V, n_pos):
    views = _randn(V, 8, 5, seed=V)
    want = ref_groco(views, n_pos or V, topk=4)
    for chunk in (None, 3):
        got = groco(views, n_pos_views=n_pos, topk_neg=4, chunk_size=chunk)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    (g1,) = torch.autograd.grad(groco(views, n_pos_views=n_pos, topk_neg=4, chunk_size=5), views)
    (g2,) = torch.autograd.grad(ref_groco(views, n_pos or V, topk=4), views)
    torch.testing.assert_close(g1, g2)


def test_groco_oracles():
    # P_neg = 1 - P_pos (rows of X sum to 1), so the two BCE terms agree
    x = _randn(4, 7, seed=3, grad=False)
    _, X = soft_sort_permutation(x, 1.0)
    torch.testing.assert_close(X[:, :, :3].sum(2), 1 - X[:, :, 3:].sum(2))
    # steep sorting, already in target order with wide gaps: loss -> 0
    B, d = 8, 16
    base = torch.eye(d, dtype=DT)[:B] * 10  # orthogonal samples: negatives at cosine 0
    views = torch.stack([base, base + 0.01 * torch.randn(B, d, generator=_gen(4), dtype=DT)])
    steep = float(groco(views, topk_neg=3, steepness=1e4))
    soft = float(groco(views, topk_neg=3, steepness=1.0))
    assert steep < 1e-3 < soft
    # swapped order (positives far, negatives close) costs more than the right order
    anti = torch.stack([base, -base])
    assert float(groco(anti, topk_neg=3)) > soft


def test_groco_gradcheck_and_module():
    views = _randn(3, 5, 3, seed=7)
    assert torch.autograd.gradcheck(
        lambda v: groco(v, topk_neg=2, stop_grad=False, chunk_size=2), (views,)
    )
    torch.testing.assert_close(GroCo(topk_neg=2)(list(views)), groco(views, topk_neg=2))


def test_groco_bad_input():
    v = torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match="topk_neg"):
        groco(v, topk_neg=6)
    with pytest.raises(ValueError, match="n_pos_views"):
        groco(v, n_pos_views=3)
    with pytest.raises(ValueError, match="positive view"):
        groco(torch.randn(1, 6, 4), topk_neg=2)
    with pytest.raises(ValueError, match="views"):
        groco([torch.randn(6, 4), torch.randn(5, 4)])
    with pytest.raises(ValueError, match="steepness"):
        GroCo(steepness=0, topk_neg=2)(v)


# ----------------------------------------------------------------------------------------------
# CPRD
# ----------------------------------------------------------------------------------------------


def ref_cprd(q, t, neg, teacher, tau, n_valid=None):
    """Plackett-Luce over the teacher's order, one contrastive step per ranked negative."""
    q, t = F.normalize(q, dim=1), F.normalize(t, dim=1)
    rows = []
    for i in range(q.shape[0]):
        order = sorted(range(neg.shape[1]), key=lambda j: -float(teacher[i, j]))
        u = torch.stack([q[i] @ t[neg[i, j]] for j in order]) / tau
        J = neg.shape[1] if n_valid is None else int(n_valid[i])
        terms = [torch.logsumexp(u[j:], 0) - u[j] for j in range(J)]
        rows.append(torch.stack(terms).sum() if terms else u.sum() * 0)
    return torch.stack(rows).mean()


def test_cprd_matches_reference_and_mining():
    q, t = _randn(9, 6, seed=1), _randn(12, 6, seed=2)
    neg = in_batch_hard_negatives(q, t, 5, chunk_size=4)
    s = F.normalize(q, dim=1) @ F.normalize(t, dim=1).T
    s[torch.arange(9), torch.arange(9)] = -float("inf")
    torch.testing.assert_close(neg, s.topk(5, dim=1).indices)
    teacher = torch.randn(9, 5, generator=_gen(3), dtype=DT)
    n_valid = torch.tensor([5, 4, 0, 1, 2, 5, 3, 3, 5])
    for nv in (None, n_valid):
        got = partial_ranking_distillation(q, t, neg, teacher, temperature=0.1, n_valid=nv)
        want = ref_cprd(q, t, neg, teacher, 0.1, nv)
        torch.testing.assert_close(got, want)
        (g1,) = torch.autograd.grad(got, q)
        (g2,) = torch.autograd.grad(ref_cprd(q, t, neg, teacher, 0.1, nv), q)
        torch.testing.assert_close(g1, g2)
    m = PartialRankingDistillation(temperature=0.1)
    torch.testing.assert_close(m(q, t, m.mine(q, t, 5), teacher), ref_cprd(q, t, neg, teacher, 0.1))


def test_cprd_oracles_and_gradcheck():
    # student order = teacher order with wide gaps -> 0 as tau -> 0; reversed order -> large
    t = torch.eye(6, dtype=DT)
    q = torch.tensor([[0.0, 5.0, 4.0, 3.0, 2.0, 1.0]], dtype=DT)
    neg = torch.tensor([[1, 2, 3, 4, 5]])
    teacher = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]], dtype=DT)
    assert float(partial_ranking_distillation(q, t, neg, teacher, temperature=0.002)) < 1e-12
    assert float(partial_ranking_distillation(q, t, neg, -teacher, temperature=0.002)) > 100
    # each step is an InfoNCE over the suffix: K = 2 is a single two-way cross-entropy
    u = F.normalize(q, dim=1) @ t[[1, 2]].T / 0.5
    want = F.cross_entropy(u, torch.tensor([0]))
    got = partial_ranking_distillation(q, t, neg[:, :2], teacher[:, :2], temperature=0.5)
    torch.testing.assert_close(got, want)
    qq, tt = _randn(4, 3, seed=5), _randn(6, 3, seed=6)
    nn = torch.randint(0, 6, (4, 3), generator=_gen(7))
    assert torch.autograd.gradcheck(
        lambda a, b: partial_ranking_distillation(
            a, b, nn, torch.randn(4, 3, generator=_gen(8), dtype=DT)
        ),  # fmt: skip
        (qq, tt),
    )


def test_cprd_bad_input():
    q, t = torch.randn(4, 3), torch.randn(6, 3)
    neg = torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="teacher_scores"):
        partial_ranking_distillation(q, t, neg, torch.randn(4, 3))
    with pytest.raises(ValueError, match="negatives"):
        partial_ranking_distillation(q, t, neg + 6, torch.randn(4, 2))
    with pytest.raises(ValueError, match="n_valid"):
        partial_ranking_distillation(q, t, neg, torch.randn(4, 2), n_valid=torch.full((4,), 3))
    with pytest.raises(ValueError, match="k must"):
        in_batch_hard_negatives(q, t, 6)
    with pytest.raises(ValueError, match="temperature"):
        PartialRankingDistillation(temperature=-1)


# ----------------------------------------------------------------------------------------------
# PamC
# ----------------------------------------------------------------------------------------------


def ref_feature_dis(x):
    x_dis = x @ x.T
    mask = torch.eye(x_dis.shape[0], dtype=x.dtype)
    n = torch.sqrt((x**2).sum(1)).reshape(-1, 1)
    return (1 - mask) * (x_dis * (n @ n.T) ** (-1))


def ref_pamc_dense(z, q, adj_label, tau=1.0):  # tau multiplies (temperature = 1 / tau)
    """PAMC train.py NcontrastCC on get_feature_dis, meta-nodes as in train_scgc_trimPOS_CC."""
    x_dis = torch.exp(tau * ref_feature_dis(z))
    x_pos = torch.sum(x_dis * adj_label, 1)
    cc = torch.sum(z.unsqueeze(1) * F.one_hot(q.detach().argmax(1)).unsqueeze(2), dim=0)
    x_neg = torch.sum(torch.exp(tau * ref_feature_dis(cc)), 1)
    return -torch.log(x_pos + 1e-10).mean() + torch.log(x_neg + 1e-10).mean()


def _graph(n=10, seed=0):
    A = (torch.rand(n, n, generator=_gen(seed)) < 0.3).to(DT) + torch.eye(n, dtype=DT)
    A = A / A.sum(1, keepdim=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adjacency_power(A, 2), A @ A


def test_pamc_matches_official_port():
    Ar, dense = _graph()
    torch.testing.assert_close(Ar.to_dense(), dense)
    z = _randn(10, 4, seed=1)
    q = torch.rand(10, 3, generator=_gen(2), dtype=DT)
    q[:3, 0] += 2  # every cluster non-empty
    q[3:6, 1] += 2
    q[6:, 2] += 2
    want = ref_pamc_dense(z, q, dense, tau=0.7)
    for adj in (Ar, dense):
        got = pamc(z, q, adj, temperature=1 / 0.7)
        torch.testing.assert_close(got, want)
        (g1,) = torch.autograd.grad(got, z)
        (g2,) = torch.autograd.grad(ref_pamc_dense(z, q, dense, tau=0.7), z)
        torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(PamC(temperature=1 / 0.7)(z, q, Ar), want)


def test_pamc_oracles_and_gradcheck():
    Ar, dense = _graph(seed=3)
    z = _randn(10, 4, seed=4)
    q = torch.rand(10, 5, generator=_gen(5), dtype=DT)
    q[:, 4] = -1  # cluster 4 empty (NaN in the reference): dropped
    v = pamc(z, q, Ar)
    assert torch.isfinite(v)
    q4 = q[:, :4]
    torch.testing.assert_close(v, pamc(z, q4, Ar))
    # rescaling every embedding by one positive constant changes nothing. (Per-node rescaling
    # leaves the positive term unchanged but moves the meta-node sums, as the official code.)
    torch.testing.assert_close(pamc(z * 3.7, q, Ar), v)
    # one cluster: negative term log(1) = 0
    one = torch.zeros(10, 1, dtype=DT)
    want = -torch.log(torch.sum(torch.exp(ref_feature_dis(z)) * dense, 1) + 1e-10).mean()
    torch.testing.assert_close(pamc(z, one, Ar), want)
    assert torch.autograd.gradcheck(lambda a: pamc(a, q4, Ar, temperature=1 / 1.3), (z,))


def test_pamc_bad_input():
    Ar, _ = _graph()
    z, q = torch.randn(10, 4, dtype=DT), torch.rand(10, 3, dtype=DT)
    with pytest.raises(ValueError, match="adjacency"):
        pamc(z, q, torch.eye(9, dtype=DT))
    with pytest.raises(ValueError, match="q must"):
        pamc(z, q[:9], Ar)
    with pytest.raises(ValueError, match="temperature"):
        PamC(temperature=0)
    with pytest.raises(ValueError, match="order"):
        adjacency_power(torch.eye(3), 0)
    with pytest.raises(ValueError, match="non-negative"):
        pamc(z, q, -Ar.to_dense())


# ----------------------------------------------------------------------------------------------
# One API style: module twins, reductions, aliases
# ----------------------------------------------------------------------------------------------


def _swav_case():
    z = _randn(2 * 5, 6, seed=50)
    W = F.normalize(torch.randn(7, 6, generator=_gen(51), dtype=DT), dim=1)
    return (z, W), {"temperature": 0.2}, [z]


def _mlcd_case():
    e, W, pos = _mlcd_inputs(seed=52)
    return (e, W, pos), {"scale": 2.0, "margin": 0.1}, [e, W]


def _groco_case():
    views = _randn(3, 8, 5, seed=53)
    return (views,), {"topk_neg": 3}, [views]


def _cprd_case():
    q, t = _randn(6, 5, seed=54), _randn(9, 5, seed=55)
    neg = in_batch_hard_negatives(q, t, 4)
    teacher = torch.randn(6, 4, generator=_gen(56), dtype=DT)
    return (q, t, neg, teacher), {"temperature": 0.1}, [q, t]


def _conr_case():
    f, y, yh, om = _conr_inputs(seed=57)
    y[0] = 40.0  # an anchor without positives: 0, out of the mean's count
    return (f, y, yh, om), {"temperature": 0.1}, [f]


def _supremix_case():
    f, y, mix, mm, ml = _supremix_inputs(seed=58)
    return (f, y, mix, mm, ml), {"temperature": 0.3}, [f]


def _pamc_case():
    Ar, _ = _graph(seed=59)
    z = _randn(10, 4, seed=60)
    q = torch.rand(10, 3, generator=_gen(61), dtype=DT)
    return (z, q, Ar), {"temperature": 0.8}, [z]


TWINS = {
    "mlcd": (mlcd, MLCD, _mlcd_case),
    "groco": (groco, GroCo, _groco_case),
    "partial_ranking_distillation": (
        partial_ranking_distillation,
        PartialRankingDistillation,
        _cprd_case,
    ),
    "conr": (conr, ConR, _conr_case),
    "supremix": (supremix, SupReMix, _supremix_case),
    "pamc": (pamc, PamC, _pamc_case),
}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_module_twin_equals_functional(name):
    fn, Module, case = TWINS[name]
    args, opts, leaves = case()
    assert Module.functional is fn
    got, want = Module(**opts)(*args), fn(*args, **opts)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    _close_grads(Module(**opts)(*args), fn(*args, **opts), leaves, rtol=1e-12, atol=1e-12)
    # keyword arguments of a call override the module's options
    other = {"reduction": "sum"}
    torch.testing.assert_close(Module(**opts)(*args, **other), fn(*args, **opts, **other))


def test_swav_module_equals_functional():
    (z, _), opts, _ = _swav_case()
    m = SwAV(6, 7, **opts).double()
    W = F.normalize(m.prototypes.detach(), dim=1)
    got = m(z)  # re-normalises its prototypes in place first
    torch.testing.assert_close(got, swav(z, W, **opts), rtol=1e-12, atol=1e-12)
    _close_grads(m(z), swav(z, W, **opts), [z], rtol=1e-12, atol=1e-12)
    rows = SwAV(6, 7, reduction="none", **opts).double()
    rows.load_state_dict(m.state_dict())
    torch.testing.assert_close(rows(z), swav(z, W, reduction="none", **opts))


def _conr_count(args):
    y = args[1]
    return int((((y[:, None] - y[None]).abs() <= 1.0).sum(1) > 1).sum())


#: the count that divides the sum for "mean", when not every row (SupReMix: every anchor has its
#: other view as a positive here)
_MEAN_COUNT = {"conr": _conr_count}


@pytest.mark.parametrize("name", sorted(TWINS) + ["swav"])
def test_reductions_are_consistent(name):
    fn, case = (swav, _swav_case) if name == "swav" else (TWINS[name][0], TWINS[name][2])
    args, opts, leaves = case()
    rows = fn(*args, **opts, reduction="none")
    total = fn(*args, **opts, reduction="sum")
    mean = fn(*args, **opts, reduction="mean")
    assert rows.dim() == 1 and rows.shape[0] >= 2
    torch.testing.assert_close(total, rows.sum(), rtol=1e-10, atol=1e-12)
    if name in _MEAN_COUNT:  # anchors without positives are 0 and leave the mean's count
        count = _MEAN_COUNT[name](args)
        assert 0 < count < rows.shape[0]
        torch.testing.assert_close(mean, rows.sum() / count, rtol=1e-10, atol=1e-12)
    else:
        torch.testing.assert_close(mean, rows.mean(), rtol=1e-10, atol=1e-12)
    (g_rows,) = torch.autograd.grad(rows.sum(), leaves[0])
    (g_sum,) = torch.autograd.grad(fn(*args, **opts, reduction="sum"), leaves[0])
    torch.testing.assert_close(g_rows, g_sum, rtol=1e-10, atol=1e-12)


def test_published_aliases_and_registry():
    import contrastkit.losses.structured as family
    from contrastkit.objective import entries

    assert family.MLCDLoss is MLCD
    found = {e.name: e for e in entries("structured")}
    assert set(found) == {
        "swav",
        "sinkhorn_knopp",
        "mlcd",
        "groco",
        "partial_ranking_distillation",
        "conr",
        "supremix",
        "pamc",
    }
    assert found["mlcd"].module_aliases == ("MLCDLoss",)
    assert found["sinkhorn_knopp"].module is None  # a helper of SwAV
    # labels gathered (ConR, SupReMix), centres / prototypes replicated (MLCD, SwAV and its
    # Sinkhorn-Knopp step): exact under a process group
    exact = {"conr", "supremix", "mlcd", "swav", "sinkhorn_knopp"}
    for name, e in found.items():
        assert (getattr(e.functional, "exact_under_group", True) is False) != (name in exact)


# ----------------------------------------------------------------------------------------------
# Documentation examples
# ----------------------------------------------------------------------------------------------


def test_docs_examples_run():
    import pathlib
    import re

    page = pathlib.Path(__file__).parents[1] / "docs/objectives/structured.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) == 7
    for code in blocks:
        scope: dict = {}
        exec(compile(code, str(page), "exec"), scope)  # noqa: S102
        loss = scope["loss"]
        assert loss.dim() == 0 and bool(torch.isfinite(loss))


def test_benchmark_hook_engine_equals_dense():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "objectives_structured.py"
    spec = importlib.util.spec_from_file_location("_bench_objectives_structured", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    names = [n for n in bench.CASES if not n.endswith("-dense")]
    assert set(bench.CASES) == set(names) | {n + "-dense" for n in names}
    for name in names:
        tiled = bench.CASES[name](24, 8, torch.Generator().manual_seed(0))()
        dense = bench.CASES[name + "-dense"](24, 8, torch.Generator().manual_seed(0))()
        assert tiled.dim() == 0 and tiled.requires_grad
        torch.testing.assert_close(tiled, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conr_row_flags_by_sorting_match_the_pairwise_masks(dtype):
    """Which anchors have positives / confused negatives comes from sorted windows (O(B log B)),
    exactly as the tile's pairwise ``|dy| <= window`` decides them: ties at the window edge,
    runs of equal values, integer and continuous labels."""
    from contrastkit.losses.structured.conr import _has_confused_negative, _has_near

    g = _gen(7)
    for trial in range(40):
        B = int(torch.randint(2, 60, (1,), generator=g))
        if trial % 3 == 0:  # integer labels: many ties at distance exactly `window`
            y = torch.randint(0, 8, (B,), generator=g).to(dtype)
            yh = torch.randint(0, 8, (B,), generator=g).to(dtype)
        else:
            y = (torch.rand(B, generator=g, dtype=torch.float64) * 5).to(dtype)
            yh = (y.double() + torch.randn(B, generator=g, dtype=torch.float64)).to(dtype)
        window = [1.0, 0.1, 0.3, 2.5][trial % 4]
        d = (y[:, None] - y[None, :]).abs()
        dh = (yh[:, None] - yh[None, :]).abs()
        near = (d <= window) & ~torch.eye(B, dtype=torch.bool)
        assert torch.equal(_has_near(y, window), near.any(1))
        assert torch.equal(
            _has_confused_negative(y, yh, window), ((d > window) & (dh <= window)).any(1)
        )


# ----------------------------------------------------------------------------------------------
# MLCD under a process group: the negative centres agree on every rank
# ----------------------------------------------------------------------------------------------


def _mlcd_two_ranks(rank, world, rdzv, out):
    import os

    import test_distributed as T

    dist = T._init(rank, world, rdzv)
    g = torch.Generator().manual_seed(rank)
    e, C = torch.randn(4, 8, generator=g), torch.randn(10, 8, generator=_gen(5))
    pos = torch.zeros(4, 1, dtype=torch.long)
    res = {}
    try:  # the caller's negatives differ across ranks: every rank raises
        mlcd(e, C, pos, torch.tensor([1, 2 + rank]))
    except ValueError as exc:
        res["differ"] = str(exc)
    # generators seeded differently: every rank uses rank 0's sample
    res["rows"] = mlcd(e, C, pos, negative_ratio=0.5, generator=_gen(100 + rank), reduction="none")
    torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_mlcd_negatives_are_the_same_on_every_rank():
    from test_distributed import _spawn

    import contrastkit.distributed as ckd

    res = _spawn(_mlcd_two_ranks, 2)
    for r in res:
        assert "must be the same centre indices on every rank" in r["differ"], r
        assert "rank 0 [1, 2], rank 1 [1, 3]" in r["differ"]
    e1 = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    C = torch.randn(10, 8, generator=_gen(5))
    pos = torch.zeros(4, 1, dtype=torch.long)
    with ckd.local():
        want = mlcd(e1, C, pos, negative_ratio=0.5, generator=_gen(100), reduction="none")
        own = mlcd(e1, C, pos, negative_ratio=0.5, generator=_gen(101), reduction="none")
    assert not torch.allclose(own, want)  # rank 1's own sample would differ
    torch.testing.assert_close(res[1]["rows"], want)
