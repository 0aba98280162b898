"""contrastkit.memory: queue, momentum encoder, cross-batch memory, DyCE and OpTA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.losses.infonce.info_nce import InfoNCE
from contrastkit.memory import (
    CrossBatchMemory,
    DynamicClusteredMemory,
    MomentumEncoder,
    Queue,
    momentum_schedule,
    momentum_update,
    optimal_transport_align,
    sinkhorn_equipartition,
)

import peers


def _lightly(module: str):
    """A lightly module (scheduler, model utils) as a peer, or skip."""
    import importlib
    import warnings

    reason = peers.ensure_torchvision()
    if reason is not None:
        pytest.skip(reason)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"{module} import failed: {exc}")


# ----------------------------------------------------------------------------------------- Queue


def _batches(sizes, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out, start = [], 0
    for n in sizes:
        # row r of the stream has first coordinate r, so every key is identifiable
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        x[:, 0] = torch.arange(start, start + n, dtype=torch.float64)
        out.append(x)
        start += n
    return out


def _stream_reference(batches, size):
    """The queue is the newest `size` rows of the concatenated stream, oldest first."""
    return torch.cat(batches)[-size:]


@pytest.mark.parametrize("sizes", [[2, 3, 4, 1, 5], [7], [10, 1], [3, 3, 3, 3], [1] * 13])
def test_queue_order_and_wrap_around(sizes):
    K = 7
    q = Queue(K, 3, labels=True, indices=True, dtype=torch.float64)
    seen = []
    assert len(q) == 0 and q.keys.shape == (0, 3) and not q.is_full
    for b in _batches(sizes):
        ids = b[:, 0].long()
        q.enqueue(b, labels=ids % 3, indices=ids)
        seen.append(b)
        want = _stream_reference(seen, K)
        assert len(q) == want.shape[0] == min(K, sum(x.shape[0] for x in seen))
        assert q.is_full == (len(q) == K)
        torch.testing.assert_close(q.keys, want, rtol=0, atol=0)
        assert torch.equal(q.indices, want[:, 0].long())
        assert torch.equal(q.labels, want[:, 0].long() % 3)
        # MoCo oracle (c): pointer = number of rows written mod K
        assert q.ptr == sum(min(x.shape[0], K) for x in seen) % K


def test_queue_keys_are_a_detached_snapshot():
    q = Queue(4, 2)
    x = torch.randn(4, 2, requires_grad=True)
    q.enqueue(x * 2)
    snap = q.keys
    assert not snap.requires_grad
    q.enqueue(torch.zeros(2, 2))
    assert torch.equal(snap, (x * 2).detach())  # taken before the enqueue, unchanged


def test_queue_random_init_unit_norm_and_seeded():
    a = Queue(16, 5).random_init(torch.Generator().manual_seed(3))
    b = Queue(16, 5).random_init(torch.Generator().manual_seed(3))
    assert a.is_full and len(a) == 16 and a.ptr == 0
    torch.testing.assert_close(a.keys.norm(dim=1), torch.ones(16))
    assert torch.equal(a.keys, b.keys)
    a.enqueue(torch.ones(3, 5))  # the oldest (random) rows go first
    assert torch.equal(a.keys[-3:], torch.ones(3, 5))
    assert torch.equal(a.keys[:-3], b.keys[3:])


def test_queue_state_dict_round_trip():
    q = Queue(6, 4, labels=True, indices=True)
    for b in _batches([4, 5], d=4):
        q.enqueue(b.float(), labels=b[:, 0].long(), indices=b[:, 0].long() + 100)
    r = Queue(6, 4, labels=True, indices=True)
    r.load_state_dict(q.state_dict())
    assert torch.equal(r.keys, q.keys) and torch.equal(r.labels, q.labels)
    assert torch.equal(r.indices, q.indices) and r.ptr == q.ptr and len(r) == len(q)
    nxt = torch.randn(2, 4)
    q.enqueue(nxt, labels=torch.zeros(2, dtype=torch.long), indices=torch.ones(2, dtype=torch.long))
    r.enqueue(nxt, labels=torch.zeros(2, dtype=torch.long), indices=torch.ones(2, dtype=torch.long))
    assert torch.equal(r.keys, q.keys) and torch.equal(r.indices, q.indices)


def test_queue_bad_input():
    q = Queue(8, 4, labels=True)
    with pytest.raises(ValueError, match="dim=4"):
        q.enqueue(torch.randn(2, 5), labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels is required"):
        q.enqueue(torch.randn(2, 4))
    with pytest.raises(ValueError, match="labels must have shape"):
        q.enqueue(torch.randn(2, 4), labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        q.enqueue(torch.randn(2, 4), labels=torch.zeros(2))
    with pytest.raises(ValueError, match="indices were given"):
        q.enqueue(
            torch.randn(2, 4),
            labels=torch.zeros(2, dtype=torch.long),
            indices=torch.zeros(2, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="NaN"):
        q.enqueue(torch.full((2, 4), float("nan")), labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="size"):
        Queue(0, 4)
    with pytest.raises(ValueError, match="dim"):
        Queue(4, -1)
    with pytest.raises(ValueError, match="divide size=8"):
        Queue(8, 4, require_divisible=True).enqueue(torch.randn(3, 4))
    assert len(q) == 0  # nothing half-written


@pytest.mark.parametrize("backend", ["dense", "tiled"])
def test_queue_keys_as_infonce_negatives_match_dense_reference(backend):
    """InfoNCE(q, k, queue.keys): candidates are the keys of the batch plus the queue snapshot
    taken before this step's enqueue (MoCo order)."""
    g = torch.Generator().manual_seed(0)
    N, d, K, tau = 6, 8, 10, 0.2
    queue = Queue(K, d, dtype=torch.float64).random_init(g)
    enc = MomentumEncoder(nn.Linear(d, d, dtype=torch.float64), 0.9)
    for _step in range(3):  # a few MoCo-style steps so the queue holds real keys
        x = torch.randn(N, d, generator=g, dtype=torch.float64)
        q = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
        k = F.normalize(enc(x), dim=1)
        neg = queue.keys
        loss = InfoNCE(temperature=tau, backend=backend, chunk_size=4)(q, k, neg)
        qn = F.normalize(q, dim=1)
        logits = qn @ torch.cat([k, neg]).T / tau  # dense reference: N x (N + K)
        want = F.cross_entropy(logits, torch.arange(N))
        torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
        gq, gw = torch.autograd.grad(loss, q)[0], torch.autograd.grad(want, q)[0]
        torch.testing.assert_close(gq, gw, rtol=1e-9, atol=1e-11)
        queue.enqueue(k)
        assert torch.equal(queue.keys[-N:], k)
        torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(K, dtype=torch.float64))


# ------------------------------------------------------------------------------ MomentumEncoder


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2, dtype=torch.float64)
        self.bn = nn.BatchNorm1d(2, dtype=torch.float64)

    def forward(self, x):
        return self.bn(self.lin(x))


def _set_params(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_momentum_encoder_ema_arithmetic_step_by_step():
    online = _Net()
    _set_params(online, 0)
    m = 0.9
    ema = MomentumEncoder(online, m)
    assert all(not p.requires_grad for p in ema.parameters())
    # hand-computed sequence on one scalar: xi_0 = theta_0; xi_t = m xi_{t-1} + (1-m) theta_t
    thetas = [float(online.lin.weight[1, 2].detach())]
    xi = thetas[0]
    for t in range(1, 5):
        _set_params(online, t)
        thetas.append(float(online.lin.weight[1, 2].detach()))
        used = ema.update(online)
        assert used == m
        xi = m * xi + (1 - m) * thetas[-1]
        assert math.isclose(
            float(ema.encoder.lin.weight[1, 2].detach()), xi, rel_tol=1e-14, abs_tol=1e-15
        )
    # closed form of the same recursion
    closed = m**4 * thetas[0] + sum((1 - m) * m ** (4 - t) * thetas[t] for t in range(1, 5))
    assert math.isclose(xi, closed, rel_tol=1e-12)
    assert int(ema.num_updates) == 4


def test_momentum_update_every_parameter_and_buffer_modes():
    online = _Net()
    _set_params(online, 1)
    for mode in ("copy", "ema", "keep"):
        target = MomentumEncoder(online, 0.5, buffers=mode)
        old = {k: v.clone() for k, v in target.encoder.state_dict().items()}
        with torch.no_grad():
            online.bn.running_mean.fill_(2.0)
            online.bn.num_batches_tracked.fill_(7)
        _set_params(online, 2)
        target.update(online)
        new = target.encoder.state_dict()
        for name, p in online.named_parameters():  # oracle (a): every parameter exactly
            torch.testing.assert_close(new[name], 0.5 * old[name] + 0.5 * p.detach())
        want_mean = {
            "copy": torch.full((2,), 2.0, dtype=torch.float64),
            "ema": 0.5 * old["bn.running_mean"] + 1.0,
            "keep": old["bn.running_mean"],
        }[mode]
        torch.testing.assert_close(new["bn.running_mean"], want_mean)
        assert int(new["bn.num_batches_tracked"]) == (0 if mode == "keep" else 7)
        with torch.no_grad():
            online.bn.running_mean.zero_()
            online.bn.num_batches_tracked.zero_()


def test_momentum_extremes_and_no_grad():
    online = _Net()
    _set_params(online, 0)
    frozen = MomentumEncoder(online, 1.0)
    copy_ = MomentumEncoder(online, 0.0)
    before = frozen.encoder.lin.weight.clone()
    _set_params(online, 5)
    frozen.update(online)
    copy_.update(online)
    assert torch.equal(frozen.encoder.lin.weight, before)
    assert torch.equal(copy_.encoder.lin.weight, online.lin.weight)
    out = copy_(torch.randn(4, 3, dtype=torch.float64))
    assert not out.requires_grad  # oracle (e): no gradient reaches the key encoder


def test_momentum_schedules():
    assert momentum_schedule(123, 0.99) == 0.99
    K, m0 = 10, 0.996
    enc = MomentumEncoder(nn.Linear(2, 2), m0, schedule="cosine", total_steps=K)
    vals = [enc.momentum_at(k) for k in range(K + 3)]
    for k, v in enumerate(vals):
        want = 1 - (1 - m0) * (math.cos(math.pi * min(k, K) / K) + 1) / 2
        assert math.isclose(v, want, rel_tol=0, abs_tol=1e-15)
    assert vals[0] == m0 and vals[K] == 1.0 and vals[-1] == 1.0
    assert all(a <= b for a, b in zip(vals, vals[1:]))
    half = momentum_schedule(5, 0.9, schedule="cosine", total_steps=10, final_momentum=0.99)
    assert math.isclose(half, (0.9 + 0.99) / 2, rel_tol=1e-14)
    # update() uses the internal counter when no step is given, the given step otherwise
    online = nn.Linear(2, 2)
    assert enc.update(online) == vals[0] and enc.update(online) == vals[1]
    assert enc.update(online, step=7) == vals[7] and int(enc.num_updates) == 8
    assert enc.update(online) == vals[8]


def test_momentum_schedule_matches_lightly_cosine_schedule():
    sched = _lightly("lightly.utils.scheduler")
    K, m0 = 50, 0.99
    for k in range(K + 1):
        # lightly's schedule reaches end_value at step max_steps - 1
        want = sched.cosine_schedule(k, K + 1, m0, 1.0)
        got = momentum_schedule(k, m0, schedule="cosine", total_steps=K)
        assert math.isclose(got, want, rel_tol=0, abs_tol=1e-12)


def test_momentum_update_matches_lightly_update_momentum():
    mod = _lightly("lightly.models.utils")
    online = _Net()
    _set_params(online, 3)
    ours = MomentumEncoder(online, 0.7, buffers="keep")
    theirs = MomentumEncoder(online, 0.7, buffers="keep").encoder  # same start
    for seed in range(4, 8):
        _set_params(online, seed)
        ours.update(online)
        mod.update_momentum(online, theirs, 0.7)
    for a, b in zip(ours.encoder.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)


def test_momentum_state_dict_round_trip_and_bad_input():
    online = _Net()
    _set_params(online, 0)
    a = MomentumEncoder(online, 0.99, schedule="cosine", total_steps=100)
    for s in range(3):
        _set_params(online, s + 1)
        a.update(online)
    b = MomentumEncoder(_Net(), 0.99, schedule="cosine", total_steps=100)
    b.load_state_dict(a.state_dict())
    assert int(b.num_updates) == 3
    _set_params(online, 9)
    a.update(online)
    b.update(online)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)

    with pytest.raises(ValueError, match="momentum"):
        MomentumEncoder(online, 1.5)
    with pytest.raises(ValueError, match="total_steps"):
        MomentumEncoder(online, schedule="cosine")
    with pytest.raises(ValueError, match="schedule"):
        MomentumEncoder(online, schedule="linear")
    with pytest.raises(ValueError, match="buffers"):
        MomentumEncoder(online, buffers="avg")
    with pytest.raises(ValueError, match="step"):
        a.momentum_at(-1)
    with pytest.raises(ValueError, match="does not match"):
        a.update(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(2)))
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(_Net(), _Net(), -0.1)


# ------------------------------------------------------------------------------ CrossBatchMemory


def test_xbm_memory_is_concatenation_of_batches_and_self_index():
    """Oracle: with K >= samples seen, memory == row-concatenation of detached batches."""
    g = torch.Generator().manual_seed(0)
    xbm = CrossBatchMemory(40, 5, dtype=torch.float64)
    seen, lab = [], []
    for n in (4, 6, 3, 8):
        f = torch.randn(n, 5, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.randint(0, 3, (n,), generator=g)
        mem = xbm(f, y)
        seen.append(f.detach())
        lab.append(y)
        assert not mem.features.requires_grad
        assert torch.equal(mem.features, torch.cat(seen)) and torch.equal(
            mem.labels, torch.cat(lab)
        )
        assert torch.equal(mem.features[mem.self_index], f.detach())


@pytest.mark.parametrize("overflow", ["wrap", "tail"])
def test_xbm_overflow_modes(overflow):
    xbm = CrossBatchMemory(10, 1, overflow=overflow, dtype=torch.float64)
    rows = []
    for b, n in enumerate((4, 4, 4, 3)):
        f = torch.arange(100 * b, 100 * b + n, dtype=torch.float64)[:, None]
        mem = xbm(f, torch.zeros(n, dtype=torch.long))
        rows.append(f)
        assert torch.equal(mem.features[mem.self_index], f)
    slots = mem.features[:, 0].tolist()
    if overflow == "wrap":  # ring: batch 2 -> slots 8, 9, 0, 1; batch 3 -> slots 2, 3, 4
        assert slots == [202, 203, 300, 301, 302, 101, 102, 103, 200, 201]
        assert sorted(slots) == sorted(torch.cat(rows)[-10:, 0].tolist())  # the newest 10
    else:  # official: batch 2 does not fit after 8 rows -> last 4 slots, pointer 0
        assert slots == [300, 301, 302, 3, 100, 101, 200, 201, 202, 203]
    assert xbm.is_full and len(xbm) == 10


def test_xbm_state_dict_round_trip():
    g = torch.Generator().manual_seed(0)
    a = CrossBatchMemory(10, 3, start_iteration=1)
    for n in (4, 4, 4):
        a(torch.randn(n, 3, generator=g), torch.randint(0, 5, (n,), generator=g))
    b = CrossBatchMemory(10, 3, start_iteration=1)
    b.load_state_dict(a.state_dict())
    f, y = torch.randn(3, 3, generator=g), torch.randint(0, 5, (3,), generator=g)
    ma, mb = a(f, y), b(f, y)
    assert all(torch.equal(x, z) for x, z in zip(ma, mb))
    assert int(b.iteration) == 4 and len(b) == 10


def test_xbm_start_iteration_and_bad_input():
    xbm = CrossBatchMemory(8, 2, start_iteration=2)
    y = torch.zeros(3, dtype=torch.long)
    assert xbm(torch.randn(3, 2), y) is None and xbm(torch.randn(3, 2), y) is None
    assert len(xbm) == 0 and xbm.active
    assert xbm(torch.randn(3, 2), y).features.shape == (3, 2)
    with pytest.raises(ValueError, match="does not fit"):
        xbm(torch.randn(9, 2), torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="dim=2"):
        xbm(torch.randn(3, 4), y)
    with pytest.raises(ValueError, match="labels must have shape"):
        xbm(torch.randn(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="overflow"):
        CrossBatchMemory(8, 2, overflow="drop")


def _supcon_over_memory(f, y, mem, tau):
    """Dense SupCon (L_out) of anchors f against memory candidates, self column removed."""
    z, m = F.normalize(f, dim=1), F.normalize(mem.features, dim=1)
    logits = z @ m.T / tau
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(len(f)), mem.self_index] = True
    pos = (y[:, None] == mem.labels[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), 1, True)
    per = -(log_prob * pos).sum(1) / pos.sum(1).clamp(min=1)
    keep = pos.sum(1) > 0
    return per[keep].mean()


def test_xbm_matches_pytorch_metric_learning_cross_batch_memory():
    """PML's CrossBatchMemory(SupConLoss) over several steps (ring memory, self-pairs removed)
    equals dense SupCon of each batch against our memory with self_index removed."""
    pml = peers.require("pml_losses")
    tau, K, d = 0.1, 20, 6
    theirs = pml.CrossBatchMemory(pml.SupConLoss(temperature=tau), d, memory_size=K)
    ours = CrossBatchMemory(K, d)
    g = torch.Generator().manual_seed(0)
    for n in (8, 8, 8, 5, 8):
        f = torch.randn(n, d, generator=g)
        y = torch.randint(0, 4, (n,), generator=g)
        want = theirs(f, y)
        mem = ours(f, y)
        got = _supcon_over_memory(f, y, mem, tau)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ DyCE


def test_sinkhorn_equipartition_marginals():
    """Card A5 oracle (a): rows sum to 1, columns to n / P after enough iterations."""
    g = torch.Generator().manual_seed(0)
    n, P = 24, 6
    scores = torch.randn(n, P, generator=g, dtype=torch.float64)
    for stable in (True, False):
        q = sinkhorn_equipartition(scores, 0.1, 200, stable=stable)
        assert q.shape == (n, P) and bool((q >= 0).all())
        torch.testing.assert_close(q.sum(1), torch.ones(n, dtype=torch.float64))
        torch.testing.assert_close(q.sum(0), torch.full((P,), n / P, dtype=torch.float64))
    # the guard: exp(2 / 1e-5) overflows without the max-shift, epsilon is raised until finite
    q = sinkhorn_equipartition(scores.abs() + 1.0, 1e-5, 50, stable=False)
    assert bool(torch.isfinite(q).all())
    torch.testing.assert_close(q.sum(1), torch.ones(n, dtype=torch.float64))


def _filled_memory(B=6, d=5, P=3, k=2, start=0, **kw):
    S = DynamicClusteredMemory.official_size(P, 4, 2 * B)
    mem = DynamicClusteredMemory(
        S, d, P, topk=k, memory_start_epoch=start, kmeans_n_init=2, dtype=torch.float64, **kw
    )
    g = torch.Generator().manual_seed(1)
    centres = 3 * torch.randn(P, d, generator=g, dtype=torch.float64)

    def batch():
        c = torch.randint(0, P, (B,), generator=g)
        x = centres[c] + 0.3 * torch.randn(B, d, generator=g, dtype=torch.float64)
        x2 = x + 0.05 * torch.randn(B, d, generator=g, dtype=torch.float64)
        return torch.cat([x, x2])

    return mem, batch


def _reference_neighbours(z_view, bank, labels, prototypes, k, small_rule, own=None, local=False):
    """Card A5 step 4 written sample by sample (plain loops)."""
    out = []
    bn = F.normalize(bank, dim=1)
    for i, x in enumerate(F.normalize(z_view, dim=1)):
        sims = bn @ x
        if own is not None:
            for s in own[i]:
                if s >= 0:
                    sims[s] = float("-inf")
        c = int(torch.argmax(F.normalize(prototypes, dim=1) @ x))
        members = [s for s in range(len(bank)) if int(labels[s]) == c and sims[s] > float("-inf")]
        if len(members) == 0 or small_rule(len(members)):
            out.append(torch.topk(sims, k).indices)
        else:
            ms = torch.tensor(members)
            top = torch.topk(sims[ms], k).indices
            out.append(top if local else ms[top])
    return torch.stack(out)


@pytest.mark.parametrize("quirks", [False, True])
def test_dyce_enhancement_layout_and_neighbours(quirks):
    B, d, P, k = 6, 5, 3, 2
    mem, batch = _filled_memory(B, d, P, k, official_quirks=quirks)
    steps = 0
    while not bool(mem.clustered):  # FIFO phase: returns the snapshot-based enlarged batch
        z = batch().requires_grad_(True)
        out = mem(z, epoch=0)
        steps += 1
        assert out.shape == (2 * B * (1 + k), d)
    assert steps == mem.size // (2 * B) + 1
    for epoch in (1, 2):
        z = batch().requires_grad_(True)
        out = mem(z, epoch=epoch)
        # layout (oracle c): [z1; n1; z2; n2], rows r and r + B (1 + k) are the pair
        h = B * (1 + k)
        assert out.shape == (2 * h, d)
        assert torch.equal(out[:B], z[:B]) and torch.equal(out[h : h + B], z[B:])
        n1, n2 = out[B:h].reshape(B, k, d), out[h + B :].reshape(B, k, d)
        bank = mem.bank
        for v, (zv, nv) in enumerate(((z[:B], n1), (z[B:], n2))):
            small = (lambda c: c < k) if (quirks and v == 1) else (lambda c: c <= k)
            ref = _reference_neighbours(
                zv.detach(), bank, mem.labels, mem.prototypes, k, small, local=quirks
            )
            assert torch.equal(nv, bank[ref]), (epoch, v)
        # neighbours are detached memory rows: the gradient reaches only z's own rows
        (gz,) = torch.autograd.grad(out.sum(), z)
        assert torch.equal(gz, torch.ones_like(z))


def test_dyce_neighbours_come_from_nearest_cluster_and_prototypes_are_means():
    B, d, P, k = 6, 5, 3, 2
    mem, batch = _filled_memory(B, d, P, k)
    for epoch in range(4):
        z = batch()
        out = mem(z, epoch=epoch)
    # oracle (b), mu = 0: prototypes are exact means of the stored rows of each label
    for c in range(P):
        rows = mem.bank[mem.labels == c]
        if len(rows):
            torch.testing.assert_close(mem.prototypes[c], rows.mean(0))
    # oracle (d): nearest cluster with more than k members -> every neighbour carries its label
    h = B * (1 + k)
    protos = F.normalize(mem.prototypes, dim=1)
    for v, nb in enumerate((out[B:h], out[h + B :])):
        zv = F.normalize(z[v * B : (v + 1) * B], dim=1)
        nearest = (zv @ protos.T).argmax(1)
        slots = torch.cdist(nb, mem.bank).argmin(1).reshape(B, k)
        for i in range(B):
            if int((mem.labels == nearest[i]).sum()) > k:
                assert bool((mem.labels[slots[i]] == nearest[i]).all())


def test_dyce_before_start_epoch_and_exclude_self():
    B, d, P, k = 6, 5, 3, 2
    mem, batch = _filled_memory(B, d, P, k, start=3, exclude_self=True)
    while not bool(mem.clustered):
        z = batch()
        assert mem(z, epoch=0) is z  # before memory_start_epoch: unchanged
    ptr = int(mem.ptr)
    z = batch()
    out = mem(z, epoch=3)
    written = torch.arange(ptr, min(ptr + 2 * B, mem.size))
    own = torch.full((B, 2), -1, dtype=torch.long)
    for r, s in enumerate(written):
        own[r % B, r // B] = s
    h = B * (1 + k)
    for v, nb in enumerate((out[B:h], out[h + B :])):
        ref = _reference_neighbours(
            z[v * B : (v + 1) * B], mem.bank, mem.labels, mem.prototypes, k, lambda c: c <= k, own
        )
        assert torch.equal(nb.reshape(B, k, d), mem.bank[ref])
        for i in range(B):  # never the sample's own two views (other samples are allowed)
            assert not bool(torch.isin(ref[i], own[i]).any())


def test_dyce_state_dict_round_trip_and_bad_input():
    B, d, P, k = 6, 5, 3, 2
    mem, batch = _filled_memory(B, d, P, k)
    while not bool(mem.clustered):
        mem(batch(), epoch=0)
    other = DynamicClusteredMemory(
        mem.size, d, P, topk=k, memory_start_epoch=0, dtype=torch.float64
    )
    other.load_state_dict(mem.state_dict())
    z = batch()
    assert torch.equal(mem(z, epoch=1), other(z, epoch=1))
    with pytest.raises(ValueError, match="two views"):
        mem(torch.randn(5, d, dtype=torch.float64), epoch=1)
    with pytest.raises(ValueError, match="dim=5"):
        mem(torch.randn(4, 3, dtype=torch.float64), epoch=1)
    with pytest.raises(ValueError, match="epoch"):
        mem(z, epoch=-1)
    with pytest.raises(ValueError, match="num_clusters"):
        DynamicClusteredMemory(4, 2, num_clusters=5)
    with pytest.raises(ValueError, match="epsilon"):
        DynamicClusteredMemory(40, 2, 3, epsilon=0.0)
    assert DynamicClusteredMemory.official_size(200, 40, 512) == (8000 // 512 + 1) * 512 + 1


# ------------------------------------------------------------------------------------------ OpTA


def _scaling_sinkhorn(cost, eps, iters=2000):
    """Entropic OT with uniform marginals by plain matrix scaling (a different algorithm with
    the same fixed point as BECLR's log-domain updates)."""
    n, m = cost.shape
    K = torch.exp(-cost / eps)
    a, b = torch.full((n,), 1 / n, dtype=cost.dtype), torch.full((m,), 1 / m, dtype=cost.dtype)
    u, v = torch.ones_like(a), torch.ones_like(b)
    for _ in range(iters):
        u = a / (K @ v)
        v = b / (K.T @ u)
    return u[:, None] * K * v[None, :]


def _episode(n_way=4, n_shot=1, n_query=6, d=10, spread=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(n_way, d, generator=g, dtype=torch.float64)
    ys = torch.arange(n_way).repeat_interleave(n_shot)
    yq = torch.arange(n_way).repeat_interleave(n_query)
    s = centres[ys] + spread * torch.randn(len(ys), d, generator=g, dtype=torch.float64)
    q = centres[yq] + spread * torch.randn(len(yq), d, generator=g, dtype=torch.float64)
    return s, ys, q, yq


def test_opta_plan_marginals_and_fixed_point():
    s, ys, q, _ = _episode(n_shot=1)
    # epsilon 0.2 so that both algorithms converge fully in a few thousand rounds
    r = optimal_transport_align(s, ys, q, epsilon=0.2, n_passes=1, tol=1e-10, max_iter=2000)
    n_way, n_q = 4, q.shape[0]
    torch.testing.assert_close(r.plan.sum(1), torch.full((n_way,), 1 / n_way, dtype=s.dtype))
    torch.testing.assert_close(r.plan.sum(0), torch.full((n_q,), 1 / n_q, dtype=s.dtype))
    # same plan and prototypes from matrix scaling on the standardised features
    z = lambda x: (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)  # noqa: E731
    sz, qz = z(s), z(q)
    cost = torch.cdist(sz, qz) ** 2
    plan = _scaling_sinkhorn(cost / cost.max(), 0.2)
    torch.testing.assert_close(r.plan, plan, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(r.prototypes, (plan / plan.sum(1, keepdim=True)) @ qz)
    torch.testing.assert_close(r.query, qz)
    assert torch.equal(r.classes, torch.arange(4))


def test_opta_moves_prototypes_to_class_query_means():
    """Tight, far-apart query clusters and small epsilon: each prototype lands on (about) its
    class's query mean; a huge epsilon sends every prototype to the global query mean."""
    s, ys, q, yq = _episode(n_shot=1, spread=0.05, seed=3)
    r = optimal_transport_align(s, ys, q, epsilon=0.01, n_passes=1, standardize=False)
    means = torch.stack([q[yq == c].mean(0) for c in range(4)])
    torch.testing.assert_close(r.prototypes, means, rtol=0, atol=1e-4)
    r = optimal_transport_align(s, ys, q, epsilon=1e7, n_passes=1, standardize=False)
    torch.testing.assert_close(r.prototypes, q.mean(0).expand(4, -1), rtol=0, atol=1e-5)


def test_opta_default_passes_and_ratio():
    # 1-shot: 5 passes, no mixing
    s, ys, q, _ = _episode(n_shot=1, spread=1.0)
    a = optimal_transport_align(s, ys, q)
    b = optimal_transport_align(s, ys, q, n_passes=5, ratio=1.0)
    assert torch.equal(a.prototypes, b.prototypes)
    # 5-shot: 1 pass, then 0.7 transported + 0.3 original prototypes
    s, ys, q, _ = _episode(n_shot=5, spread=1.0)
    a = optimal_transport_align(s, ys, q)
    one = optimal_transport_align(s, ys, q, n_passes=1, ratio=1.0)
    sz = (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True)
    orig = sz.reshape(4, 5, -1).mean(1)
    torch.testing.assert_close(a.prototypes, 0.7 * one.prototypes + 0.3 * orig)


def test_opta_bad_input():
    s, ys, q, _ = _episode()
    with pytest.raises(ValueError, match="feature dimension"):
        optimal_transport_align(s, ys, q[:, :3])
    with pytest.raises(ValueError, match="support_labels must have shape"):
        optimal_transport_align(s, ys[:2], q)
    with pytest.raises(ValueError, match="epsilon"):
        optimal_transport_align(s, ys, q, epsilon=0)
    with pytest.raises(ValueError, match="ratio"):
        optimal_transport_align(s, ys, q, ratio=1.5)
    with pytest.raises(ValueError, match="constant"):
        optimal_transport_align(torch.ones_like(s), ys, q)
    with pytest.raises(ValueError, match="cost is zero"):
        optimal_transport_align(torch.ones_like(s), ys, torch.ones_like(q), standardize=False)
