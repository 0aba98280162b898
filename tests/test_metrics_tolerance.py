"""The tolerance metric (Wang & Liu, arXiv:2012.09740) against a plain double loop, and the
Precision@k / MAP conventions of ``metrics.retrieval`` on hand-computed trec_eval cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastkit import metrics as M


def ref_tolerance(x, labels):
    z = F.normalize(x.double(), dim=-1)
    total, count = 0.0, 0
    for i in range(z.shape[0]):
        for j in range(z.shape[0]):
            if i != j and labels[i] == labels[j]:
                total += float(z[i] @ z[j])
                count += 1
    return total / count


@pytest.mark.parametrize("seed", range(3))
def test_tolerance_matches_the_double_loop(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(17, 5, generator=g)
    labels = torch.randint(0, 4, (17,), generator=g) * 7 - 3  # any integer ids
    assert M.tolerance(x, labels) == pytest.approx(ref_tolerance(x, labels), abs=1e-12)


def test_tolerance_oracles():
    # collapsed classes: 1; antipodal pairs: -1; scale invariance; singletons do not count
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 0.5], [5.0, 5.0]])
    assert M.tolerance(x, torch.tensor([0, 0, 1, 1, 2])) == pytest.approx(1.0)
    x2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert M.tolerance(x2, torch.tensor([3, 3])) == pytest.approx(-1.0)
    g = torch.Generator().manual_seed(0)
    y, lab = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2] * 3)
    assert M.tolerance(3.5 * y, lab) == pytest.approx(M.tolerance(y, lab), abs=1e-12)
    # one class: the mean of the off-diagonal cosine matrix
    z = F.normalize(y.double(), dim=-1)
    c = z @ z.T
    want = float((c.sum() - c.diag().sum()) / (9 * 8))
    assert M.tolerance(y, torch.zeros(9, dtype=torch.long)) == pytest.approx(want, abs=1e-12)


def test_tolerance_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="labels"):
        M.tolerance(x, torch.tensor([0, 1, 2, 3]))  # no class with two samples
    with pytest.raises(ValueError, match="labels"):
        M.tolerance(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="x"):
        M.tolerance(x[0], torch.tensor([0]))
    with pytest.raises(ValueError, match="labels"):
        M.tolerance(x, torch.tensor([0.0, 0.0, 1.0, 1.0]))


def _scores_for_ranking(order, n):
    """Scores whose descending order is ``order`` (then the remaining ids)."""
    s = torch.zeros(1, n, dtype=torch.float64)
    for r, j in enumerate(order):
        s[0, j] = n - r
    return s


def test_precision_and_map_follow_trec_eval_on_hand_cases():
    # relevant at ranks 1 and 3, |Rel| = 2: AP = (1/1 + 2/3) / 2 = 5/6, P@5 = 2/5
    s = _scores_for_ranking([4, 0, 7, 1, 2, 3, 5, 6], 8)
    rel = torch.zeros(1, 8)
    rel[0, [4, 7]] = 1
    assert M.map_at_k(s, rel, k=8) == pytest.approx(5 / 6)
    assert M.precision_at_k(s, rel, k=5) == pytest.approx(2 / 5)
    # map_cut_k divides by every relevant item, retrieved or not (k = 2: (1/1) / 2)
    assert M.map_at_k(s, rel, k=2) == pytest.approx(0.5)
    # one relevant item at rank r: AP = 1 / r
    for r in range(1, 6):
        rel1 = torch.zeros(1, 8)
        rel1[0, [4, 0, 7, 1, 2][r - 1]] = 1
        assert M.map_at_k(s, rel1, k=8) == pytest.approx(1 / r)
    # perfect ranking: AP = 1, P@k = min(k, |Rel|) / k (the denominator stays k)
    perfect = torch.zeros(1, 8)
    perfect[0, [4, 0, 7]] = 1
    assert M.map_at_k(s, perfect, k=8) == pytest.approx(1.0)
    for k in (1, 3, 5, 8):
        assert M.precision_at_k(s, perfect, k=k) == pytest.approx(min(k, 3) / k)
    # ties go to the lower index: ids 2 and 5 tie, 2 is ranked first
    t = torch.tensor([[0.1, 0.2, 0.9, 0.3, 0.4, 0.9]], dtype=torch.float64)
    rel2 = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    assert M.map_at_k(t, rel2, k=6) == pytest.approx(1 / 2)
    assert M.precision_at_k(t, rel2, k=1) == pytest.approx(0.0)
