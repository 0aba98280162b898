"""contrastkit.negatives: mining, filters, synthesis, sampling and weights against the oracles of
methods card parts B, C and D, dense references and the losses they feed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses.infonce import info_nce, info_nce_with_negatives
from contrastkit.negatives import (
    AdaMEOWWeights,
    BadPairMiner,
    ClusterNegativeWeights,
    CommunityNegativeWeights,
    DebCSESampler,
    FalseNegativeFilter,
    FeatureAwareSampler,
    HardNegativeMixing,
    OnlineHardNegativeMixing,
    SubclassBalancer,
    TopKMiner,
    apply_filter,
    cluster_features,
    combine_stage_labels,
    community_strength,
    community_weights,
    gather_negatives,
    histogram_propensity,
    interpolate_negatives,
    margin_filter,
    meow_cluster_labels,
    relative_margin_filter,
    team_up_gamma,
    threshold_filter,
)

from reference import ref_info_nce

D64 = torch.float64
ENGINES = [
    {"backend": "dense"},
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled"},
]


def rand(*shape, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=D64)
    return x.requires_grad_(grad)


def unit(*shape, seed=0):
    return F.normalize(rand(*shape, seed=seed), dim=-1)


# ------------------------------------------------------------------ dense references


def brute_topk(q, k, kk, drop):
    """Per-row python loop: sort surviving columns by score, keep the first kk."""
    S = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T
    out = []
    for i in range(S.shape[0]):
        cols = [j for j in range(S.shape[1]) if not drop[i][j]]
        cols.sort(key=lambda j: -float(S[i, j]))
        out.append(cols[:kk])
    return out, S


# ------------------------------------------------------------------ filters


def test_filters_drop_exactly_the_named_pairs():
    scores = torch.tensor([[0.9, 0.5, 0.85, -0.2], [0.1, 0.3, 0.29, 0.05]], dtype=D64)
    pos = torch.tensor([0.9, 0.3], dtype=D64)
    for i in range(2):
        for j in range(4):
            s, p = float(scores[i, j]), float(pos[i])
            assert bool(threshold_filter(scores, max_score=0.8)[i, j]) == (s > 0.8)
            assert bool(threshold_filter(scores, min_score=0.0)[i, j]) == (s < 0.0)
            assert bool(margin_filter(scores, pos, 0.1)[i, j]) == (s + 0.1 > p)
            # "negative score < 95 % of the positive score"
            assert bool(relative_margin_filter(scores, pos, 0.05)[i, j]) == (s > 0.95 * p)
    # the NV-Retriever preset keeps 0.85 < 0.95 * 0.9 = 0.855 and drops 0.29 > 0.285
    drop = FalseNegativeFilter(relative_margin=0.05)(scores, pos)
    assert drop.tolist() == [[True, False, False, False], [False, True, True, False]]
    combo = FalseNegativeFilter(max_score=0.8, absolute_margin=0.2)(scores, pos)
    want = threshold_filter(scores, 0.8) | margin_filter(scores, pos, 0.2)
    assert torch.equal(combo, want)
    idx = torch.arange(8).view(2, 4)
    assert apply_filter(idx, drop).tolist() == [[-1, 1, 2, 3], [4, -1, -1, 7]]


def test_relative_margin_negative_positive_score_does_not_loosen():
    # sentence-transformers subtracts |pos| r: the threshold stays below a negative positive
    # score (-0.5 -> -0.55), where pos (1 - r) = -0.45 would loosen it and keep -0.52
    scores = torch.tensor([[-0.56, -0.52]], dtype=D64)
    drop = relative_margin_filter(scores, torch.tensor([-0.5], dtype=D64), 0.1)
    assert drop.tolist() == [[False, True]]


def test_filter_bad_input():
    s = torch.zeros(3, 4, dtype=D64)
    with pytest.raises(ValueError, match="positive_scores"):
        margin_filter(s, torch.zeros(4, dtype=D64), 0.1)
    with pytest.raises(ValueError, match="positive_scores"):
        relative_margin_filter(s, None, 0.1)
    with pytest.raises(ValueError, match="relative_margin"):
        FalseNegativeFilter(relative_margin=1.5)
    with pytest.raises(ValueError, match="scores"):
        threshold_filter(torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="drop"):
        apply_filter(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 3, dtype=torch.bool))


# ------------------------------------------------------------------ TopKMiner


@pytest.mark.parametrize("chunk", [None, 1, 4])
@pytest.mark.parametrize(
    "opts",
    [{}, {"absolute_margin": -0.1}, {"relative_margin": 0.05}, {"max_score": 0.3}],
)
def test_topk_miner_matches_brute_force(opts, chunk):
    q, k = rand(11, 6, seed=1), rand(13, 6, seed=2)
    kk = 3
    miner = TopKMiner(kk, chunk_size=chunk, on_shortage="mask", **opts)
    got = miner(q, k)
    S = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T
    pos = S.diagonal()
    flt = FalseNegativeFilter(**opts)
    drop = flt(S, pos) if not flt.is_empty else torch.zeros_like(S, dtype=torch.bool)
    drop[torch.arange(11), torch.arange(11)] = True
    want, _ = brute_topk(q, k, kk, drop.tolist())
    for i in range(11):
        row = [j for j in got.indices[i].tolist() if j >= 0]
        assert row == want[i]
        assert got.valid[i].sum() == len(want[i])
        for j in row:  # every selected negative satisfies the rule
            assert not bool(drop[i, j])
    if "absolute_margin" in opts:  # UniME: S_ij <= S_ii + beta
        ok = got.scores[got.valid] <= (pos[:, None] + 0.1).expand_as(got.scores)[got.valid]
        assert bool(ok.all())


def test_topk_miner_raising_beta_never_lowers_the_hardest_score():
    q, k = rand(20, 5, seed=3), rand(20, 5, seed=4)
    prev = None
    for beta in (-0.2, 0.0, 0.1, 0.5, 10.0):
        top = TopKMiner(1, absolute_margin=-beta, on_shortage="mask")(q, k).scores[:, 0]
        if prev is not None:
            assert bool((top >= prev).all())
        prev = top


def test_topk_miner_labels_match_pml_batch_hard_miner():
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.miners import BatchHardMiner

    _ = pml
    x = rand(24, 8, seed=5)
    labels = torch.arange(24) % 5
    a, _, n = BatchHardMiner(distance=CosineSimilarity())(x, labels)
    got = TopKMiner(1, exclude_positive=False)(x, x, labels=labels)
    order = torch.argsort(a)
    assert torch.equal(a[order], torch.arange(24))
    assert torch.equal(got.indices[:, 0], n[order])


def test_topk_miner_agrees_with_the_corpus_miner():
    """In-batch mining == contrastkit.mining's corpus miner on the keys as a corpus (exhaustive
    window, positive i of query i): two independent implementations of the same rules."""
    pytest.importorskip("faiss")
    from contrastkit.mining import mine_hard_negatives

    g = torch.Generator().manual_seed(44)
    q = torch.randn(40, 16, generator=g)
    k = q + 0.8 * torch.randn(40, 16, generator=g)
    q[::5] *= -1  # negative positive scores: the relative rule's sign convention
    for opts in ({"relative_margin": 0.05}, {"absolute_margin": 0.1, "max_score": 0.5}):
        ours = TopKMiner(5, on_shortage="mask", **opts)(q, k)
        theirs = mine_hard_negatives(
            q.numpy(), k.numpy(), np.arange(40), num_negatives=5, range_max=40, **opts
        )
        np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices)


def test_topk_miner_bad_input():
    q, k = rand(5, 4), rand(5, 4)
    with pytest.raises(ValueError, match="k=5"):
        TopKMiner(5)(q, k)  # only 4 candidates once the positive is excluded
    with pytest.raises(ValueError, match="feature dimension"):
        TopKMiner(2)(q, rand(5, 3))
    with pytest.raises(ValueError, match="k must"):
        TopKMiner(0)
    with pytest.raises(ValueError, match="fewer than k"):
        TopKMiner(3, max_score=-0.9)(q, k)
    with pytest.raises(ValueError, match="on_shortage"):
        TopKMiner(2, on_shortage="pad")
    with pytest.raises(ValueError, match="labels"):
        TopKMiner(1)(q, rand(7, 4), labels=torch.arange(5))
    with pytest.raises(ValueError, match="invalid"):
        gather_negatives(k, TopKMiner(3, max_score=-0.9, on_shortage="mask")(q, k))


# ------------------------------------------------------------------ composition with losses


def test_miner_indices_into_info_nce_equal_dense_reference():
    q = rand(9, 6, seed=6, grad=True)
    k = (q.detach() + 0.3 * rand(9, 6, seed=7)).requires_grad_(True)  # strong positives
    mined = TopKMiner(3, absolute_margin=-0.1, on_shortage="raise")(q, k)
    assert gather_negatives(k, mined).shape == (9, 3, 6)
    want = ref_info_nce(q, k, extra=k[mined.indices], tau=0.1).mean()
    gw = torch.autograd.grad(want, (q, k))
    for eng in ENGINES:
        got = info_nce(q, k, gather_negatives(k, mined), temperature=0.1, **eng)
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(got, (q, k)), gw):
            torch.testing.assert_close(a, b)
        got2 = info_nce_with_negatives(
            q, k, extra=gather_negatives(k, mined), temperature=0.1, **eng
        )
        torch.testing.assert_close(got2, want)


# ------------------------------------------------------------------ MoCHi / KaLM mixing


def _residual(v, basis):
    """Distance of v from span(basis rows)."""
    Qb, _ = torch.linalg.qr(basis.T)
    return (v - Qb @ (Qb.T @ v)).norm()


def test_mochi_unit_norm_and_built_only_from_the_hardest():
    q, queue = unit(5, 16, seed=20), unit(40, 16, seed=21)
    mixer = HardNegativeMixing(n_hard=3, n_mix=6, n_query_mix=4)
    g = torch.Generator().manual_seed(0)
    out = mixer(q, queue, generator=g)
    assert out.shape == (5, 10, 16) and not out.requires_grad
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5, 10, dtype=D64))
    hard = torch.topk(q @ queue.T, 3, dim=1).indices
    assert torch.equal(mixer.hardest(q, queue), hard)
    for i in range(5):
        H = queue[hard[i]]
        for v in out[i, :6]:  # type 1: in the span of the hardest negatives only
            assert float(_residual(v, H)) < 1e-10
        for v in out[i, 6:]:  # type 2: on an arc between q_i and a hard negative
            assert float(_residual(v, torch.cat([q[i : i + 1], H]))) < 1e-10
            assert float(q[i] @ v) >= float((H @ q[i]).min()) - 1e-12
    # n_hard = 1: every type-1 mixture is the hardest negative itself
    one = HardNegativeMixing(n_hard=1, n_mix=3, n_query_mix=0)(q, queue)
    torch.testing.assert_close(one, queue[hard[:, :1]].expand(5, 3, 16))


def test_mochi_type2_oracle_and_determinism_and_warmup():
    q, negs = unit(6, 8, seed=22), unit(6, 10, 8, seed=23)  # per-query negatives
    mixer = HardNegativeMixing(n_hard=2, n_mix=0, n_query_mix=5, start_step=3)
    a = mixer(q, negs, generator=torch.Generator().manual_seed(1))
    b = mixer(q, negs, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    c = mixer(q, negs, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, c)
    hard = torch.topk(torch.einsum("nd,nhd->nh", q, negs), 2, dim=1).indices
    for i in range(6):
        lo = float((negs[i, hard[i]] @ q[i]).min())
        assert bool((a[i] @ q[i] >= lo - 1e-12).all())  # q.h' >= q.n_c
    assert mixer(q, negs, step=2).shape == (6, 0, 8)  # warm-up: nothing synthesised
    # s = s' = 0 reduces to plain MoCo logits
    q2, k2, queue = rand(6, 8, seed=24), rand(6, 8, seed=25), rand(10, 8, seed=26)
    empty = HardNegativeMixing(2, 0, 0)(q2, queue)
    torch.testing.assert_close(
        info_nce_with_negatives(q2, k2, queue=queue, extra=empty, temperature=0.2),
        info_nce(q2, k2, queue, temperature=0.2),
    )


def test_mochi_bad_input():
    q = rand(4, 8)
    with pytest.raises(ValueError, match="n_hard=11"):
        HardNegativeMixing(n_hard=11)(q, rand(10, 8))
    with pytest.raises(ValueError, match="feature dimension"):
        HardNegativeMixing(n_hard=2)(q, rand(10, 7))
    with pytest.raises(ValueError, match="n_mix"):
        HardNegativeMixing(2, n_mix=-1)


def test_online_mixing_never_mixes_the_own_positive():
    q = unit(6, 12, seed=27)
    p = q.clone()  # own positive is the most similar candidate of every query
    h = unit(6, 2, 12, seed=28)
    mixer = OnlineHardNegativeMixing(n_hard=1, n_mix=2)
    out = mixer(q, p, h, generator=torch.Generator().manual_seed(0))
    bank = torch.cat([p, h.reshape(-1, 12)])
    S = q @ bank.T
    S[torch.arange(6), torch.arange(6)] = float("-inf")
    best = bank[S.argmax(1)]
    torch.testing.assert_close(out, best[:, None].expand(6, 2, 12))
    with pytest.raises(ValueError, match="hard_negatives"):
        mixer(q, p, unit(5, 2, 12))


def test_interpolate_negatives_convex_pairs():
    Q = rand(7, 4, seed=29)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    out = interpolate_negatives(Q, 0.3, perm)
    torch.testing.assert_close(out, 0.3 * Q + 0.7 * Q[perm])
    torch.testing.assert_close(interpolate_negatives(Q, 1.0), Q)
    with pytest.raises(ValueError, match="permutation"):
        interpolate_negatives(Q, 0.5, torch.arange(6))


# ------------------------------------------------------------------ MEOW / AdaMEOW


def test_meow_weights_oracle_and_engine():
    labels = torch.tensor([[0, 0, 1, 1, 2, 2, 0], [0, 1, 1, 2, 2, 0, 0]])
    W = ClusterNegativeWeights(labels)
    dense = W.dense()
    G = 2
    for i in range(7):
        for j in range(7):
            want = G - int((labels[:, i] == labels[:, j]).sum())
            assert int(dense[i, j]) == want
    assert torch.equal(dense, dense.T) and bool((dense.diagonal() == 0).all())
    # one granularity, all distinct clusters: w = 1 - I (positive not in the denominator)
    distinct = ClusterNegativeWeights(torch.arange(7)[None])
    assert torch.equal(distinct.dense(), 1 - torch.eye(7))
    a, z = rand(7, 5, seed=30, grad=True), rand(7, 5, seed=31, grad=True)
    want = ref_info_nce(a, z, weights=dense.double(), tau=0.4).mean()
    gw = torch.autograd.grad(want, (a, z))
    for eng in ENGINES:
        got = info_nce_with_negatives(a, z, weights=W, temperature=0.4, **eng)
        torch.testing.assert_close(got, want)
        for x, y in zip(torch.autograd.grad(got, (a, z)), gw):
            torch.testing.assert_close(x, y)


def test_meow_cluster_labels_shapes():
    x = torch.cat([unit(10, 4, seed=32) * 0.05 + torch.eye(4, dtype=D64)[i] for i in range(3)])
    lab = meow_cluster_labels(x, (3, 5), n_init=1)
    assert lab.shape == (2, 30)
    assert lab[0].unique().numel() == 3 and lab[1].unique().numel() == 5
    # well separated groups are recovered at granularity 3
    for g in range(3):
        assert lab[0, g * 10 : (g + 1) * 10].unique().numel() == 1
    with pytest.raises(ValueError, match="n_clusters"):
        meow_cluster_labels(x, (40,))


def test_adameow_weights():
    # the loss they feed (adameow_info_nce) is tested in test_objectives_weighting.py
    a, z = rand(6, 4, seed=33), rand(6, 4, seed=34)
    net = AdaMEOWWeights(4, chunk_size=4).double()
    w = net(F.normalize(a, dim=-1), F.normalize(z, dim=-1))
    assert w.shape == (6, 6) and bool(((w > 0) & (w < 1)).all())
    manual = torch.sigmoid(net.mlp(F.normalize(a, dim=-1)[2] + F.normalize(z, dim=-1)[5]))
    torch.testing.assert_close(w[2, 5], manual.squeeze())


# ------------------------------------------------------------------ gCooL / CSGCL


def test_gcool_weights():
    # the node <-> community contrast they feed is tested in test_objectives_weighting.py
    C = rand(5, 3, seed=35)
    W = community_weights(C, 0.7)
    torch.testing.assert_close(W, W.T)
    torch.testing.assert_close(W.diagonal(), torch.ones(5, dtype=D64))
    torch.testing.assert_close(W[1, 3], torch.exp(-0.7 * (C[1] - C[3]).pow(2).sum()))


def test_community_negative_weights_tile():
    W = community_weights(rand(3, 2, seed=38), 0.5)
    comm = torch.tensor([0, 2, 1, 1, 0])
    cw = CommunityNegativeWeights(W, comm)
    torch.testing.assert_close(cw.dense(), W[comm][:, comm])
    torch.testing.assert_close(cw.tile(1, 4, 2, 5), W[comm[1:4]][:, comm[2:5]])
    with pytest.raises(ValueError, match="row_communities"):
        CommunityNegativeWeights(W, torch.tensor([0, 3]))


def test_community_strength_is_modularity():
    nx = pytest.importorskip("networkx")
    g = nx.karate_club_graph()
    comms = nx.community.greedy_modularity_communities(g)
    lab = torch.zeros(g.number_of_nodes(), dtype=torch.long)
    for c, members in enumerate(comms):
        lab[list(members)] = c
    ei = torch.tensor(list(g.edges())).T
    cs = community_strength(ei, lab)
    assert math.isclose(
        float(cs.sum()), nx.community.modularity(g, comms, weight=None), rel_tol=1e-12
    )
    with pytest.raises(ValueError, match="edge_index"):
        community_strength(torch.zeros(3, 4, dtype=torch.long), lab)


def test_team_up_gamma_schedule():
    # the team-up loss is tested in test_objectives_weighting.py
    assert team_up_gamma(50, t0=100) == 0.0 and team_up_gamma(150, t0=100) == 0.5
    assert team_up_gamma(10_000, gamma_max=5) == 5


# ------------------------------------------------------------------ SBCL


def test_subclass_balancer_fit_oracles():
    g = torch.Generator().manual_seed(43)
    counts = [40, 20, 10, 5]
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    feats = torch.randn(labels.numel(), 8, generator=g, dtype=D64)
    bal = SubclassBalancer(min_size=10, temperature=0.1)
    assert bal.n_subclasses(counts) == [4, 2, 1, 1]  # n_c // max(min n_c, L)
    sub = bal.fit(feats, labels)
    assert bal.subclass_to_class.tolist() == [0, 0, 0, 0, 1, 1, 2, 3]
    assert sub.unique().numel() == 8  # sum_c M_c sub-classes
    for sc in sub.unique():  # every sub-class id belongs to exactly one class
        assert labels[sub == sc].unique().numel() == 1
        assert int(bal.subclass_to_class[sc]) == int(labels[sub == sc][0])
    tc = bal.class_temperatures
    assert tc.shape == (4,) and float(tc[2]) == 0.1 and float(tc[3]) == 0.1
    # deterministic with the same seed
    assert torch.equal(SubclassBalancer(seed=0).fit(feats, labels), sub)
    with pytest.raises(ValueError, match="labels"):
        bal.fit(feats, labels[:-1])


# ------------------------------------------------------------------ DebCSE


def test_debcse_weights_and_sampling():
    score = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.3], dtype=D64)
    surface = torch.tensor([0.0, 0.1, 0.9, 1.0, 0.05], dtype=D64)
    const = DebCSESampler(propensity=lambda s: torch.full_like(s, 0.5), clip=None)
    torch.testing.assert_close(const.weights(score, surface), score / 0.5)  # score-proportional
    torch.testing.assert_close(const.weights(score, surface, "negative"), (1 - score) / 0.5)
    prop = histogram_propensity(surface, n_bins=2)  # bins [0, .5): 3 of 5, [.5, 1]: 2 of 5
    torch.testing.assert_close(prop, torch.tensor([0.6, 0.6, 0.4, 0.4, 0.6], dtype=D64))
    hist = DebCSESampler(n_bins=2, clip=2.0)
    torch.testing.assert_close(hist.weights(score, surface), (score / prop).clamp(max=2.0))
    a = hist.sample(3, score, surface, generator=torch.Generator().manual_seed(0))
    b = hist.sample(3, score, surface, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.unique().numel() == 3
    # frequencies follow the weights (constant propensity -> proportional to the score)
    g = torch.Generator().manual_seed(1)
    w = const.weights(score, surface)
    hits = torch.zeros(5)
    for _ in range(1500):
        hits[const.sample(1, score, surface, generator=g)] += 1
    torch.testing.assert_close(hits / 1500, (w / w.sum()).float(), atol=0.04, rtol=0)
    with pytest.raises(ValueError, match="k=6"):
        hist.sample(6, score, surface)
    with pytest.raises(ValueError, match="surface"):
        hist.weights(score, surface[:3])
    with pytest.raises(ValueError, match="score"):
        hist.weights(score + 1, surface)


# ------------------------------------------------------------------ MCL


def test_feature_aware_sampler_batches_are_single_cluster():
    stage0 = torch.tensor([0, 1] * 20)
    stage1 = torch.tensor([0] * 10 + [1] * 30)
    pseudo = combine_stage_labels([stage0, stage1], n_clusters=2)
    assert pseudo.tolist() == [int(a) * 2 + int(b) for a, b in zip(stage0, stage1)]
    sampler = FeatureAwareSampler(pseudo, batch_size=4, seed=3)
    batches = list(sampler)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen))  # every sample at most once per epoch
    for b in batches:
        assert len(b) == 4 and pseudo[b].unique().numel() == 1
    # group sizes 5, 5, 15, 15 -> 1 + 1 + 3 + 3 batches of 4
    assert len(batches) == 8 == len(sampler)
    assert [b for b in FeatureAwareSampler(pseudo, 4, seed=3)] == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    # two ranks: disjoint, each with single-cluster batches
    r0 = [i for b in FeatureAwareSampler(pseudo, 2, world_size=2, rank=0) for i in b]
    r1 = [i for b in FeatureAwareSampler(pseudo, 2, world_size=2, rank=1) for i in b]
    assert not set(r0) & set(r1)
    with pytest.raises(ValueError, match="rank"):
        FeatureAwareSampler(pseudo, 4, world_size=2, rank=2)
    with pytest.raises(ValueError, match="stage_labels"):
        combine_stage_labels([torch.tensor([0, 3])], n_clusters=2)


# ------------------------------------------------------------------ DBPM


def test_bad_pair_miner():
    g = torch.Generator().manual_seed(5)
    miner = BadPairMiner(cut_np=1.0, cut_fp=1.0, warm_epochs=1, max_epochs=4)
    ids = torch.arange(30)
    hist = {i: [] for i in range(30)}
    for _ in range(3):
        losses = torch.rand(30, generator=g, dtype=D64)
        losses[3], losses[7] = 5.0, 0.0
        miner(ids, losses)
        for i in range(30):
            hist[i].append(float(losses[i]))
    miner.start_epoch(1)
    m = torch.tensor(
        [sum(v * (r + 1) / 4 for r, v in enumerate(hist[i])) / 3 for i in range(30)], dtype=D64
    )
    mu, sd = float(m.mean()), float(m.std(unbiased=False))
    noisy = {i for i in range(30) if float(m[i]) <= mu - sd}
    faulty = {i for i in range(30) if float(m[i]) >= mu + sd}
    assert miner.noisy == noisy and miner.faulty == faulty and 3 in faulty
    cur = torch.rand(30, generator=g, dtype=D64)
    w = miner.weights(ids, cur)
    dens = torch.exp(-0.5 * ((cur - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    for i in range(30):
        want = float(dens[i]) if i in noisy | faulty else 1.0
        assert math.isclose(float(w[i]), want, rel_tol=1e-9)
    # infinite cuts leave the loss unchanged
    plain = BadPairMiner(cut_np=math.inf, cut_fp=math.inf, warm_epochs=0)
    plain(ids, cur)
    plain.start_epoch(0)
    torch.testing.assert_close(plain(ids, cur), cur.mean())
    # before warm-up nothing is flagged
    early = BadPairMiner(warm_epochs=10)
    early(ids, cur)
    early.start_epoch(3)
    assert not early.flagged


def test_docs_example_runs():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "positives-and-negatives.md").read_text()
    for code in re.findall(r"```python\n(.*?)```", text, re.S):
        exec(compile(code, "positives-and-negatives.md", "exec"), {})


def test_cluster_features_and_online_mixing_reduction():
    centres = torch.eye(3, 6, dtype=D64) * 5
    x = torch.cat([centres[i] + 0.1 * rand(15, 6, seed=50 + i) for i in range(3)])
    lab = cluster_features(x, n_clusters=3, seed=0)
    assert lab.shape == (45,)
    for i in range(3):  # well separated clusters are recovered
        assert lab[i * 15 : (i + 1) * 15].unique().numel() == 1
    assert torch.equal(cluster_features(x, 3, seed=0), lab)
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_features(x, 0)
    # KaLM mixing with S = 0 is plain InfoNCE with the mined hard negatives
    q, p, h = rand(5, 6, seed=53), rand(5, 6, seed=54), rand(5, 2, 6, seed=55)
    none = OnlineHardNegativeMixing(n_hard=2, n_mix=0)(q, p, h)
    assert none.shape == (5, 0, 6)
    torch.testing.assert_close(
        info_nce(q, p, torch.cat([h, none], 1), temperature=0.05),
        info_nce(q, p, h, temperature=0.05),
    )
