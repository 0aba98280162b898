"""Dense and temporal contrast: PixPro, pixel-level InfoNCE with spatial positives
(PixContrast), temporal contrast with time-offset positives. Float64 references written here
(loops over pixels and frames), value and gradient equality, gradcheck, engine tile sizes,
paper and code oracles (a transcription of PixPro's official loss), module twins, reductions,
bad input that the shared tables cannot express."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import contrastkit.functional as CF
from contrastkit.losses.dense import (
    COMET,
    PixelContrast,
    PixPro,
    TemporalContrast,
    comet,
    pixel_contrast,
    pixel_propagation,
    pixpro,
    temporal_contrast,
)
from contrastkit.objective import REGISTRY

import reference as R


def rnd(*shape, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)


#: crops (x0, y0, x1, y1) of 3 images: overlapping, one horizontally flipped, one disjoint
BOXES1 = torch.tensor([[0.0, 0.0, 0.6, 0.6], [0.1, 0.2, 0.9, 0.8], [0.0, 0.0, 0.3, 0.3]])
BOXES2 = torch.tensor([[0.2, 0.1, 0.8, 0.7], [0.8, 0.1, 0.2, 0.9], [0.6, 0.6, 1.0, 1.0]])


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
            assert a is None and b is None or (a if a is not None else b).abs().max() == 0
            continue
        torch.testing.assert_close(a, b, **tol)


def reduce_ref(rows, reduction, count=None):
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / max(count if count is not None else rows.numel(), 1)


# ------------------------------------------------------------------------------------------
# geometry reference (loops)
# ------------------------------------------------------------------------------------------
def ref_centres(box, h, w):
    x0, y0, x1, y1 = [float(v) for v in box]
    bw, bh = (x1 - x0) / w, (y1 - y0) / h
    pts = [(x0 + (c + 0.5) * bw, y0 + (r + 0.5) * bh) for r in range(h) for c in range(w)]
    return pts, math.sqrt(bw * bw + bh * bh)


def ref_mask(box_a, hw_a, box_b, hw_b, ratio):
    pa, da = ref_centres(box_a, *hw_a)
    pb, db = ref_centres(box_b, *hw_b)
    diag = max(da, db)
    return torch.tensor(
        [[math.dist(p, q) / diag < ratio for q in pb] for p in pa], dtype=torch.bool
    )


# ------------------------------------------------------------------------------------------
# PixPro: a transcription of the official regression loss and propagation module
# ------------------------------------------------------------------------------------------
def official_regression(q, k, coord_q, coord_k, pos_ratio):
    """The official ``regression_loss`` (zdaxie/PixPro), rewritten: per image, -2 times the
    masked mean cosine of normalised q and k over the close pixel pairs; mean over images."""
    n, c, h, w = q.shape
    losses = []
    for i in range(n):
        m = ref_mask(coord_q[i], (h, w), coord_k[i], (k.shape[2], k.shape[3]), pos_ratio)
        qi = q[i].reshape(c, -1)
        ki = k[i].reshape(c, -1)
        logit = qi.T @ ki
        m = m.to(logit.dtype)
        losses.append((logit * m).sum() / (m.sum() + 1e-6))
    return -2 * torch.stack(losses)  # per image (the official code averages them)


def official_featprop(feat, value, gamma, clamp):
    n, c, h, w = feat.shape
    v = F.normalize(value, dim=1).reshape(n, value.shape[1], -1)
    f = F.normalize(feat, dim=1).reshape(n, c, -1)
    att = torch.clamp(f.transpose(1, 2) @ f, min=clamp)
    if gamma < 1:
        att = att + 1e-6
    att = att**gamma
    return (v @ att.transpose(1, 2)).reshape(n, -1, h, w)


def ref_pixpro(x1, x2, k1, k2, b1, b2, v1=None, v2=None, ratio=0.7, gamma=2.0, clamp=0.0,
               propagate=True, reduction="mean"):  # fmt: skip
    if propagate:
        y1 = official_featprop(x1, x1 if v1 is None else v1, gamma, clamp)
        y2 = official_featprop(x2, x2 if v2 is None else v2, gamma, clamp)
    else:
        y1, y2 = x1, x2
    y1, y2 = F.normalize(y1, dim=1), F.normalize(y2, dim=1)
    k1, k2 = F.normalize(k1.detach(), dim=1), F.normalize(k2.detach(), dim=1)
    rows = official_regression(y1, k2, b1, b2, ratio) + official_regression(y2, k1, b2, b1, ratio)
    return reduce_ref(rows, reduction)


def pixpro_inputs(n=3, c=4, h=3, w=3, h2=None, w2=None, seed=0):
    h2, w2 = h2 or h, w2 or w
    return [
        rnd(n, c, h, w, seed=seed),
        rnd(n, c, h2, w2, seed=seed + 1),
        rnd(n, c, h, w, seed=seed + 2),
        rnd(n, c, h2, w2, seed=seed + 3),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pixpro_matches_the_official_loss(reduction):
    leaves = pixpro_inputs()
    assert_same(
        lambda *t: pixpro(*t, BOXES1, BOXES2, reduction=reduction),
        lambda *t: ref_pixpro(*t, BOXES1, BOXES2, reduction=reduction),
        leaves,
    )


def test_pixpro_options_and_value_transform():
    x1, x2, k1, k2 = pixpro_inputs(h2=2, w2=4)  # views of different sizes
    v1, v2 = rnd(3, 4, 3, 3, seed=9), rnd(3, 4, 2, 4, seed=10)
    for gamma, clamp in ((0.5, 0.0), (3.0, -0.5)):
        kw = dict(gamma=gamma, clamp=clamp)
        assert_same(
            lambda a, b, c, d, e, f, kw=kw: pixpro(
                a, b, c, d, BOXES1, BOXES2, e, f, pos_ratio=0.5, **kw
            ),
            lambda a, b, c, d, e, f, kw=kw: ref_pixpro(a, b, c, d, BOXES1, BOXES2, e, f, 0.5, **kw),
            [x1, x2, k1, k2, v1, v2],
        )
    assert_same(
        lambda *t: pixpro(*t, BOXES1, BOXES2, propagate=False),
        lambda *t: ref_pixpro(*t, BOXES1, BOXES2, propagate=False),
        [x1, x2, k1, k2],
    )


def test_pixpro_keys_get_no_gradient_and_gradcheck():
    x1, x2, k1, k2 = pixpro_inputs(n=2, c=3, h=2, w=2)
    pixpro(x1, x2, k1, k2, BOXES1[:2], BOXES2[:2]).backward()
    assert k1.grad is None and k2.grad is None
    assert torch.autograd.gradcheck(
        lambda a, b: pixpro(a, b, k1, k2, BOXES1[:2], BOXES2[:2]), (x1, x2)
    )


def test_pixpro_oracles():
    # identical views, identical features: -2 per direction (up to the official 1e-6 guard)
    x = rnd(2, 4, 3, 3, grad=False)
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.2, 0.3, 0.5, 0.6]])  # square bins
    out = pixpro(x, x, x, x, box, box, propagate=False)
    torch.testing.assert_close(out, torch.tensor(-4.0, dtype=out.dtype), atol=1e-5, rtol=0)
    # disjoint crops: no close pixel, the image's term is 0
    far = box + torch.tensor([2.0, 0.0, 2.0, 0.0])
    assert float(pixpro(x, x, x, x, box, far, reduction="sum")) == 0.0
    # BYOL identity on unit vectors: -2 cos = ||y - k||^2 - 2
    a, b = F.normalize(rnd(5, 4, grad=False), dim=-1), F.normalize(rnd(5, 4, seed=1), dim=-1)
    torch.testing.assert_close(-2 * (a * b).sum(-1), ((a - b) ** 2).sum(-1) - 2)
    # gamma -> large: the propagation keeps the pixel's own (normalised) value
    y = pixel_propagation(x, gamma=400.0)
    torch.testing.assert_close(F.normalize(y, dim=1), F.normalize(x, dim=1), atol=1e-6, rtol=0)


def test_pixpro_empty_batch_and_module_twin():
    x = torch.zeros(0, 4, 3, 3, requires_grad=True)
    box = torch.zeros(0, 4)
    out = pixpro(x, x, x, x, box, box)
    assert float(out.detach()) == 0.0
    out.backward()
    leaves = pixpro_inputs()
    torch.testing.assert_close(
        PixPro(pos_ratio=0.5)(*leaves, BOXES1, BOXES2),
        pixpro(*leaves, BOXES1, BOXES2, pos_ratio=0.5),
    )
    assert REGISTRY["pixpro"].module is PixPro


def test_pixpro_bad_inputs():
    x1, x2, k1, k2 = pixpro_inputs()
    with pytest.raises(ValueError, match="boxes1"):
        pixpro(x1, x2, k1, k2, BOXES1.clone().index_fill_(1, torch.tensor([2]), 0.0), BOXES2)
    with pytest.raises(ValueError, match="key2"):
        pixpro(x1, x2, k1, k2[:, :, :2], BOXES1, BOXES2)
    with pytest.raises(ValueError, match="value1"):
        pixpro(x1, x2, k1, k2, BOXES1, BOXES2, x1[:, :, :2])
    with pytest.raises(ValueError, match="value1"):
        pixpro(x1, x2, k1, k2, BOXES1, BOXES2, x1, propagate=False)
    with pytest.raises(ValueError, match="gamma"):
        pixpro(x1, x2, k1, k2, BOXES1, BOXES2, gamma=-1.0)
    with pytest.raises(ValueError, match="clamp"):
        pixpro(x1, x2, k1, k2, BOXES1, BOXES2, gamma=0.5, clamp=-0.5)
    with pytest.raises(ValueError, match="pos_ratio"):
        pixpro(x1, x2, k1, k2, BOXES1, BOXES2, pos_ratio=float("nan"))


# ------------------------------------------------------------------------------------------
# PixelContrast: dense reference over every (query pixel, key pixel) pair
# ------------------------------------------------------------------------------------------
def ref_pixel_contrast(q, k, qb, kb, temperature=0.3, ratio=0.7, negatives="batch",
                       multi_positive="sum", reduction="mean"):  # fmt: skip
    n = q.shape[0]
    hq, hk = tuple(q.shape[2:]), tuple(k.shape[2:])
    A = F.normalize(q.permute(0, 2, 3, 1).reshape(-1, q.shape[1]), dim=1)
    B = F.normalize(k.permute(0, 2, 3, 1).reshape(-1, k.shape[1]), dim=1)
    u = A @ B.T / temperature
    pq, pk = hq[0] * hq[1], hk[0] * hk[1]
    per_image, carried = [], 0
    for img in range(n):
        m = ref_mask(qb[img], hq, kb[img], hk, ratio)
        terms = []
        for a in range(pq):
            i = img * pq + a
            pos = [img * pk + b for b in range(pk) if m[a, b]]
            if not pos:
                continue
            cand = range(img * pk, (img + 1) * pk) if negatives == "view" else range(B.shape[0])
            den = torch.logsumexp(torch.stack([u[i, j] for j in cand]), 0)
            if multi_positive == "sum":
                num = torch.logsumexp(torch.stack([u[i, j] for j in pos]), 0)
            else:
                num = torch.stack([u[i, j] for j in pos]).mean()
            terms.append(den - num)
        if terms:
            carried += 1
            per_image.append(torch.stack(terms).mean())
        else:
            per_image.append(u.sum() * 0)
    return reduce_ref(torch.stack(per_image), reduction, carried)


@pytest.mark.parametrize("negatives", ["batch", "view"])
@pytest.mark.parametrize("multi_positive", ["sum", "mean"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pixel_contrast_matches_dense_reference(negatives, multi_positive, reduction):
    q, k = rnd(3, 4, 3, 3), rnd(3, 4, 2, 3, seed=1)
    kw = dict(negatives=negatives, multi_positive=multi_positive, reduction=reduction)
    assert_same(
        lambda a, b: pixel_contrast(a, b, BOXES1, BOXES2, **kw),
        lambda a, b: ref_pixel_contrast(a, b, BOXES1, BOXES2, **kw),
        [q, k],
    )


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_pixel_contrast_tiles(chunk_size):
    q, k = rnd(3, 4, 2, 2), rnd(3, 4, 2, 3, seed=1)
    for kw in (dict(), dict(negatives="view", multi_positive="mean")):
        assert_same(
            lambda a, b, kw=kw: pixel_contrast(
                a, b, BOXES1, BOXES2, chunk_size=chunk_size, backend="tiled", **kw
            ),
            lambda a, b, kw=kw: ref_pixel_contrast(a, b, BOXES1, BOXES2, **kw),
            [q, k],
        )


def test_pixel_contrast_gradcheck_and_learnable_temperature():
    q, k = rnd(2, 3, 2, 2), rnd(2, 3, 2, 2, seed=1)
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, t: pixel_contrast(a, b, BOXES1[:2], BOXES2[:2], temperature=t), (q, k, t)
    )


def test_pixel_contrast_oracles():
    q, k = rnd(2, 5, 3, 3, grad=False), rnd(2, 5, 3, 3, seed=1, grad=False)
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1, 0.1, 0.7, 0.4]])
    # one positive per anchor (same crop, small threshold): InfoNCE over every key pixel,
    # whatever the multi-positive form
    rows = lambda x: x.permute(0, 2, 3, 1).reshape(-1, 5)  # noqa: E731
    want = CF.info_nce(rows(q), rows(k), temperature=0.3)
    for form in ("sum", "mean"):
        got = pixel_contrast(q, k, box, box, pos_ratio=0.1, multi_positive=form)
        torch.testing.assert_close(got, want)
    # a horizontally flipped key crop with its columns flipped: the same pixels, same loss
    flipped = box[:, [2, 1, 0, 3]]
    torch.testing.assert_close(
        pixel_contrast(q, k.flip(3), BOXES1[:2], flipped),
        pixel_contrast(q, k, BOXES1[:2], box),
    )
    # images in another order: the same loss; translating every crop: the same loss
    p = torch.tensor([1, 0])
    base = pixel_contrast(q, k, BOXES1[:2], BOXES2[:2])
    torch.testing.assert_close(pixel_contrast(q[p], k[p], BOXES1[:2][p], BOXES2[:2][p]), base)
    shift = torch.tensor([3.0, -1.0, 3.0, -1.0])
    torch.testing.assert_close(pixel_contrast(q, k, BOXES1[:2] + shift, BOXES2[:2] + shift), base)
    # no overlap anywhere: nothing to contrast, 0 with a zero gradient
    qq = q.clone().requires_grad_()
    out = pixel_contrast(qq, k, box, box + 5.0)
    out.backward()
    assert float(out.detach()) == 0.0 and float(qq.grad.abs().sum()) == 0.0


def test_pixel_contrast_module_twin_and_bad_inputs():
    q, k = rnd(3, 4, 3, 3, grad=False), rnd(3, 4, 3, 3, seed=1, grad=False)
    torch.testing.assert_close(
        PixelContrast(temperature=0.2, negatives="view")(q, k, BOXES1, BOXES2),
        pixel_contrast(q, k, BOXES1, BOXES2, temperature=0.2, negatives="view"),
    )
    with pytest.raises(ValueError, match="negatives"):
        pixel_contrast(q, k, BOXES1, BOXES2, negatives="queue")
    with pytest.raises(ValueError, match="multi_positive"):
        pixel_contrast(q, k, BOXES1, BOXES2, multi_positive="max")
    with pytest.raises(ValueError, match="key_boxes"):
        pixel_contrast(q, k, BOXES1, BOXES2[:2])
    with pytest.raises(ValueError, match="key"):
        pixel_contrast(q, k[:, :3], BOXES1, BOXES2)
    with pytest.raises(ValueError, match="temperature"):
        pixel_contrast(q, k, BOXES1, BOXES2, temperature=torch.full((3,), 0.1))


# ------------------------------------------------------------------------------------------
# TemporalContrast: dense reference over every pair of frames
# ------------------------------------------------------------------------------------------
def ref_temporal(z1, z2, temperature=0.1, delta=0, gap=None, other_videos=True,
                 multi_positive="sum", reduction="mean"):  # fmt: skip
    n, t, _ = z1.shape
    gap = delta + 1 if gap is None else gap
    Z = F.normalize(torch.cat([z1.reshape(n * t, -1), z2.reshape(n * t, -1)]), dim=1)
    u = Z @ Z.T / temperature
    meta = [(a, v, s) for a in range(2) for v in range(n) for s in range(t)]
    rows = []
    for i, (_, v, s) in enumerate(meta):
        pos, den = [], []
        for j, (_, v2, s2) in enumerate(meta):
            if j == i:
                continue
            if v2 == v:
                if abs(s - s2) <= delta:
                    pos.append(u[i, j])
                    den.append(u[i, j])
                elif abs(s - s2) >= gap:
                    den.append(u[i, j])
            elif other_videos:
                den.append(u[i, j])
        pos_t = torch.stack(pos)
        num = torch.logsumexp(pos_t, 0) if multi_positive == "sum" else pos_t.mean()
        rows.append(torch.logsumexp(torch.stack(den), 0) - num)
    rows = torch.stack(rows)
    return reduce_ref(rows.reshape(2, n, t), reduction, rows.numel())


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(delta=1),
        dict(delta=1, gap=3, multi_positive="mean"),
        dict(delta=0, gap=math.inf),
        dict(other_videos=False, delta=1),
        dict(gap=2, reduction="none"),
        dict(delta=2, reduction="sum", temperature=0.5),
    ],
)
def test_temporal_contrast_matches_dense_reference(kw):
    z1, z2 = rnd(3, 5, 4), rnd(3, 5, 4, seed=1)
    ours = {
        "positive_window": kw.get("delta", 0),
        "negative_gap": kw.get("gap"),
        **{k: v for k, v in kw.items() if k not in ("delta", "gap")},
    }
    assert_same(
        lambda a, b: temporal_contrast(a, b, **ours),
        lambda a, b: ref_temporal(a, b, **kw),
        [z1, z2],
    )


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_temporal_contrast_tiles(chunk_size):
    z1, z2 = rnd(3, 4, 4), rnd(3, 4, 4, seed=1)
    kw = dict(positive_window=1, negative_gap=3)
    assert_same(
        lambda a, b: temporal_contrast(a, b, chunk_size=chunk_size, backend="tiled", **kw),
        lambda a, b: ref_temporal(a, b, delta=1, gap=3),
        [z1, z2],
    )


def test_temporal_contrast_gradcheck():
    z1, z2 = rnd(2, 3, 3), rnd(2, 3, 3, seed=1)
    assert torch.autograd.gradcheck(
        lambda a, b: temporal_contrast(a, b, positive_window=1, negative_gap=2), (z1, z2)
    )


def test_temporal_contrast_oracles():
    z1, z2 = rnd(5, 1, 6, grad=False), rnd(5, 1, 6, seed=1, grad=False)
    # one frame per video, delta = 0: NT-Xent
    torch.testing.assert_close(
        temporal_contrast(z1, z2, temperature=0.2),
        CF.nt_xent(z1[:, 0], z2[:, 0], temperature=0.2),
    )
    torch.testing.assert_close(
        temporal_contrast(z1, z2, temperature=0.2),
        R.nt_xent(z1[:, 0], z2[:, 0], temperature=0.2).mean(),
    )
    # negative_gap = inf: same-video frames that are not positives leave the denominator,
    # as if each frame's own video had only its positives
    a, b = rnd(3, 4, 6, grad=False), rnd(3, 4, 6, seed=1, grad=False)
    full = temporal_contrast(a, b, negative_gap=float("inf"), reduction="none")
    torch.testing.assert_close(full, ref_temporal(a, b, gap=math.inf, reduction="none"))
    # other_videos=False with one video: the clip alone
    torch.testing.assert_close(
        temporal_contrast(a[:1], b[:1], other_videos=False),
        temporal_contrast(a[:1], b[:1]),
    )
    # the loss only sees relative time: reversing time gives the same loss
    torch.testing.assert_close(
        temporal_contrast(a, b, positive_window=1, negative_gap=3),
        temporal_contrast(a.flip(1), b.flip(1), positive_window=1, negative_gap=3),
    )


def test_temporal_contrast_module_twin_empty_and_bad_inputs():
    z1, z2 = rnd(3, 4, 6, grad=False), rnd(3, 4, 6, seed=1, grad=False)
    torch.testing.assert_close(
        TemporalContrast(positive_window=1)(z1, z2), temporal_contrast(z1, z2, positive_window=1)
    )
    e = torch.zeros(0, 4, 6, requires_grad=True)
    out = temporal_contrast(e, e)
    assert float(out.detach()) == 0.0
    with pytest.raises(ValueError, match="negative_gap"):
        temporal_contrast(z1, z2, positive_window=2, negative_gap=2)
    with pytest.raises(ValueError, match="positive_window"):
        temporal_contrast(z1, z2, positive_window=-1)
    with pytest.raises(ValueError, match="z2"):
        temporal_contrast(z1, z2[:, :3])
    with pytest.raises(ValueError, match="multi_positive"):
        temporal_contrast(z1, z2, multi_positive="max")


# ------------------------------------------------------------------------------------------
# COMET: the official level losses rewritten with loops (DL4mHealth/COMET models/losses.py)
# ------------------------------------------------------------------------------------------
def ce_excluding_self(sim, anchor, positive):
    """-log softmax over every column but the anchor itself, at the positive."""
    others = [j for j in range(sim.shape[1]) if j != anchor]
    row = torch.stack([sim[anchor, j] for j in others])
    return torch.logsumexp(row, 0) - sim[anchor, positive]


def ref_observation(z1, z2):
    b, t, _ = z1.shape
    terms = []
    for s in range(b):
        z = torch.cat([z1[s], z2[s]])
        sim = z @ z.T
        terms += [ce_excluding_self(sim, a, (a + t) % (2 * t)) for a in range(2 * t)]
    return torch.stack(terms).mean()


def ref_sample(z1, z2):
    b, t, _ = z1.shape
    terms = []
    for s in range(t):
        z = torch.cat([z1[:, s], z2[:, s]])
        sim = z @ z.T
        terms += [ce_excluding_self(sim, a, (a + b) % (2 * b)) for a in range(2 * b)]
    return torch.stack(terms).mean()


def ref_hierarchy(fn, z1, z2):
    total, depth = 0.0, 0
    while z1.shape[1] > 1:
        total = total + fn(z1, z2)
        depth += 1
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    return total / depth


def ref_id(z1, z2, ids, temperature=0.1):
    b = z1.shape[0]
    v1 = F.normalize(z1, dim=1).reshape(b, -1)
    v2 = F.normalize(z2, dim=1).reshape(b, -1)
    sim = torch.exp(F.normalize(v1, dim=1) @ F.normalize(v2, dim=1).T / temperature)
    up = [-torch.log(sim[i, j] / sim[i].sum()) for i in range(b) for j in range(b)
          if i < j and ids[i] == ids[j]]  # fmt: skip
    low = [-torch.log(sim[i, j] / sim[:, j].sum()) for i in range(b) for j in range(b)
           if i > j and ids[i] == ids[j]]  # fmt: skip
    parts = [torch.stack(x).mean() for x in (up, low) if x]
    return sum(parts) / len(parts) if parts else z1.sum() * 0


def ref_comet(z1, z2, pid, tid, weights=(0.25, 0.25, 0.25, 0.25), hierarchical=True, t=0.1):
    level = (lambda f: ref_hierarchy(f, z1, z2)) if hierarchical else (lambda f: f(z1, z2))
    return (
        weights[0] * ref_id(z1, z2, pid, t)
        + weights[1] * ref_id(z1, z2, tid, t)
        + weights[2] * level(ref_sample)
        + weights[3] * level(ref_observation)
    )


PIDS = torch.tensor([0, 0, 0, 1, 1])
TIDS = torch.tensor([0, 0, 1, 2, 2])


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(weights=(1.0, 0.0, 0.0, 0.0)),
        dict(weights=(0.0, 1.0, 0.0, 0.0), temperature=0.5),
        dict(weights=(0.0, 0.0, 1.0, 0.0)),
        dict(weights=(0.0, 0.0, 0.0, 1.0)),
        dict(weights=(0.1, 0.2, 0.3, 0.4), hierarchical=False),
    ],
)
def test_comet_matches_the_official_losses(kw):
    z1, z2 = rnd(5, 5, 3), rnd(5, 5, 3, seed=1)
    ref_kw = dict(
        weights=kw.get("weights", (0.25,) * 4),
        hierarchical=kw.get("hierarchical", True),
        t=kw.get("temperature", 0.1),
    )
    assert_same(
        lambda a, b: comet(a, b, PIDS, TIDS, **kw),
        lambda a, b: ref_comet(a, b, PIDS, TIDS, **ref_kw),
        [z1, z2],
    )


def test_comet_shares_gradcheck_and_twin():
    z1, z2 = rnd(5, 4, 3), rnd(5, 4, 3, seed=1)
    shares = comet(z1, z2, PIDS, TIDS, reduction="none")
    assert shares.shape == (5,)
    torch.testing.assert_close(shares.sum(), comet(z1, z2, PIDS, TIDS))
    torch.testing.assert_close(
        COMET(weights=(0.5, 0.0, 0.5, 0.0))(z1, z2, PIDS),
        comet(z1, z2, PIDS, weights=(0.5, 0, 0.5, 0)),
    )


def test_comet_gradcheck():
    small1, small2 = rnd(3, 2, 2), rnd(3, 2, 2, seed=1)
    assert torch.autograd.gradcheck(
        lambda a, b: comet(a, b, PIDS[:3], TIDS[:3], hierarchical=False), (small1, small2)
    )


def test_comet_oracles_and_guards():
    z1, z2 = rnd(4, 1, 3, grad=False), rnd(4, 1, 3, seed=1, grad=False)
    # T = 1: the observation level is 0 (one timestamp per view: nothing to contrast)
    assert float(comet(z1, z2, weights=(0, 0, 0, 1.0))) == 0.0
    # T = 1 at the sample level: the plain TS2Vec instance loss (official: 0 / 0)
    torch.testing.assert_close(comet(z1, z2, weights=(0, 0, 1.0, 0)), ref_sample(z1, z2))
    # distinct ids: no positive pair, the level is 0 (official: a division by zero)
    ids = torch.arange(4)
    assert float(comet(z1, z2, ids, ids, weights=(1.0, 1.0, 0, 0))) == 0.0
    # the sample level at one timestamp is NT-Xent on raw dot products (temperature 1)
    torch.testing.assert_close(
        comet(z1, z2, weights=(0, 0, 1.0, 0), hierarchical=False),
        CF.nt_xent(z1[:, 0], z2[:, 0], temperature=1.0, normalize=False),
    )
    e = torch.zeros(0, 3, 2, requires_grad=True)
    none = torch.zeros(0, dtype=torch.long)
    assert float(comet(e, e, none, none).detach()) == 0.0


def test_comet_bad_inputs():
    z1, z2 = rnd(5, 4, 3, grad=False), rnd(5, 4, 3, seed=1, grad=False)
    with pytest.raises(ValueError, match="patient_ids"):
        comet(z1, z2)
    with pytest.raises(ValueError, match="weights"):
        comet(z1, z2, PIDS, TIDS, weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="weights"):
        comet(z1, z2, PIDS, TIDS, weights=(1.0, -1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="reduction"):
        comet(z1, z2, PIDS, TIDS, reduction="sum")
    with pytest.raises(ValueError, match="trial_ids"):
        comet(z1, z2, PIDS, TIDS.float())


@pytest.mark.parametrize("block", [1, 20])
def test_pixel_contrast_image_blocks(monkeypatch, block):
    """The per-image passes split the batch into blocks of whole images (one image per engine
    call at block 1, two at block 20 with 9-pixel maps): same values and gradients."""
    import sys

    monkeypatch.setattr(sys.modules[pixel_contrast.__module__], "BLOCK_PIXELS", block)
    q, k = rnd(3, 4, 3, 3), rnd(3, 4, 2, 3, seed=1)
    for kw in (dict(), dict(negatives="view", multi_positive="mean", reduction="none")):
        assert_same(
            lambda a, b, kw=kw: pixel_contrast(a, b, BOXES1, BOXES2, **kw),
            lambda a, b, kw=kw: ref_pixel_contrast(a, b, BOXES1, BOXES2, **kw),
            [q, k],
        )


def test_temporal_contrast_one_frame_equals_lightly_ntxent():
    """Peer parity: one frame per video, delta = 0 is lightly's NTXentLoss (SimCLR)."""
    import peers

    lightly = peers.lightly_losses()
    if lightly is None:
        pytest.skip("lightly unavailable")
    z1, z2 = rnd(6, 1, 8, grad=False), rnd(6, 1, 8, seed=1, grad=False)
    want = lightly.NTXentLoss(temperature=0.2)(z1[:, 0], z2[:, 0])
    torch.testing.assert_close(temporal_contrast(z1, z2, temperature=0.2), want)
