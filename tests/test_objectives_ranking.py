"""Ordering, ranking and graph objectives: GroCo, CPRD, PamC. Dense references written from the
official code (GroCo, PamC) or the method card (CPRD), oracles, gradcheck, bad input."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses.cprd import (
    PartialRankingDistillation,
    in_batch_hard_negatives,
    partial_ranking_distillation,
)
from contrastkit.losses.groco import GroCo, groco, soft_sort_permutation
from contrastkit.losses.pamc import PamC, adjacency_power, pamc

DT = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, grad=True):
    return torch.randn(*shape, generator=_gen(seed), dtype=DT).requires_grad_(grad)


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
        GroCo(steepness=0)


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
    m = PartialRankingDistillation(k=5, temperature=0.1)
    torch.testing.assert_close(m(q, t, m.mine(q, t), teacher), ref_cprd(q, t, neg, teacher, 0.1))


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


def ref_pamc_dense(z, q, adj_label, tau=1.0):
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
        got = pamc(z, q, adj, tau=0.7)
        torch.testing.assert_close(got, want)
        (g1,) = torch.autograd.grad(got, z)
        (g2,) = torch.autograd.grad(ref_pamc_dense(z, q, dense, tau=0.7), z)
        torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(PamC(tau=0.7)(z, q, Ar), want)


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
    assert torch.autograd.gradcheck(lambda a: pamc(a, q4, Ar, tau=1.3), (z,))


def test_pamc_bad_input():
    Ar, _ = _graph()
    z, q = torch.randn(10, 4, dtype=DT), torch.rand(10, 3, dtype=DT)
    with pytest.raises(ValueError, match="adjacency"):
        pamc(z, q, torch.eye(9, dtype=DT))
    with pytest.raises(ValueError, match="q must"):
        pamc(z, q[:9], Ar)
    with pytest.raises(ValueError, match="tau"):
        PamC(tau=0)
    with pytest.raises(ValueError, match="order"):
        adjacency_power(torch.eye(3), 0)
    with pytest.raises(ValueError, match="non-negative"):
        pamc(z, q, -Ar.to_dense())
