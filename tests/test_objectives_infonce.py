"""The InfoNCE family (contrastkit.losses.infonce): engine (all paths, many tile sizes) == dense
reference, values and gradients; module twins == functionals; reductions; aliases; the queue /
mined / weighted InfoNCE and M3CoL's mixup contrastive loss against dense references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import contrastkit as ck
import contrastkit.functional as CF
import contrastkit.losses as CL
from contrastkit.losses.infonce import (
    CLIP,
    CWCL,
    DCL,
    DCLW,
    InfoNCE,
    InfoNCEWithNegatives,
    MinedInfoNCE,
    MixupContrastive,
    MultipleNegativesRanking,
    NTXent,
    SigLIP,
    SupCon,
    clip,
    cwcl,
    dcl,
    dclw,
    info_nce,
    info_nce_with_negatives,
    mined_info_nce,
    mixup_contrastive,
    multiple_negatives_ranking,
    nt_xent,
    siglip,
    supcon,
)
from contrastkit.negatives import ClusterNegativeWeights, TopKMiner
from contrastkit.objective import entries
from contrastkit.positives import MultimodalMixup

from cases import NAMES, call, inputs, reference
from reference import ref_info_nce

ENGINES = [
    {"backend": "dense"},
    {"backend": "tiled"},  # auto tile
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled", "chunk_size": 64},
    {"backend": "auto"},
]


def _grads(loss, args):
    leaves = [a for a in args if a.requires_grad]
    return torch.autograd.grad(loss, leaves, allow_unused=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(7, 11, 5), (13, 13, 16), (2, 3, 4)])
def test_engine_matches_reference_fp64(name, shape):
    N, M, d = shape
    args, kw = inputs(name, N, M, d)
    want = reference(name, args, kw)
    want_g = _grads(want, args)
    for eng in ENGINES:
        got = call(name, args, kw, **eng)
        got_g = _grads(got, args)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=f"{name} {eng} value")
        for g, w in zip(got_g, want_g):
            if w is None:
                assert g is None or torch.all(g == 0)
                continue
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10, msg=f"{name} {eng} grad")


@pytest.mark.parametrize("name", NAMES)
def test_tiled_equals_dense_fp32(name):
    """fp32, N != M, N not a multiple of the tile: relative error <= 1e-5."""
    args, kw = inputs(name, 37, 50, 24, dtype=torch.float32, seed=1)
    dense = call(name, args, kw, backend="dense")
    dense_g = _grads(dense, args)
    for chunk in (None, 8, 5):
        tiled = call(name, args, kw, backend="tiled", chunk_size=chunk)
        tiled_g = _grads(tiled, args)
        torch.testing.assert_close(tiled, dense, rtol=1e-5, atol=1e-6)
        for g, w in zip(tiled_g, dense_g):
            if w is not None:
                scale = w.abs().max().clamp(min=1e-6)
                assert float((g - w).abs().max() / scale) <= 1e-5, name


# dclw detaches its weights by design (lightly's convention), so its gradient is not the full
# derivative; dclw_grad checks the same loss with the weights' gradient kept.
@pytest.mark.parametrize("name", [n for n in NAMES if n != "dclw"])
def test_gradcheck(name):
    args, kw = inputs(name, 4, 5, 3, seed=2)

    def f(*xs):
        return call(name, xs, kw, backend="tiled", chunk_size=2)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["info_nce", "nt_xent", "supcon", "clip", "dcl", "siglip"])
def test_reductions_are_consistent(name):
    args, kw = inputs(name, 9, 9, 6, seed=3)
    mean = call(name, args, kw, backend="tiled", chunk_size=4)
    total = call(name, args, kw, backend="tiled", chunk_size=4, reduction="sum")
    rows = call(name, args, kw, backend="tiled", chunk_size=4, reduction="none")
    rows_dense = call(name, args, kw, backend="dense", reduction="none")
    torch.testing.assert_close(rows, rows_dense)
    torch.testing.assert_close(total, rows.sum())
    if name == "supcon":
        n_valid = int((rows != 0).sum())
        torch.testing.assert_close(mean, total / n_valid)
    else:
        torch.testing.assert_close(mean, rows.mean())


@pytest.mark.parametrize("backend,chunk", [("dense", None), ("tiled", 3)])
def test_info_nce_own_key_only_is_mocos_logits(backend, chunk):
    """in_batch_negatives=False: logits [l_pos, l_neg(queue)] / tau, target 0 (MoCo v1/v2)."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    queue = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    tau = 0.2
    qn, kn, nn_ = (torch.nn.functional.normalize(t, dim=-1) for t in (q, k, queue))
    logits = torch.cat([(qn * kn).sum(-1, keepdim=True), qn @ nn_.T], 1) / tau
    ref = torch.nn.functional.cross_entropy(logits, torch.zeros(6, dtype=torch.long))
    got = info_nce(
        q, k, queue, temperature=tau, in_batch_negatives=False, backend=backend, chunk_size=chunk
    )
    torch.testing.assert_close(got, ref)
    g_ref = torch.autograd.grad(ref, (q, k, queue))
    g_got = torch.autograd.grad(got, (q, k, queue))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b)
    per_anchor = info_nce(
        q, k, queue[None].expand(6, 11, 5), temperature=tau, in_batch_negatives=False
    )
    torch.testing.assert_close(per_anchor, ref)
    with pytest.raises(ValueError, match="in_batch_negatives"):
        info_nce(q, k, temperature=tau, in_batch_negatives=False)


# ------------------------------------------------------------------ module twins, reductions


D64 = torch.float64
ENGINES_SHORT = [
    {"backend": "dense"},
    {"backend": "tiled", "chunk_size": 1},
    {"backend": "tiled", "chunk_size": 3},
    {"backend": "tiled"},
]


def rand(*shape, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D64).requires_grad_(grad)


def _twin_inputs(name):
    """(inputs, module, functional call) of every objective of the family, float64."""
    N, d = 6, 5
    a, b = rand(N, d, seed=1, grad=True), rand(N, d, seed=2, grad=True)
    if name == "info_nce":
        neg = rand(9, d, seed=3, grad=True)
        return (a, b, neg), InfoNCE(temperature=0.2), lambda *x: info_nce(*x, temperature=0.2)
    if name == "multiple_negatives_ranking":
        n = rand(N, d, seed=3, grad=True)
        return (a, b, n), MultipleNegativesRanking(), multiple_negatives_ranking
    if name == "nt_xent":
        return (a, b), NTXent(temperature=0.3), lambda *x: nt_xent(*x, temperature=0.3)
    if name == "clip":
        # the learnable scale starts at exp(log(1 / 0.1)): the functional with scale=10
        m = CLIP(init_temperature=0.1).double()
        return (a, b), m, lambda *x: clip(*x, scale=m.logit_scale.exp())
    if name == "siglip":
        m = SigLIP(init_scale=5.0, init_bias=-3.0).double()
        return (a, b), m, lambda *x: siglip(*x, scale=m.logit_scale.exp(), bias=m.logit_bias)
    if name == "dcl":
        return (a, b), DCL(temperature=0.2), lambda *x: dcl(*x, temperature=0.2)
    if name == "dclw":
        return (a, b), DCLW(sigma=0.4), lambda *x: dclw(*x, sigma=0.4)
    if name == "supcon":
        f = rand(N, 2, d, seed=4, grad=True)
        labels = torch.tensor([0, 0, 1, 1, 2, 3])
        return (f, labels), SupCon(temperature=0.2), lambda *x: supcon(*x, temperature=0.2)
    if name == "cwcl":
        m = CWCL(init_temperature=0.1).double()
        return (a.detach(), b), m, lambda *x: cwcl(*x, scale=m.logit_scale.exp())
    if name == "info_nce_with_negatives":
        q, e = rand(9, d, seed=3, grad=True), rand(N, 2, d, seed=4, grad=True)
        w = torch.rand(N, N, generator=torch.Generator().manual_seed(0), dtype=D64) + 0.1
        m = InfoNCEWithNegatives(temperature=0.2)
        return (a, b, q, e, None, w), m, lambda *x: info_nce_with_negatives(*x, temperature=0.2)
    if name == "mined_info_nce":
        mined = torch.tensor([[1, 2], [0, -1], [3, 4], [5, 0], [1, -1], [2, 3]])
        m = MinedInfoNCE(temperature=0.1)
        return (a, b, mined), m, lambda *x: mined_info_nce(*x, temperature=0.1)
    if name == "mixup_contrastive":
        perm = torch.tensor([1, 0, 2, 4, 3, 5])
        mix = torch.tensor([0.3, 1.0, 0.8, 0.6, 0.9, 1.0], dtype=D64)
        m = MixupContrastive(temperature=0.2)
        return (a, b, perm, mix), m, lambda *x: mixup_contrastive(*x, temperature=0.2)
    raise KeyError(name)


FAMILY = [e.name for e in entries("infonce")]


def test_the_family_registers_every_objective():
    assert set(FAMILY) == {
        "info_nce", "multiple_negatives_ranking", "nt_xent", "clip", "siglip", "dcl", "dclw",
        "supcon", "cwcl", "info_nce_with_negatives", "mined_info_nce", "mixup_contrastive",
    }  # fmt: skip


@pytest.mark.parametrize("name", FAMILY)
def test_module_twin_equals_functional_value_and_gradient(name):
    args, module, fn = _twin_inputs(name)
    leaves = [x for x in args if isinstance(x, torch.Tensor) and x.requires_grad]
    got, want = module(*args), fn(*args)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(want, leaves)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", FAMILY)
def test_reduction_none_rows_sum_and_mean(name):
    args, module, fn = _twin_inputs(name)
    rows = module(*args, reduction="none")
    total = module(*args, reduction="sum")
    mean = module(*args)
    torch.testing.assert_close(total, rows.sum())
    if name == "supcon":  # anchors without a positive (labels 2, 3) are left out of the mean
        torch.testing.assert_close(mean, total / int((rows != 0).sum()))
    else:
        torch.testing.assert_close(mean, rows.mean())


def test_learnable_scales_get_gradients():
    a, b = rand(6, 5, seed=1), rand(6, 5, seed=2)
    for m in (CLIP().double(), CWCL().double(), SigLIP().double()):
        m(a, b).backward()
        assert m.logit_scale.grad is not None and bool(m.logit_scale.grad != 0), m
    sig = SigLIP(learnable=False)
    assert not list(sig.parameters()) and {n for n, _ in sig.named_buffers()} == {
        "logit_bias",
        "scale.logit_scale",
    }


def test_mnrl_scale_and_temperature_agree():
    a, p, n = rand(6, 5, seed=1), rand(6, 5, seed=2), rand(6, 2, 5, seed=3)
    want = multiple_negatives_ranking(a, p, n)  # sentence-transformers' scale=20
    torch.testing.assert_close(multiple_negatives_ranking(a, p, n, scale=20.0), want)
    torch.testing.assert_close(multiple_negatives_ranking(a, p, n, temperature=0.05), want)
    torch.testing.assert_close(MultipleNegativesRanking(temperature=0.05)(a, p, n), want)
    with pytest.raises(ValueError, match="either temperature or scale"):
        multiple_negatives_ranking(a, p, n, scale=20.0, temperature=0.05)


def test_siglip_temperature_is_one_over_scale():
    a, b = rand(6, 5, seed=1), rand(6, 5, seed=2)
    torch.testing.assert_close(siglip(a, b, temperature=0.25), siglip(a, b, scale=4.0))
    torch.testing.assert_close(siglip(a, b), siglip(a, b, scale=10.0, bias=-10.0))


def test_old_names_are_aliases_of_the_new_objects():
    """The names published before the naming rule still import, as the same objects."""
    import importlib

    # (the family package's attributes clip / siglip are the functionals, not the modules)
    clip_mod = importlib.import_module("contrastkit.losses.infonce.clip")
    siglip_mod = importlib.import_module("contrastkit.losses.infonce.siglip")
    m3col_mod = importlib.import_module("contrastkit.losses.infonce.m3col")

    for ns in (ck, CL):
        assert ns.CLIPLoss is CLIP and ns.clip_loss is clip
        assert ns.SigLIPLoss is SigLIP and ns.siglip_loss is siglip
        assert ns.mixup_contrastive_loss is mixup_contrastive
    assert CF.clip_loss is clip and CF.siglip_loss is siglip
    assert CF.mixup_contrastive_loss is mixup_contrastive
    assert clip_mod.CLIPLoss is CLIP and siglip_mod.SigLIPLoss is SigLIP
    assert m3col_mod.mixup_contrastive_loss is mixup_contrastive
    with pytest.warns(DeprecationWarning):
        from contrastkit.negatives import info_nce_with_negatives as old_wn
    with pytest.warns(DeprecationWarning):
        from contrastkit.negatives import mined_info_nce as old_mined
    with pytest.warns(DeprecationWarning):
        from contrastkit.positives import mixup_contrastive_loss as old_mix
    assert old_wn is info_nce_with_negatives and old_mined is mined_info_nce
    assert old_mix is mixup_contrastive
    # the published constructor arguments
    assert SigLIP(init_scale=5.0, init_bias=-2.0).logit_bias.item() == -2.0
    torch.testing.assert_close(
        CLIP(init_temperature=0.05).logit_scale, torch.tensor(-math.log(0.05))
    )


# ----------------------------------------------------- queue, mined and weighted negatives


def test_masked_mined_negatives_and_unime_loss():
    q, k = rand(8, 5, seed=8), rand(8, 5, seed=9)
    mined = TopKMiner(4, max_score=0.2, on_shortage="mask")(q, k)
    assert not bool(mined.valid.all())
    safe = mined.indices.clamp(min=0)
    want = ref_info_nce(q, k, extra=k[safe], valid=mined.valid, tau=0.05)
    got = info_nce_with_negatives(
        q, k, extra=k[safe], extra_valid=mined.valid, temperature=0.05, reduction="none"
    )
    torch.testing.assert_close(got, want)
    # UniME: only [positive, mined] logits
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    rows = []
    for i in range(8):
        cols = [i] + [j for j in mined.indices[i].tolist() if j >= 0]
        lg = qn[i] @ kn[cols].T / 0.02
        rows.append(torch.logsumexp(lg, 0) - lg[0])
    torch.testing.assert_close(
        mined_info_nce(q, k, mined, temperature=0.02, reduction="none"), torch.stack(rows)
    )


def test_unime_oracle_infinite_beta_all_negatives_is_in_batch_info_nce():
    q, k = rand(7, 5, seed=10), rand(7, 5, seed=11)
    mined = TopKMiner(6, absolute_margin=-math.inf)(q, k)
    torch.testing.assert_close(
        mined_info_nce(q, k, mined, temperature=0.2), info_nce(q, k, temperature=0.2)
    )


def test_info_nce_with_negatives_all_kinds_equal_reference():
    q = rand(7, 5, seed=12, grad=True)
    k = rand(9, 5, seed=13, grad=True)
    queue = rand(6, 5, seed=14)
    extra = rand(7, 3, 5, seed=15, grad=True)
    w = torch.rand(7, 9, generator=torch.Generator().manual_seed(0), dtype=D64) + 0.1
    for in_batch in (True, False):
        want = ref_info_nce(q, k, queue, extra, weights=w, tau=0.2, in_batch=in_batch).mean()
        gw = torch.autograd.grad(want, (q, k, extra))
        for eng in ENGINES_SHORT:
            got = info_nce_with_negatives(
                q,
                k,
                queue=queue,
                extra=extra,
                weights=w,
                in_batch_negatives=in_batch,
                temperature=0.2,
                **eng,
            )
            torch.testing.assert_close(got, want)
            for a, b in zip(torch.autograd.grad(got, (q, k, extra)), gw):
                torch.testing.assert_close(a, b)
    # reduces to the library's info_nce with a queue (weights of ones)
    ones = torch.ones(7, 9, dtype=D64)
    torch.testing.assert_close(
        info_nce_with_negatives(q, k, queue=queue, weights=ones, temperature=0.2),
        info_nce(q, k, queue, temperature=0.2),
    )


def test_info_nce_with_negatives_gradcheck():
    q = rand(4, 3, seed=16, grad=True)
    k = rand(5, 3, seed=17, grad=True)
    queue = rand(3, 3, seed=18, grad=True)
    w = ClusterNegativeWeights(
        torch.tensor([[0, 1, 0, 2], [0, 0, 1, 1]]), torch.tensor([[0, 1, 0, 2, 1], [0, 0, 1, 1, 0]])
    )

    def f(q, k, queue):
        return info_nce_with_negatives(
            q, k, queue=queue, weights=w, temperature=0.5, backend="tiled", chunk_size=2
        )

    assert torch.autograd.gradcheck(f, (q, k, queue))


def test_info_nce_with_negatives_bad_input():
    q, k = rand(4, 3), rand(4, 3)
    with pytest.raises(ValueError, match="weights"):
        info_nce_with_negatives(q, k, weights=torch.ones(4, 5, dtype=D64))
    with pytest.raises(ValueError, match="extra"):
        info_nce_with_negatives(q, k, extra=rand(3, 2, 3))
    with pytest.raises(ValueError, match="queue"):
        info_nce_with_negatives(q, k, queue=rand(3, 4))
    with pytest.raises(ValueError, match="empty denominator"):
        info_nce_with_negatives(q, k, weights=ClusterNegativeWeights(torch.zeros(1, 4).long()))
    with pytest.raises(ValueError, match="extra_valid"):
        info_nce_with_negatives(q, k, extra=rand(4, 2, 3), extra_valid=torch.ones(4, 3).bool())


def test_info_nce_with_negatives_shares_info_nce_without_extras():
    """Without weights, queue or extra it is info_nce; each kind alone is info_nce's too."""
    q, k = rand(7, 5, seed=1, grad=True), rand(9, 5, seed=2, grad=True)
    queue, extra = rand(6, 5, seed=3), rand(7, 3, 5, seed=4)
    torch.testing.assert_close(info_nce_with_negatives(q, k), info_nce(q, k))
    torch.testing.assert_close(info_nce_with_negatives(q, k, queue), info_nce(q, k, queue))
    torch.testing.assert_close(info_nce_with_negatives(q, k, extra=extra), info_nce(q, k, extra))
    own = info_nce_with_negatives(q, k, queue, in_batch_negatives=False, temperature=0.2)
    torch.testing.assert_close(
        own, info_nce(q, k, queue, in_batch_negatives=False, temperature=0.2)
    )


# ------------------------------------------------------------------ M3CoL mixup contrast


def ref_m3col(xm, y, perm, mix, tau=0.1, official=False):
    B = xm.shape[0]
    logits = F.normalize(xm, dim=-1) @ F.normalize(y, dim=-1).T / tau
    P = torch.zeros(B, B, dtype=xm.dtype)
    P[torch.arange(B), torch.arange(B)] = mix
    P[torch.arange(B), perm] = 1 - mix  # the official assignment order (overwrites if perm(i)=i)
    if not official:
        selfp = perm == torch.arange(B)
        P[selfp, selfp.nonzero().squeeze(1)] = 1.0
    rows = -(P * torch.log_softmax(logits, 1)).sum(1).mean()
    cols = -(P * torch.log_softmax(logits, 0)).sum(0).mean()
    return (rows + cols) / 2


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_mixup_contrastive_reference_and_reductions():
    x, y = rand(7, 5, seed=17, grad=True), rand(7, 5, seed=18, grad=True)
    mm = MultimodalMixup(prob=0.8)
    _, perm0, mix = mm.mix(x.detach(), generator=gen(4))
    perm = torch.tensor([1, 0, 2, 4, 3, 6, 5])  # one self pair (2)

    def xm():
        return mix[:, None] * x + (1 - mix[:, None]) * x[perm0]

    for official in (False, True):
        want = ref_m3col(xm(), y, perm, mix, official=official)
        gw = torch.autograd.grad(want, (x, y))
        for eng in ENGINES_SHORT:
            got = mixup_contrastive(xm(), y, perm, mix, official_self_pair=official, **eng)
            torch.testing.assert_close(got, want)
            for a, b in zip(torch.autograd.grad(got, (x, y)), gw):
                torch.testing.assert_close(a, b)
    none = mixup_contrastive(xm(), y, perm, mix, reduction="none")
    torch.testing.assert_close(none.mean(), ref_m3col(xm(), y, perm, mix))


def test_mixup_contrastive_oracles_and_the_two_line_recipe():
    x, y = rand(8, 5, seed=19), rand(8, 5, seed=20)
    # no sample selected: bidirectional InfoNCE at tau = 0.1
    xm, perm, mix = MultimodalMixup(prob=0.0).mix(x, generator=gen(0))
    torch.testing.assert_close(
        MixupContrastive()(xm, y, perm, mix), info_nce(x, y, temperature=0.1, symmetric=True)
    )
    # the documented recipe: mix, then the loss of the mixed batch (deterministic with a seed)
    runs = []
    for _ in range(2):
        x_mixed, perm, mix = MultimodalMixup().mix(x, generator=gen(5))
        runs.append(MixupContrastive(temperature=0.1)(x_mixed, y, perm, mix))
    assert torch.equal(runs[0], runs[1])
    assert not callable(MultimodalMixup())  # positives build inputs, the loss is here
    with pytest.raises(ValueError, match="perm"):
        mixup_contrastive(x, y, perm[:4], mix)


def test_mixup_contrastive_gradcheck():
    x, y = rand(4, 3, seed=22, grad=True), rand(4, 3, seed=23, grad=True)
    perm, mix = torch.tensor([2, 0, 1, 3]), torch.tensor([0.3, 1.0, 0.8, 0.6], dtype=D64)

    def f(x, y):
        return mixup_contrastive(x, y, perm, mix, temperature=0.5, backend="tiled", chunk_size=2)

    assert torch.autograd.gradcheck(f, (x, y))
