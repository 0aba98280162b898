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
    if name in _MORE_TWINS:  # the NCE / DEXML section at the end of this file
        return _MORE_TWINS[name]()
    raise KeyError(name)


FAMILY = [e.name for e in entries("infonce")]


def test_the_family_registers_every_objective():
    assert set(FAMILY) == {
        "info_nce", "multiple_negatives_ranking", "nt_xent", "clip", "siglip", "dcl", "dclw",
        "supcon", "cwcl", "info_nce_with_negatives", "mined_info_nce", "mixup_contrastive",
        "dexml", "nce", "compositional_nll",
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
    if name in ("supcon", "dexml"):  # anchors without a positive: left out of the mean
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


def test_info_nce_with_negatives_moco_path_sweeps_the_queue_only():
    """in_batch_negatives=False without weights: the own key is a side term and the engine
    sweeps the queue alone; same values and gradients as the reference (extra negatives with
    a validity mask included), and a positive far above every negative gives ~0, not a
    cancellation error."""
    q, k = rand(7, 5, seed=21, grad=True), rand(9, 5, seed=22, grad=True)
    queue, extra = rand(6, 5, seed=23, grad=True), rand(7, 3, 5, seed=24, grad=True)
    valid = torch.rand(7, 3, generator=torch.Generator().manual_seed(1)) < 0.5
    want = ref_info_nce(q, k, queue, extra, valid, tau=0.2, in_batch=False)
    gw = torch.autograd.grad(want.sum(), (q, k, queue, extra))
    for eng in ENGINES_SHORT:
        got = info_nce_with_negatives(
            q,
            k,
            queue,
            extra,
            valid,
            in_batch_negatives=False,
            temperature=0.2,
            reduction="none",
            **eng,
        )
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(got.sum(), (q, k, queue, extra)), gw):
            torch.testing.assert_close(a, b)
    x = torch.tensor([[1.0, 0.0]], dtype=D64)
    far = info_nce_with_negatives(
        x, x, -x, in_batch_negatives=False, temperature=0.01, reduction="none"
    )
    tiny = torch.log1p(torch.exp(torch.tensor([-200.0], dtype=D64)))  # 1.4e-87, not 0
    torch.testing.assert_close(far, tiny, rtol=1e-9, atol=0.0)


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


# ================================================================== NCE and DEXML (issue 14)
# Dense float64 references written plainly below (loops over rows), the official DEXML loss
# block re-derived on a dense similarity matrix, and the oracles of both objectives.

from contrastkit.losses.infonce import (  # noqa: E402
    DEXML,
    NCE,
    CompositionalNLL,
    compositional_nll,
    dexml,
    nce,
)
from contrastkit.losses.infonce.dexml import sample_positives  # noqa: E402


def ref_dexml(q, c, positives, weights=None, ignore=None, tau=0.05, drop_empty=True):
    """Loops over rows and listed positives; per-row losses and the mean."""
    q, c = F.normalize(q, dim=-1), F.normalize(c, dim=-1)
    rows = []
    for i in range(q.shape[0]):
        pos = [int(p) for p in positives[i] if p >= 0]
        gone = set(pos) | ({int(j) for j in ignore[i] if j >= 0} if ignore is not None else set())
        negs = [j for j in range(c.shape[0]) if j not in gone]
        t = tau[i] if isinstance(tau, torch.Tensor) and tau.dim() else tau
        u = (c @ q[i]) / t
        neg = torch.logsumexp(u[negs], 0) if negs else u.new_tensor(float("-inf"))
        li = u.new_zeros(())
        for slot, p in enumerate(positives[i].tolist()):
            if p < 0:
                continue
            w = 1.0 if weights is None else weights[i, slot]
            li = li + w * (torch.logaddexp(neg, u[p]) - u[p])
        rows.append(li / max(len(pos), 1))
    rows = torch.stack(rows)
    has = torch.tensor([bool((positives[i] >= 0).any()) for i in range(q.shape[0])])
    count = int(has.sum()) if drop_empty else q.shape[0]
    return rows, rows.sum() / max(count, 1)


def official_dexml(sim, positives, values=None, sampled_out=None):
    """The decoupled-softmax branch of DEXML's ``SimLoss.compute_loss`` restated on a dense
    similarity matrix (positives and non-sampled positives masked with -100, mean over all
    rows, one process)."""
    sim = sim.clone()
    rows, cols = (positives >= 0).nonzero(as_tuple=True)
    pcols = positives[rows, cols]
    num_pos = (positives >= 0).sum(1)
    if sampled_out is not None:
        r2, c2 = (sampled_out >= 0).nonzero(as_tuple=True)
        sim[r2, sampled_out[r2, c2]] = -100.0
    sim_pos = sim[rows, pcols]
    sim_neg = sim.clone()
    sim_neg[rows, pcols] = -100.0
    log_denom = torch.logaddexp(sim_neg.logsumexp(1)[rows], sim_pos)
    log_prob = sim_pos - log_denom
    if values is not None:
        log_prob = log_prob * values[rows, cols]
    return -(log_prob / num_pos[rows]).sum() / sim.shape[0]


def _dexml_inputs(N=7, M=11, d=5, seed=0, grad=True):
    q, c = rand(N, d, seed=seed, grad=grad), rand(M, d, seed=seed + 1, grad=grad)
    g = torch.Generator().manual_seed(seed + 2)
    positives = torch.full((N, 3), -1, dtype=torch.long)
    for i in range(N):
        k = int(torch.randint(0, 4, (1,), generator=g))  # 0 to 3 positives
        positives[i, :k] = torch.randperm(M, generator=g)[:k]
    positives[0, :3] = torch.tensor([0, 4, 9])
    weights = torch.rand(N, 3, generator=g, dtype=D64) + 0.5
    return q, c, positives, weights


@pytest.mark.parametrize("eng", ENGINES)
def test_dexml_engine_matches_dense_reference_values_and_gradients(eng):
    q, c, pos, w = _dexml_inputs()
    ignore = torch.tensor([[1], [-1], [2], [-1], [-1], [5], [-1]])
    ignore = torch.where((pos == ignore).any(1, keepdim=True), -1, ignore)
    for kw, ref_kw in [
        ({}, {}),
        ({"weights": w}, {"weights": w}),
        ({"ignore": ignore}, {"ignore": ignore}),
    ]:
        got = dexml(q, c, pos, temperature=0.3, **kw, **eng)
        want = ref_dexml(q, c, pos, tau=0.3, **ref_kw)[1]
        torch.testing.assert_close(got, want)
        for a, b in zip(_grads(got, (q, c)), _grads(want, (q, c))):
            torch.testing.assert_close(a, b)
    rows = dexml(q, c, pos, temperature=0.3, reduction="none", **eng)
    torch.testing.assert_close(rows, ref_dexml(q, c, pos, tau=0.3)[0])


def test_dexml_per_query_and_learnable_temperature():
    q, c, pos, _ = _dexml_inputs()
    tau = torch.linspace(0.1, 0.9, q.shape[0], dtype=D64)
    for eng in ENGINES_SHORT:
        torch.testing.assert_close(
            dexml(q, c, pos, temperature=tau, **eng), ref_dexml(q, c, pos, tau=tau)[1]
        )
    t = torch.tensor(0.4, dtype=D64, requires_grad=True)
    got = dexml(q, c, pos, temperature=t, backend="tiled", chunk_size=2)
    t2 = t.detach().clone().requires_grad_()
    want = ref_dexml(q, c, pos, tau=t2)[1]
    torch.testing.assert_close(torch.autograd.grad(got, t)[0], torch.autograd.grad(want, t2)[0])


def test_dexml_gradcheck():
    q, c, _, w = _dexml_inputs(N=4, M=6, d=3)
    pos = torch.tensor([[0, 4, -1], [1, -1, -1], [-1, -1, -1], [3, 5, 2]])
    for eng in ({"backend": "dense"}, {"backend": "tiled", "chunk_size": 2}):
        torch.autograd.gradcheck(
            lambda a, b, eng=eng: dexml(a, b, pos, w[:4], temperature=0.5, **eng), (q, c)
        )


def test_dexml_is_the_official_decoupled_softmax():
    q, c, _, w = _dexml_inputs(N=6, M=9, seed=3)
    pos = torch.tensor([[0, 4, 8], [1, -1, -1], [2, 7, -1], [3, -1, -1], [5, 0, 6], [6, 1, -1]])
    sim = F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T / 0.05
    for values in (None, w):
        want = official_dexml(sim, pos, values)
        got = dexml(q, c, pos, values, temperature=0.05, exclude_no_positive=False)
        torch.testing.assert_close(got, want)
    # the sampled step: one positive per row, the others masked out of the row
    sampled, ignore = sample_positives(pos, w, generator=torch.Generator().manual_seed(0))
    want = official_dexml(sim, sampled, None, sampled_out=ignore)
    got = dexml(q, c, sampled, None, ignore, temperature=0.05, exclude_no_positive=False)
    torch.testing.assert_close(got, want)


def test_dexml_one_positive_is_info_nce_and_never_exceeds_the_coupled_softmax():
    q, c = rand(8, 5, seed=5), rand(8, 5, seed=6)
    for eng in ENGINES_SHORT:
        torch.testing.assert_close(
            dexml(q, c, temperature=0.2, **eng), info_nce(q, c, temperature=0.2, **eng)
        )
        torch.testing.assert_close(
            dexml(q, torch.cat([c, rand(3, 5, seed=7)]), torch.arange(8), temperature=0.2, **eng),
            info_nce(q, torch.cat([c, rand(3, 5, seed=7)]), temperature=0.2, **eng),
        )
    # the coupled softmax (SupCon L_out per positive: every positive in the denominator)
    q2, c2, pos, _ = _dexml_inputs(seed=9, grad=False)
    u = F.normalize(q2, dim=-1) @ F.normalize(c2, dim=-1).T / 0.3
    rows = dexml(q2, c2, pos, temperature=0.3, reduction="none")
    for i in range(q2.shape[0]):
        p = pos[i][pos[i] >= 0]
        if p.numel():
            coupled = (u[i].logsumexp(0) - u[i, p]).mean()
            assert float(rows[i]) <= float(coupled) + 1e-12
            if p.numel() > 1:
                assert float(rows[i]) < float(coupled)


def test_dexml_rows_without_negatives_or_positives():
    q, c = rand(3, 4, seed=1, grad=True), rand(3, 4, seed=2, grad=True)
    pos = torch.tensor([[0, 1, 2], [-1, -1, -1], [2, -1, -1]])  # row 0: every column positive
    for eng in ENGINES_SHORT:
        rows = dexml(q, c, pos, temperature=0.5, reduction="none", **eng)
        assert float(rows[0].detach()) == 0.0 and float(rows[1].detach()) == 0.0
        loss = dexml(q, c, pos, temperature=0.5, **eng)
        torch.testing.assert_close(loss, rows.sum() / 2)  # two rows with a positive
        assert all(bool(torch.isfinite(g).all()) for g in _grads(loss, (q, c)))
    empty = dexml(q, c, torch.full((3, 2), -1), temperature=0.5)
    assert float(empty.detach()) == 0.0


def test_sample_positives_draws_in_proportion_to_the_values():
    pos = torch.tensor([[3, 5, -1], [-1, -1, -1], [7, -1, -1]])
    vals = torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    draws = [sample_positives(pos, vals, generator=g) for _ in range(400)]
    first = torch.stack([s[0, 0] for s, _ in draws])
    assert 0.65 < float((first == 5).double().mean()) < 0.85  # 3 / 4
    for s, ign in draws:
        assert int(s[1, 0]) == -1 and int(s[2, 0]) == 7 and bool((ign[1:] == -1).all())
        assert sorted(x for x in [int(s[0, 0]), *ign[0].tolist()] if x >= 0) == [3, 5]


def test_dexml_bad_input_names_the_argument():
    q, c = rand(3, 4), rand(5, 4, seed=1)
    with pytest.raises(ValueError, match="positives"):
        dexml(q, c, torch.tensor([[0, 0], [1, -1], [2, -1]]))  # a column listed twice
    with pytest.raises(ValueError, match="positives"):
        dexml(q, c, torch.tensor([[0], [5], [1]]))
    with pytest.raises(ValueError, match="ignore"):
        dexml(q, c, torch.tensor([[0], [1], [2]]), None, torch.tensor([[0], [-1], [-1]]))
    with pytest.raises(ValueError, match="weights"):
        dexml(q, c, torch.tensor([[0], [1], [2]]), -torch.ones(3, 1, dtype=D64))
    with pytest.raises(ValueError, match="candidates"):
        dexml(q, c[:2])


def ref_nce(fx, fy, qx, qy):
    """Loops: (1 / N) [sum_data -log sigmoid(G) + sum_noise -log sigmoid(-G)]."""
    N = fx.shape[0]
    nu = fy.shape[1] if fy.dim() == 2 else fy.shape[0] / N
    total = fx.new_zeros(())
    for i in range(N):
        total = total - torch.log(torch.sigmoid(fx[i] - math.log(nu) - qx[i]))
    for y, lq in zip(fy.reshape(-1), qy.reshape(-1)):
        total = total - torch.log(torch.sigmoid(-(y - math.log(nu) - lq)))
    return total / N


def _nce_inputs(noise_shape=(6, 3), seed=0):
    fx, fy = rand(6, seed=seed, grad=True), rand(*noise_shape, seed=seed + 1, grad=True)
    return fx, fy, rand(6, seed=seed + 2), rand(*noise_shape, seed=seed + 3)


@pytest.mark.parametrize("noise_shape", [(6, 3), (6, 1), (10,), (3,)])
def test_nce_matches_reference_values_and_gradients(noise_shape):
    args = _nce_inputs(noise_shape)
    got, want = nce(*args), ref_nce(*args)
    torch.testing.assert_close(got, want)
    for a, b in zip(_grads(got, args[:2]), _grads(want, args[:2])):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(nce(*args, reduction="sum"), want * 6)
    if len(noise_shape) == 2:
        torch.testing.assert_close(nce(*args, reduction="none").mean(), want)
    else:
        with pytest.raises(ValueError, match="reduction"):
            nce(*args, reduction="none")
    torch.autograd.gradcheck(lambda a, b: nce(a, b, *args[2:]), args[:2])


def test_nce_oracles_chance_level_and_stationary_at_the_data_density():
    # G = 0 everywhere: (1 + nu) log 2 per data point
    qx, qy = rand(5, seed=1), rand(5, 4, seed=2)
    torch.testing.assert_close(
        nce(qx + math.log(4), qy + math.log(4), qx, qy), torch.tensor(5 * math.log(2), dtype=D64)
    )
    # a discrete distribution p = (1/2, 1/4, 1/4) against uniform noise, both exact in the
    # samples: the gradient with respect to f vanishes at f = log p (self-normalised optimum)
    data, noise = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 2, 0, 1, 2])
    f = torch.log(torch.tensor([0.5, 0.25, 0.25], dtype=D64)).requires_grad_()
    log_q = torch.full((3,), -math.log(3), dtype=D64)
    loss = nce(f[data], f[noise], log_q[data], log_q[noise])
    torch.testing.assert_close(torch.autograd.grad(loss, f)[0], torch.zeros(3, dtype=D64))
    f2 = (f.detach() + 0.3).requires_grad_()  # not normalised: the gradient pushes it back
    g2 = torch.autograd.grad(nce(f2[data], f2[noise], log_q[data], log_q[noise]), f2)[0]
    assert bool((g2 > 0).all())


@pytest.mark.slow
def test_nce_fits_a_gaussian_mean_and_its_normaliser():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g, dtype=D64) + 1.5
    y = 3 * torch.randn(1000, 2, generator=g, dtype=D64)
    log_q = lambda v: -0.5 * (v / 3) ** 2 - math.log(3 * math.sqrt(2 * math.pi))  # noqa: E731
    theta = torch.zeros(2, dtype=D64, requires_grad=True)  # mean, log-normaliser
    opt = torch.optim.LBFGS([theta], max_iter=30, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        f = lambda v: -0.5 * (v - theta[0]) ** 2 - theta[1]  # noqa: E731
        loss = nce(f(x), f(y), log_q(x), log_q(y))
        loss.backward()
        return loss

    opt.step(closure)
    assert abs(float(theta[0].detach()) - float(x.mean())) < 0.15
    assert abs(float(theta[1].detach()) - math.log(math.sqrt(2 * math.pi))) < 0.15


def test_nce_bad_input_names_the_argument():
    fx, fy, qx, qy = _nce_inputs()
    with pytest.raises(ValueError, match="log_model_noise"):
        nce(fx, fy[:5], qx, qy)
    with pytest.raises(ValueError, match="log_noise_noise"):
        nce(fx, fy, qx, qy[:, :2])
    with pytest.raises(ValueError, match="log_noise_data"):
        nce(fx, fy, qx[:4], qy)


def _fresh():
    return torch.tensor(float("-inf"), dtype=D64)


def test_compositional_nll_gamma_one_is_the_mini_batch_importance_sampling_nll():
    fx, fy, _, qy = _nce_inputs((9,))
    got = compositional_nll(fx, fy, qy, torch.tensor(0.7, dtype=D64), gamma=1.0)
    want = -fx.mean() + torch.logsumexp(fy - qy, 0) - math.log(9)
    torch.testing.assert_close(got, want)
    for a, b in zip(_grads(got, (fx, fy)), _grads(want, (fx, fy))):
        torch.testing.assert_close(a, b)


def test_compositional_nll_moving_average_state_and_gradient():
    fx, fy, _, qy = _nce_inputs((9,), seed=4)
    log_u = _fresh()
    first = compositional_nll(fx, fy, qy, log_u, gamma=0.5)  # fresh: the batch estimate
    batch = torch.logsumexp((fy - qy).detach(), 0) - math.log(9)
    torch.testing.assert_close(log_u, batch)
    torch.testing.assert_close(first, -fx.mean() + batch)
    fx2, fy2, _, qy2 = _nce_inputs((9,), seed=7)
    got = compositional_nll(fx2, fy2, qy2, log_u, gamma=0.3)
    w = torch.exp(fy2 - qy2)
    u = 0.7 * torch.exp(batch) + 0.3 * w.detach().mean()
    torch.testing.assert_close(log_u, torch.log(u))
    torch.testing.assert_close(got, -fx2.mean() + torch.log(u))
    # gradient: -mean grad f(x) + (1 / u) mean_j w_j grad f(y_j), u and the weights constant
    want = -fx2.mean() + (w / u).mean()
    for a, b in zip(_grads(got, (fx2, fy2)), _grads(want, (fx2, fy2))):
        torch.testing.assert_close(a, b)
    frozen = log_u.clone()
    compositional_nll(fx2, fy2, qy2, log_u, update=False)
    torch.testing.assert_close(log_u, frozen)
    m = CompositionalNLL(gamma=0.3)
    m(fx, fy, qy)
    m.eval()
    before = m.log_u.clone()
    m(fx2, fy2, qy2)
    torch.testing.assert_close(m.log_u, before)  # eval mode freezes the state
    # gamma = 1: the surrogate's gradient is the true gradient of the value
    torch.autograd.gradcheck(
        lambda a, b: compositional_nll(a, b, qy2, log_u.clone(), gamma=1.0), (fx2, fy2)
    )


def test_compositional_nll_bad_input():
    fx, fy, _, qy = _nce_inputs((9,))
    with pytest.raises(ValueError, match="log_u"):
        compositional_nll(fx, fy, qy, torch.zeros(1, dtype=D64))
    with pytest.raises(ValueError, match="log_u"):
        compositional_nll(fx, fy, qy, torch.tensor(float("inf"), dtype=D64))
    with pytest.raises(ValueError, match="gamma"):
        compositional_nll(fx, fy, qy, _fresh(), gamma=0.0)
    with pytest.raises(ValueError, match="log_noise_noise"):
        compositional_nll(fx, fy, qy[:4], _fresh())


def _compositional_twin():
    fx, fy, _, qy = _nce_inputs((9,))
    m = CompositionalNLL(gamma=0.5).eval()  # eval: the state stays fresh between the calls
    return (fx, fy, qy), m, lambda *x, **k: compositional_nll(*x, _fresh(), gamma=0.5, **k)


def _dexml_twin():
    q, c, pos, w = _dexml_inputs()
    m = DEXML(temperature=0.3, backend="tiled", chunk_size=3)
    fn = lambda *x: dexml(*x, temperature=0.3, backend="tiled", chunk_size=3)  # noqa: E731
    return (q, c, pos, w), m, fn


def _nce_twin():
    return _nce_inputs(), NCE(), nce


_MORE_TWINS = {"dexml": _dexml_twin, "nce": _nce_twin, "compositional_nll": _compositional_twin}


def _empty_denominator_two_ranks(rank, world, rdzv, out):
    import os

    import test_distributed as T

    dist = T._init(rank, world, rdzv)
    g = torch.Generator().manual_seed(rank)
    q, k = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    w = torch.ones(4, 8)  # this rank's queries over the 8 keys of both ranks
    if rank == 1:
        w[2] = 0.0  # rank 1's query 2 has no denominator left
    res = {}
    try:
        info_nce_with_negatives(q, k, weights=w)
    except ValueError as exc:
        res["empty"] = str(exc)
    torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_info_nce_with_negatives_empty_denominator_raises_on_every_rank():
    """The check runs after the engine (after the first exchange): the count of empty queries
    is summed over ranks so that every rank raises, instead of one rank raising and the other
    waiting in the next collective."""
    from test_distributed import _spawn

    res = _spawn(_empty_denominator_two_ranks, 2)
    for r in res:
        assert "weights leave 1 queries with an empty denominator" in r.get("empty", ""), r
