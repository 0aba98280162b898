"""contrastkit.metrics: every metric against a hand-computed case (spec Part H)."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit import metrics as M

T = torch.tensor


def f(rows):
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------- H1 alignment/uniformity
def test_alignment_hand_cases():
    x = f([[1, 0], [0, 1]])
    assert M.alignment(x, x) == pytest.approx(0.0)
    assert M.alignment(x, -x) == pytest.approx(4.0)  # antipodal -> 2**alpha
    assert M.alignment(x, -x, alpha=1.0) == pytest.approx(2.0)
    # distances 0 and 2 -> (0 + 4) / 2; inputs are normalised first
    assert M.alignment(f([[3, 0], [0, 2]]), f([[5, 0], [0, -1]])) == pytest.approx(2.0)
    # orthogonal pair: ||x - y||^2 = 2
    assert M.alignment(f([[3, 0]]), f([[0, 5]])) == pytest.approx(2.0)


def test_uniformity_hand_cases():
    assert M.uniformity(f([[1, 0], [-1, 0]])) == pytest.approx(-8.0)  # log exp(-4t), t=2
    assert M.uniformity(f([[1, 0], [-1, 0]]), t=1.0) == pytest.approx(-4.0)
    assert M.uniformity(f([[2, 0], [1, 0], [5, 0]])) == pytest.approx(0.0, abs=1e-12)
    # [1,0],[0,1],[-1,0]: squared distances 2, 4, 2
    three = f([[1, 0], [0, 1], [-1, 0]])
    want3 = math.log((2 * math.exp(-4) + math.exp(-8)) / 3)
    assert M.uniformity(three) == pytest.approx(want3)
    # two sets -> average of the two uniformities
    assert M.uniformity(three, y=f([[1, 0], [-1, 0]])) == pytest.approx((want3 - 8.0) / 2)


def test_uniformity_high_dim_sphere_tends_to_minus_2t():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2048, generator=g)
    assert M.uniformity(x) == pytest.approx(-4.0, abs=0.05)


def test_alignment_uniformity_bad_input():
    with pytest.raises(ValueError, match=r"y must have as many rows as x: \(3, 2\) vs \(2, 2\)"):
        M.alignment(f([[1, 0], [0, 1]]), f([[1, 0], [0, 1], [1, 1]]))
    with pytest.raises(ValueError, match=r"x needs at least 2 rows.*\(1, 2\)"):
        M.uniformity(f([[1, 0]]))


# ------------------------------------------------------------------- H2 effective rank
def test_effective_rank_hand_cases():
    assert M.effective_rank(torch.eye(4)) == pytest.approx(4.0)
    assert M.effective_rank(torch.diag(T([3.0, 3.0, 0.0]))) == pytest.approx(2.0)
    assert M.effective_rank(f([[1, 2], [2, 4], [3, 6]])) == pytest.approx(1.0)
    # singular values 1, 2 -> p = (1/3, 2/3)
    h = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    assert M.effective_rank(torch.diag(T([1.0, 2.0]))) == pytest.approx(math.exp(h))
    p = 0.25 + 1e-7
    assert M.rankme(torch.eye(4)) == pytest.approx(math.exp(-4 * p * math.log(p)), rel=1e-12)
    # RankMe adds eps to zero singular values too: slightly above 1 for rank-1
    assert 1.0 < M.rankme(f([[1, 0], [0, 0]])) < 1.0001
    with pytest.raises(ValueError, match=r"z is all zeros \(shape \(3, 2\)\)"):
        M.effective_rank(torch.zeros(3, 2))


def test_collapse_spectrum():
    z = f([[1, 5], [-1, 5], [1, 5], [-1, 5]])  # covariance diag(1, 0)
    ev, count = M.collapse_spectrum(z)
    assert ev.tolist() == pytest.approx([1.0, 0.0])
    assert count == 1
    ev, count = M.collapse_spectrum(f([[2, 0], [-2, 0], [0, 1], [0, -1]]))  # cov diag(2, .5)
    assert ev.tolist() == pytest.approx([2.0, 0.5]) and count == 0
    assert M.collapse_spectrum(f([[2, 0], [-2, 0], [0, 1], [0, -1]]), threshold=0.5)[1] == 1


# ------------------------------------------------------------------- H3 modality gap
def test_modality_gap_and_cone():
    a = f([[1, 0], [0, 1]])
    assert M.modality_gap(a, a) == pytest.approx(0.0)
    # means (.5, .5) and (-.5, -.5) -> ||(1, 1)|| = sqrt 2; b need not have as many rows
    assert M.modality_gap(a, f([[-1, 0], [0, -1]])) == pytest.approx(math.sqrt(2))
    assert M.modality_gap(f([[2, 0]]), f([[0, 3], [0, 1]])) == pytest.approx(math.sqrt(2))
    # a constant offset before normalisation gives a non-zero gap
    assert M.modality_gap(f([[1, 0], [0, 1]]), f([[1, 0], [0, 1]]) + 1.0) > 0.1
    # pairs (0,1): 0, (0,2): 1, (1,2): 0 -> mean 1/3
    assert M.cone_effect(f([[1, 0], [0, 1], [2, 0]])) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"b has feature dimension 3 \(shape \(1, 3\)\)"):
        M.modality_gap(a, f([[1, 0, 0]]))


def test_modality_separability():
    g = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(40, 8, generator=g)
    e = torch.zeros(8)
    e[0] = 1.0
    assert M.modality_separability(e + noise, -e + noise) == 1.0
    x = torch.randn(100, 8, generator=g)
    assert abs(M.modality_separability(x, x.clone()) - 0.5) < 0.2


# ------------------------------------------------------------------- H4 isotropy
def test_isotropy_hand_cases():
    assert M.isotropy([f([[1, 0], [2, 0], [3, 0]])]) == pytest.approx(0.0)
    assert M.isotropy([torch.eye(3)]) == pytest.approx(1.0)
    # pooled over token pairs: text A (2 identical tokens) sum 2 over 2 pairs, text B
    # (3 orthogonal) sum 0 over 6 pairs, text C (1 token) nothing -> 1 - 2/8
    texts = [f([[1, 0, 0], [1, 0, 0]]), torch.eye(3), f([[0, 1, 0]])]
    assert M.isotropy(texts) == pytest.approx(0.75)  # per-text mean would give 0.5
    # [1,0],[1,0],[0,1]: off-diagonal sum 2 over 6 pairs -> 2/3, rounded 0.67
    assert M.isotropy([f([[1, 0], [1, 0], [0, 1]])], ndigits=2) == 0.67
    with pytest.raises(ValueError, match="at least one text with 2"):
        M.isotropy([f([[1, 0]])])


# ------------------------------------------------------------------- H6 weighted kNN
TRAIN = f([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]])
TRAIN_Y = T([0, 1, 1, 1])


def test_knn_weighting_hand_case():
    q, y = f([[1, 0]]), T([0])
    # k=3: weights exp(1/T) for class 0 vs exp(.8/T) + exp(.6/T) for class 1
    assert M.knn_accuracy(TRAIN, TRAIN_Y, q, y, k=3, temperature=0.07) == 100.0  # 1.6e6 > 1e5
    assert M.knn_accuracy(TRAIN, TRAIN_Y, q, y, k=3, temperature=1.0) == 0.0  # 2.72 < 4.05
    assert M.knn_accuracy(TRAIN, TRAIN_Y, q, y, k=3, temperature=1e6) == 0.0  # majority 2:1
    assert M.knn_accuracy(TRAIN, TRAIN_Y, q, y, k=1, temperature=1.0) == 100.0  # 1-NN
    assert M.knn_accuracy(TRAIN, TRAIN_Y, q, y, k=3, temperature=1.0, top=2) == 100.0


def test_knn_percent_and_chunking():
    test = f([[2, 0], [0, 3], [0.6, 0.8]])  # not normalised on purpose
    y = T([0, 1, 0])  # third: neighbours are all class 1 -> wrong
    for chunk in (1, 2, 1024):
        acc = M.knn_accuracy(TRAIN, TRAIN_Y, test, y, k=3, chunk_size=chunk)
        assert acc == pytest.approx(200 / 3)


def test_knn_bad_input():
    q, y = f([[1, 0]]), T([0])
    with pytest.raises(
        ValueError, match=r"k=5 is larger than the 4 rows of train_features \(shape \(4, 2\)\)"
    ):
        M.knn_accuracy(TRAIN, TRAIN_Y, q, y, k=5)
    with pytest.raises(ValueError, match=r"train_labels must have shape \(4,\), got \(3,\)"):
        M.knn_accuracy(TRAIN, TRAIN_Y[:3], q, y, k=2)
    with pytest.raises(ValueError, match="temperature"):
        M.knn_accuracy(TRAIN, TRAIN_Y, q, y, k=2, temperature=0.0)


# ------------------------------------------------------------------- H7 linear probe
def test_linear_probe_hand_case():
    xtr = f([[-2], [-1], [1], [2]])
    ytr = T([0, 0, 1, 1])
    assert M.linear_probe_accuracy(xtr, ytr, f([[-3], [3], [-0.5], [0.5]]), T([0, 1, 0, 1])) == 100
    # last test point labelled against the separating side: 3/4 correct
    xte, yte = f([[-3], [3], [4], [5]]), T([0, 1, 1, 0])
    assert M.linear_probe_accuracy(xtr, ytr, xte, yte) == pytest.approx(75.0)
    # balanced: recall class 0 = 1/2, class 1 = 2/2
    assert M.linear_probe_accuracy(xtr, ytr, xte, T([0, 1, 1, 0]), balanced=True) == 75.0
    xte2, yte2 = f([[-3], [3], [4], [5]]), T([0, 0, 1, 1])
    assert M.linear_probe_accuracy(xtr, ytr, xte2, yte2, balanced=True) == pytest.approx(75.0)
    assert M.linear_probe_accuracy(xtr, ytr, xte2, yte2) == pytest.approx(75.0)
    with pytest.raises(ValueError, match=r"test_labels must have shape \(4,\), got \(2,\)"):
        M.linear_probe_accuracy(xtr, ytr, xte, T([0, 1]))


# ------------------------------------------------------------------- H8 retrieval
SCORES = f([[0.1, 0.9, 0.5], [0.5, 0.5, 0.5], [0.3, 0.2, 0.1]])


def test_ground_truth_ranks_and_rank_metrics():
    ranks = M.ground_truth_ranks(SCORES, T([2, 1, 0]))
    assert ranks.tolist() == [1, 1, 0]  # row 1: tie, one equal candidate with lower index
    assert M.ground_truth_ranks(SCORES, T([1, 2, 0])).tolist() == [0, 2, 0]
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 0] = mask[0, 2] = mask[1, 2] = mask[2, 1] = True
    assert M.ground_truth_ranks(SCORES, mask).tolist() == [1, 2, 1]  # min over correct
    assert M.hit_rate_at_k(ranks, 1) == pytest.approx(100 / 3)
    assert M.hit_rate_at_k(ranks, 2) == 100.0
    assert M.mean_rank(ranks) == pytest.approx(5 / 3)
    assert M.median_rank(ranks) == 2.0
    assert M.median_rank(T([0, 1, 2, 5])) == 2.0  # median 1.5 -> floor 1, + 1
    assert M.median_rank(T([0, 3, 3, 5])) == 4.0
    z = f([[1, 0], [0, 1], [1, 1]])
    assert M.retrieval_ranks(z, z).tolist() == [0, 0, 0]
    # query [1,0] vs candidate [0,1]: cos 0 < 1 and 0.707 -> rank 2
    assert M.retrieval_ranks(z, z, T([1, 0, 2])).tolist() == [2, 2, 0]
    with pytest.raises(ValueError, match=r"targets must be an integer tensor of shape \(3,\)"):
        M.ground_truth_ranks(SCORES, T([0, 1]))


def test_ir_single_relevant_at_position_3():
    scores = f([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    rel = torch.zeros(1, 6)
    rel[0, 2] = 1
    assert M.mrr_at_k(scores, rel, k=6) == pytest.approx(1 / 3)
    assert M.ndcg_at_k(scores, rel, k=5) == pytest.approx(0.5)
    assert M.recall_at_k(scores, rel, k=1) == 0.0
    assert M.recall_at_k(scores, rel, k=5) == 1.0
    assert M.ndcg_at_k(scores, rel[:, [2, 0, 1, 3, 4, 5]], k=5) == pytest.approx(1.0)  # perfect


def test_ir_graded_multi_relevant_and_skipped_queries():
    scores = f([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4]])
    rel = f([[0, 2, 1, 0], [0, 0, 0, 0]])  # second query has no relevant doc: not evaluated
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert M.ndcg_at_k(scores, rel, k=4) == pytest.approx(dcg / idcg)
    assert M.ndcg_at_k(scores, rel, k=2) == pytest.approx((2 / math.log2(3)) / idcg)
    assert M.mrr_at_k(scores, rel, k=4) == pytest.approx(0.5)
    assert M.recall_at_k(scores, rel, k=2) == pytest.approx(0.5)
    assert M.recall_at_k(scores, rel, k=3) == pytest.approx(1.0)


def test_ir_ties_cutoff_and_exclusion():
    # ties go to the lower index: relevant index 1 is at position 2
    assert M.mrr_at_k(torch.ones(1, 4), f([[0, 1, 0, 0]]), k=4) == pytest.approx(0.5)
    # relevant at position 11 -> MRR@10 = 0
    scores = -torch.arange(12, dtype=torch.float32)[None]
    rel = torch.zeros(1, 12)
    rel[0, 10] = 1
    assert M.mrr_at_k(scores, rel) == 0.0
    assert M.ndcg_at_k(scores, rel) == 0.0
    # BEIR ignore_identical_ids: the query's own doc (index 0) is never retrieved
    scores = f([[0.99, 0.5, 0.4]])
    rel = f([[0, 1, 0]])
    excl = T([[True, False, False]])
    assert M.mrr_at_k(scores, rel, k=3) == pytest.approx(0.5)
    assert M.mrr_at_k(scores, rel, k=3, exclude=excl) == pytest.approx(1.0)
    assert M.ndcg_at_k(scores, rel, k=3, exclude=excl) == pytest.approx(1.0)


def test_ir_bad_input():
    with pytest.raises(
        ValueError, match=r"k=11 is larger than the 6 candidates of scores \(shape \(1, 6\)\)"
    ):
        M.ndcg_at_k(torch.zeros(1, 6), torch.ones(1, 6), k=11)
    with pytest.raises(ValueError, match=r"relevance must have the shape of scores \(1, 6\)"):
        M.mrr_at_k(torch.zeros(1, 6), torch.ones(2, 6), k=3)
    with pytest.raises(ValueError, match="no query has a relevant document"):
        M.recall_at_k(torch.zeros(2, 3), torch.zeros(2, 3), k=1)


# ------------------------------------------------------------------- H10 MRV
def test_mean_rank_variance():
    assert M.mean_rank_variance(T([[1, 3]])) == pytest.approx(1.0)
    assert M.mean_rank_variance(T([[1, 3], [2, 2]])) == pytest.approx(0.5)
    assert M.mean_rank_variance(T([[1, 2, 6]])) == pytest.approx(14 / 3)  # mean 3: (4+1+9)/3
    assert M.mean_rank_variance(T([[4], [7]])) == 0.0  # L = 1
    with pytest.raises(ValueError, match="1-based"):
        M.mean_rank_variance(T([[0, 1]]))
    with pytest.raises(ValueError, match=r"ranks must be a non-empty 2-D tensor, got \(3,\)"):
        M.mean_rank_variance(T([1, 2, 3]))


# ------------------------------------------------------------------- H9 Spearman
def test_spearman_hand_cases():
    gold = T([1.0, 2.0, 3.0, 4.0])
    assert M.spearman_correlation(gold.exp(), gold) == pytest.approx(100.0)
    assert M.spearman_correlation(-gold, gold) == pytest.approx(-100.0)
    # d = (0, 1, -1, 0): 1 - 6*2 / (4*15) = 0.8
    assert M.spearman_correlation(T([1.0, 3.0, 2.0, 4.0]), gold) == pytest.approx(80.0)
    with pytest.warns(UserWarning, match="constant"):
        assert math.isnan(M.spearman_correlation(torch.ones(4), gold))
    with pytest.raises(ValueError, match=r"same length.*\(3,\) and \(4,\)"):
        M.spearman_correlation(T([1.0, 2.0, 3.0]), gold)


def test_sts_spearman_uses_cosine():
    e1 = f([[1, 0], [1, 0], [1, 0], [1, 0]])
    e2 = f([[1, 0], [1, 1], [0, 1], [-1, 0.1]])  # cosines descending
    assert M.sts_spearman(e1, 5 * e2, T([5.0, 3.0, 1.0, 0.0])) == pytest.approx(100.0)
    assert M.sts_spearman(e1, e2, T([5.0, 1.0, 3.0, 0.0])) == pytest.approx(80.0)
    with pytest.raises(ValueError, match=r"gold must have shape \(4,\)"):
        M.sts_spearman(e1, e2, T([1.0, 2.0]))


# ------------------------------------------------------------------- H11 zero-shot
def test_zero_shot_classifier_prompt_ensemble():
    text = f([[[2, 0], [0, 4]], [[-1, 0], [-3, 0]]])  # (C=2, T=2, d=2)
    w = M.zero_shot_classifier(text)
    s = 1 / math.sqrt(2)
    assert w.tolist() == [pytest.approx([s, s]), pytest.approx([-1.0, 0.0])]
    # a single template equals that template's (normalised) embedding
    assert M.zero_shot_classifier(f([[[0, 3]]])).tolist() == [pytest.approx([0.0, 1.0])]
    assert M.zero_shot_classifier(f([[0, 3]])).tolist() == [pytest.approx([0.0, 1.0])]


def test_zero_shot_accuracy():
    protos = f([[1, 0], [0, 1], [-1, 0]])
    assert M.zero_shot_accuracy(protos * 7, protos, T([0, 1, 2])) == 100.0
    imgs = f([[1, 0.2], [0.3, 1], [0.1, 1]])  # third: nearest is class 1, second class 0
    assert M.zero_shot_accuracy(imgs, protos, T([0, 1, 0])) == pytest.approx(200 / 3)
    assert M.zero_shot_accuracy(imgs, protos, T([0, 1, 0]), top=2) == 100.0
    assert M.zero_shot_accuracy(imgs, protos, T([0, 1, 2]), top=2) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\)"):
        M.zero_shot_accuracy(imgs, protos, T([0, 1, 3]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\), got \(2,\)"):
        M.zero_shot_accuracy(imgs, protos, T([0, 1]))
