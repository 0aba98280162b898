"""Data curation on embeddings: CoRNStack's positive-consistency filter (the rank of each pair's
positive in the pool), label-noise detection by neighbour credibility and KDE soft labels, each
against a plain dense loop, with their oracles (KaLM's ranking-consistency filter, pure clusters,
rescaling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastkit.mining import neighbour_credibility, positive_consistency

# ------------------------------------------------------------------ positive consistency


def ref_ranks(q, c, corpus=None, include_positives=True):
    """Dense loop: 1 + #{pool rows (not the pair's own positive) strictly above s_ii}."""
    q, c = F.normalize(q.double(), dim=-1), F.normalize(c.double(), dim=-1)
    pool = [c] if include_positives else []
    if corpus is not None:
        pool.append(F.normalize(corpus.double(), dim=-1))
    P = torch.cat(pool)
    out = []
    for i in range(q.shape[0]):
        s_ii = float(q[i] @ c[i])
        above = 0
        for j in range(P.shape[0]):
            if include_positives and j == i:
                continue
            if float(q[i] @ P[j]) > s_ii + 1e-12:
                above += 1
        out.append(1 + above)
    return np.array(out)


def _pairs(n=20, d=6, noise=0.8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, generator=g)
    return q, q + noise * torch.randn(n, d, generator=g), torch.randn(15, d, generator=g)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_ranks_match_the_dense_loop(chunk):
    q, c, corpus = _pairs()
    for kw in ({}, {"corpus": corpus}, {"corpus": corpus, "include_positives": False}):
        got = positive_consistency(q, c, top_k=3, chunk_size=chunk, **kw)
        want = ref_ranks(q, c, kw.get("corpus"), kw.get("include_positives", True))
        np.testing.assert_array_equal(got.rank, want)
        np.testing.assert_array_equal(got.keep, want <= 3)
        assert 1 < int(got.keep.sum()) < 20  # the case keeps some pairs and drops others


def test_min_score_numpy_memmap_and_diagonal_oracle(tmp_path):
    q, c, corpus = _pairs(seed=1)
    res = positive_consistency(q.numpy(), c.numpy(), top_k=20, min_score=0.6)
    s = (F.normalize(q.double(), dim=-1) * F.normalize(c.double(), dim=-1)).sum(-1).numpy()
    np.testing.assert_allclose(res.positive_score, s)
    np.testing.assert_array_equal(res.keep, s >= 0.6)
    path = tmp_path / "corpus.npy"
    np.save(path, corpus.numpy())
    mm = np.load(path, mmap_mode="r")
    a = positive_consistency(q, c, mm, top_k=2)
    b = positive_consistency(q, c, corpus, top_k=2)
    np.testing.assert_array_equal(a.rank, b.rank)
    # identical query and positive embeddings: each positive is its query's best match
    res = positive_consistency(q, q.clone(), top_k=1)
    assert res.rank.tolist() == [1] * 20 and res.keep.all()
    # a duplicated positive ties with the pair's own one: ties are not above it
    dup = torch.cat([q[:1], q[:1], q[2:]])
    res = positive_consistency(dup, dup.clone(), top_k=1)
    assert res.rank[:2].tolist() == [1, 1]


def test_equals_kalm_ranking_consistency_filter():
    """KaLM's rule: search the pool, drop the example if its positive scores below the
    filter_topk-th best score of the pool (the positive itself is a pool member)."""
    q, c, corpus = _pairs(n=30, noise=1.0, seed=2)
    qn, pool = F.normalize(q.double(), dim=-1), F.normalize(torch.cat([c, corpus]).double(), dim=-1)
    for filter_topk in (1, 3, 10):
        S = qn @ pool.T
        kth = S.topk(filter_topk, dim=1).values[:, -1]
        pos = S[torch.arange(30), torch.arange(30)]  # the same products as the threshold
        kalm_keep = (pos >= kth).numpy()
        got = positive_consistency(q, c, corpus, top_k=filter_topk)
        np.testing.assert_array_equal(got.keep, kalm_keep)


def test_positive_consistency_bad_input():
    q, c, corpus = _pairs()
    with pytest.raises(ValueError, match="positives"):
        positive_consistency(q, c[:5])
    with pytest.raises(ValueError, match="top_k"):
        positive_consistency(q, c, top_k=0)
    with pytest.raises(ValueError, match="corpus"):
        positive_consistency(q, c, corpus[:, :3])
    with pytest.raises(ValueError, match="corpus"):
        positive_consistency(q, c, include_positives=False)
    with pytest.raises(ValueError, match="min_score"):
        positive_consistency(q, c, min_score=float("nan"))


# ------------------------------------------------------------------ neighbour credibility


def ref_credibility(x, y, k, weighting="uniform", tau=0.1):
    """Dense loop over all pairs: the k most similar other samples (ties: lower index)."""
    z = F.normalize(x.double(), dim=-1)
    n = z.shape[0]
    cred, vote = [], []
    for i in range(n):
        s = [(float(z[i] @ z[j]), j) for j in range(n) if j != i]
        nb = sorted(s, key=lambda t: (-t[0], t[1]))[:k]
        w = [1.0 if weighting == "uniform" else np.exp((v - nb[0][0]) / tau) for v, _ in nb]
        same = sum(wi for wi, (_, j) in zip(w, nb) if y[j] == y[i])
        cred.append(same / sum(w))
        per: dict = {}
        for wi, (_, j) in zip(w, nb):
            per[int(y[j])] = per.get(int(y[j]), 0.0) + wi
        best = max(per.values())
        tied = [lab for lab, v in per.items() if v >= best * (1 - 1e-12)]
        vote.append(int(y[i]) if int(y[i]) in tied else min(tied))
    return np.array(cred), np.array(vote)


def _clusters(seed=0, n_per=8, flip=(3, 12)):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    x = torch.cat([c + torch.randn(n_per, 3, generator=g) for c in centres])
    y = torch.arange(3).repeat_interleave(n_per)
    y_noisy = y.clone()
    for i in flip:
        y_noisy[i] = (y[i] + 1) % 3
    return x, y, y_noisy


@pytest.mark.parametrize("weighting", ["uniform", "softmax"])
@pytest.mark.parametrize("block_rows", [4096, 5])
def test_credibility_matches_the_dense_loop(weighting, block_rows):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(25, 4, generator=g), torch.randint(0, 3, (25,), generator=g)
    rep = neighbour_credibility(x, y, k=6, weighting=weighting, block_rows=block_rows)
    cred, vote = ref_credibility(x, y, 6, weighting)
    np.testing.assert_allclose(rep.credibility, cred, atol=1e-6)
    np.testing.assert_array_equal(rep.suspected_label, vote)
    np.testing.assert_array_equal(rep.flagged, cred < 0.5)
    assert not (rep.neighbours == np.arange(25)[:, None]).any()


def test_credibility_oracles_pure_clusters_flips_and_rescaling():
    x, y, y_noisy = _clusters()
    rep = neighbour_credibility(x, y, k=5)
    assert np.allclose(rep.credibility, 1.0) and not rep.flagged.any()
    rep = neighbour_credibility(x, y_noisy, k=5, index="flat")  # FAISS gives the same
    assert rep.credibility[3] == 0.0 and rep.credibility[12] == 0.0
    assert set(np.flatnonzero(rep.flagged)) == {3, 12}
    assert rep.suspected_label[3] == 0 and rep.suspected_label[12] == 1
    assert sorted(rep.relabel.tolist()) == [3, 12]
    scaled = neighbour_credibility(x * torch.linspace(0.1, 10, 24)[:, None], y_noisy, k=5)
    np.testing.assert_allclose(scaled.credibility, rep.credibility)
    # k = N - 1, uniform weights: the fraction of the other samples sharing the label
    full = neighbour_credibility(x, y_noisy, k=23)
    counts = np.bincount(y_noisy.numpy())
    np.testing.assert_allclose(full.credibility, (counts[y_noisy.numpy()] - 1) / 23)


def test_credibility_bad_input():
    x, y, _ = _clusters()
    with pytest.raises(ValueError, match="k must"):
        neighbour_credibility(x, y, k=24)
    with pytest.raises(ValueError, match="labels"):
        neighbour_credibility(x, y[:-1])
    with pytest.raises(ValueError, match="labels"):
        neighbour_credibility(x, y.float())
    with pytest.raises(ValueError, match="weighting"):
        neighbour_credibility(x, y, weighting="kde")
    with pytest.raises(ValueError, match="temperature"):
        neighbour_credibility(x, y, weighting="softmax", temperature=0.0)


def test_kde_soft_labels_match_the_dense_loop():
    from contrastkit.mining import kde_soft_labels

    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(13, 4, generator=g), torch.tensor([3, 3, 7, 7, 7, 1, 1, 3, 7, 1, 3, 3, 1])
    for block in (1024, 4):
        probs, classes = kde_soft_labels(x, y, temperature=0.3, block_rows=block)
        assert classes.tolist() == [1, 3, 7]
        z = F.normalize(x.double(), dim=-1)
        for i in range(13):
            mass = {c: 0.0 for c in (1, 3, 7)}
            for j in range(13):
                if j != i:
                    mass[int(y[j])] += float(torch.exp(z[i] @ z[j] / 0.3))
            total = sum(mass.values())
            np.testing.assert_allclose(probs[i], [mass[c] / total for c in (1, 3, 7)])
    # pure, far-apart clusters: each sample's soft label is its own class
    xc, yc, _ = _clusters()
    probs, _ = kde_soft_labels(xc, yc, temperature=0.05)
    assert (probs.argmax(1) == yc.numpy()).all() and probs.max(1).min() > 0.99
    with pytest.raises(ValueError, match="temperature"):
        kde_soft_labels(xc, yc, temperature=-1.0)
    with pytest.raises(ValueError, match="labels"):
        kde_soft_labels(xc, yc[:3])
