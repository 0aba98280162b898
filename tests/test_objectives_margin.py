"""Margin objectives: triplet (given triplets, batch-hard), Proto-Triplet, ICNN, max-margin
contrastive (token level, Hadsell pairs). Dense references, torch / pytorch-metric-learning
peers, paper oracles, gradcheck, module twins, reductions, aliases, bad input."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses.margin import (
    ICNN,
    BatchHardTriplet,
    MaxMarginContrastive,
    PairMarginContrastive,
    ProtoTriplet,
    TripletMargin,
    batch_hard_triplet,
    class_prototypes,
    icnn,
    icnn_score,
    max_margin_contrastive,
    pair_margin_contrastive,
    proto_triplet,
    triplet_margin,
)

import peers


def rnd(*shape, seed=0, dtype=torch.float64, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)


def labels(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, k, (n,), generator=g)
    lab[-1] = 1000  # a singleton: no positive, left out of batch-hard
    return lab


# ------------------------------------------------------------------------------------------
# dense references
# ------------------------------------------------------------------------------------------
def ref_batch_hard(x, y, margin, squared=False, soft=False, normalize=False, eps=1e-6):
    """Full distance matrix, loops over anchors (the obvious way)."""
    x = F.normalize(x, dim=-1) if normalize else x
    n = x.shape[0]
    D = torch.stack([F.pairwise_distance(x[i : i + 1].expand(n, -1), x, eps=eps) for i in range(n)])
    if squared:
        D = D * D
    out = []
    for i in range(n):
        pos = [j for j in range(n) if j != i and y[j] == y[i]]
        neg = [j for j in range(n) if y[j] != y[i]]
        if not pos or not neg:
            continue
        v = D[i, pos].max() - D[i, neg].min() + margin
        out.append(F.softplus(v) if soft else F.relu(v))
    return torch.stack(out).mean()


def ref_icnn_score(X, y, T=None, yT=None, k=4, ipc=None):
    """Row-by-row transcription of the official ``modified_score`` (Python loops over rows and
    neighbours)."""
    T = X if T is None else T
    yT = y if yT is None else yT
    m = T.shape[0]
    full_gamma = k + 2 >= m
    k = m - 2 if full_gamma else k
    ipc = k + 1 if ipc is None else ipc
    eps = 1e-7
    n = X.shape[0]
    D = ((X[:, None] - T[None]).pow(2).sum(-1) + 1e-6).sqrt()
    sc_terms, dc_terms, sc_rows, dc_rows, gam = [], [], 0, 0, []
    dcnd_all, dc_flags = [], []
    rows = []
    for i in range(n):
        order = torch.argsort(D[i])[: ipc + 1][1:]
        d = D[i, order]
        same = [bool(yT[j] == y[i]) for j in order]
        dc_d = [d[j] for j in range(ipc) if not same[j]]
        nn_dc = min(dc_d) if dc_d else torch.tensor(math.inf, dtype=D.dtype)
        nd = d[:k] / (nn_dc + eps)
        nd = nd / torch.clamp(nd.max(), min=1.0)
        rows.append((d, same, nd))
    for d, same, nd in rows:
        sc_c = sum(same[:k])
        sc_terms.append(sum(nd[j] for j in range(k) if same[j]) / (sc_c + eps) if sc_c else 0.0)
        sc_rows += sc_c > 0
        dcnd_all.append(torch.stack([d[j] * (0.0 if same[j] else 1.0) for j in range(k)]))
        dc_flags.append([not s for s in same[:k]])
        gam.append(sc_c / k)
    sc_lambda = 1 - sum(sc_terms) / (sc_rows + eps)
    dcnd = torch.stack(dcnd_all)
    dcnd = dcnd / (dcnd.max() + eps)
    for i, flags in enumerate(dc_flags):
        c = sum(flags)
        dc_terms.append(dcnd[i].sum() / (c + eps))
        dc_rows += c > 0
    any_dc = any(any(f) for f in dc_flags)
    dc_lambda = abs(sum(dc_terms) / (dc_rows + eps) + (0.0 if any_dc else -1.0))
    gamma = 1.0 if full_gamma else sum(gam) / n
    return ((sc_lambda + dc_lambda) / 2 + gamma) / 2


# ------------------------------------------------------------------------------------------
# triplet
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("margin", [1.0, 0.2])
def test_triplet_equals_torch(p, swap, margin):
    a, pos, neg = rnd(9, 5, seed=1), rnd(9, 5, seed=2), rnd(9, 5, seed=3)
    want = torch.nn.TripletMarginLoss(margin=margin, p=p, swap=swap, reduction="none")(a, pos, neg)
    got = triplet_margin(a, pos, neg, margin=margin, p=p, swap=swap, reduction="none")
    torch.testing.assert_close(got, want)
    for g, w in zip(
        torch.autograd.grad(got.sum(), (a, pos, neg)),
        torch.autograd.grad(want.sum(), (a, pos, neg)),
    ):
        torch.testing.assert_close(g, w)
    module = TripletMargin(margin=margin, p=p, swap=swap)
    torch.testing.assert_close(module(a, pos, neg), want.mean())


def test_triplet_variants_closed_forms():
    a, pos, neg = rnd(6, 4, seed=1), rnd(6, 4, seed=2), rnd(6, 4, seed=3)
    an, pn, nn = (F.normalize(x, dim=-1) for x in (a, pos, neg))
    dap, dan = (an - pn).pow(2).sum(-1), (an - nn).pow(2).sum(-1)
    # FaceNet: squared distances on normalised embeddings, margin 0.2 (eps = 0: exact form)
    got = triplet_margin(a, pos, neg, margin=0.2, squared=True, normalize=True, eps=0.0)
    torch.testing.assert_close(got, F.relu(dap - dan + 0.2).mean())
    got = triplet_margin(a, pos, neg, margin=0.0, soft=True, eps=0.0, reduction="sum")
    torch.testing.assert_close(
        got, F.softplus((a - pos).norm(dim=-1) - (a - neg).norm(dim=-1)).sum()
    )
    # identical embeddings: the margin
    same = rnd(1, 4).detach().expand(5, 4)
    assert math.isclose(float(triplet_margin(same, same, same, margin=0.7)), 0.7, rel_tol=1e-12)


@pytest.mark.parametrize(
    "kw", [{}, {"squared": True}, {"soft": True, "margin": 0.0}, {"normalize": True, "margin": 0.3}]
)
def test_batch_hard_matches_dense_reference(kw):
    x, y = rnd(23, 6, seed=4), labels(23, 4, seed=4)
    want = ref_batch_hard(
        x,
        y,
        margin=kw.get("margin", 1.0),
        squared=kw.get("squared", False),
        soft=kw.get("soft", False),
        normalize=kw.get("normalize", False),
    )
    want_g = torch.autograd.grad(want, x)[0]
    for chunk in (None, 1, 4, 100):
        got = batch_hard_triplet(x, y, chunk_size=chunk, **kw)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(torch.autograd.grad(got, x)[0], want_g)
    rows = batch_hard_triplet(x, y, reduction="none", **kw)
    assert rows.shape == (23,) and float(rows[-1].detach()) == 0.0
    torch.testing.assert_close(rows.sum(), batch_hard_triplet(x, y, reduction="sum", **kw))
    module = BatchHardTriplet(chunk_size=5, **kw)
    torch.testing.assert_close(module(x, y), want)


def test_batch_hard_degenerate():
    x = rnd(5, 3)
    # every label distinct: no positives -> 0 with a (zero) gradient
    loss = batch_hard_triplet(x, torch.arange(5))
    assert float(loss.detach()) == 0.0
    assert float(torch.autograd.grad(loss, x)[0].abs().sum()) == 0.0
    # identical embeddings: the margin
    same = rnd(1, 3).detach().expand(6, 3)
    got = batch_hard_triplet(same, torch.tensor([0, 0, 1, 1, 2, 2]), margin=0.4)
    assert math.isclose(float(got), 0.4, rel_tol=1e-12)


def test_batch_hard_peer_pytorch_metric_learning():
    """pml TripletMarginLoss + BatchHardMiner: normalised embeddings (LpDistance default), no
    eps in the distance; pml averages over non-zero losses by default, so MeanReducer is used."""
    pml = peers.require("pml_losses")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorch_metric_learning import miners, reducers
    x = rnd(32, 8, seed=5, dtype=torch.float32)
    y = labels(32, 5, seed=5)
    for margin in (0.05, 0.2, 1.0):
        loss_fn = pml.TripletMarginLoss(margin=margin, reducer=reducers.MeanReducer())
        want = loss_fn(x, y, miners.BatchHardMiner()(x, y))
        got = batch_hard_triplet(x, y, margin=margin, normalize=True, eps=0.0, chunk_size=7)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        gw, gg = torch.autograd.grad(want, x)[0], torch.autograd.grad(got, x)[0]
        torch.testing.assert_close(gg, gw, rtol=1e-4, atol=1e-6)
    # smooth loss = softplus with the margin inside
    loss_fn = pml.TripletMarginLoss(margin=0.1, smooth_loss=True, reducer=reducers.MeanReducer())
    want = loss_fn(x, y, miners.BatchHardMiner()(x, y))
    got = batch_hard_triplet(x, y, margin=0.1, soft=True, normalize=True, eps=0.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_batch_hard_scales_without_n_squared_memory():
    """N = 1200 mined in blocks of 100 rows (never the N x N matrix): checked against the dense
    computation for a few anchors."""
    x = rnd(1200, 16, seed=6, dtype=torch.float32, grad=False)
    y = torch.randint(0, 50, (1200,), generator=torch.Generator().manual_seed(0))
    rows = batch_hard_triplet(x, y, reduction="none", chunk_size=100, margin=0.5)
    for i in (0, 555, 1199):
        d = torch.cdist(x[i : i + 1], x)[0]
        same = y == y[i]
        same[i] = False
        want = F.relu(d[same].max() - d[y != y[i]].min() + 0.5)
        torch.testing.assert_close(rows[i], want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------
# Proto-Triplet and ICNN
# ------------------------------------------------------------------------------------------
def test_proto_triplet_dense_reference_and_oracles():
    q, protos = rnd(10, 5, seed=1), rnd(4, 5, seed=2)
    ql = labels(10, 4, seed=1) % 4
    D = ((q[:, None] - protos[None]).pow(2).sum(-1) + 1e-6).sqrt()
    want = []
    for i in range(10):
        others = [c for c in range(4) if c != ql[i]]
        want.append(F.relu(D[i, ql[i]] - D[i, others].min() + 0.5))
    want = torch.stack(want)
    torch.testing.assert_close(proto_triplet(q, ql, protos, reduction="none"), want)
    torch.testing.assert_close(ProtoTriplet()(q, ql, protos), want.mean())
    # queries on their prototypes, others farther than the margin: 0
    centres = 10.0 * torch.eye(3, 4, dtype=torch.float64)
    assert float(proto_triplet(centres, torch.arange(3), centres)) == 0.0
    # way = 1: no negative prototype -> 0
    assert float(proto_triplet(q, torch.zeros(10, dtype=torch.long), protos[:1]).detach()) == 0.0
    # custom prototype labels: a permutation of the prototypes with relabelled classes
    perm = torch.tensor([2, 0, 3, 1])
    got = proto_triplet(q, ql, protos[perm], perm, reduction="none")
    torch.testing.assert_close(got, want)


def test_class_prototypes():
    s = rnd(6, 3, grad=False)
    lab = torch.tensor([0, 1, 0, 2, 1, 2])
    P = class_prototypes(s, lab)
    torch.testing.assert_close(P[1], (s[1] + s[4]) / 2)
    with pytest.raises(ValueError, match="classes without support"):
        class_prototypes(s, lab, way=4)


@pytest.mark.parametrize("n,k,seed", [(15, 4, 0), (12, 3, 1), (6, 4, 2), (20, 2, 3)])
def test_icnn_matches_row_loop_reference(n, k, seed):
    x, y = rnd(n, 4, seed=seed), labels(n, 3, seed=seed) % 3
    want = ref_icnn_score(x, y, k=k)
    got = icnn_score(x, y, k=k)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0])
    assert 0.0 < float(got) <= 1.0
    torch.testing.assert_close(icnn(x, y, k=k), -torch.log(want))


def test_icnn_query_against_prototypes_and_ipc():
    q, protos = rnd(8, 4, seed=1), rnd(6, 4, seed=2)
    ql, pl = labels(8, 6, seed=1) % 6, torch.arange(6)
    torch.testing.assert_close(
        icnn_score(q, ql, protos, pl, k=2), ref_icnn_score(q, ql, protos, pl, k=2)
    )
    x, y = rnd(16, 4, seed=3), labels(16, 4, seed=3) % 4
    torch.testing.assert_close(icnn_score(x, y, k=3, ipc=6), ref_icnn_score(x, y, k=3, ipc=6))
    torch.testing.assert_close(ICNN(k=3, ipc=6)(x, y), -torch.log(ref_icnn_score(x, y, k=3, ipc=6)))


def test_icnn_separated_classes_score_one():
    """Paper oracle: no different-class sample among any row's ipc nearest neighbours ->
    sc_lambda = dc_lambda = gamma = 1, loss 0 (up to the official eps terms)."""
    g = torch.Generator().manual_seed(0)
    centres = 100.0 * torch.eye(3, 4, dtype=torch.float64)
    x = torch.cat([c + 0.01 * torch.randn(6, 4, generator=g, dtype=torch.float64) for c in centres])
    y = torch.arange(3).repeat_interleave(6)
    assert abs(float(icnn(x, y, k=4))) < 1e-5
    # shuffled labels: clearly worse
    assert float(icnn(x, y[torch.randperm(18, generator=g)], k=4)) > 0.1


def test_icnn_gradcheck():
    x, y = rnd(9, 3, seed=4), labels(9, 3, seed=4) % 3
    assert torch.autograd.gradcheck(lambda x: icnn(x, y, k=3), (x,), eps=1e-7, atol=1e-5)


# ------------------------------------------------------------------------------------------
# max-margin contrastive
# ------------------------------------------------------------------------------------------
def test_max_margin_token_level_closed_forms():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.randint(0, 11, (3, 6), generator=g)
    # equal positive and negative: margin per token, alpha times
    assert math.isclose(
        float(max_margin_contrastive(logits, pos, pos, margin=0.7, alpha=2.0)), 1.4, rel_tol=1e-12
    )
    # hand-built NLLs, truncation to the shorter target and ignore_index (padding) = NLL 0
    neg = torch.randint(0, 11, (3, 4), generator=g)
    neg[0, 3] = -100
    logp = torch.log_softmax(logits, dim=-1)
    want = 0
    for b in range(3):
        for t in range(4):
            nll_p = -logp[b, t, pos[b, t]]
            nll_n = 0.0 if neg[b, t] == -100 else -logp[b, t, neg[b, t]]
            want = want + F.relu(1.0 + nll_p - nll_n)
    want = want / 12
    got = max_margin_contrastive(logits, pos, neg)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(MaxMarginContrastive()(logits, pos, neg), want)
    small = logits[:2, :3, :5].detach().clone().requires_grad_()
    pos_s, neg_s = pos[:2, :3] % 5, neg[:2, :2] % 5
    assert torch.autograd.gradcheck(lambda lg: max_margin_contrastive(lg, pos_s, neg_s), (small,))


def test_pair_margin_contrastive_closed_form():
    x1, x2 = rnd(6, 3, seed=1), rnd(6, 3, seed=2)
    ydis = torch.tensor([0, 1, 0, 1, 1, 0])
    d = (x1 - x2).norm(dim=-1)
    want = torch.where(ydis == 0, 0.5 * d**2, 0.5 * F.relu(2.0 - d) ** 2)
    torch.testing.assert_close(
        pair_margin_contrastive(x1, x2, ydis, margin=2.0, reduction="none"), want
    )
    torch.testing.assert_close(PairMarginContrastive(margin=2.0)(x1, x2, ydis), want.mean())
    # identical similar pair: 0 with a finite gradient; identical dissimilar pair: m^2 / 2
    same = rnd(2, 3, seed=3)
    loss = pair_margin_contrastive(same, same.detach(), torch.tensor([0, 1]), reduction="none")
    torch.testing.assert_close(loss, torch.tensor([0.0, 0.5], dtype=torch.float64))
    assert torch.isfinite(torch.autograd.grad(loss.sum(), same)[0]).all()


# ------------------------------------------------------------------------------------------
# gradcheck and bad input
# ------------------------------------------------------------------------------------------
def test_gradchecks():
    a, p, n = rnd(4, 3, seed=1), rnd(4, 3, seed=2), rnd(4, 3, seed=3)
    assert torch.autograd.gradcheck(
        lambda a, p, n: triplet_margin(a, p, n, swap=True, margin=5.0), (a, p, n)
    )
    x, y = rnd(8, 3, seed=4), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    assert torch.autograd.gradcheck(
        lambda x: batch_hard_triplet(x, y, margin=5.0, chunk_size=3), (x,)
    )
    assert torch.autograd.gradcheck(
        lambda x: batch_hard_triplet(x, y, soft=True, normalize=True), (x,)
    )
    q, protos = rnd(5, 3, seed=5), rnd(3, 3, seed=6)
    ql = torch.tensor([0, 1, 2, 0, 1])
    assert torch.autograd.gradcheck(lambda q, p: proto_triplet(q, ql, p, margin=5.0), (q, protos))
    ydis = torch.tensor([0, 1, 1, 0])
    assert torch.autograd.gradcheck(
        lambda a, b: pair_margin_contrastive(a, b, ydis, margin=5.0), (a, p)
    )


def r(*shape):
    return torch.randn(*shape)


BAD = [
    ("margin", lambda: triplet_margin(r(3, 2), r(3, 2), r(3, 2), margin=-1.0)),
    ("negative must have as many rows", lambda: triplet_margin(r(3, 2), r(3, 2), r(4, 2))),
    ("p must be > 0", lambda: triplet_margin(r(3, 2), r(3, 2), r(3, 2), p=0.0)),
    ("labels must have shape (5,)", lambda: batch_hard_triplet(r(5, 2), torch.zeros(4).long())),
    ("integer class ids", lambda: batch_hard_triplet(r(5, 2), torch.zeros(5))),
    ("NaN", lambda: batch_hard_triplet(torch.full((3, 2), float("nan")), torch.zeros(3).long())),
    ("chunk_size", lambda: batch_hard_triplet(r(3, 2), torch.zeros(3).long(), chunk_size=0)),
    ("margin must be >= 0", lambda: TripletMargin(margin=-1.0)(r(3, 2), r(3, 2), r(3, 2))),
    ("chunk_size", lambda: BatchHardTriplet(chunk_size=0)),
    ("have no prototype", lambda: proto_triplet(r(3, 2), torch.tensor([0, 1, 5]), r(2, 2))),
    ("feature dimension", lambda: proto_triplet(r(3, 2), torch.zeros(3).long(), r(2, 3))),
    ("at least 3 rows", lambda: icnn(r(2, 2), torch.tensor([0, 1]))),
    ("ipc", lambda: icnn(r(6, 2), torch.zeros(6).long(), k=2, ipc=9)),
    ("k must be a positive integer", lambda: ICNN(k=0)(r(6, 2), torch.zeros(6).long())),
    ("target_labels is required", lambda: icnn(r(6, 2), torch.zeros(6).long(), r(5, 2))),
    (
        "logits must be",
        lambda: max_margin_contrastive(r(3, 4), torch.zeros(3, 4).long(), torch.zeros(3, 4).long()),
    ),
    (
        "same length",
        lambda: max_margin_contrastive(
            r(2, 4, 5), torch.zeros(2, 3).long(), torch.zeros(2, 3).long()
        ),
    ),
    (
        "negative must be an integer tensor",
        lambda: max_margin_contrastive(r(2, 4, 5), torch.zeros(2, 4).long(), torch.zeros(2, 4)),
    ),
    (
        "dissimilar must hold 0",
        lambda: pair_margin_contrastive(r(3, 2), r(3, 2), torch.tensor([0, 2, 1])),
    ),
    (
        "dissimilar must be a tensor of shape (3,)",
        lambda: pair_margin_contrastive(r(3, 2), r(3, 2), torch.tensor([0, 1])),
    ),
]


@pytest.mark.parametrize("needle,call", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_named_error(needle, call):
    with pytest.raises(ValueError) as err:
        call()
    assert needle in str(err.value)


# ------------------------------------------------------------------------------------------
# module twins, reductions, aliases
# ------------------------------------------------------------------------------------------
def _inputs(name):
    """(positional inputs, options) of each objective: small float64 inputs with gradients."""
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 5])
    if name == "triplet_margin":
        return [rnd(8, 4, seed=1), rnd(8, 4, seed=2), rnd(8, 4, seed=3)], {"swap": True}
    if name == "batch_hard_triplet":
        return [rnd(8, 4, seed=4), y], {"margin": 3.0, "chunk_size": 3}
    if name == "proto_triplet":
        return [rnd(8, 4, seed=5), y % 3, rnd(3, 4, seed=6)], {"margin": 2.0}
    if name == "icnn":
        return [rnd(8, 4, seed=7), y % 3], {"k": 3}
    if name == "max_margin_contrastive":
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(3, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
        pos, neg = (
            torch.randint(0, 7, (3, 5), generator=g),
            torch.randint(0, 7, (3, 4), generator=g),
        )
        neg[1, 2] = -100
        return [logits, pos, neg], {"margin": 2.0, "alpha": 0.5}
    if name == "pair_margin_contrastive":
        return [rnd(8, 4, seed=8), rnd(8, 4, seed=9), y % 2], {"margin": 3.0}
    raise KeyError(name)


TWINS = {
    "triplet_margin": (triplet_margin, TripletMargin),
    "batch_hard_triplet": (batch_hard_triplet, BatchHardTriplet),
    "proto_triplet": (proto_triplet, ProtoTriplet),
    "icnn": (icnn, ICNN),
    "max_margin_contrastive": (max_margin_contrastive, MaxMarginContrastive),
    "pair_margin_contrastive": (pair_margin_contrastive, PairMarginContrastive),
}
PER_ROW = [n for n in TWINS if n != "icnn"]  # ICNN is one batch-level score: no reduction


@pytest.mark.parametrize("name", list(TWINS))
def test_module_twin_equals_functional(name):
    fn, Module = TWINS[name]
    assert Module.functional is fn
    inputs, opts = _inputs(name)
    leaves = [x for x in inputs if x.is_floating_point()]
    want = fn(*inputs, **opts)
    got = Module(**opts)(*inputs)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for g, w in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(want, leaves)):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    # a keyword argument of forward overrides the module's option for that call
    other = {"k": 2} if name == "icnn" else {"margin": 0.5}
    torch.testing.assert_close(Module(**opts)(*inputs, **other), fn(*inputs, **{**opts, **other}))


@pytest.mark.parametrize("name", PER_ROW)
def test_reductions(name):
    fn, Module = TWINS[name]
    inputs, opts = _inputs(name)
    rows = fn(*inputs, **opts, reduction="none")
    assert rows.dim() >= 1 and rows.shape[0] == inputs[0].shape[0]
    total = fn(*inputs, **opts, reduction="sum")
    torch.testing.assert_close(rows.sum(), total)
    mean = fn(*inputs, **opts)
    if name == "batch_hard_triplet":  # the mean over the anchors with a positive and a negative
        torch.testing.assert_close(mean, total / 7)
    else:
        torch.testing.assert_close(mean, rows.mean())
    torch.testing.assert_close(Module(**opts, reduction="sum")(*inputs), total)
    with pytest.raises(ValueError, match="reduction"):
        Module(reduction="avg")


def test_max_margin_rows_are_tokens():
    (logits, pos, neg), opts = _inputs("max_margin_contrastive")
    rows = max_margin_contrastive(logits, pos, neg, reduction="none", **opts)
    assert rows.shape == (3, 4)  # B x min(T, T')


def test_aliases_are_the_same_objects():
    import contrastkit as ck
    import contrastkit.functional as CF
    import contrastkit.losses as CL
    from contrastkit.losses.margin import ICNNLoss, icnn_loss
    from contrastkit.objective import REGISTRY

    assert icnn_loss is icnn and ICNNLoss is ICNN
    assert CF.icnn_loss is icnn and CL.ICNNLoss is ICNN and ck.ICNNLoss is ICNN
    entry = REGISTRY["icnn"]
    assert entry.family == "margin" and entry.module is ICNN
    assert entry.functional_aliases == ("icnn_loss",) and entry.module_aliases == ("ICNNLoss",)
    for name, (fn, Module) in TWINS.items():
        assert REGISTRY[name].functional is fn and REGISTRY[name].module is Module
        assert REGISTRY[name].family == "margin"
        assert getattr(ck, Module.__name__) is Module and getattr(CF, name) is fn


def test_exactness_is_declared():
    exact = {
        "triplet_margin",
        "batch_hard_triplet",
        "pair_margin_contrastive",
        "max_margin_contrastive",
    }
    for name, (fn, _) in TWINS.items():
        assert fn.exact_under_group is (name in exact), name


def test_triplet_margin_has_no_mining_mode():
    """Batch-hard mining is its own objective (BatchHardTriplet): TripletMargin's forward always
    takes (anchor, positive, negative)."""
    with pytest.raises(TypeError, match="mining"):
        TripletMargin(mining="batch_hard")
    with pytest.raises(TypeError):
        TripletMargin()(r(3, 2), r(3, 2))
    with pytest.raises(TypeError, match="swap"):
        BatchHardTriplet(swap=True)
    x, y = rnd(12, 3, seed=2), torch.arange(4).repeat(3)
    torch.testing.assert_close(
        BatchHardTriplet(margin=0.3)(x, y), batch_hard_triplet(x, y, margin=0.3)
    )


def test_doc_example_runs():
    import pathlib
    import re

    page = pathlib.Path(__file__).parents[1] / "docs" / "objectives" / "margin.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, str(page), "exec"), namespace)
        assert torch.isfinite(namespace["loss"])
