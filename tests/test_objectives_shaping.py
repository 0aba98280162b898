"""Shaping objectives: shuffled group whitening and WhitenedCSE, SimCTG. Each against a plain
dense reference written from the official code (values and gradients, fp64), oracles,
gradcheck, bad input; module twin == functional, reductions and the published aliases of the
family."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses.infonce.info_nce import info_nce
from contrastkit.losses.shaping.simctg import SimCTG, SimCTGContrastive, simctg, simctg_contrastive
from contrastkit.losses.shaping.whitening import (
    ShuffledGroupWhitening,
    WhitenedCSE,
    shuffled_group_whitening,
    whitened_cse,
)

DT = torch.float64
ENGINES = [
    {"backend": "dense"},
    {"backend": "tiled"},
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled", "chunk_size": 64},
    {"backend": "auto"},
]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, grad=True, dtype=DT):
    x = torch.randn(*shape, generator=_gen(seed), dtype=dtype)
    return x.requires_grad_(grad)


def _close_grads(got, want, leaves, rtol=1e-8, atol=1e-10):
    g1 = torch.autograd.grad(got, leaves, allow_unused=True)
    g2 = torch.autograd.grad(want, leaves, allow_unused=True)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------
# SimCTG
# ----------------------------------------------------------------------------------------------


def ref_simctg_cl(hidden, input_ids, pad, margin):
    """yxuansu/SimCTG SimCTGLoss.contrastive_loss, written out (valid_len prefix masks)."""
    norm = hidden / hidden.norm(dim=2, keepdim=True)
    S = norm @ norm.transpose(1, 2)
    B, T, _ = S.shape
    gold = torch.diagonal(S, dim1=1, dim2=2)[..., None]
    loss = F.relu(margin - (gold - S))
    input_mask = (input_ids != pad).to(S.dtype)
    lens = input_mask.sum(-1).long().tolist()
    masks = []
    for n in lens:
        m = torch.ones(T, T, dtype=S.dtype) - torch.eye(T, dtype=S.dtype)
        m[:, n:] = 0
        m[n:, :] = 0
        masks.append(m)
    mask = torch.stack(masks)
    rows = (loss * mask).sum(-1) * input_mask
    return rows.sum() / mask.sum()


def _simctg_inputs(B=3, T=9, d=5, seed=0):
    H = _randn(B, T, d, seed=seed)
    ids = torch.randint(1, 50, (B, T), generator=_gen(seed + 1))
    ids[1, 6:] = 0
    ids[-1, 2:] = 0
    return H, ids


@pytest.mark.parametrize("margin", [0.5, 0.9, 1.3])
def test_simctg_matches_official_port(margin):
    H, ids = _simctg_inputs()
    want = ref_simctg_cl(H, ids, 0, margin)
    for eng in ENGINES:
        got = simctg_contrastive(H, input_ids=ids, pad_token_id=0, margin=margin, **eng)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=str(eng))
        _close_grads(
            simctg_contrastive(H, input_ids=ids, pad_token_id=0, margin=margin, **eng),
            ref_simctg_cl(H, ids, 0, margin),
            [H],
        )
    # the same valid tokens given as an attention mask
    got = simctg_contrastive(H, attention_mask=(ids != 0).long(), margin=margin, backend="tiled")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_simctg_oracles():
    eye = torch.eye(6, dtype=DT)[None].repeat(2, 1, 1) * 3.0  # orthogonal token states
    assert float(simctg_contrastive(eye, margin=0.5, backend="tiled", chunk_size=2)) == 0.0
    same = torch.ones(2, 6, 4, dtype=DT)  # identical token states: every pair costs rho
    for rho in (0.5, 0.2):
        v = simctg_contrastive(same, margin=rho, backend="tiled", chunk_size=4)
        torch.testing.assert_close(v, torch.tensor(rho, dtype=DT))
    # fewer than two valid tokens: no pairs, 0 with a graph
    H = _randn(2, 4, 3, seed=3)
    mask = torch.zeros(2, 4)
    mask[0, 0] = 1
    v = simctg_contrastive(H, attention_mask=mask)
    assert float(v.detach()) == 0.0 and v.requires_grad
    # rho = 0 disables the term
    assert float(simctg_contrastive(H, margin=0.0).detach()) == 0.0


def test_simctg_gradcheck_and_total():
    H, ids = _simctg_inputs(2, 5, 3, seed=4)
    assert torch.autograd.gradcheck(
        lambda h: simctg_contrastive(
            h, input_ids=ids, pad_token_id=0, margin=1.2, backend="tiled", chunk_size=2
        ),
        (H,),
    )
    logits = _randn(2, 5, 11, seed=5)
    labels = torch.randint(0, 11, (2, 5), generator=_gen(6))
    labels[1, 3:] = -100
    total = simctg(H, logits, labels, input_ids=ids, pad_token_id=0)
    want = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1)) + ref_simctg_cl(
        H, ids, 0, 0.5
    )
    torch.testing.assert_close(total, want)
    mod = SimCTG(pad_token_id=0)
    torch.testing.assert_close(mod(H, logits, labels, input_ids=ids), want)
    cl = SimCTGContrastive(pad_token_id=0)(H, input_ids=ids)
    torch.testing.assert_close(cl, ref_simctg_cl(H, ids, 0, 0.5))


def test_simctg_fp32_tiled_equals_dense():
    H = torch.randn(4, 40, 16, generator=_gen(7)).requires_grad_()
    d = simctg_contrastive(H, margin=0.9, backend="dense")
    (gd,) = torch.autograd.grad(d, H)
    for c in (None, 7):
        t = simctg_contrastive(H, margin=0.9, backend="tiled", chunk_size=c)
        (gt,) = torch.autograd.grad(t, H)
        torch.testing.assert_close(t, d, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gt, gd, rtol=1e-5, atol=1e-6)


def test_simctg_bad_input():
    H = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="hidden_states"):
        simctg_contrastive(torch.randn(4, 3))
    with pytest.raises(ValueError, match="margin"):
        simctg_contrastive(H, margin=-0.1)
    with pytest.raises(ValueError, match="attention_mask"):
        simctg_contrastive(H, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="labels"):
        simctg(H, torch.randn(2, 4, 7), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="backend"):
        SimCTG(backend="gpu")


# ----------------------------------------------------------------------------------------------
# Shuffled group whitening and the WhitenedCSE loss
# ----------------------------------------------------------------------------------------------


def ref_whitening_view(x, G, perm):
    """shuffled_group_whitening.py for one view, with eigh in place of symeig (W detached)."""
    B, D = x.shape
    x = x.t()[perm].t().reshape(B, G, D // G)
    x = (x - x.mean(dim=0, keepdim=True)).transpose(0, 1)
    covs = (x.transpose(1, 2) @ x / B).detach()
    S, U = torch.linalg.eigh(covs)
    W = U @ S.rsqrt().diag_embed() @ U.transpose(1, 2)
    x = x @ W
    return x.transpose(1, 2).flatten(0, 1)[torch.argsort(perm)].t()


def test_whitening_matches_port_and_whitens():
    D, G, B = 12, 3, 10
    x = (
        torch.randn(3 * B, D, generator=_gen(1), dtype=DT) @ torch.randn(D, D, dtype=DT)
    ).requires_grad_()
    m = ShuffledGroupWhitening(D, num_groups=G, num_views=3, generator=_gen(42))
    out = m(x)
    g = _gen(42)
    perms = [torch.randperm(D, generator=g) for _ in range(3)]
    want = torch.cat([ref_whitening_view(v, G, p) for v, p in zip(x.split(B), perms)])
    torch.testing.assert_close(out, want)
    _close_grads((out**3).sum(), (want**3).sum(), [x])
    # every (permuted) group of every view has identity covariance
    for v, p in zip(out.detach().split(B), perms):
        v = v[:, p] - v[:, p].mean(0)
        cov = v.T @ v / B
        for k in range(G):
            blk = cov[k * 4 : (k + 1) * 4, k * 4 : (k + 1) * 4]
            torch.testing.assert_close(blk, torch.eye(4, dtype=DT))


def test_whitening_eval_and_gradient_options():
    x = torch.randn(24, 8, generator=_gen(2), dtype=DT).requires_grad_()
    m = ShuffledGroupWhitening(8, num_groups=2, shuffle=False).eval()
    out = m(x)
    torch.testing.assert_close(out, shuffled_group_whitening(x, 2))
    xc = out - out.mean(0)
    torch.testing.assert_close((xc.T @ xc / 24)[:4, :4], torch.eye(4, dtype=DT))
    # keeping the whitening matrix's gradient changes the gradient (and passes gradcheck)
    (g_det,) = torch.autograd.grad((shuffled_group_whitening(x, 2) ** 3).sum(), x)
    (g_full,) = torch.autograd.grad(
        (shuffled_group_whitening(x, 2, detach_whitening=False) ** 3).sum(), x
    )
    assert not torch.allclose(g_det, g_full)
    small = torch.randn(9, 4, generator=_gen(3), dtype=DT).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: shuffled_group_whitening(a, 2, detach_whitening=False), (small,)
    )


def ref_whitened_cse(z1, z2, z3, temp=0.05):
    s12 = F.cosine_similarity(z1[:, None], z2[None], dim=-1) / temp
    s13 = F.cosine_similarity(z1[:, None], z3[None], dim=-1) / temp
    labels = torch.arange(z1.shape[0])
    return F.cross_entropy(s12, labels) + F.cross_entropy(s13, labels)


def test_whitened_cse_loss():
    z1, z2, z3 = (_randn(9, 6, seed=s) for s in (1, 2, 3))
    want = ref_whitened_cse(z1, z2, z3)
    for eng in ENGINES:
        got = whitened_cse(z1, z2, z3, **eng)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        _close_grads(whitened_cse(z1, z2, z3, **eng), ref_whitened_cse(z1, z2, z3), [z1, z2, z3])
    torch.testing.assert_close(WhitenedCSE()(z1, z2, z3), want)
    # no whitening, two views: unsupervised SimCSE = InfoNCE with in-batch candidates
    torch.testing.assert_close(whitened_cse(z1, z2), info_nce(z1, z2, temperature=0.05))


def test_whitening_bad_input():
    with pytest.raises(ValueError, match="num_groups"):
        ShuffledGroupWhitening(10, num_groups=3)
    m = ShuffledGroupWhitening(8, num_groups=2, num_views=3)
    with pytest.raises(ValueError, match="num_views"):
        m(torch.randn(10, 8))
    with pytest.raises(ValueError, match="singular"):
        m(torch.randn(12, 8))  # 4 rows per view, D/G = 4
    assert torch.isfinite(ShuffledGroupWhitening(8, 2, eps=1e-3)(torch.randn(12, 8))).all()
    with pytest.raises(ValueError, match="features"):
        m(torch.randn(30, 6))
    with pytest.raises(ValueError, match="shape of z1"):
        whitened_cse(torch.randn(4, 3), torch.randn(5, 3))


def test_half_precision_inputs_run_in_fp32():
    w = ShuffledGroupWhitening(8, num_groups=2, num_views=3)(torch.randn(30, 8).bfloat16())
    assert w.dtype == torch.float32 and torch.isfinite(w).all()
    h = simctg_contrastive(torch.randn(2, 6, 4).half(), backend="tiled", chunk_size=2)
    assert h.dtype == torch.float32 and torch.isfinite(h)


def test_whitened_cse_fp32_tiled_equals_dense():
    g = _gen(40)
    zs = [torch.randn(37, 24, generator=g).requires_grad_() for _ in range(3)]
    dense = whitened_cse(*zs, backend="dense")
    dense_g = torch.autograd.grad(dense, zs)
    for chunk in (None, 5):
        tiled = whitened_cse(*zs, backend="tiled", chunk_size=chunk)
        torch.testing.assert_close(tiled, dense, rtol=1e-5, atol=1e-6)
        for a, b in zip(torch.autograd.grad(tiled, zs), dense_g):
            assert float((a - b).abs().max() / b.abs().max().clamp(min=1e-6)) <= 1e-5


# ----------------------------------------------------------------------------------------------
# One API style: module twins, reductions, aliases
# ----------------------------------------------------------------------------------------------


def _whitened_cse_case():
    zs = [_randn(9, 6, seed=s) for s in (70, 71, 72)]
    return tuple(zs), {"temperature": 0.1}, zs


def _simctg_case():
    H, ids = _simctg_inputs(seed=73)
    logits = _randn(3, 9, 11, seed=74)
    labels = torch.randint(0, 11, (3, 9), generator=_gen(75))
    labels[0, 5:] = -100
    return (H, logits, labels, None, ids), {"pad_token_id": 0, "margin": 0.8}, [H, logits]


def _simctg_contrastive_case():
    H, ids = _simctg_inputs(seed=76)
    return (H, (ids != 0).long()), {"margin": 0.8}, [H]


TWINS = {
    "whitened_cse": (whitened_cse, WhitenedCSE, _whitened_cse_case),
    "simctg": (simctg, SimCTG, _simctg_case),
    "simctg_contrastive": (simctg_contrastive, SimCTGContrastive, _simctg_contrastive_case),
}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_module_twin_equals_functional(name):
    fn, Module, case = TWINS[name]
    args, opts, leaves = case()
    assert Module.functional is fn
    torch.testing.assert_close(Module(**opts)(*args), fn(*args, **opts), rtol=1e-12, atol=1e-12)
    _close_grads(Module(**opts)(*args), fn(*args, **opts), leaves, rtol=1e-12, atol=1e-12)
    other = {"reduction": "sum"}
    torch.testing.assert_close(Module(**opts)(*args, **other), fn(*args, **opts, **other))


def test_whitening_module_equals_functional():
    x = _randn(24, 8, seed=77)
    m = ShuffledGroupWhitening(8, num_groups=2, shuffle=False).eval()
    torch.testing.assert_close(m(x), shuffled_group_whitening(x, 2))
    _close_grads(m(x).pow(3).sum(), shuffled_group_whitening(x, 2).pow(3).sum(), [x])


@pytest.mark.parametrize("name", sorted(TWINS))
def test_reductions_are_consistent(name):
    fn, _, case = TWINS[name]
    args, opts, leaves = case()
    rows = fn(*args, **opts, reduction="none")
    total = fn(*args, **opts, reduction="sum")
    mean = fn(*args, **opts, reduction="mean")
    assert rows.dim() == 1 and rows.shape[0] == args[0].shape[0]
    torch.testing.assert_close(total, rows.sum(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mean, rows.mean(), rtol=1e-10, atol=1e-12)
    (g_rows,) = torch.autograd.grad(rows.sum(), leaves[0])
    (g_sum,) = torch.autograd.grad(fn(*args, **opts, reduction="sum"), leaves[0])
    torch.testing.assert_close(g_rows, g_sum, rtol=1e-10, atol=1e-12)


def test_simctg_empty_batches_give_zero():
    H, logits, labels, _, ids = _simctg_case()[0]
    v = simctg(H, logits, torch.full_like(labels, -100), attention_mask=torch.zeros(3, 9))
    assert float(v.detach()) == 0.0 and v.requires_grad


def test_published_aliases_and_registry():
    import contrastkit.losses.shaping as family
    from contrastkit.objective import entries

    assert family.WhitenedCSELoss is WhitenedCSE
    assert family.group_whiten is shuffled_group_whitening
    assert family.simctg_loss is simctg and family.SimCTGLoss is SimCTG
    found = {e.name: e for e in entries("shaping")}
    assert set(found) == {
        "whitened_cse",
        "shuffled_group_whitening",
        "simctg",
        "simctg_contrastive",
    }
    assert found["whitened_cse"].module_aliases == ("WhitenedCSELoss",)
    assert found["shuffled_group_whitening"].functional_aliases == ("group_whiten",)
    assert found["simctg"].functional_aliases == ("simctg_loss",)
    assert found["simctg"].module_aliases == ("SimCTGLoss",)
    # whitened_cse is exact (a sum of exact InfoNCE passes); the others are rank-local
    assert getattr(whitened_cse, "exact_under_group", None) is not False
    for name in ("shuffled_group_whitening", "simctg", "simctg_contrastive"):
        assert found[name].functional.exact_under_group is False


# ----------------------------------------------------------------------------------------------
# Documentation examples
# ----------------------------------------------------------------------------------------------


def test_docs_examples_run():
    import pathlib
    import re

    page = pathlib.Path(__file__).parents[1] / "docs/objectives/shaping.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) == 3
    for code in blocks:
        scope: dict = {}
        exec(compile(code, str(page), "exec"), scope)  # noqa: S102
        loss = scope["loss"]
        assert loss.dim() == 0 and bool(torch.isfinite(loss))
