"""SemiHardMiner (FaceNet semi-hard negatives): a plain triple-loop reference, parity with
pytorch-metric-learning's TripletMarginMiner(type_of_triplets="semihard") and with
sentence-transformers' BatchSemiHardTripletLoss (TF-Addons' rule), and the oracles."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from contrastkit.negatives import SemiHardMiner

import peers

D64 = torch.float64


def _batch(n=12, d=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=D64)
    labels = torch.randint(0, classes, (n,), generator=g)
    return x, labels


def ref_band(x, labels, margin, squared=False, normalize=True):
    """Triple loop: every (a, p, n) with D_ap < D_an <= D_ap + margin."""
    if normalize:
        x = F.normalize(x, dim=-1)
    out = []
    n = x.shape[0]
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            dap = float(((x[a] - x[p]) ** 2).sum())
            for k in range(n):
                if labels[k] == labels[a]:
                    continue
                dan = float(((x[a] - x[k]) ** 2).sum())
                if not squared:
                    dap_, dan_ = dap**0.5, dan**0.5
                else:
                    dap_, dan_ = dap, dan
                if dap_ < dan_ <= dap_ + margin:
                    out.append((a, p, k))
    return out


def ref_one(x, labels, fallback=True):
    """Per positive pair: the closest negative with D_an > D_ap, else the farthest one."""
    out = []
    n = x.shape[0]
    for a in range(n):
        negs = [k for k in range(n) if labels[k] != labels[a]]
        if not negs:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            dap = float((x[a] - x[p]).norm())
            beyond = [(float((x[a] - x[k]).norm()), k) for k in negs]
            farther = [t for t in beyond if t[0] > dap]
            if farther:
                out.append((a, p, min(farther)[1]))
            elif fallback:
                out.append((a, p, max(beyond)[1]))
    return out


def _triples(res):
    return list(zip(*(t.tolist() for t in res)))


@pytest.mark.parametrize("chunk", [None, 1, 5])
@pytest.mark.parametrize("squared", [False, True])
def test_band_matches_the_triple_loop(chunk, squared):
    x, y = _batch()
    m = SemiHardMiner(0.4, distance="squared" if squared else "euclidean", chunk_size=chunk)
    got = _triples(m(x, y))
    assert got == ref_band(x, y, 0.4, squared=squared)
    assert len(got) > 0


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("fallback", [True, False])
def test_one_per_pair_matches_the_loop(chunk, fallback):
    x, y = _batch(seed=1)
    m = SemiHardMiner(1.0, select="one", fallback=fallback, normalize=False, chunk_size=chunk)
    assert _triples(m(x, y)) == ref_one(x, y, fallback)


@pytest.mark.slow  # the import of pytorch-metric-learning
def test_parity_with_pytorch_metric_learning_semihard():
    miners = pytest.importorskip("pytorch_metric_learning.miners")
    for seed in range(3):
        x, y = _batch(n=16, d=5, seed=seed)
        want = miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard")(x, y)
        got = SemiHardMiner(0.3)(x, y)
        assert _triples(got) == _triples(want)
        # a reference set (ref_emb / ref_labels): no self-exclusion
        r, ry = _batch(n=9, d=5, seed=seed + 10)
        want = miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard")(x, y, r, ry)
        assert _triples(SemiHardMiner(0.3)(x, y, r, ry)) == _triples(want)


@pytest.mark.slow  # the import of sentence-transformers (transformers)
def test_parity_with_sentence_transformers_batch_semi_hard_triplet_loss():
    try:
        losses = peers._st_losses_module()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"sentence-transformers not importable: {exc}")
    st = losses.BatchSemiHardTripletLoss(peers._placeholder_model(), margin=2.0)
    for seed in range(3):
        x, y = _batch(n=14, d=3, seed=seed)
        a, p, n = SemiHardMiner(2.0, select="one", normalize=False)(x, y)
        per = ((x[a] - x[p]).norm(dim=1) - (x[a] - x[n]).norm(dim=1) + 2.0).clamp(min=0)
        mine = per.sum() / a.numel()  # mean over every positive pair
        torch.testing.assert_close(mine, st.batch_semi_hard_triplet_loss(y, x))


def test_oracles_far_negatives_and_no_semi_hard_negative():
    # two tight clusters far apart: every negative beyond D_ap + margin -> nothing in the band
    x = torch.tensor([[0.0, 0.0], [0.0, 0.1], [10.0, 0.0], [10.0, 0.1]], dtype=D64)
    y = torch.tensor([0, 0, 1, 1])
    assert SemiHardMiner(0.5, normalize=False)(x, y)[0].numel() == 0
    a, p, n = SemiHardMiner(0.5, select="one", normalize=False)(x, y)
    assert a.numel() == 4  # one (beyond) negative per pair, its loss is 0
    assert bool(((x[a] - x[p]).norm(dim=1) + 0.5 < (x[a] - x[n]).norm(dim=1)).all())
    # every negative closer than the positive: PML selects nothing, TF-Addons the farthest
    x = torch.tensor([[0.0, 0.0], [5.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=D64)
    y = torch.tensor([0, 0, 1, 2])
    assert SemiHardMiner(10.0, normalize=False)(x, y)[0].tolist() == []
    a, p, n = SemiHardMiner(10.0, select="one", normalize=False)(x, y)
    assert (a.tolist(), p.tolist(), n.tolist()) == ([0, 1], [1, 0], [3, 2])  # the farthest
    assert SemiHardMiner(10.0, select="one", fallback=False, normalize=False)(x, y)[0].numel() == 0
    # margin -> infinity: every (a, p, n) with D_an > D_ap
    x, y = _batch(seed=4)
    got = _triples(SemiHardMiner(1e9)(x, y))
    xn = F.normalize(x, dim=-1)
    D = torch.cdist(xn, xn)
    want = [
        (i, j, k)
        for i in range(12)
        for j in range(12)
        for k in range(12)
        if j != i and y[j] == y[i] and y[k] != y[i] and D[i, k] > D[i, j]
    ]
    assert got == want


def test_no_gradient_and_integer_outputs():
    x, y = _batch()
    x.requires_grad_()
    out = SemiHardMiner(0.4)(x, y)
    assert all(t.dtype == torch.long and not t.requires_grad for t in out)


def test_bad_input_names_the_argument():
    x, y = _batch()
    for kw, name in [
        ({"margin": -1.0}, "margin"),
        ({"select": "hard"}, "select"),
        ({"distance": "cos"}, "distance"),
        ({"chunk_size": 0}, "chunk_size"),
    ]:
        with pytest.raises(ValueError, match=name):
            SemiHardMiner(**kw)
    with pytest.raises(ValueError, match="labels"):
        SemiHardMiner()(x, y[:-1])
    with pytest.raises(ValueError, match="ref_labels"):
        SemiHardMiner()(x, y, x[:3])
    with pytest.raises(ValueError, match="embeddings"):
        SemiHardMiner()(x[0], y)
    assert importlib.import_module("contrastkit.negatives").SemiHardMiner is SemiHardMiner
