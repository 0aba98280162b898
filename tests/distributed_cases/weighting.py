"""Distributed cases of the weighting family's exact objectives (see ``__init__``).

Debiased InfoNCE and HCL have theirs in tests/test_distributed.py ("debiased", "hcl")."""

from __future__ import annotations

import torch

import contrastkit as ck

D_TILED = {"backend": "tiled", "chunk_size": 3}


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _focal_inputs(g, n, d):
    rows = [_rand(g, n, d), _rand(g, n, d), _rand(g, n, 2, d)]
    return rows, [torch.tensor(0.3, dtype=torch.float64)]


CASES = {
    # queries against every rank's positives and hard negatives, learnable temperature
    "focal_info_nce": (
        _focal_inputs,
        lambda rows, shared: ck.focal_info_nce(
            rows[0], rows[1], rows[2], temperature=shared[0], gamma=2.0, **D_TILED
        ),
    ),
    "focal_info_nce_none": (
        _focal_inputs,
        lambda rows, shared: ck.focal_info_nce(
            rows[0], rows[1], temperature=shared[0], gamma=1.0, reduction="none"
        ),
    ),
    "focal_info_nce_sum_detached": (
        _focal_inputs,
        lambda rows, shared: ck.FocalInfoNCE(
            temperature=shared[0], gamma=0.5, detach_weight=True, reduction="sum"
        )(rows[0], rows[1], rows[2]),
    ),
}


def _cacr_views(V):
    def make(g, n, d):
        return [_rand(g, n, V, d)], []

    return make


def _v(rows):
    return rows[0].transpose(0, 1)  # (N, V, d) -> (V, N, d): views sharded by sample


# CACR: each rank's samples repelled from every rank's other views (first-moment statistic)
CASES.update(
    {
        "cacr": (
            _cacr_views(2),
            lambda rows, shared: ck.cacr(_v(rows), repulsion_scale=0.9, **D_TILED),
        ),
        "cacr_three_views_debiased_sum": (
            _cacr_views(3),
            lambda rows, shared: ck.CACR(
                repulsion_scale=2.0, debiased=True, reduction="sum", **D_TILED
            )(_v(rows)),
        ),
        "cacr_none": (
            _cacr_views(2),
            lambda rows, shared: ck.cacr(_v(rows), reduction="none"),
        ),
        "cacr_uniform_repulsion": (
            _cacr_views(3),
            lambda rows, shared: ck.cacr(_v(rows), weighting="without_w2"),
        ),
    }
)


def _one_to_k_inputs(K):
    def make(g, n, d):  # image i's K captions in rows K i .. K i + K - 1 (sharded alike)
        return [_rand(g, n, d), _rand(g, n * K, d)], [torch.tensor(0.2, dtype=torch.float64)]

    return make


# 1-to-K: images against every rank's captions, captions against every rank's images
CASES.update(
    {
        "one_to_k": (
            _one_to_k_inputs(2),
            lambda rows, shared: ck.one_to_k_contrastive(
                rows[0], rows[1], temperature=shared[0], **D_TILED
            ),
        ),
        "one_to_k_sum": (
            _one_to_k_inputs(3),
            lambda rows, shared: ck.one_to_k_contrastive(
                rows[0], rows[1], temperature=shared[0], reduction="sum", divide_by=1.5
            ),
        ),
        "one_to_k_none": (
            _one_to_k_inputs(2),
            lambda rows, shared: ck.one_to_k_contrastive(
                rows[0], rows[1], temperature=shared[0], reduction="none", **D_TILED
            ),
        ),
    }
)


def _team_up_inputs(g, n, d):
    strength = torch.rand(n, generator=g, dtype=torch.float64)
    return [_rand(g, n, d), _rand(g, n, d), strength], []


# CSGCL team-up: every rank's nodes as candidates, their community strengths gathered
CASES.update(
    {
        "team_up": (
            _team_up_inputs,
            lambda rows, shared: ck.team_up(*rows, 0.7, temperature=0.3, **D_TILED),
        ),
        "team_up_sum": (
            _team_up_inputs,
            lambda rows, shared: ck.TeamUp(temperature=0.5, reduction="sum")(*rows, 1.5),
        ),
    }
)


def _sbcl_inputs(g, n, d):
    labels = torch.randint(0, 3, (n,), generator=g)
    subclass = labels * 2 + torch.randint(0, 2, (n,), generator=g)  # sub-classes of classes
    temps = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    return [_rand(g, n, 2, d), labels, subclass], [temps]


# SBCL: class / sub-class sums and counts over every rank's samples, per-class temperatures
CASES.update(
    {
        "sbcl": (
            _sbcl_inputs,
            lambda rows, shared: ck.sbcl(*rows, shared[0], gamma=0.5, **D_TILED),
        ),
        "sbcl_sum": (
            _sbcl_inputs,
            lambda rows, shared: ck.SBCL(reduction="sum", gamma=0.25)(*rows, shared[0]),
        ),
    }
)


# SogCLR / iSogCLR (and bimodal): each rank's anchors against every rank's samples; the states
# are whole (n_samples,) buffers every rank holds, written at the global batch's indices. The
# stateful cases take two steps and add a digest of every state buffer to the loss, so the
# harness's "every rank's loss == the single-process loss" also checks that after the two steps
# every rank's buffers equal the single-process ones (an entry written by another rank only, or
# an update that differs, changes the digest).
SOG_SAMPLES = 48


def _sog_inputs(g, n, d):
    """Two views, step-1 indices, step-2 indices: the first half of the step-2 batch seen at
    step 1, the rest unseen (so the first-epoch "all unseen" test differs per rank while the
    global batch is mixed)."""
    perm = torch.randperm(SOG_SAMPLES, generator=g)
    idx2 = torch.cat([perm[: n // 2], perm[n : 2 * n - n // 2]])
    return [_rand(g, n, d), _rand(g, n, d), perm[:n], idx2], []


def _sog_state(lo=0.5, hi=3.0, seed=7):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(SOG_SAMPLES, generator=g, dtype=torch.float64)


def _digest(*states):
    c = torch.linspace(0.3, 1.7, SOG_SAMPLES, dtype=torch.float64)
    return sum((s.detach().double() * c).sum() * (0.1 * k + 1) for k, s in enumerate(states))


def _sog_fn_two_steps(rows):
    u = _sog_state()
    z1, z2, i1, i2 = rows
    a = ck.sogclr(z1, z2, i1, u, temperature=0.2, gamma=0.7, **D_TILED)
    b = ck.sogclr(z2, z1, i2, u, temperature=0.2, gamma=0.7, reduction="sum")
    return a + 0.1 * b + _digest(u)


def _sog_module_two_steps(rows, cls, **kw):
    m = cls(SOG_SAMPLES, **kw).double()
    z1, z2, i1, i2 = rows
    a = m(z1, z2, i1)  # first epoch, fresh state: gamma 1
    b = m(z2, z1, i2)  # half of the global batch seen: gamma (on every rank)
    return a + b + _digest(*[t for t in m.buffers() if t.dim() == 1])


def _isog_fn_two_steps(rows):
    u, tau, gt = _sog_state(), _sog_state(0.1, 0.4, 8), _sog_state(-0.5, 0.5, 9)
    z1, z2, i1, i2 = rows
    kw = dict(rho=0.4, eta=0.05, beta=0.5, min_temperature=0.08, max_temperature=0.5)
    a = ck.isogclr(z1, z2, i1, u, tau, gt, gamma=0.8, **kw, **D_TILED)
    b = ck.isogclr(z1, z2, i2, u, tau, gt, gamma=0.8, gamma_unseen=1.0, **kw)
    return a + b + _digest(u, tau, gt)


def _bimodal_states(k):
    return [_sog_state(0.5 if i % 2 == 0 else -1.0, 2.0, 20 + i) for i in range(k)]


def _bimodal_fn_two_steps(rows):
    st = _bimodal_states(4)
    z1, z2, i1, i2 = rows
    kw = dict(temperature=0.1, normalize=True)
    a = ck.sogclr_bimodal(z1, z2, i1, *st, gamma=0.6, gamma_txt=0.8, **kw, **D_TILED)
    b = ck.sogclr_bimodal(z2, z1, i2, *st, gamma=0.6, reduction="sum", **kw)
    return a + 0.1 * b + _digest(*st)


def _isog_bimodal_fn_two_steps(rows):
    st = _bimodal_states(4)
    st += [_sog_state(0.05, 0.2, 30), _sog_state(0.05, 0.2, 31)]
    st += [_sog_state(-0.5, 0.5, 32), _sog_state(-0.5, 0.5, 33)]
    z1, z2, i1, i2 = rows
    kw = dict(normalize=True, rho=1.0, eta=0.02, min_temperature=0.05, max_temperature=0.3)
    a = ck.isogclr_bimodal(z1, z2, i1, *st, gamma=0.7, **kw, **D_TILED)
    b = ck.isogclr_bimodal(z1, z2, i2, *st, gamma=0.7, gamma_unseen=1.0, **kw)
    return a + b + _digest(*st)


CASES.update(
    {
        "sogclr_two_steps": (_sog_inputs, lambda rows, shared: _sog_fn_two_steps(rows)),
        "sogclr_none": (
            _sog_inputs,
            lambda rows, shared: ck.sogclr(
                rows[0], rows[1], rows[2], _sog_state(), temperature=0.3, reduction="none"
            ),
        ),
        "sogclr_module_two_steps": (
            _sog_inputs,
            lambda rows, shared: _sog_module_two_steps(rows, ck.SogCLR, temperature=0.2),
        ),
        "isogclr_two_steps": (_sog_inputs, lambda rows, shared: _isog_fn_two_steps(rows)),
        "isogclr_module_sum_two_steps": (
            _sog_inputs,
            lambda rows, shared: _sog_module_two_steps(
                rows, ck.iSogCLR, temperature=0.2, eta=0.05, reduction="sum", **D_TILED
            ),
        ),
        "sogclr_bimodal_two_steps": (
            _sog_inputs,
            lambda rows, shared: _bimodal_fn_two_steps(rows),
        ),
        "sogclr_bimodal_none": (
            _sog_inputs,
            lambda rows, shared: ck.sogclr_bimodal(
                rows[0],
                rows[1],
                rows[2],
                *_bimodal_states(4),
                temperature=0.1,
                normalize=True,
                reduction="none",
                **D_TILED,
            ),
        ),
        "sogclr_bimodal_module_two_steps": (
            _sog_inputs,
            lambda rows, shared: _sog_module_two_steps(
                rows, ck.SogCLRBimodal, temperature=0.1, normalize=True
            ),
        ),
        "isogclr_bimodal_two_steps": (
            _sog_inputs,
            lambda rows, shared: _isog_bimodal_fn_two_steps(rows),
        ),
        "isogclr_bimodal_module_two_steps": (
            _sog_inputs,
            lambda rows, shared: _sog_module_two_steps(
                rows, ck.iSogCLRBimodal, temperature=0.05, normalize=True, **D_TILED
            ),
        ),
    }
)


def _counted(fn, expected_all_gather):
    """``fn()`` with the forward's all-gathered bytes counted; under a group a count other than
    ``expected_all_gather(world)`` is reported as a failed case (the harness compares strings
    as failures). One process (the reference) sends nothing."""
    from contrastkit.distributed import CommCounter, _ops

    with CommCounter() as c:
        loss = fn()
    ctx = _ops.current()
    world = 1 if ctx is None else ctx.world
    want = expected_all_gather(world)
    if c.bytes["all_gather"] != want:
        raise ValueError(f"forward all-gather bytes: counted {c.bytes['all_gather']}, want {want}")
    return loss


def _record(world):
    from contrastkit.distributed import _ops

    return (world - 1) * _ops._WIDTH * 8  # one fixed-size exchange record per rank


def _isog_bytes(rows):
    """iSogCLR, one step: exchanges (index, engine, first moment, state) + the indices and the
    state size + the stacked views (2B x d) + two state values a row (float64)."""
    z1, z2, i1, _ = rows
    B, d = z1.shape
    st = [_sog_state(), _sog_state(0.1, 0.4, 8), _sog_state(-0.5, 0.5, 9)]

    def want(w):
        return 4 * _record(w) + (w - 1) * (8 * (B + 1) + 8 * 2 * B * d + 8 * 2 * B)

    return _counted(lambda: ck.isogclr(z1, z2, i1, *st, gamma=0.8), want)


def _bimodal_bytes(rows):
    """Bimodal SogCLR, one step: exchanges (index, maxima, 2 x (engine, first moment), state)
    + the indices and state size + both modalities for the maxima + each direction's
    candidates + four state values a row (float64)."""
    z1, z2, i1, _ = rows
    B, d = z1.shape

    def want(w):
        return 7 * _record(w) + (w - 1) * (8 * (B + 1) + 8 * 4 * B * d + 8 * 4 * B)

    return _counted(lambda: ck.sogclr_bimodal(z1, z2, i1, *_bimodal_states(4)), want)


CASES.update(
    {
        "isogclr_bytes": (_sog_inputs, lambda rows, shared: _isog_bytes(rows)),
        "sogclr_bimodal_bytes": (_sog_inputs, lambda rows, shared: _bimodal_bytes(rows)),
    }
)
