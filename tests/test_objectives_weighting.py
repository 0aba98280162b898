"""The weighting family: SogCLR / iSogCLR (and bimodal), AMCL, CACR, focal InfoNCE, 1-to-K,
debiased InfoNCE / HCL, AdaMEOW, gCooL community contrast, CSGCL team-up and SBCL. Engine
(tiled, several chunk sizes) == dense reference (values and gradients), paper oracles, state
updates, bad input, module twin == functional, reductions, aliases."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
from pathlib import Path

import pytest
import reference_objectives_weighting as ref
import torch
import torch.nn.functional as F

from contrastkit.losses.infonce.info_nce import info_nce, multiple_negatives_ranking
from contrastkit.losses.infonce.ntxent import nt_xent
from contrastkit.losses.infonce.supcon import supcon
from contrastkit.losses.weighting.adameow import AdaMEOWInfoNCE, adameow_info_nce
from contrastkit.losses.weighting.amcl import AMCL, amcl, hardest_negatives
from contrastkit.losses.weighting.cacr import CACR, cacr
from contrastkit.losses.weighting.community import CommunityContrast, community_contrast
from contrastkit.losses.weighting.debiased import (
    DebiasedInfoNCE,
    HardNegativeInfoNCE,
    debiased_info_nce,
    hard_negative_info_nce,
)
from contrastkit.losses.weighting.focal import FocalInfoNCE, focal_info_nce
from contrastkit.losses.weighting.one_to_k import OneToKContrastive, one_to_k_contrastive
from contrastkit.losses.weighting.sbcl import SBCL, sbcl
from contrastkit.losses.weighting.sogclr import SogCLR, iSogCLR, isogclr, sogclr
from contrastkit.losses.weighting.sogclr_bimodal import (
    SogCLRBimodal,
    isogclr_bimodal,
    iSogCLRBimodal,
    sogclr_bimodal,
)
from contrastkit.losses.weighting.team_up import TeamUp, team_up
from contrastkit.negatives import AdaMEOWWeights, SubclassBalancer

ENGINES = [
    {"backend": "dense"},
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled"},  # automatic tile: one full-width block here
]
F64 = torch.float64


def rnd(*shape, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()


def grads(loss, xs):
    return torch.autograd.grad(loss, xs, allow_unused=True)


def close(a, b, rtol=1e-9, atol=1e-11, msg=""):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=msg)


# ---------------------------------------------------------------- SogCLR / iSogCLR


def _steps(n, B, d, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randperm(n, generator=g)[:B]
        h1 = torch.randn(B, d, generator=g, dtype=F64).requires_grad_()
        h2 = torch.randn(B, d, generator=g, dtype=F64).requires_grad_()
        out.append((idx, h1, h2))
    return out


@pytest.mark.parametrize("eng", ENGINES)
def test_sogclr_engine_matches_reference_over_steps(eng):
    n, B, d, tau = 12, 5, 4, 0.2
    u_ref = torch.zeros(n, dtype=F64)
    u = torch.zeros(n, dtype=F64)
    for step, (idx, h1, h2) in enumerate(_steps(n, B, d, 4)):
        gamma = 1.0 if step == 0 else 0.7
        want, ubar, _ = ref.gcl(h1, h2, u_ref[idx], tau, gamma)
        want = want.mean()
        u_ref[idx] = ubar.mean(0)
        got = sogclr(h1, h2, idx, u, temperature=tau, gamma=gamma, **eng)
        close(got, want, msg=f"step {step} value")
        for a, b in zip(grads(got, (h1, h2)), grads(want, (h1, h2))):
            close(a, b, msg=f"step {step} grad")
        close(u, u_ref, rtol=1e-12, atol=0, msg=f"step {step} state")


@pytest.mark.parametrize("eng", ENGINES[:3])
def test_isogclr_engine_matches_reference_over_steps(eng):
    n, B, d = 10, 4, 3
    rho, eta, beta, lo, hi = 0.3, 0.05, 0.6, 0.05, 0.7
    u_r, tau_r, g_r = (
        torch.zeros(n, dtype=F64),
        torch.full((n,), 0.1, dtype=F64),
        torch.zeros(n, dtype=F64),
    )
    u, tau, gt = u_r.clone(), tau_r.clone(), g_r.clone()
    for step, (idx, h1, h2) in enumerate(_steps(n, B, d, 4, seed=3)):
        gamma = 1.0 if step == 0 else 0.8
        want, ubar, ce = ref.gcl(h1, h2, u_r[idx], tau_r[idx], gamma)
        want = want.mean()
        grad = (torch.log(ubar) + rho - ce / tau_r[idx]).mean(0)
        u_r[idx] = ubar.mean(0)
        g_r[idx] = (1 - beta) * g_r[idx] + beta * grad
        tau_r[idx] = (tau_r[idx] - eta * g_r[idx]).clamp(lo, hi)
        got = isogclr(
            h1,
            h2,
            idx,
            u,
            tau,
            gt,
            gamma=gamma,
            rho=rho,
            eta=eta,
            beta=beta,
            min_temperature=lo,
            max_temperature=hi,
            **eng,
        )
        close(got, want, msg=f"step {step} value")
        for a, b in zip(grads(got, (h1, h2)), grads(want, (h1, h2))):
            close(a, b, msg=f"step {step} grad")
        for name, a, b in (("u", u, u_r), ("tau", tau, tau_r), ("grad_tau", gt, g_r)):
            close(a, b, rtol=1e-11, atol=1e-13, msg=f"step {step} {name}")
    assert not torch.all(tau == 0.1)  # the temperatures moved


def _unit(angle):
    return [math.cos(angle), math.sin(angle)]


def test_sogclr_state_hand_computed_sequence():
    """B = 2 in the plane: every cosine is cos(angle difference), so each step is a few scalar
    formulas. Constant schedule: gamma = 1 on an unseen first-epoch batch, then gamma_min."""
    tau, gmin = 0.5, 0.9
    m = SogCLR(3, temperature=tau, gamma=gmin).double()
    batches = [  # (index, angles of view 1, angles of view 2)
        ([0, 1], (0.0, 1.0), (0.3, 1.4)),
        ([1, 2], (0.2, -0.5), (0.1, -0.9)),
        ([0, 2], (2.0, 0.4), (2.5, 0.0)),
    ]
    u = [0.0, 0.0, 0.0]
    for step, (index, a1, a2) in enumerate(batches):
        if step == 2:
            m.adjust_gamma(1)
        seen = any(u[i] != 0.0 for i in index)
        gamma = gmin if (seen or step == 2) else 1.0
        h1 = torch.tensor([_unit(a) for a in a1], dtype=F64)
        h2 = torch.tensor([_unit(a) for a in a2], dtype=F64)
        loss = m(h1, h2, torch.tensor(index))
        # hand computation: anchor i of view x, negatives = other sample in both views
        total, new = 0.0, {}
        for i in range(2):
            j = 1 - i
            ubars = []
            for ax, ay in ((a1, a2), (a2, a1)):
                s_neg = [math.cos(ax[i] - ay[j]), math.cos(ax[i] - ax[j])]
                s_pos = math.cos(ax[i] - ay[i])
                e = [math.exp(s / tau) for s in s_neg]
                ubar = (1 - gamma) * u[index[i]] + gamma * sum(e) / 2
                total += -s_pos + sum(ei / ubar * s for ei, s in zip(e, s_neg)) / 2
                ubars.append(ubar)
            new[index[i]] = sum(ubars) / 2
        for k, v in new.items():
            u[k] = v
        assert float(loss) == pytest.approx(total / 2, rel=1e-12)
        assert m.u.tolist() == pytest.approx(u, rel=1e-12)
    assert u[1] != 0 and u[2] != 0


def test_isogclr_state_hand_computed_step():
    """One iSogCLR step on B = 2 in the plane, then a second that reuses the momentum."""
    tau0, rho, eta, beta = 0.25, 0.4, 0.2, 0.5  # 0.25: exact in the float32 buffer
    m = iSogCLR(
        2, temperature=tau0, rho=rho, eta=eta, beta=beta, min_temperature=0.05, max_temperature=0.7
    )
    m = m.double()
    a1, a2 = (0.0, 1.2), (0.4, 1.0)
    h1 = torch.tensor([_unit(a) for a in a1], dtype=F64)
    h2 = torch.tensor([_unit(a) for a in a2], dtype=F64)
    tau, g, u = [tau0, tau0], [0.0, 0.0], [0.0, 0.0]
    for step in range(2):
        gamma = 1.0 if step == 0 else 0.9
        m(h1, h2, torch.tensor([0, 1]))
        for i in range(2):
            j = 1 - i
            grads_, ubars = [], []
            for ax, ay in ((a1, a2), (a2, a1)):
                s_neg = [math.cos(ax[i] - ay[j]), math.cos(ax[i] - ax[j])]
                e = [math.exp(s / tau[i]) for s in s_neg]
                ubar = (1 - gamma) * u[i] + gamma * sum(e) / 2
                ce = sum(ei / ubar * s for ei, s in zip(e, s_neg)) / 2
                grads_.append(math.log(ubar) + rho - ce / tau[i])
                ubars.append(ubar)
            u[i] = sum(ubars) / 2
            g[i] = (1 - beta) * g[i] + beta * sum(grads_) / 2
            tau[i] = min(max(tau[i] - eta * g[i], 0.05), 0.7)
        assert m.u.tolist() == pytest.approx(u, rel=1e-12)
        assert m.grad_tau.tolist() == pytest.approx(g, rel=1e-12)
        assert m.tau.tolist() == pytest.approx(tau, rel=1e-12)


def test_sogclr_identical_embeddings_fresh_state_is_zero():
    one = torch.randn(1, 5, dtype=F64).expand(4, 5)
    for eng in ENGINES[:3]:
        loss = sogclr(one, one, torch.arange(4), torch.zeros(4, dtype=F64), gamma=1.0, **eng)
        assert float(loss) == pytest.approx(0.0, abs=1e-12)


def test_sogclr_gamma_one_gradient_is_tau_times_decoupled_loss():
    """Card oracle (b): with gamma = 1 the normaliser is the mini-batch mean, so the gradient is
    tau x the gradient of -s_pos / tau + log mean_neg exp(s / tau) (decoupled, per direction)."""
    h1, h2 = rnd(7, 4, seed=2), rnd(7, 4, seed=3)
    tau = 0.3
    loss = sogclr(
        h1,
        h2,
        torch.arange(7),
        torch.zeros(7, dtype=F64),
        temperature=tau,
        gamma=1.0,
        backend="tiled",
        chunk_size=3,
    )
    Z = F.normalize(torch.cat([h1, h2]), dim=-1)
    S = Z @ Z.T
    part = (torch.arange(14) + 7) % 14
    mask = torch.eye(14, dtype=torch.bool)
    mask[torch.arange(14), part] = True
    lse = torch.logsumexp((S / tau).masked_fill(mask, float("-inf")), dim=1) - math.log(12)
    dec = (-S[torch.arange(14), part] / tau + lse).sum() / 7
    got = grads(loss, (h1, h2))
    for a, b in zip(got, grads(dec, (h1, h2))):
        close(a, tau * b)

    # and by central finite differences of the decoupled loss (float64)
    def dec_value(x1, x2):
        Z = F.normalize(torch.cat([x1, x2]), dim=-1)
        S = Z @ Z.T
        lse = torch.logsumexp((S / tau).masked_fill(mask, float("-inf")), dim=1)
        return float((-S[torch.arange(14), part] / tau + lse).sum() / 7)

    x1, x2 = h1.detach(), h2.detach()
    for i, j in ((0, 0), (3, 2), (6, 1)):
        e = torch.zeros_like(x1)
        e[i, j] = 1e-6
        fd = (dec_value(x1 + e, x2) - dec_value(x1 - e, x2)) / 2e-6
        assert float(got[0][i, j]) == pytest.approx(tau * fd, rel=1e-6, abs=1e-8)


def test_isogclr_eta_zero_is_sogclr_with_initial_tau():
    n = 8
    m1 = SogCLR(n, temperature=0.25).double()
    m2 = iSogCLR(n, temperature=0.25, eta=0.0).double()  # 0.25: exact in the float32 buffer
    for idx, h1, h2 in _steps(n, 4, 3, 3, seed=5):
        a = m1(h1, h2, idx)
        b = m2(h1, h2, idx)
        close(a, b, rtol=1e-12, atol=1e-14)
        close(m1.u, m2.u, rtol=1e-12, atol=0)
    assert torch.all(m2.tau == 0.25)


def test_isogclr_gradient_matches_frozen_weight_finite_differences():
    """SogCLR's value is a surrogate with stop-gradient weights (as LibAUC), so gradcheck of the
    value does not apply; its gradient is the derivative of the same expression with omega
    frozen at the evaluation point, checked here by central differences (float64)."""
    u = torch.rand(9, dtype=F64) + 0.5
    idx = torch.tensor([4, 0, 7, 2])
    tau = torch.rand(9, dtype=F64) * 0.3 + 0.1
    h1, h2 = rnd(4, 3, seed=9), rnd(4, 3, seed=10)
    loss = isogclr(
        h1,
        h2,
        idx,
        u,
        tau,
        torch.zeros(9, dtype=F64),
        update=False,
        gamma=0.6,
        backend="tiled",
        chunk_size=2,
    )
    got = grads(loss, (h1, h2))
    _, ubar, _ = ref.gcl(h1, h2, u[idx], tau[idx], 0.6)
    B = 4

    def frozen(x1, x2):  # omega from the evaluation point, s from (x1, x2)
        a1, a2 = F.normalize(h1.detach(), dim=-1), F.normalize(h2.detach(), dim=-1)
        b1, b2 = F.normalize(x1, dim=-1), F.normalize(x2, dim=-1)
        total = 0.0
        for d_, (a, b, x, y) in enumerate(((a1, a2, b1, b2), (a2, a1, b2, b1))):
            L0 = torch.cat([a @ b.T, a @ a.T], 1)
            L = torch.cat([x @ y.T, x @ x.T], 1)
            neg = torch.ones(B, 2 * B, dtype=torch.bool)
            neg[torch.arange(B), torch.arange(B)] = False
            neg[torch.arange(B), B + torch.arange(B)] = False
            om = torch.where(neg, torch.exp(L0 / tau[idx][:, None]), 0.0) / ubar[d_][:, None]
            total += float((-L.diagonal() + (om * L).sum(1) / (2 * B - 2)).mean())
        return total

    x1, x2 = h1.detach(), h2.detach()
    for i in range(4):
        for j in range(3):
            e = torch.zeros_like(x1)
            e[i, j] = 1e-6
            fd1 = (frozen(x1 + e, x2) - frozen(x1 - e, x2)) / 2e-6
            fd2 = (frozen(x1, x2 + e) - frozen(x1, x2 - e)) / 2e-6
            assert float(got[0][i, j]) == pytest.approx(fd1, rel=1e-6, abs=1e-9)
            assert float(got[1][i, j]) == pytest.approx(fd2, rel=1e-6, abs=1e-9)


def test_sogclr_reductions_and_eval_freezes_state():
    h1, h2 = rnd(5, 3, seed=11), rnd(5, 3, seed=12)
    idx = torch.tensor([0, 1, 2, 3, 4])
    u0 = torch.rand(5, dtype=F64) + 0.1
    kw = dict(update=False, temperature=0.3, gamma=0.5, backend="tiled", chunk_size=2)
    mean = sogclr(h1, h2, idx, u0.clone(), **kw)
    total = sogclr(h1, h2, idx, u0.clone(), reduction="sum", **kw)
    rows = sogclr(h1, h2, idx, u0.clone(), reduction="none", **kw)
    assert rows.shape == (5,)
    close(rows.mean(), mean)
    close(rows.sum(), total)
    u = u0.clone()
    sogclr(h1, h2, idx, u, **kw)
    assert torch.equal(u, u0)
    with torch.no_grad():
        frozen = sogclr(h1, h2, idx, u0.clone(), **kw)
    assert not frozen.requires_grad
    close(frozen, mean.detach())
    m = SogCLR(5).double().eval()
    m(h1, h2, idx)
    assert torch.all(m.u == 0)
    m.train()
    m(h1, h2, idx)
    assert torch.all(m.u > 0)


def test_sogclr_cosine_gamma_schedule():
    m = SogCLR(4, gamma=0.8, gamma_schedule="cosine", gamma_decay_epochs=4)
    assert m.adjust_gamma(0) == pytest.approx(1.0)
    assert m.adjust_gamma(2) == pytest.approx(0.9)
    assert m.adjust_gamma(5) == pytest.approx(0.8)
    assert float(m.gamma_current) == pytest.approx(0.8)
    assert "gamma_current" in m.state_dict() and "u" in m.state_dict()


def test_gamma_unseen_replaces_gamma_only_on_an_all_unseen_batch():
    """The first-epoch rule inside the objective (on the global batch under a process group):
    ``gamma_unseen`` is used when ``u`` is zero at every index of the batch, per direction for
    the bimodal losses; the modules pass ``(gamma, 1.0)`` in the first epoch only."""
    h1, h2 = rnd(6, 4, seed=40), rnd(6, 4, seed=41)
    idx = torch.tensor([0, 2, 4, 6, 8, 9])
    kw = dict(temperature=0.3, update=False)
    fresh = torch.zeros(10, dtype=F64)
    close(
        sogclr(h1, h2, idx, fresh, gamma=0.6, gamma_unseen=1.0, **kw),
        sogclr(h1, h2, idx, fresh, gamma=1.0, **kw),
    )
    seen = fresh.clone()
    seen[8] = 2.0  # one index of the batch seen: gamma as given
    close(
        sogclr(h1, h2, idx, seen, gamma=0.6, gamma_unseen=1.0, **kw),
        sogclr(h1, h2, idx, seen, gamma=0.6, **kw),
    )
    assert not torch.allclose(
        sogclr(h1, h2, idx, seen, gamma=0.6, **kw), sogclr(h1, h2, idx, seen, gamma=1.0, **kw)
    )
    other = fresh.clone()
    other[1] = 2.0  # seen, but not in the batch
    close(
        sogclr(h1, h2, idx, other, gamma=0.6, gamma_unseen=1.0, **kw),
        sogclr(h1, h2, idx, other, gamma=1.0, **kw),
    )
    # bimodal: images unseen, texts seen -> gamma_unseen for the image direction only
    st = [fresh.clone(), fresh.clone(), seen.clone(), fresh.clone()]
    bkw = dict(temperature=0.2, normalize=True, update=False)
    close(
        sogclr_bimodal(h1, h2, idx, *st, gamma=0.6, gamma_unseen=1.0, **bkw),
        sogclr_bimodal(h1, h2, idx, *st, gamma=1.0, gamma_txt=0.6, **bkw),
    )
    with pytest.raises(ValueError, match="gamma_unseen"):
        sogclr(h1, h2, idx, fresh, gamma_unseen=1.5)
    m = SogCLR(10, gamma=0.7)
    assert m.gamma_args() == (0.7, 1.0)  # first epoch (before and after adjust_gamma(0))
    m.adjust_gamma(0)
    assert m.gamma_args() == (0.7, 1.0)
    m.adjust_gamma(1)
    assert m.gamma_args() == (pytest.approx(0.7), None)
    c = SogCLR(10, gamma=0.8, gamma_schedule="cosine", gamma_decay_epochs=4)
    c.adjust_gamma(2)
    assert c.gamma_args() == (pytest.approx(0.9), None)


def _libauc():
    """LibAUC's GCLoss_v1, loaded from its own file (``libauc/losses/contrastive.py`` needs only
    torch and numpy; importing the package pulls pandas, scikit-learn, ...)."""
    spec = importlib.util.find_spec("libauc")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "libauc not installed: `pip install -c constraints.txt --no-deps libauc==2.0.1` "
            "runs the parity test"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "losses" / "contrastive.py"
    mod_spec = importlib.util.spec_from_file_location("_libauc_contrastive", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.GCLoss_v1


@pytest.mark.parametrize("isog", [False, True])
def test_sogclr_parity_with_libauc(isog):
    GCLoss_v1 = _libauc()
    n, B, d = 16, 5, 6
    with contextlib.redirect_stdout(io.StringIO()):
        peer = GCLoss_v1(N=n, tau=0.1, device=torch.device("cpu"), enable_isogclr=isog)
    ours = (iSogCLR if isog else SogCLR)(n, temperature=0.1)
    ours_t = (iSogCLR if isog else SogCLR)(n, temperature=0.1, backend="tiled", chunk_size=3)
    g = torch.Generator().manual_seed(4)
    for step in range(6):
        if step == 3:
            with contextlib.redirect_stdout(io.StringIO()):
                peer.adjust_gamma(1)
            ours.adjust_gamma(1)
            ours_t.adjust_gamma(1)
        idx = torch.randperm(n, generator=g)[:B]
        h1 = torch.randn(B, d, generator=g).requires_grad_()
        h2 = torch.randn(B, d, generator=g).requires_grad_()
        want = peer(h1, h2, idx)
        want_g = grads(want, (h1, h2))
        for m in (ours, ours_t):
            got = m(h1, h2, idx)
            close(got, want, rtol=2e-6, atol=1e-6, msg=f"step {step}")
            for a, b in zip(grads(got, (h1, h2)), want_g):
                close(a, b, rtol=1e-4, atol=1e-6)
            close(m.u, peer.u.flatten(), rtol=1e-5, atol=1e-6)
            if isog:
                close(m.tau, peer.learnable_tau.flatten(), rtol=1e-5, atol=1e-7)
                close(m.grad_tau, peer.grad_tau.flatten(), rtol=1e-4, atol=1e-6)


def test_sogclr_bad_input():
    h = torch.randn(4, 3)
    u = torch.zeros(10)
    with pytest.raises(ValueError, match="index must have shape"):
        sogclr(h, h, torch.arange(3), u)
    with pytest.raises(ValueError, match="index values must be in"):
        sogclr(h, h, torch.tensor([0, 1, 2, 10]), u)
    with pytest.raises(ValueError, match="integer dataset indices"):
        sogclr(h, h, torch.zeros(4), u)
    with pytest.raises(ValueError, match="at least 2 rows"):
        sogclr(h[:1], h[:1], torch.arange(1), u)
    with pytest.raises(ValueError, match="u must be a 1-D"):
        sogclr(h, h, torch.arange(4), torch.zeros(10, 1))
    with pytest.raises(ValueError, match="gamma"):
        sogclr(h, h, torch.arange(4), u, gamma=1.5)
    with pytest.raises(ValueError, match="temperature"):
        sogclr(h, h, torch.arange(4), u, temperature=0.0)
    with pytest.raises(ValueError, match="gamma_schedule"):
        SogCLR(10, gamma_schedule="linear")
    with pytest.raises(ValueError, match="gamma_decay_epochs"):
        SogCLR(10, gamma_schedule="cosine")
    with pytest.raises(ValueError, match="n_samples"):
        SogCLR(0)
    with pytest.raises(ValueError, match="min_temperature must be <= max_temperature"):
        iSogCLR(10, min_temperature=0.8, max_temperature=0.7)
    with pytest.raises(ValueError, match="tau must have shape"):
        isogclr(h, h, torch.arange(4), u, torch.ones(9), torch.zeros(10))
    with pytest.raises(ValueError, match="index values must be in"):
        SogCLR(3)(h, h, torch.arange(4))


# ---------------------------------------------------------------- focal InfoNCE


def _focal_inputs(N=7, d=5):
    return rnd(N, d, seed=1), rnd(N, d, seed=2), rnd(N, d, seed=3), rnd(N, 2, d, seed=4)


@pytest.mark.parametrize("eng", ENGINES)
@pytest.mark.parametrize("detach", [False, True])
def test_focal_engine_matches_reference(eng, detach):
    q, p, n1, n2 = _focal_inputs()
    xs = (q, p, n1, n2)
    cands = torch.cat([p, n1, n2[:, 0], n2[:, 1]])
    want = ref.focal_info_nce(q, cands, 0.2, 1.5, detach).mean()
    got = focal_info_nce(q, p, n1, n2, temperature=0.2, gamma=1.5, detach_weight=detach, **eng)
    close(got, want)
    for a, b in zip(grads(got, xs), grads(want, xs)):
        close(a, b)


def test_focal_gamma_zero_is_mnrl_and_identical_closed_form():
    q, p, n1, _ = _focal_inputs()
    got = focal_info_nce(q, p, n1, temperature=0.05, gamma=0.0, backend="tiled", chunk_size=3)
    want = multiple_negatives_ranking(q, p, n1, scale=20.0, backend="dense")
    close(got, want)
    x = torch.randn(1, 4, dtype=F64).expand(6, 4)
    C = 12
    for gamma in (0.0, 1.0, 2.5):
        v = focal_info_nce(x, x, x, gamma=gamma, backend="tiled", chunk_size=4)
        assert float(v) == pytest.approx((1 - 1 / C) ** gamma * math.log(C), rel=1e-12)


def test_focal_gradcheck_and_module():
    q, p, n1, _ = _focal_inputs(N=4, d=3)

    def f(q, p, n):
        return focal_info_nce(q, p, n, temperature=0.3, gamma=2.0, backend="tiled", chunk_size=2)

    assert torch.autograd.gradcheck(f, (q, p, n1), eps=1e-6, atol=1e-6, rtol=1e-5)
    m = FocalInfoNCE(temperature=0.3, gamma=2.0, reduction="none")
    rows = m(q, p, n1)
    assert rows.shape == (4,)
    close(rows.mean(), f(q, p, n1))


def test_focal_bad_input():
    q = torch.randn(4, 3)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        focal_info_nce(q, q, gamma=-1.0)
    with pytest.raises(ValueError, match="gamma"):  # declared twin: checked by the functional
        FocalInfoNCE(gamma=float("nan"))(q, q)
    with pytest.raises(ValueError, match="positive must have as many rows"):
        focal_info_nce(q, q[:3])
    with pytest.raises(ValueError, match="negatives\\[0\\]"):
        focal_info_nce(q, q, torch.randn(4, 5))


# ---------------------------------------------------------------- 1-to-K


@pytest.mark.parametrize("eng", ENGINES)
@pytest.mark.parametrize("K", [1, 3])
def test_one_to_k_engine_matches_reference(eng, K):
    B, d = 5, 4
    v, t = rnd(B, d, seed=1), rnd(B * K, d, seed=2)
    tau = torch.tensor(0.3, dtype=F64, requires_grad=True)
    want = ref.one_to_k(v, t, tau)
    got = one_to_k_contrastive(v, t, temperature=tau, **eng)
    close(got, want)
    for a, b in zip(grads(got, (v, t, tau)), grads(want, (v, t, tau))):
        close(a, b)


def test_one_to_k_oracles():
    B, d, K = 4, 6, 3
    v, t = rnd(B, d, seed=3), rnd(B * K, d, seed=4)
    # K = 1 is the CLIP loss with divide-by-tau
    from contrastkit.losses.infonce.clip import clip

    close(
        one_to_k_contrastive(v, t[:B], temperature=0.1, backend="tiled", chunk_size=3),
        clip(v, t[:B], temperature=0.1, backend="dense"),
    )
    # permuting languages inside each block changes nothing
    perm = torch.cat([K * i + torch.randperm(K) for i in range(B)])
    a = one_to_k_contrastive(v, t, backend="tiled", chunk_size=2)
    close(one_to_k_contrastive(v, t[perm], backend="tiled", chunk_size=2), a)
    # identical embeddings: (K log(BK) + log B) / (2K)
    x = torch.randn(1, d, dtype=F64)
    val = one_to_k_contrastive(x.expand(B, d), x.expand(B * K, d), backend="tiled", chunk_size=5)
    assert float(val) == pytest.approx((K * math.log(B * K) + math.log(B)) / (2 * K), rel=1e-12)
    # reductions
    rows = one_to_k_contrastive(v, t, reduction="none", divide_by=2.0)
    assert rows.shape == (B,)
    close(rows.mean(), one_to_k_contrastive(v, t, divide_by=2.0))
    close(rows.sum(), one_to_k_contrastive(v, t, divide_by=2.0, reduction="sum"))


def test_one_to_k_module_clamps_learnable_temperature():
    v, t = rnd(3, 4, seed=5), rnd(6, 4, seed=6)
    m = OneToKContrastive(temperature=0.07).double()
    with torch.no_grad():
        m.temperature.fill_(0.9)
    loss = m(v, t)
    assert float(m.temperature.detach()) == 0.5
    loss.backward()
    assert m.temperature.grad is not None and float(m.temperature.grad) != 0
    close(loss.detach(), ref.one_to_k(v, t, 0.5))
    fixed = OneToKContrastive(temperature=0.1, learnable=False)
    assert not any(True for _ in fixed.parameters())


def test_one_to_k_gradcheck_and_bad_input():
    v, t = rnd(3, 3, seed=7), rnd(6, 3, seed=8)

    def f(v, t):
        return one_to_k_contrastive(v, t, temperature=0.4, backend="tiled", chunk_size=2)

    assert torch.autograd.gradcheck(f, (v, t), eps=1e-6, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="not a multiple"):
        one_to_k_contrastive(torch.randn(3, 4), torch.randn(7, 4))
    with pytest.raises(ValueError, match="divide_by"):
        one_to_k_contrastive(torch.randn(3, 4), torch.randn(6, 4), divide_by=0)
    with pytest.raises(ValueError, match="clamp"):
        OneToKContrastive(clamp=(0.0, 0.5))
    with pytest.raises(ValueError, match="temperature"):
        OneToKContrastive(temperature=0.9)


# ---------------------------------------------------------------- CACR


CACR_CASES = [
    {},
    {"repulsion_scale": 2.0, "attraction_scale": 0.5, "alpha": 0.7, "beta": 1.3},
    {"debiased": True},
    {"weighting": "without_w1"},
    {"weighting": "without_w2", "debiased": True},
    {"weighting": "none"},
]


@pytest.mark.parametrize("eng", ENGINES)
@pytest.mark.parametrize("kw", CACR_CASES)
def test_cacr_engine_matches_official_formulas(eng, kw):
    views = [rnd(6, 4, seed=s) for s in range(3)]
    want = ref.cacr(views, **kw)
    got = cacr(views, **kw, **eng)
    close(got, want)
    for a, b in zip(grads(got, views), grads(want, views)):
        close(a, b)


def test_cacr_oracles():
    x = torch.randn(1, 4, dtype=F64).expand(5, 4)  # every embedding the same vector
    assert abs(float(cacr([x, x, x], backend="tiled", chunk_size=2))) < 1e-12
    views = torch.stack([rnd(6, 4, seed=s) for s in range(4)]).detach()
    Z = F.normalize(views, dim=-1)
    V, N = 4, 6
    pos = torch.stack(
        [(Z[a] - Z[b]).pow(2).sum(-1).mean() for a in range(V) for b in range(V) if a != b]
    ).mean()
    off = ~torch.eye(N, dtype=torch.bool)
    neg = torch.stack(
        [torch.cdist(Z[a], Z[b]).pow(2)[off].mean() for a in range(V) for b in range(a + 1, V)]
    ).mean()
    got = cacr(views, attraction_scale=0.0, repulsion_scale=0.0, alpha=0.5, beta=2.0)
    close(got, 0.5 * pos - 2.0 * neg)
    rows = cacr(views, reduction="none", backend="tiled", chunk_size=4)
    assert rows.shape == (N,)
    close(rows.mean(), cacr(views, backend="tiled", chunk_size=4))
    close(rows.sum(), cacr(views, reduction="sum"))
    close(cacr(list(views)), cacr(views))


def test_cacr_gradcheck_and_module():
    views = rnd(2, 4, 3, seed=9)

    def f(z):
        return cacr(z, repulsion_scale=1.5, debiased=True, backend="tiled", chunk_size=3)

    assert torch.autograd.gradcheck(f, (views,), eps=1e-6, atol=1e-6, rtol=1e-5)
    close(CACR(repulsion_scale=1.5, debiased=True, backend="tiled", chunk_size=3)(views), f(views))


def test_cacr_bad_input():
    with pytest.raises(ValueError, match="at least 2 views"):
        cacr(torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match="at least 2 views"):
        cacr(torch.randn(3, 1, 3))
    with pytest.raises(ValueError, match="weighting"):
        CACR(weighting="half")(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="repulsion_scale"):
        cacr(torch.randn(2, 4, 3), repulsion_scale=-1.0)
    with pytest.raises(ValueError, match="views\\[1\\] has shape"):
        cacr([torch.randn(4, 3), torch.randn(5, 3)])
    with pytest.raises(ValueError, match="tau_plus"):
        cacr(torch.randn(2, 4, 3), tau_plus=1.0)


# ---------------------------------------------------------------- AMCL


def _amcl_module(dim=4, heads=2, topk=1, seed=0):
    torch.manual_seed(seed)
    return AMCL(
        dim=dim, num_heads=heads, beta=0.1, hidden_dim=8, topk=topk, min_temperature=0.05
    ).double()


@pytest.mark.parametrize("chunk", [None, 1, 2, 5])
@pytest.mark.parametrize("topk", [1, 3])
def test_amcl_matches_dense_reference(chunk, topk):
    m = _amcl_module(topk=topk)
    m.chunk_size = chunk
    z1, z2 = rnd(5, 2, 4, seed=1), rnd(5, 2, 4, seed=2)
    want = ref.amcl(z1, z2, m.temperature, 0.1, topk)
    got = m(z1, z2)
    close(got, want)
    xs = (z1, z2, *m.parameters())
    for a, b in zip(grads(got, xs), grads(want, xs)):
        close(a, b)


def test_amcl_oracle_fixed_temperature():
    """C = 1, tau+ = tau- = tau, beta = 0: -s_pos / tau + max_n s_n / tau per anchor."""
    z1, z2 = rnd(6, 3, seed=3), rnd(6, 3, seed=4)
    tau = 0.25

    def const(c, a, b):
        return torch.full((a.shape[0],), tau, dtype=a.dtype)

    got = amcl(z1, z2, const, beta=0.0, chunk_size=4)
    Z = F.normalize(torch.cat([z1, z2]), dim=-1)
    S = Z @ Z.T
    rows = []
    for i in range(12):
        p = (i + 6) % 12
        negs = [S[i, j] for j in range(12) if j not in (i, p)]
        rows.append(-S[i, p] / tau + max(negs) / tau)
    close(got, torch.stack(rows).mean())
    # the gradient reaches only the selected negatives: zero for a vector nobody selects
    idx = hardest_negatives(Z.detach(), 1)
    unused = sorted(set(range(12)) - set(idx.flatten().tolist()))
    assert unused
    Zl = Z.detach().clone().requires_grad_()

    def on_unit(Zl):
        return amcl(Zl[:6], Zl[6:], const, beta=0.0)

    g = torch.autograd.grad(on_unit(Zl), Zl)[0]
    for j in unused:  # only its own row and being anchor p's positive touch it
        p, n = (j + 6) % 12, int(idx[j, 0])
        zj = Zl[j].detach()
        v = (-2 * Zl[p] + Zl[n]).detach() / tau
        close(g[j] * 12, v - (v @ zj) * zj)  # through the normalisation Jacobian


def test_amcl_gradcheck():
    m = _amcl_module(dim=3, heads=2, topk=2, seed=1)
    for p in m.parameters():
        p.requires_grad_(False)

    def f(z1, z2):
        return m(z1, z2)

    assert torch.autograd.gradcheck(
        f, (rnd(4, 2, 3, seed=5), rnd(4, 2, 3, seed=6)), eps=1e-6, atol=1e-6, rtol=1e-5
    )


def test_amcl_reductions_and_bad_input():
    m = _amcl_module()
    z1, z2 = rnd(5, 2, 4, seed=7), rnd(5, 2, 4, seed=8)
    mean = m(z1, z2)
    m.reduction = "none"
    rows = m(z1, z2)
    assert rows.shape == (5,)
    close(rows.mean(), mean)
    with pytest.raises(ValueError, match="num_heads=2"):
        m(torch.randn(5, 3, 4, dtype=F64), torch.randn(5, 3, 4, dtype=F64))
    with pytest.raises(ValueError, match="at least 2 samples"):
        amcl(torch.randn(1, 4), torch.randn(1, 4), m.temperature)
    with pytest.raises(ValueError, match="topk"):
        amcl(torch.randn(3, 4), torch.randn(3, 4), m.temperature, topk=5)
    with pytest.raises(ValueError, match="must return shape"):
        amcl(torch.randn(3, 4), torch.randn(3, 4), lambda c, a, b: torch.ones(2))
    with pytest.raises(ValueError, match="min_temperature < max_temperature"):
        AMCL(min_temperature=2.0, max_temperature=1.0)
    with pytest.raises(ValueError, match="same shape"):
        amcl(torch.randn(3, 2, 4), torch.randn(3, 1, 4), m.temperature)


def test_docs_example_runs():
    page = Path(__file__).parent.parent / "docs" / "objectives" / "weighting.md"
    code = page.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, str(page), "exec"), {})


def test_benchmark_hook_engine_equals_dense():
    path = Path(__file__).parents[1] / "benchmarks" / "objectives_adaptive.py"
    spec = importlib.util.spec_from_file_location("_bench_objectives_adaptive", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    names = [n for n in bench.CASES if not n.endswith("-dense")]
    assert set(bench.CASES) == set(names) | {n + "-dense" for n in names}
    assert len(names) == 8
    for name in names:
        call = bench.CASES[name](160, 8, torch.Generator().manual_seed(0))
        tiled = call()
        assert torch.equal(call(), tiled)  # repeatable: stateful cases read a fixed state
        dense = bench.CASES[name + "-dense"](160, 8, torch.Generator().manual_seed(0))()
        assert tiled.dim() == 0 and tiled.requires_grad
        torch.testing.assert_close(tiled, dense, rtol=1e-5, atol=1e-5, msg=name)


def test_half_precision_inputs_compute_in_fp32():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(6, 8, generator=g).to(torch.bfloat16) for _ in range(3))
    idx = torch.arange(6)
    eng = {"backend": "tiled", "chunk_size": 4}
    cases = [
        (lambda x, y, z: sogclr(x, y, idx, torch.zeros(6), update=False, **eng)),
        (
            lambda x, y, z: isogclr(
                x,
                y,
                idx,
                torch.zeros(6),
                torch.full((6,), 0.1),
                torch.zeros(6),
                update=False,
                **eng,
            )
        ),
        (lambda x, y, z: focal_info_nce(x, y, z, **eng)),
        (lambda x, y, z: one_to_k_contrastive(x[:3], y, **eng)),
        (lambda x, y, z: cacr([x, y, z], **eng)),
        (lambda x, y, z: AMCL(dim=8, num_heads=1)(x[:, None], y[:, None])),
    ]
    for i, f in enumerate(cases):
        torch.manual_seed(1)
        low = f(a, b, c)
        torch.manual_seed(1)
        ref_ = f(a.float(), b.float(), c.float())
        assert low.dtype == torch.float32, i
        torch.testing.assert_close(low, ref_, rtol=1e-5, atol=1e-5, msg=str(i))


# ---------------------------------------------------------------- bimodal SogCLR / iSogCLR


@pytest.mark.parametrize("eng", ENGINES)
@pytest.mark.parametrize("isog", [False, True])
def test_bimodal_engine_matches_reference_over_steps(eng, isog):
    n, B, d = 12, 5, 4
    rho, eta, beta, lo, hi = 0.5, 0.02, 0.7, 0.05, 0.5
    st_ref = [torch.zeros(n, dtype=F64) for _ in range(4)]
    st = [torch.zeros(n, dtype=F64) for _ in range(4)]
    taus_ref = [torch.full((n,), 0.2, dtype=F64) for _ in range(2)]
    taus = [t.clone() for t in taus_ref]
    g_ref = [torch.zeros(n, dtype=F64) for _ in range(2)]
    gs = [torch.zeros(n, dtype=F64) for _ in range(2)]
    for step, (idx, h1, h2) in enumerate(_steps(n, B, d, 4, seed=7)):
        gamma = 1.0 if step == 0 else 0.8
        ti, tt = (taus_ref[0][idx], taus_ref[1][idx]) if isog else (0.2, 0.2)
        want, new, gr = ref.gcl_bimodal(h1, h2, [s[idx] for s in st_ref], ti, tt, gamma, rho)
        want = want.mean()
        for s, v in zip(st_ref, new):
            s[idx] = v
        if isog:
            for k in range(2):
                g_ref[k][idx] = (1 - beta) * g_ref[k][idx] + beta * gr[k]
                taus_ref[k][idx] = (taus_ref[k][idx] - eta * g_ref[k][idx]).clamp(lo, hi)
            got = isogclr_bimodal(
                h1,
                h2,
                idx,
                *st,
                *taus,
                *gs,
                gamma=gamma,
                rho=rho,
                eta=eta,
                beta=beta,
                min_temperature=lo,
                max_temperature=hi,
                **eng,
            )
        else:
            got = sogclr_bimodal(h1, h2, idx, *st, temperature=0.2, gamma=gamma, **eng)
        close(got, want, msg=f"step {step} value")
        for a, b in zip(grads(got, (h1, h2)), grads(want, (h1, h2))):
            close(a, b, msg=f"step {step} grad")
        for k, (a, b) in enumerate(zip(st, st_ref)):
            close(a, b, rtol=1e-11, atol=1e-13, msg=f"step {step} state {k}")
        if isog:
            for a, b in zip(taus + gs, taus_ref + g_ref):
                close(a, b, rtol=1e-11, atol=1e-13, msg=f"step {step} tau")
    if isog:
        assert not torch.all(taus[0] == 0.2)


def _libauc_module():
    _libauc()  # skips when libauc is missing
    spec = importlib.util.find_spec("libauc")
    path = Path(list(spec.submodule_search_locations)[0]) / "losses" / "contrastive.py"
    mod_spec = importlib.util.spec_from_file_location("_libauc_contrastive_v2", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("isog", [False, True])
def test_bimodal_parity_with_libauc(isog):
    lib = _libauc_module()
    n, B, d = 16, 5, 6
    scheme = "individual_learnable" if isog else "global_constant"
    with contextlib.redirect_stdout(io.StringIO()):
        peer = lib.GCLoss_v2(N=n, tau=0.05, temperature_scheme=scheme)
    ours = (iSogCLRBimodal if isog else SogCLRBimodal)(
        n, temperature=0.05, backend="tiled", chunk_size=2
    )
    g = torch.Generator().manual_seed(4)
    for step in range(5):
        if step == 3:
            with contextlib.redirect_stdout(io.StringIO()):
                peer.adjust_gamma(1)
            ours.adjust_gamma(1)
        idx = torch.randperm(n, generator=g)[:B]
        h1 = F.normalize(torch.randn(B, d, generator=g), dim=-1).requires_grad_()
        h2 = F.normalize(torch.randn(B, d, generator=g), dim=-1).requires_grad_()
        want = peer(h1, h2, idx)[0]
        got = ours(h1, h2, idx)
        close(got, want, rtol=2e-6, atol=1e-6, msg=f"step {step}")
        for a, b in zip(grads(got, (h1, h2)), grads(want, (h1, h2))):
            close(a, b, rtol=1e-4, atol=1e-5)
        close(ours.u_img, peer.u1.flatten(), rtol=2e-5, atol=1e-7)
        close(ours.u_txt, peer.u2.flatten(), rtol=2e-5, atol=1e-7)
        close(ours.b_img, peer.b1.flatten(), rtol=5e-5, atol=1e-5)
        close(ours.b_txt, peer.b2.flatten(), rtol=5e-5, atol=1e-5)
        if isog:
            close(ours.tau_img, peer.learnable_tau_img.flatten(), rtol=1e-5, atol=1e-7)
            close(ours.tau_txt, peer.learnable_tau_txt.flatten(), rtol=1e-5, atol=1e-7)


def test_bimodal_reductions_eval_and_bad_input():
    h1, h2 = rnd(5, 3, seed=21), rnd(5, 3, seed=22)
    idx = torch.arange(5)
    st = [torch.rand(8, dtype=F64) + 0.1 for _ in range(4)]
    kw = dict(update=False, backend="tiled", chunk_size=2)
    mean = sogclr_bimodal(h1, h2, idx, *st, **kw)
    rows = sogclr_bimodal(h1, h2, idx, *st, reduction="none", **kw)
    assert rows.shape == (5,)
    close(rows.mean(), mean)
    close(rows.sum(), sogclr_bimodal(h1, h2, idx, *st, reduction="sum", **kw))
    m = SogCLRBimodal(5).double().eval()
    m(h1, h2, idx)
    assert torch.all(m.u_img == 0) and torch.all(m.b_txt == 0)
    m.train()
    m(h1, h2, idx)
    assert torch.all(m.u_img > 0) and torch.all(m.u_txt > 0)
    x = torch.randn(4, 3)
    s4 = [torch.zeros(8) for _ in range(4)]
    with pytest.raises(ValueError, match="text must have as many rows"):
        sogclr_bimodal(x, x[:3], torch.arange(4), *s4)
    with pytest.raises(ValueError, match="index values must be in"):
        sogclr_bimodal(x, x, torch.tensor([0, 1, 2, 8]), *s4)
    with pytest.raises(ValueError, match="b_txt must have shape"):
        sogclr_bimodal(x, x, torch.arange(4), *s4[:3], torch.zeros(7))
    with pytest.raises(ValueError, match="at least 2 rows"):
        sogclr_bimodal(x[:1], x[:1], torch.arange(1), *s4)
    with pytest.raises(ValueError, match="min_temperature must be <= max_temperature"):
        iSogCLRBimodal(8, min_temperature=0.1, max_temperature=0.05)


# ---------------------------------------------------------------- AdaMEOW, gCooL, CSGCL, SBCL
# (moved from test_negatives.py; the input builders stay tested there)

D64 = F64
NEG_ENGINES = [
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


def test_adameow_constant_weights_and_learned_gradient():
    a, z = rand(6, 4, seed=33), rand(6, 4, seed=34)
    ones = torch.ones(6, 6, dtype=D64)
    torch.testing.assert_close(
        adameow_info_nce(a, z, ones, temperature=0.9), info_nce(a, z, temperature=0.9)
    )
    net = AdaMEOWWeights(4, chunk_size=4).double()
    w = net(F.normalize(a, dim=-1), F.normalize(z, dim=-1))
    loss = adameow_info_nce(a, z, w, temperature=1.0)
    loss.backward()
    assert net.mlp[0].weight.grad is not None and float(net.mlp[0].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="weights"):
        adameow_info_nce(a, z, torch.ones(6, 5, dtype=D64))


def test_community_contrast_cosine_and_rbf_oracles():
    # cosine mode, C = N singleton communities: node-level InfoNCE across views
    h1, h2 = unit(6, 4, seed=36), unit(6, 4, seed=37)
    idx = torch.arange(6)
    got = community_contrast(h1, h2, idx, idx, 6, temperature=0.3)
    want = (info_nce(h1, h2, temperature=0.3) + info_nce(h2, h1, temperature=0.3)) / 2
    torch.testing.assert_close(got, want)
    # rbf mode equals an explicit loop
    a1, a2 = torch.tensor([0, 1, 1, 2, 0, 2]), torch.tensor([1, 1, 0, 2, 2, 0])
    got = community_contrast(h1, h2, a1, a2, 3, temperature=0.5, mode="rbf", gamma=0.8)

    def side(h, assign, hc):
        Cs = torch.stack([hc[assign == c].mean(0) for c in range(3)])
        out = []
        for i in range(6):
            c = int(assign[i])
            e = torch.exp(-((h[i] - Cs) ** 2).sum(-1) / 0.25)
            w = torch.exp(-0.8 * ((Cs[c] - Cs) ** 2).sum(-1))
            out.append(-torch.log(e[c] / (w * e).sum()))
        return torch.stack(out)

    want = ((side(h1, a2, h2) + side(h2, a1, h1)) / 2).mean()
    torch.testing.assert_close(got, want)


def test_team_up_reference_and_gamma_zero_is_grace():
    h1, h2 = rand(6, 4, seed=39, grad=True), rand(6, 4, seed=40, grad=True)
    cs = torch.tensor([0.1, -0.05, 0.2, 0.1, 0.0, 0.3], dtype=D64)
    torch.testing.assert_close(
        team_up(h1, h2, cs, 0.0, temperature=0.2), nt_xent(h1, h2, temperature=0.2)
    )
    Z = F.normalize(torch.cat([h1, h2]), dim=-1)
    c2 = torch.cat([cs, cs])
    s = Z @ Z.T + 0.7 * (c2[:, None] + c2[None, :])
    logits = (s / 0.2).masked_fill(torch.eye(12, dtype=torch.bool), float("-inf"))
    target = (torch.arange(12) + 6) % 12
    want = F.cross_entropy(logits, target)
    gw = torch.autograd.grad(want, (h1, h2))
    for eng in NEG_ENGINES:
        got = team_up(h1, h2, cs, 0.7, temperature=0.2, **eng)
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(got, (h1, h2)), gw):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="strength"):
        team_up(h1, h2, cs[:5], 0.1)


def ref_sbcl(feats, y, s, tau_c, tau=0.1, base=0.07, gamma=0.25):
    """Transcription of SupConLoss_rank's masks (JackHck/SBCL SimCLR/loss.py) in plain torch."""
    B = feats.shape[0]
    Z = F.normalize(torch.cat([feats[:, 0], feats[:, 1]]), dim=-1)
    y2, s2 = y.repeat(2), s.repeat(2)
    n = 2 * B
    eye = torch.eye(n, dtype=torch.bool)
    sim = Z @ Z.T
    logits = sim / tau
    same_sub = (s2[:, None] == s2[None, :]) & ~eye
    lp = logits - torch.logsumexp(logits.masked_fill(eye, float("-inf")), 1, keepdim=True)
    t1 = (lp * same_sub).sum(1) / same_sub.sum(1)
    partner = torch.zeros(n, n, dtype=torch.bool)
    partner[torch.arange(n), (torch.arange(n) + B) % n] = True
    rank = sim / tau_c[y2][:, None]
    den = (~same_sub & ~eye) | partner
    lpr = rank - torch.logsumexp(rank.masked_fill(~den, float("-inf")), 1, keepdim=True)
    pos = ((~same_sub & ~eye) & (y2[:, None] == y2[None, :])) | partner
    t2 = (lpr * pos).sum(1) / pos.sum(1)
    return (-(tau / base) * t1 - gamma * t2).mean()


def test_sbcl_reference_and_reductions():
    feats = rand(10, 2, 6, seed=41, grad=True)
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    s = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    tau_c = torch.tensor([0.08, 0.12, 0.1], dtype=D64)
    want = ref_sbcl(feats, y, s, tau_c)
    gw = torch.autograd.grad(want, feats)[0]
    for eng in NEG_ENGINES:
        got = sbcl(feats, y, s, tau_c, **eng)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(torch.autograd.grad(got, feats)[0], gw)
    # gamma = 0 and one sub-class per class: SupCon on class labels (times tau / tau_base)
    torch.testing.assert_close(
        sbcl(feats, y, y, gamma=0.0),
        supcon(feats, y, temperature=0.1, base_temperature=0.07),
    )
    none = sbcl(feats, y, s, tau_c, reduction="none")
    torch.testing.assert_close(none.mean(), want)


def test_sbcl_gradcheck():
    feats = rand(5, 2, 3, seed=42, grad=True)
    y, s = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 0, 1, 2, 2])
    tau_c = torch.tensor([0.5, 0.7], dtype=D64)

    def f(x):
        return sbcl(x, y, s, tau_c, temperature=0.5, backend="tiled", chunk_size=3)

    assert torch.autograd.gradcheck(f, (feats,))


def test_sbcl_with_a_fitted_subclass_balancer():
    g = torch.Generator().manual_seed(43)
    counts = [40, 20, 10, 5]
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    feats = torch.randn(labels.numel(), 8, generator=g, dtype=D64)
    bal = SubclassBalancer(min_size=10, temperature=0.1)
    sub = bal.fit(feats, labels)
    x2 = torch.stack([feats[:10], feats[10:20]], 1)
    loss = sbcl(x2, labels[:10], sub[:10], bal.class_temperatures, temperature=bal.temperature)
    assert torch.isfinite(loss)
    assert not hasattr(bal, "loss")  # negatives/ builds inputs; the loss lives in losses/


# ---------------------------------------------------------------- every objective of the family:
# module twin == functional (value, gradient), reductions, registration, aliases


def _views(n=6, d=4, seed=0):
    return [rnd(n, d, seed=seed), rnd(n, d, seed=seed + 1)]


def _amcl_twin():
    torch.manual_seed(0)
    return AMCL(dim=4, num_heads=2, hidden_dim=8, topk=2).double()


# name -> (make module, call the functional with the module's options, make inputs)
TWINS = {
    "focal_info_nce": (
        lambda **kw: FocalInfoNCE(temperature=0.1, gamma=1.5, **kw),
        lambda x, **kw: focal_info_nce(*x, temperature=0.1, gamma=1.5, **kw),
        lambda: [rnd(5, 4, seed=1), rnd(5, 4, seed=2), rnd(5, 2, 4, seed=3)],
    ),
    "debiased_info_nce": (
        lambda **kw: DebiasedInfoNCE(temperature=0.4, tau_plus=0.05, **kw),
        lambda x, **kw: debiased_info_nce(*x, temperature=0.4, tau_plus=0.05, **kw),
        _views,
    ),
    "hard_negative_info_nce": (
        lambda **kw: HardNegativeInfoNCE(temperature=0.4, beta=0.5, **kw),
        lambda x, **kw: hard_negative_info_nce(*x, temperature=0.4, beta=0.5, **kw),
        _views,
    ),
    "cacr": (
        lambda **kw: CACR(repulsion_scale=1.5, debiased=True, **kw),
        lambda x, **kw: cacr(*x, repulsion_scale=1.5, debiased=True, **kw),
        lambda: [rnd(3, 5, 4, seed=4)],
    ),
    "one_to_k_contrastive": (
        lambda **kw: OneToKContrastive(temperature=0.25, learnable=False, **kw),
        lambda x, **kw: one_to_k_contrastive(*x, temperature=torch.tensor(0.25, dtype=F64), **kw),
        lambda: [rnd(3, 4, seed=5), rnd(6, 4, seed=6)],
    ),
    "adameow_info_nce": (
        lambda **kw: AdaMEOWInfoNCE(temperature=0.9, **kw),
        lambda x, **kw: adameow_info_nce(*x, temperature=0.9, **kw),
        lambda: [rnd(5, 4, seed=7), rnd(5, 4, seed=8), (torch.rand(5, 5, dtype=F64) + 0.5)],
    ),
    "community_contrast": (
        lambda **kw: CommunityContrast(temperature=0.5, mode="rbf", gamma=0.8, **kw),
        lambda x, **kw: community_contrast(*x, temperature=0.5, mode="rbf", gamma=0.8, **kw),
        lambda: [
            rnd(6, 4, seed=9),
            rnd(6, 4, seed=10),
            torch.tensor([0, 1, 1, 2, 0, 2]),
            torch.tensor([1, 1, 0, 2, 2, 0]),
            3,
        ],
    ),
    "team_up": (
        lambda **kw: TeamUp(temperature=0.3, **kw),
        lambda x, **kw: team_up(*x, temperature=0.3, **kw),
        lambda: [rnd(5, 4, seed=11), rnd(5, 4, seed=12), torch.rand(5, dtype=F64), 0.4],
    ),
    "sbcl": (
        lambda **kw: SBCL(temperature=0.2, gamma=0.5, **kw),
        lambda x, **kw: sbcl(*x, temperature=0.2, gamma=0.5, **kw),
        lambda: [
            rnd(6, 2, 4, seed=13),
            torch.tensor([0, 0, 0, 0, 1, 1]),
            torch.tensor([0, 0, 1, 1, 2, 2]),
            torch.tensor([0.15, 0.25], dtype=F64),
        ],
    ),
    "amcl": (
        lambda **kw: _amcl_twin(),
        None,  # the functional takes the module's temperature networks (below)
        lambda: [rnd(5, 2, 4, seed=14), rnd(5, 2, 4, seed=15)],
    ),
}


def _float_inputs(x):
    return [t for t in x if isinstance(t, torch.Tensor) and t.requires_grad]


@pytest.mark.parametrize("name", sorted(TWINS))
def test_module_twin_equals_functional(name):
    make, call, inputs = TWINS[name]
    x = inputs()
    m = make()
    got = m(*x)
    if name == "amcl":
        want = amcl(*x, m.temperature, topk=2)
    else:
        want = call(x)
    close(got, want)
    for a, b in zip(grads(got, _float_inputs(x)), grads(want, _float_inputs(x))):
        close(a, b)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_reduction_none_rows_sum_and_mean(name):
    make, call, inputs = TWINS[name]
    x = inputs()
    if name == "amcl":
        m = make()

        def f(**kw):
            return amcl(*x, m.temperature, topk=2, **kw)
    else:

        def f(**kw):
            return call(x, **kw)

    rows = f(reduction="none")
    assert rows.dim() == 1 and rows.shape[0] > 0
    close(rows.sum(), f(reduction="sum"), rtol=1e-7, atol=1e-9)
    close(rows.mean(), f(reduction="mean"), rtol=1e-7, atol=1e-9)


def _sog_inputs(n=6, d=4):
    return rnd(n, d, seed=20), rnd(n, d, seed=21), torch.tensor([3, 0, 7, 5, 1, 9])


@pytest.mark.parametrize("cls", [SogCLR, iSogCLR, SogCLRBimodal, iSogCLRBimodal])
def test_stateful_module_equals_functional_and_reductions(cls):
    z1, z2, index = _sog_inputs()
    m = cls(10).double()
    fn = {SogCLR: sogclr, iSogCLR: isogclr, SogCLRBimodal: sogclr_bimodal}.get(cls, isogclr_bimodal)
    states = [b.clone() for _, b in m.named_buffers() if b.dim() == 1]
    # fresh state, first epoch: the module's effective gamma is 1
    got = m(z1, z2, index)
    want = fn(z1, z2, index, *states, gamma=1.0, update=True)
    close(got, want)
    for a, b in zip(grads(got, (z1, z2)), grads(want, (z1, z2))):
        close(a, b)
    for (name, b), st in zip([(n, b) for n, b in m.named_buffers() if b.dim() == 1], states):
        close(b, st, msg=name)  # the same in-place update
    rows = fn(z1, z2, index, *states, gamma=0.5, update=False, reduction="none")
    close(rows.sum(), fn(z1, z2, index, *states, gamma=0.5, update=False, reduction="sum"))
    close(rows.mean(), fn(z1, z2, index, *states, gamma=0.5, update=False, reduction="mean"))


def test_registered_with_family_and_aliases():
    import contrastkit as ck
    import contrastkit.functional as CF
    from contrastkit.objective import entries

    names = {e.name: e for e in entries("weighting")}
    assert set(names) == {
        "sogclr",
        "isogclr",
        "sogclr_bimodal",
        "isogclr_bimodal",
        "amcl",
        "cacr",
        "focal_info_nce",
        "one_to_k_contrastive",
        "debiased_info_nce",
        "hard_negative_info_nce",
        "adameow_info_nce",
        "community_contrast",
        "team_up",
        "sbcl",
    }
    assert names["team_up"].module is TeamUp and names["sbcl"].module is SBCL
    # the names published before the naming rule are the same objects
    from contrastkit.losses import sbcl_loss, team_up_loss

    assert team_up_loss is team_up is ck.team_up and sbcl_loss is sbcl is ck.sbcl
    assert CF.team_up_loss is team_up and CF.sbcl_loss is sbcl
    assert ck.TeamUp is TeamUp and ck.SBCL is SBCL


def test_exact_and_rank_local_declarations():
    exact = {
        debiased_info_nce,
        hard_negative_info_nce,
        focal_info_nce,
        cacr,
        one_to_k_contrastive,
        team_up,
        sbcl,
        sogclr,
        isogclr,
        sogclr_bimodal,
        isogclr_bimodal,
    }
    for e in __import__("contrastkit.objective", fromlist=["entries"]).entries("weighting"):
        local = getattr(e.functional, "exact_under_group", True) is False
        assert local != (e.functional in exact), e.name
