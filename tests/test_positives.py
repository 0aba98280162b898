"""contrastkit.positives: Feature Transformation, HaLP, Hallucinator, Metrix, SupReMix and M3CoL
against the oracles of methods card part B, dense references and the losses they feed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses.infonce import info_nce_with_negatives
from contrastkit.losses.infonce.info_nce import info_nce
from contrastkit.positives import (
    FeatureTransformation,
    Hallucinator,
    HaLP,
    Metrix,
    MultimodalMixup,
    SupReMixPairs,
    extrapolate_positives,
    halp_t_max,
    slerp,
    spherical_kmeans,
    supremix_weight,
)

D64 = torch.float64
ENGINES = [
    {"backend": "dense"},
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled"},
]


def rand(*shape, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D64).requires_grad_(grad)


def unit(*shape, seed=0):
    return F.normalize(rand(*shape, seed=seed), dim=-1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ Feature Transformation


def test_feature_transformation_oracles():
    q, k, Q = rand(6, 5, seed=1, grad=True), rand(6, 5, seed=2), rand(11, 5, seed=3)
    ft = FeatureTransformation()
    q2, k2, Q2 = ft(q, k, Q, generator=gen(0))
    lam = ft.last_lambda["pos"]
    assert lam.dim() == 0 and 1.0 < float(lam) < 2.0  # one scalar per step, 1 + Beta(2, 2)
    torch.testing.assert_close(q2 - k2, (2 * lam - 1) * (q - k))
    torch.testing.assert_close(q2 + k2, q + k)
    ln, perm = ft.last_lambda["neg"], ft.last_lambda["perm"]
    assert 0.0 < float(ln) < 1.0
    torch.testing.assert_close(Q2, ln * Q + (1 - ln) * Q[perm])  # convex pairs of queue rows
    assert sorted(perm.tolist()) == list(range(11))
    # the positive gets harder: q'.k' < q.k for unit inputs
    qn, kn = F.normalize(q.detach(), dim=-1), F.normalize(k, dim=-1)
    qq, kk, _ = ft(qn, kn, Q, generator=gen(1))
    assert bool(((qq * kk).sum(-1) < (qn * kn).sum(-1)).all())
    # gradient reaches q through both q' and k'
    (k2.sum() * 0 + (k2 * torch.arange(5.0, dtype=D64)).sum()).backward()
    torch.testing.assert_close(q.grad, (1 - lam).expand(6, 5) * torch.arange(5.0, dtype=D64))
    # determinism with a seeded generator; the inputs are untouched
    a = ft(q.detach(), k, Q, generator=gen(7))
    b = ft(q.detach(), k, Q, generator=gen(7))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_feature_transformation_variants_and_logits():
    q, k, Q = unit(4, 6, seed=4), unit(4, 6, seed=5), unit(9, 6, seed=6)
    per_elem = FeatureTransformation(dim_mask="both", renormalize="both")
    q2, k2, Q2 = per_elem(q, k, Q, generator=gen(2))
    assert per_elem.last_lambda["pos"].shape == q.shape
    assert per_elem.last_lambda["neg"].shape == Q.shape
    torch.testing.assert_close(q2.norm(dim=-1), torch.ones(4, dtype=D64))
    torch.testing.assert_close(Q2.norm(dim=-1), torch.ones(9, dtype=D64))
    only_neg = FeatureTransformation(target="neg")
    q3, k3, _ = only_neg(q, k, Q, generator=gen(3))
    assert torch.equal(q3, q) and torch.equal(k3, k)
    interp = FeatureTransformation(extrapolate=False, target="pos")
    interp(q, k, Q, generator=gen(4))
    assert 0.0 < float(interp.last_lambda["pos"]) < 1.0
    # with lam_p = lam_n = 1 the logits are plain MoCo's [q.k+, q Q^T] / tau
    q4, k4 = extrapolate_positives(q, k, 1.0)
    got = info_nce_with_negatives(
        q4, k4, queue=Q, in_batch_negatives=False, temperature=0.2, normalize=False
    )
    logits = torch.cat([(q * k).sum(-1, keepdim=True), q @ Q.T], 1) / 0.2
    want = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="dim_mask"):
        FeatureTransformation(dim_mask="rows")
    with pytest.raises(ValueError, match="feature dimension"):
        FeatureTransformation()(q, k, unit(9, 5))


# ------------------------------------------------------------------ HaLP


def test_halp_closed_form_oracle():
    g = gen(8)
    checked = 0
    for _ in range(200):
        k, p1, p2 = F.normalize(torch.randn(3, 16, generator=g, dtype=D64), dim=-1)
        pc, pt = (p1, p2) if float(k @ p1) >= float(k @ p2) else (p2, p1)
        t_max = halp_t_max(k, pc, pt)
        assert torch.allclose(slerp(k, pt, torch.zeros((), dtype=D64)), k)  # t = 0 gives k
        if not 0 < float(t_max) < 1:
            continue
        checked += 1
        at = slerp(k, pt, t_max)
        assert abs(float(at @ pc - at @ pt)) < 1e-6  # on the bisector at t_max
        for t in torch.linspace(0, float(t_max), 6, dtype=D64):
            gt = slerp(k, pt, t)
            assert float(gt @ pc) >= float(gt @ pt) - 1e-6  # still closer to the own prototype
            assert math.isclose(float(gt.norm()), 1.0, rel_tol=1e-12)
    assert checked > 50


def test_halp_generate_and_loss():
    centres = torch.eye(4, dtype=D64)
    bank = torch.cat(
        [F.normalize(centres[i] + 0.1 * rand(30, 4, seed=i), dim=-1) for i in range(4)]
    )
    halp = HaLP(n_prototypes=4, n_positives=7, lambda_pos=0.8, temperature=0.1, weight=2.0)
    P = halp.fit_prototypes(bank, generator=gen(0))
    torch.testing.assert_close(P.norm(dim=-1), torch.ones(4, dtype=D64))
    assert (P @ centres.T).max(1).values.min() > 0.95  # one prototype per cluster
    key = F.normalize(centres[[0, 1, 2]] + 0.2 * rand(3, 4, seed=9), dim=-1)
    pts, good = halp.generate(key, generator=gen(1))
    assert pts.shape == (3, 7, 4) and not pts.requires_grad
    torch.testing.assert_close(pts.norm(dim=-1), torch.ones(3, 7, dtype=D64))
    own = (key @ P.T).argmax(1)
    assert torch.equal(good, (pts @ P.T).argmax(-1) == own[:, None])
    assert bool(good.any())
    # targets: never the closest prototype (skip = 1)
    _, cand = halp.targets(key)
    assert not bool((cand == own[:, None]).any())
    q = rand(3, 4, seed=10, grad=True)
    loss = halp.loss(q, pts, good)
    qn = F.normalize(q, dim=-1)
    want = 2.0 * -(torch.einsum("nd,npd->np", qn, pts) / 0.1 * good).sum() / good.sum()
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert q.grad is not None
    # determinism
    a, _ = halp.generate(key, generator=gen(5))
    b, _ = halp.generate(key, generator=gen(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="fit_prototypes"):
        HaLP().generate(key)
    with pytest.raises(ValueError, match="n_clusters"):
        spherical_kmeans(bank[:3], 4)


# ------------------------------------------------------------------ Hallucinator


def test_hallucinator_oracles():
    torch.manual_seed(0)
    hal = Hallucinator(dim=6, hidden=12).double()
    q_raw, k = rand(5, 6, seed=11, grad=True), unit(5, 6, seed=12)
    queries, keys = hal(q_raw, k, generator=gen(0))
    assert queries.shape == (10, 6) and keys.shape == (10, 6)
    torch.testing.assert_close(queries[:5], F.normalize(q_raw, dim=-1))
    torch.testing.assert_close(keys, torch.cat([k, k]))
    assert 0 <= hal.last_ratio <= 0.1
    torch.testing.assert_close(hal.extrapolate(q_raw, k, 0.0), q_raw)  # r = 0: e = q_raw
    r = hal.last_ratio
    g = hal.mlp(torch.cat([q_raw, (1 + r) * q_raw - r * k], 1))
    torch.testing.assert_close(queries[5:], F.normalize(g, dim=-1))
    info_nce(queries, keys, temperature=0.2).backward()  # trained by the same loss
    assert hal.mlp[0].weight.grad is not None and q_raw.grad is not None
    with pytest.raises(ValueError, match="feature dimension"):
        hal(rand(5, 4), rand(5, 4))


# ------------------------------------------------------------------ Metrix


def _clean_parts(x, a, p):
    d = (F.normalize(x[a], dim=-1) - F.normalize(x[p], dim=-1)).norm(dim=-1)
    return d


def test_metrix_endpoint_oracles():
    x = rand(12, 5, seed=13, grad=True)
    labels = torch.arange(12) % 3  # balanced: 4 per class
    mx = Metrix(weight=1.0)
    a, p, n = mx.pairs(x, labels, 0)
    assert bool((labels[a] == labels[p]).all() and (labels[a] != labels[n]).all())
    assert a.numel() == 12 * 3 * 8  # every positive pair with every negative of its anchor
    # lam = 1, type 0: the clean positive term on (a, p)
    d = _clean_parts(x, a, p)
    torch.testing.assert_close(mx(x, labels, lam=1.0, mix_type=0), F.relu(d).mean())
    # lam = 0, type 0: the clean negative term on (a, n)
    d = _clean_parts(x, a, n)
    torch.testing.assert_close(mx(x, labels, lam=0.0, mix_type=0), F.relu(0.5 - d).mean())
    # type 1 mixes the anchor itself with its negatives
    a1, f1, n1 = mx.pairs(x, labels, 1)
    assert torch.equal(a1, f1) and a1.numel() == 12 * 8
    lam = 0.3
    mixed = lam * x[a1] + (1 - lam) * x[n1]
    dm = (F.normalize(x[a1], dim=-1) - F.normalize(mixed, dim=-1)).norm(dim=-1)
    want = lam * F.relu(dm).mean() + (1 - lam) * F.relu(0.5 - dm).mean()
    torch.testing.assert_close(mx(x, labels, lam=lam, mix_type=1), want)
    # random type and lam ~ Beta(2, 2) reproducible with a seeded generator
    v1, v2 = mx(x, labels, generator=gen(3)), mx(x, labels, generator=gen(3))
    assert torch.equal(v1, v2)
    # hardest_only keeps one negative per anchor: the closest one
    hard = Metrix(hardest_only=True)
    ah, _, nh = hard.pairs(x, labels, 1)
    assert ah.tolist() == list(range(12))
    xn = F.normalize(x.detach(), dim=-1)
    dist = torch.cdist(xn, xn).masked_fill(labels[:, None] == labels[None, :], float("inf"))
    assert torch.equal(nh, dist.argmin(1))
    with pytest.raises(ValueError, match="lam"):
        mx(x, labels, lam=1.5)
    with pytest.raises(ValueError, match="labels"):
        mx(x, labels[:5])


def test_metrix_matches_pml_contrastive_loss_parts():
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.losses import ContrastiveLoss
    from pytorch_metric_learning.reducers import MeanReducer

    x = rand(12, 5, seed=14)
    labels = torch.arange(12) % 3
    mx = Metrix(weight=1.0)
    a, p, n = mx.pairs(x, labels, 0)
    pml = ContrastiveLoss(pos_margin=0.0, neg_margin=0.5, reducer=MeanReducer())
    empty = torch.empty(0, dtype=torch.long)
    pos_part = pml(x, labels, indices_tuple=(a, p, empty, empty))
    neg_part = pml(x, labels, indices_tuple=(empty, empty, a, n))
    torch.testing.assert_close(mx(x, labels, lam=1.0, mix_type=0), pos_part)
    torch.testing.assert_close(mx(x, labels, lam=0.0, mix_type=0), neg_part)


# ------------------------------------------------------------------ SupReMix


def test_supremix_pairs_oracles():
    feats = rand(6, 2, 4, seed=15)
    t = torch.tensor([1.0, 2.0, 2.0, 4.0, 7.5, 3.0], dtype=D64)
    pairs = SupReMixPairs(window=3.0)
    out = pairs(feats, t, generator=gen(0))
    f, tt = out.features, out.labels
    assert f.shape == (12, 4) and torch.equal(tt, t.repeat(2))
    # anchor-inclusive (negatives): every (i, k) with different labels
    n_diff = int((tt[:, None] != tt[None, :]).sum())
    assert out.neg_anchor.numel() == n_diff
    i, k_, a = out.neg_anchor, out.neg_second, out.neg_alpha
    assert bool(((a > 0) & (a < 1)).all())
    torch.testing.assert_close(out.neg_mix, a[:, None] * f[i] + (1 - a[:, None]) * f[k_])
    lo, hi = torch.minimum(tt[i], tt[k_]), torch.maximum(tt[i], tt[k_])
    assert bool(((out.neg_label > lo) & (out.neg_label < hi)).all())  # strictly between
    # anchor-exclusive (positives): alpha t_j + (1 - alpha) t_k = t_i exactly, inside the window
    pa, pj, pk, al = out.pos_anchor, out.pos_first, out.pos_second, out.pos_alpha
    assert pa.numel() > 0
    torch.testing.assert_close(al * tt[pj] + (1 - al) * tt[pk], tt[pa], rtol=0, atol=1e-12)
    assert bool(((tt[pj] < tt[pa]) & (tt[pa] < tt[pk])).all())
    assert bool(((tt[pa] - tt[pj] < 3) & (tt[pk] - tt[pa] < 3)).all())
    want = sum(
        int(((tt < tt[r]) & (tt[r] - tt < 3)).sum()) * int(((tt > tt[r]) & (tt - tt[r] < 3)).sum())
        for r in range(12)
    )
    assert pa.numel() == want
    torch.testing.assert_close(out.pos_mix, al[:, None] * f[pj] + (1 - al[:, None]) * f[pk])
    # L1_inv weights >= 1, equal to 1 iff the labels are equal
    w = supremix_weight(tt[:, None] - tt[None, :])
    assert bool((w >= 1).all()) and torch.equal(w == 1, tt[:, None] == tt[None, :])
    assert bool((out.neg_weights() > 1).all())
    torch.testing.assert_close(supremix_weight(torch.tensor(2.0), "L2"), torch.tensor(0.2))
    # mixtures carry no gradient
    g = SupReMixPairs()(rand(4, 2, 3, seed=16, grad=True), torch.arange(4.0, dtype=D64))
    assert not g.neg_mix.requires_grad and not g.pos_mix.requires_grad
    with pytest.raises(ValueError, match="kind"):
        supremix_weight(torch.ones(2), "L3")
    with pytest.raises(ValueError, match="labels"):
        pairs(feats, t[:4])


def test_supremix_pairs_feed_the_supremix_loss():
    from contrastkit.losses.structured.supremix import supremix

    feats = F.normalize(rand(5, 2, 4, seed=24), dim=-1).requires_grad_(True)
    t = torch.tensor([1.0, 2.0, 2.0, 3.5, 3.0], dtype=D64)
    batch = SupReMixPairs(window=2.0)(feats, t, generator=gen(6))
    mixtures, mask, mlabels = batch.padded()
    assert int((mask == 0).sum()) == batch.neg_anchor.numel()
    assert int((mask == 1).sum()) == batch.pos_anchor.numel()
    got = supremix(feats, t, mixtures, mask, mlabels, temperature=0.3, reference_shift=False)
    # dense reference: real candidates k != a and the anchor's own mixtures, weights |dy| + 1
    Z, y = F.normalize(torch.cat(feats.unbind(1)), dim=-1), t.repeat(2)
    rows = []
    for a in range(10):
        cand = [(Z[a] @ Z[k] / 0.3, y[k], bool(y[k] == y[a])) for k in range(10) if k != a]
        for m in range(batch.neg_anchor.numel()):
            if int(batch.neg_anchor[m]) == a:
                cand.append((Z[a] @ batch.neg_mix[m] / 0.3, batch.neg_label[m], False))
        for m in range(batch.pos_anchor.numel()):
            if int(batch.pos_anchor[m]) == a:
                cand.append((Z[a] @ batch.pos_mix[m] / 0.3, y[a], True))
        x = torch.stack([c[0] for c in cand])
        w = torch.stack([(c[1] - y[a]).abs() + 1 for c in cand])
        pos = torch.tensor([c[2] for c in cand])
        if pos.any():
            rows.append(-(x[pos] - torch.logsumexp(x + torch.log(w), 0)).mean())
    want = torch.stack(rows).mean()
    torch.testing.assert_close(got, want)
    gw = torch.autograd.grad(want, feats)[0]
    torch.testing.assert_close(torch.autograd.grad(got, feats)[0], gw)


# ------------------------------------------------------------------ M3CoL mixing


def test_multimodal_mixup_mix_oracles():
    # the loss of the mixed batch (MixupContrastive) is tested in test_objectives_infonce.py
    x = rand(8, 5, seed=19)
    mm = MultimodalMixup()
    xm, perm, mix = mm.mix(x, generator=gen(1))
    sel = mix < 1
    torch.testing.assert_close(xm[~sel], x[~sel])
    torch.testing.assert_close(xm, mix[:, None] * x + (1 - mix[:, None]) * x[perm])
    assert bool((MultimodalMixup(prob=0.0).mix(x, generator=gen(0))[2] == 1).all())
    # Beta(0.15, 0.15) concentrates near 0 and 1
    b = MultimodalMixup(prob=1.0).mix(rand(4000, 1, seed=21), generator=gen(2))[2]
    assert float(((b < 0.1) | (b > 0.9)).double().mean()) > 0.6
    a1, a2 = mm.mix(x, generator=gen(5)), mm.mix(x, generator=gen(5))
    assert all(torch.equal(u, v) for u, v in zip(a1, a2))
    with pytest.raises(ValueError, match="prob"):
        MultimodalMixup(prob=2.0)


def test_supremix_pairs_deterministic_with_seed():
    feats, t = rand(4, 2, 3, seed=25), torch.tensor([1.0, 2.0, 3.0, 2.5], dtype=D64)
    a = SupReMixPairs()(feats, t, generator=gen(9))
    b = SupReMixPairs()(feats, t, generator=gen(9))
    c = SupReMixPairs()(feats, t, generator=gen(10))
    assert torch.equal(a.neg_mix, b.neg_mix) and not torch.equal(a.neg_alpha, c.neg_alpha)
    assert float(a.neg_alpha.mean()) < 0.5  # Beta(2, 8): mean 0.2
