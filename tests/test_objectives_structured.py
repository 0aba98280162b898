"""Clustering, regression and text objectives: SwAV, SimCTG, ConR, WhitenedCSE (shuffled group
whitening), MLCD, SupReMix. Each against a plain dense reference written from the official code
or the paper (values and gradients, fp64), card oracles, gradcheck, state, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses.conr import ConR, conr
from contrastkit.losses.info_nce import info_nce
from contrastkit.losses.mlcd import MLCDLoss, mlcd
from contrastkit.losses.simctg import SimCTGLoss, simctg_contrastive, simctg_loss
from contrastkit.losses.supcon import supcon
from contrastkit.losses.supremix import SupReMix, supremix
from contrastkit.losses.swav import SwAV, sinkhorn_knopp, swav
from contrastkit.losses.whitening import (
    ShuffledGroupWhitening,
    WhitenedCSELoss,
    group_whiten,
    whitened_cse,
)

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


def test_half_precision_inputs_run_in_fp32():
    z = torch.randn(12, 8, generator=_gen(30)).half()
    m = SwAV(8, 5, n_crops=3, queue_length=8)
    for _ in range(3):
        v = m(z)
    assert v.dtype == torch.float32 and torch.isfinite(v)
    torch.testing.assert_close(v, m(z.float()), rtol=1e-2, atol=1e-2)
    w = ShuffledGroupWhitening(8, num_groups=2, num_views=3)(torch.randn(30, 8).bfloat16())
    assert w.dtype == torch.float32 and torch.isfinite(w).all()
    h = simctg_contrastive(torch.randn(2, 6, 4).half(), backend="tiled", chunk_size=2)
    assert h.dtype == torch.float32 and torch.isfinite(h)


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
# SimCTG
# ----------------------------------------------------------------------------------------------


def ref_simctg_cl(hidden, input_ids, pad, margin):
    """yxuansu/SimCTG SimCTGLoss.contrastive_loss, written out (valid_len prefix masks)."""
    norm = hidden / hidden.norm(dim=2, keepdim=True)
    S = norm @ norm.transpose(1, 2)
    B, T, _ = S.shape
    gold = torch.diagonal(S, dim1=1, dim2=2)[..., None]
    loss = F.relu(margin - (gold - S))
    input_mask = (input_ids != pad).to(S.dtype)
    lens = input_mask.sum(-1).long().tolist()
    masks = []
    for n in lens:
        m = torch.ones(T, T, dtype=S.dtype) - torch.eye(T, dtype=S.dtype)
        m[:, n:] = 0
        m[n:, :] = 0
        masks.append(m)
    mask = torch.stack(masks)
    rows = (loss * mask).sum(-1) * input_mask
    return rows.sum() / mask.sum()


def _simctg_inputs(B=3, T=9, d=5, seed=0):
    H = _randn(B, T, d, seed=seed)
    ids = torch.randint(1, 50, (B, T), generator=_gen(seed + 1))
    ids[1, 6:] = 0
    ids[-1, 2:] = 0
    return H, ids


@pytest.mark.parametrize("margin", [0.5, 0.9, 1.3])
def test_simctg_matches_official_port(margin):
    H, ids = _simctg_inputs()
    want = ref_simctg_cl(H, ids, 0, margin)
    for eng in ENGINES:
        got = simctg_contrastive(H, input_ids=ids, pad_token_id=0, margin=margin, **eng)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=str(eng))
        _close_grads(
            simctg_contrastive(H, input_ids=ids, pad_token_id=0, margin=margin, **eng),
            ref_simctg_cl(H, ids, 0, margin),
            [H],
        )
    # the same valid tokens given as an attention mask
    got = simctg_contrastive(H, attention_mask=(ids != 0).long(), margin=margin, backend="tiled")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_simctg_oracles():
    eye = torch.eye(6, dtype=DT)[None].repeat(2, 1, 1) * 3.0  # orthogonal token states
    assert float(simctg_contrastive(eye, margin=0.5, backend="tiled", chunk_size=2)) == 0.0
    same = torch.ones(2, 6, 4, dtype=DT)  # identical token states: every pair costs rho
    for rho in (0.5, 0.2):
        v = simctg_contrastive(same, margin=rho, backend="tiled", chunk_size=4)
        torch.testing.assert_close(v, torch.tensor(rho, dtype=DT))
    # fewer than two valid tokens: no pairs, 0 with a graph
    H = _randn(2, 4, 3, seed=3)
    mask = torch.zeros(2, 4)
    mask[0, 0] = 1
    v = simctg_contrastive(H, attention_mask=mask)
    assert float(v.detach()) == 0.0 and v.requires_grad
    # rho = 0 disables the term
    assert float(simctg_contrastive(H, margin=0.0).detach()) == 0.0


def test_simctg_gradcheck_and_total():
    H, ids = _simctg_inputs(2, 5, 3, seed=4)
    assert torch.autograd.gradcheck(
        lambda h: simctg_contrastive(
            h, input_ids=ids, pad_token_id=0, margin=1.2, backend="tiled", chunk_size=2
        ),
        (H,),
    )
    logits = _randn(2, 5, 11, seed=5)
    labels = torch.randint(0, 11, (2, 5), generator=_gen(6))
    labels[1, 3:] = -100
    total = simctg_loss(H, logits, labels, input_ids=ids, pad_token_id=0)
    want = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1)) + ref_simctg_cl(
        H, ids, 0, 0.5
    )
    torch.testing.assert_close(total, want)
    mod = SimCTGLoss(pad_token_id=0)
    torch.testing.assert_close(mod(H, logits, labels, input_ids=ids), want)
    torch.testing.assert_close(mod(H, input_ids=ids), ref_simctg_cl(H, ids, 0, 0.5))


def test_simctg_fp32_tiled_equals_dense():
    H = torch.randn(4, 40, 16, generator=_gen(7)).requires_grad_()
    d = simctg_contrastive(H, margin=0.9, backend="dense")
    (gd,) = torch.autograd.grad(d, H)
    for c in (None, 7):
        t = simctg_contrastive(H, margin=0.9, backend="tiled", chunk_size=c)
        (gt,) = torch.autograd.grad(t, H)
        torch.testing.assert_close(t, d, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gt, gd, rtol=1e-5, atol=1e-6)


def test_simctg_bad_input():
    H = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="hidden_states"):
        simctg_contrastive(torch.randn(4, 3))
    with pytest.raises(ValueError, match="margin"):
        simctg_contrastive(H, margin=-0.1)
    with pytest.raises(ValueError, match="attention_mask"):
        simctg_contrastive(H, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="labels"):
        simctg_loss(H, torch.randn(2, 4, 7), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="backend"):
        SimCTGLoss(backend="gpu")


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
        ConR(denominator="other")
    with pytest.raises(ValueError, match="window"):
        conr(f, y, yh, window=0)
    with pytest.raises(ValueError, match="weights"):
        conr(f, y, yh, weights=-om)


# ----------------------------------------------------------------------------------------------
# Shuffled group whitening and the WhitenedCSE loss
# ----------------------------------------------------------------------------------------------


def ref_whitening_view(x, G, perm):
    """shuffled_group_whitening.py for one view, with eigh in place of symeig (W detached)."""
    B, D = x.shape
    x = x.t()[perm].t().reshape(B, G, D // G)
    x = (x - x.mean(dim=0, keepdim=True)).transpose(0, 1)
    covs = (x.transpose(1, 2) @ x / B).detach()
    S, U = torch.linalg.eigh(covs)
    W = U @ S.rsqrt().diag_embed() @ U.transpose(1, 2)
    x = x @ W
    return x.transpose(1, 2).flatten(0, 1)[torch.argsort(perm)].t()


def test_whitening_matches_port_and_whitens():
    D, G, B = 12, 3, 10
    x = (
        torch.randn(3 * B, D, generator=_gen(1), dtype=DT) @ torch.randn(D, D, dtype=DT)
    ).requires_grad_()
    m = ShuffledGroupWhitening(D, num_groups=G, num_views=3, generator=_gen(42))
    out = m(x)
    g = _gen(42)
    perms = [torch.randperm(D, generator=g) for _ in range(3)]
    want = torch.cat([ref_whitening_view(v, G, p) for v, p in zip(x.split(B), perms)])
    torch.testing.assert_close(out, want)
    _close_grads((out**3).sum(), (want**3).sum(), [x])
    # every (permuted) group of every view has identity covariance
    for v, p in zip(out.detach().split(B), perms):
        v = v[:, p] - v[:, p].mean(0)
        cov = v.T @ v / B
        for k in range(G):
            blk = cov[k * 4 : (k + 1) * 4, k * 4 : (k + 1) * 4]
            torch.testing.assert_close(blk, torch.eye(4, dtype=DT))


def test_whitening_eval_and_gradient_options():
    x = torch.randn(24, 8, generator=_gen(2), dtype=DT).requires_grad_()
    m = ShuffledGroupWhitening(8, num_groups=2, shuffle=False).eval()
    out = m(x)
    torch.testing.assert_close(out, group_whiten(x, 2))
    xc = out - out.mean(0)
    torch.testing.assert_close((xc.T @ xc / 24)[:4, :4], torch.eye(4, dtype=DT))
    # keeping the whitening matrix's gradient changes the gradient (and passes gradcheck)
    (g_det,) = torch.autograd.grad((group_whiten(x, 2) ** 3).sum(), x)
    (g_full,) = torch.autograd.grad((group_whiten(x, 2, detach_whitening=False) ** 3).sum(), x)
    assert not torch.allclose(g_det, g_full)
    small = torch.randn(9, 4, generator=_gen(3), dtype=DT).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: group_whiten(a, 2, detach_whitening=False), (small,))


def ref_whitened_cse(z1, z2, z3, temp=0.05):
    s12 = F.cosine_similarity(z1[:, None], z2[None], dim=-1) / temp
    s13 = F.cosine_similarity(z1[:, None], z3[None], dim=-1) / temp
    labels = torch.arange(z1.shape[0])
    return F.cross_entropy(s12, labels) + F.cross_entropy(s13, labels)


def test_whitened_cse_loss():
    z1, z2, z3 = (_randn(9, 6, seed=s) for s in (1, 2, 3))
    want = ref_whitened_cse(z1, z2, z3)
    for eng in ENGINES:
        got = whitened_cse(z1, z2, z3, **eng)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        _close_grads(whitened_cse(z1, z2, z3, **eng), ref_whitened_cse(z1, z2, z3), [z1, z2, z3])
    torch.testing.assert_close(WhitenedCSELoss()(z1, z2, z3), want)
    # no whitening, two views: unsupervised SimCSE = InfoNCE with in-batch candidates
    torch.testing.assert_close(whitened_cse(z1, z2), info_nce(z1, z2, temperature=0.05))


def test_whitening_bad_input():
    with pytest.raises(ValueError, match="num_groups"):
        ShuffledGroupWhitening(10, num_groups=3)
    m = ShuffledGroupWhitening(8, num_groups=2, num_views=3)
    with pytest.raises(ValueError, match="num_views"):
        m(torch.randn(10, 8))
    with pytest.raises(ValueError, match="singular"):
        m(torch.randn(12, 8))  # 4 rows per view, D/G = 4
    assert torch.isfinite(ShuffledGroupWhitening(8, 2, eps=1e-3)(torch.randn(12, 8))).all()
    with pytest.raises(ValueError, match="features"):
        m(torch.randn(30, 6))
    with pytest.raises(ValueError, match="shape of z1"):
        whitened_cse(torch.randn(4, 3), torch.randn(5, 3))


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
    torch.testing.assert_close(MLCDLoss(negative_ratio=0.4, generator=_gen(5))(e, W, pos), r1)
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
        MLCDLoss(form="circle")
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
        SupReMix(distance="cosine")


@pytest.mark.parametrize("name", ["mlcd", "supremix", "conr", "whitened_cse"])
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
    elif name == "conr":
        f = torch.randn(37, 24, generator=g)
        y = torch.randint(0, 10, (37,), generator=g).float()
        args, leaves = (f.requires_grad_(), y, y + 2 * torch.randn(37, generator=g)), [f]
        fn, kw = conr, {}
    else:
        zs = [torch.randn(37, 24, generator=g).requires_grad_() for _ in range(3)]
        args, leaves, fn, kw = tuple(zs), zs, whitened_cse, {}
    dense = fn(*args, backend="dense", **kw)
    dense_g = torch.autograd.grad(dense, leaves)
    for chunk in (None, 5):
        tiled = fn(*args, backend="tiled", chunk_size=chunk, **kw)
        torch.testing.assert_close(tiled, dense, rtol=1e-5, atol=1e-6)
        for a, b in zip(torch.autograd.grad(tiled, leaves), dense_g):
            assert float((a - b).abs().max() / b.abs().max().clamp(min=1e-6)) <= 1e-5
    if name == "whitened_cse":
        return
    rows = fn(*args, backend="tiled", chunk_size=4, reduction="none", **kw)
    rows_d = fn(*args, backend="dense", reduction="none", **kw)
    total = fn(*args, backend="tiled", chunk_size=4, reduction="sum", **kw)
    torch.testing.assert_close(rows, rows_d, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, rows.sum(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Documentation examples
# ----------------------------------------------------------------------------------------------


def test_docs_examples_run():
    import pathlib
    import re

    page = pathlib.Path(__file__).parents[1] / "docs/objectives/clustering-ranking-regression.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) == 9
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
