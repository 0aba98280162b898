"""Compositional objectives: NegCLIP (hard-negative captions as image-to-text columns only),
DeGLA's image- and text-grounded contrasts, CountCLIP. Float64 references written here with
loops, value and gradient equality (engine paths and reductions), gradcheck, paper and code
oracles, transcriptions of the official NegCLIP / DeGLA loss code, open_clip parity, module
twins, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import contrastkit as ck
from contrastkit.losses.compositional import (
    CountCLIP,
    ImageGroundedContrast,
    NegCLIP,
    TextGroundedContrast,
    count_clip,
    image_grounded_contrast,
    neg_clip,
    text_grounded_contrast,
)
from contrastkit.objective import REGISTRY

import peers

N, K, D = 5, 3, 6
ENGINES = [
    {"backend": "dense"},
    {"backend": "tiled", "chunk_size": 2},
    {"backend": "tiled", "chunk_size": 64},
]


def rnd(*shape, seed=0, dtype=torch.float64, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)


def inputs(n=N, k=K, d=D, seed=0):
    return rnd(n, d, seed=seed), rnd(n, d, seed=seed + 1), rnd(n, k, d, seed=seed + 2)


def value_and_grads(fn, leaves):
    leaves = [x.detach().clone().requires_grad_() for x in leaves]
    out = fn(*leaves)
    grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
    return out.detach(), grads


def assert_same(fn_a, fn_b, leaves, **tol):
    va, ga = value_and_grads(fn_a, leaves)
    vb, gb = value_and_grads(fn_b, leaves)
    torch.testing.assert_close(va, vb, **tol)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **tol)


# ------------------------------------------------------------------------------------------
# float64 references: loops over rows, every logit written out
# ------------------------------------------------------------------------------------------
def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def lse(values):
    m = max(float(v.detach()) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def reduce_rows(rows, reduction):
    rows = torch.stack(rows)
    return {"none": rows, "sum": rows.sum(), "mean": rows.mean()}[reduction]


def ref_neg_clip_parts(image, text, negatives, t, normalize=True):
    """(i2t rows, t2i rows): image i over every caption and every negative; caption i over
    the images."""
    v, w = (unit(image), unit(text)) if normalize else (image, text)
    neg = [] if negatives is None else list(negatives.reshape(-1, image.shape[1]))
    neg = [unit(x) if normalize else x for x in neg]
    n = image.shape[0]
    i2t, t2i = [], []
    for i in range(n):
        row = [t * (v[i] @ w[j]) for j in range(n)] + [t * (v[i] @ x) for x in neg]
        i2t.append(lse(row) - t * (v[i] @ w[i]))
        col = [t * (w[i] @ v[j]) for j in range(n)]
        t2i.append(lse(col) - t * (w[i] @ v[i]))
    return i2t, t2i


def ref_neg_clip(image, text, negatives, t, reduction="mean", normalize=True):
    i2t, t2i = ref_neg_clip_parts(image, text, negatives, t, normalize)
    return reduce_rows([(a + b) / 2 for a, b in zip(i2t, t2i)], reduction)


def ref_own(anchor, positive, negatives, t, normalize=True):
    """Per anchor: softmax over its positive and its own K negatives, target the positive."""
    rows = []
    for i in range(anchor.shape[0]):
        a, p = anchor[i], positive[i]
        negs = list(negatives[i])
        if normalize:
            a, p, negs = unit(a), unit(p), [unit(x) for x in negs]
        ti = t[i] if torch.is_tensor(t) and t.dim() == 1 else t
        logits = [ti * (a @ p)] + [ti * (a @ x) for x in negs]
        rows.append(lse(logits) - logits[0])
    return rows


def ref_count_clip(image, text, cf, counting, t, weight, reduction="mean"):
    i2t, t2i = ref_neg_clip_parts(image, text, None, t)
    clip_rows = [(a + b) / 2 for a, b in zip(i2t, t2i)]
    count_rows = ref_own(image, text, cf[:, None], t)
    count_rows = [r if bool(m) else r * 0 for r, m in zip(count_rows, counting)]
    if reduction == "none":
        return torch.stack([c + weight * r for c, r in zip(clip_rows, count_rows)])
    if reduction == "sum":
        return torch.stack(clip_rows).sum() + weight * torch.stack(count_rows).sum()
    n_count = int(counting.sum())
    count = torch.stack(count_rows).sum() / max(n_count, 1)
    return torch.stack(clip_rows).mean() + weight * count


# ------------------------------------------------------------------------------------------
# NegCLIP
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eng", ENGINES, ids=["dense", "tiled2", "tiled64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_neg_clip_matches_reference(eng, reduction):
    leaves = inputs()
    assert_same(
        lambda i, t, n: neg_clip(i, t, n, scale=8.0, reduction=reduction, **eng),
        lambda i, t, n: ref_neg_clip(i, t, n, 8.0, reduction),
        leaves,
    )


def test_neg_clip_flat_negatives_any_count_and_unnormalized():
    image, text, _ = inputs()
    flat = rnd(7, D, seed=9)  # M = 7 negatives, not a multiple of N
    assert_same(
        lambda i, t, n: neg_clip(i, t, n, temperature=0.5, normalize=False, backend="tiled"),
        lambda i, t, n: ref_neg_clip(i, t, n, 2.0, normalize=False),
        [image, text, flat],
    )


def test_neg_clip_gradcheck():
    image, text, negs = inputs(n=3, k=2, d=4)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    for eng in ({"backend": "dense"}, {"backend": "tiled", "chunk_size": 2}):
        assert torch.autograd.gradcheck(
            lambda i, t, n, s, eng=eng: neg_clip(i, t, n, scale=s, **eng),
            (image, text, negs, scale),
        )


def test_neg_clip_without_negatives_is_clip_exactly():
    image, text, _ = inputs()
    empty = torch.zeros(N, 0, D, dtype=torch.float64)
    for eng in ENGINES:
        want = ck.clip(image, text, scale=10.0, **eng)
        assert torch.equal(neg_clip(image, text, scale=10.0, **eng), want)
        assert torch.equal(neg_clip(image, text, empty, scale=10.0, **eng), want)
    module = NegCLIP()
    torch.testing.assert_close(module(image, text), ck.CLIP()(image, text))


@pytest.mark.slow  # importing open_clip takes seconds
def test_neg_clip_without_negatives_matches_open_clip():
    oc = peers.require("open_clip_losses")
    image, text, _ = inputs(n=8, d=16)
    t = torch.tensor(1 / 0.07, dtype=torch.float64)
    assert_same(
        lambda i, w: neg_clip(i, w, scale=t, backend="tiled", chunk_size=3),
        lambda i, w: oc.ClipLoss()(F.normalize(i, dim=-1), F.normalize(w, dim=-1), t),
        [image, text],
    )


def test_neg_clip_matches_the_official_negclip_code():
    """vinid/neg_clip ``train.py``: images = [images; hard images], texts = [captions; captions
    of the hard images; hard captions; hard captions of the hard images]; open_clip's
    ``ClipLoss`` with ``logits_per_text[:len(logits_per_image)]`` (transcribed, one process)."""
    g = torch.Generator().manual_seed(3)
    B = 4
    images, new_images = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    texts, new_texts = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    hard, new_hard = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    scale = 1 / 0.07

    def official(images, new_images, texts, new_texts, hard, new_hard):
        img = F.normalize(torch.cat([images, new_images]), dim=-1)
        txt = F.normalize(torch.cat([texts, new_texts, hard, new_hard]), dim=-1)
        logits_per_image = scale * img @ txt.T
        logits_per_text = scale * txt @ img.T
        labels = torch.arange(logits_per_image.shape[0])
        return (
            F.cross_entropy(logits_per_image, labels)
            + F.cross_entropy(logits_per_text[: len(logits_per_image)], labels)
        ) / 2

    def ours(images, new_images, texts, new_texts, hard, new_hard):
        return neg_clip(
            torch.cat([images, new_images]),
            torch.cat([texts, new_texts]),
            torch.cat([hard, new_hard])[:, None],  # K = 1 per pair
            scale=scale,
            backend="tiled",
            chunk_size=3,
        )

    assert_same(ours, official, [images, new_images, texts, new_texts, hard, new_hard])


def test_neg_clip_matches_degla_global_term():
    """xiaoxing2001/DeGLA ``CLIPloss_DeGLA.forward`` without the local and distillation terms:
    texts = [captions; negatives.view(-1)] (sample-major, as its train loop builds them)."""
    image, text, negs = inputs(k=4)
    s = 20.0

    def degla(image, text, negs):
        img = F.normalize(image, dim=-1)
        all_text = F.normalize(torch.cat([text, negs.reshape(-1, D)]), dim=-1)
        per_image = s * img @ all_text.T
        per_text = s * all_text @ img.T
        labels = torch.arange(N)
        return (
            F.cross_entropy(per_image, labels) + F.cross_entropy(per_text[: len(per_image)], labels)
        ) / 2

    assert_same(lambda i, t, n: neg_clip(i, t, n, scale=s), degla, [image, text, negs])


def test_neg_clip_negatives_with_vanishing_logits_give_clip():
    """Negatives whose logits go to -inf (normalize=False, far on the other side) drop out."""
    g = torch.Generator().manual_seed(4)
    image = torch.randn(N, D, generator=g, dtype=torch.float64) * 0.1
    image[:, 0] = 1.0
    text = torch.randn(N, D, generator=g, dtype=torch.float64)
    far = torch.zeros(N, 2, D, dtype=torch.float64)
    far[..., 0] = -1e6
    want = ck.clip(image, text, scale=2.0, normalize=False)
    got = neg_clip(image, text, far, scale=2.0, normalize=False, backend="tiled", chunk_size=2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_neg_clip_text_to_image_direction_ignores_negatives():
    image, text, negs = inputs()
    other = rnd(N, K, D, seed=11)
    for n in (negs, other):
        i2t, t2i = ref_neg_clip_parts(image, text, n, 5.0)
        got = neg_clip(image, text, n, scale=5.0, reduction="none", backend="tiled")
        t2i_ours = 2 * got - torch.stack(i2t)
        torch.testing.assert_close(t2i_ours, torch.stack(t2i))
    # the t2i half is the CLIP one: CLIP rows minus CLIP's own i2t half
    clip_i2t, clip_t2i = ref_neg_clip_parts(image, text, None, 5.0)
    torch.testing.assert_close(torch.stack(clip_t2i), t2i_ours)
    # and the gradient of the loss with respect to a negative comes from i2t only
    negs = negs.detach().requires_grad_()
    neg_clip(image.detach(), text.detach(), negs, scale=5.0).backward()
    negs2 = negs.detach().clone().requires_grad_()
    (
        torch.stack(ref_neg_clip_parts(image.detach(), text.detach(), negs2, 5.0)[0]).mean() / 2
    ).backward()
    torch.testing.assert_close(negs.grad, negs2.grad)


def test_neg_clip_negative_equal_to_the_caption_costs_at_least_log2():
    image, text, _ = inputs()
    dup = text.detach().clone()[:, None]
    rows_i2t, _ = ref_neg_clip_parts(image, text, dup, 5.0)
    assert all(float(r.detach()) >= math.log(2) - 1e-12 for r in rows_i2t)
    got = neg_clip(image, text, dup, scale=5.0, reduction="none")
    torch.testing.assert_close(got, ref_neg_clip(image, text, dup, 5.0, "none"))


def test_neg_clip_learnable_scale_gradient():
    image, text, negs = [x.detach().float() for x in inputs()]
    module = NegCLIP(init_temperature=0.1, backend="tiled", chunk_size=2)
    module(image, text, negs).backward()
    ls = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    ref_neg_clip(image.double(), text.double(), negs.double(), ls.exp()).backward()
    torch.testing.assert_close(module.logit_scale.grad.double(), ls.grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# DeGLA image-grounded (IGC) and text-grounded (TGC) contrast
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("normalize", [True, False])
def test_image_grounded_contrast_matches_reference(reduction, normalize):
    t = 4.0 if normalize else 0.5
    assert_same(
        lambda i, w, n: image_grounded_contrast(
            i, w, n, scale=t, reduction=reduction, normalize=normalize
        ),
        lambda i, w, n: reduce_rows(ref_own(i, w, n, t, normalize), reduction),
        list(inputs()),
    )


def test_image_grounded_contrast_per_image_temperature():
    tau = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64, requires_grad=True)
    image, text, negs = inputs()
    assert torch.autograd.gradcheck(
        lambda i, w, n, tau: image_grounded_contrast(i, w, n, temperature=tau),
        (image, text, negs, tau),
    )
    torch.testing.assert_close(
        image_grounded_contrast(image, text, negs, temperature=tau),
        torch.stack(ref_own(image, text, negs, 1 / tau)).mean(),
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_text_grounded_contrast_matches_reference(reduction):
    text, teacher, negs = inputs()
    teacher = teacher.detach()
    assert_same(
        lambda w, n: text_grounded_contrast(w, teacher, n, reduction=reduction),
        lambda w, n: reduce_rows(ref_own(w, teacher, n, 10.0), reduction),
        [text, negs],
    )


def test_grounded_contrasts_gradcheck():
    a, b, negs = inputs(n=3, k=2, d=4)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, n, s: image_grounded_contrast(a, b, n, scale=s), (a, b, negs, scale)
    )
    assert torch.autograd.gradcheck(
        lambda a, n: text_grounded_contrast(a, b.detach(), n, temperature=0.3), (a, negs)
    )


@pytest.mark.parametrize("k", [1, 4])
def test_grounded_contrasts_negatives_equal_to_the_positive_give_log_1_plus_k(k):
    image, text, _ = inputs()
    same = text.detach()[:, None].expand(N, k, D).clone()
    rows = image_grounded_contrast(image, text, same, scale=30.0, reduction="none")
    torch.testing.assert_close(rows, torch.full((N,), math.log(1 + k), dtype=torch.float64))
    rows = text_grounded_contrast(text, text.detach() * 2, same, reduction="none")
    torch.testing.assert_close(rows, torch.full((N,), math.log(1 + k), dtype=torch.float64))


def test_grounded_contrasts_without_negatives_are_zero():
    image, text, _ = inputs()
    none = torch.zeros(N, 0, D, dtype=torch.float64)
    loss = image_grounded_contrast(image, text, none)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert float(image.grad.abs().max()) == 0.0
    assert float(text_grounded_contrast(text, image, none).detach()) == 0.0


def test_image_grounded_contrast_with_one_negative_is_the_logistic_form():
    image, text, negs = inputs(k=1)
    v, w, n = F.normalize(image, dim=-1), F.normalize(text, dim=-1), F.normalize(negs, dim=-1)
    u_pos = 7.0 * (v * w).sum(-1)
    u_neg = 7.0 * (v * n[:, 0]).sum(-1)
    torch.testing.assert_close(
        image_grounded_contrast(image, text, negs, scale=7.0, reduction="none"),
        torch.log1p(torch.exp(u_neg - u_pos)),
    )


def _degla_image_local(logit_scale, image_features, text_features, neg_text):
    """Transcription of DeGLA ``get_image_local_loss`` (features already normalised)."""
    contrast = logit_scale * image_features @ text_features.T
    n = contrast.shape[0]
    mask_0 = torch.full((n, n), float("-inf"), dtype=contrast.dtype)
    mask_0.fill_diagonal_(0)
    mask = torch.cat([mask_0, mask_0.repeat_interleave(neg_text, dim=1)], dim=1)
    return F.cross_entropy(contrast + mask, torch.arange(n))


def _degla_text_local(text_features, frozen_texts, neg_text):
    """Transcription of DeGLA ``get_text_local_loss`` (scale 10, features normalised)."""
    n = frozen_texts.shape[0]
    gt_text, da_text = text_features[:n], text_features[n:]
    contrast = 10.0 * gt_text @ torch.cat([frozen_texts, da_text]).T
    mask_0 = torch.full((n, n), float("-inf"), dtype=contrast.dtype)
    mask_0.fill_diagonal_(0)
    mask = torch.cat([mask_0, mask_0.repeat(1, neg_text)], dim=1)
    return F.cross_entropy(contrast + mask, torch.arange(n))


def test_image_grounded_contrast_matches_degla_code():
    """Sample-major negatives (DeGLA's loader: ``neg_text.view(-1, L)``): the official IGC
    mask (``repeat_interleave``) pairs every image with its own negatives."""
    image, text, negs = inputs(k=4)
    s = 30.0

    def degla(image, text, negs):
        all_text = F.normalize(torch.cat([text, negs.reshape(-1, D)]), dim=-1)
        return _degla_image_local(s, F.normalize(image, dim=-1), all_text, 4)

    assert_same(
        lambda i, t, n: image_grounded_contrast(i, t, n, scale=s), degla, [image, text, negs]
    )


def test_text_grounded_contrast_matches_degla_code_and_its_layout_quirk():
    """The official TGC mask (``repeat(1, K)``) reads negative k of sample i at row
    ``k * N + i``: with a negative-major layout it is our TGC; with the sample-major layout
    DeGLA's loader produces it contrasts other samples' negatives (and differs)."""
    text, teacher, negs = inputs(k=4)
    teacher = F.normalize(teacher.detach(), dim=-1)

    def degla(text, negs, layout):
        flat = negs.transpose(0, 1) if layout == "negative-major" else negs
        all_text = F.normalize(torch.cat([text, flat.reshape(-1, D)]), dim=-1)
        return _degla_text_local(all_text, teacher, 4)

    assert_same(
        lambda w, n: text_grounded_contrast(w, teacher, n),
        lambda w, n: degla(w, n, "negative-major"),
        [text, negs],
    )
    ours = text_grounded_contrast(text, teacher, negs)
    assert not torch.allclose(ours, degla(text, negs, "sample-major"))


def test_text_grounded_contrast_teacher_gets_no_gradient():
    text, teacher, negs = inputs()
    text_grounded_contrast(text, teacher, negs).backward()
    assert teacher.grad is None and text.grad is not None and negs.grad is not None


# ------------------------------------------------------------------------------------------
# CountCLIP
# ------------------------------------------------------------------------------------------
MASK = torch.tensor([True, False, True, True, False])


@pytest.mark.parametrize("eng", ENGINES[:2], ids=["dense", "tiled2"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_count_clip_matches_reference(eng, reduction):
    image, text, cf = inputs(k=1)
    cf = cf[:, 0].detach().requires_grad_()
    assert_same(
        lambda i, t, c: count_clip(
            i, t, c, MASK, count_weight=0.7, scale=6.0, reduction=reduction, **eng
        ),
        lambda i, t, c: ref_count_clip(i, t, c, MASK, 6.0, 0.7, reduction),
        [image, text, cf],
    )


def test_count_clip_gradcheck():
    image, text, cf = inputs(n=3, k=1, d=4)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([True, False, True])
    assert torch.autograd.gradcheck(
        lambda i, t, c, s: count_clip(i, t, c, mask, scale=s, backend="tiled", chunk_size=2),
        (image, text, cf[:, 0].detach().requires_grad_(), scale),
    )


def test_count_clip_without_weight_or_counting_rows_is_clip():
    image, text, cf = inputs(k=1)
    want = ck.clip(image, text, scale=9.0)
    none = torch.zeros(N, dtype=torch.bool)
    assert torch.equal(count_clip(image, text, cf[:, 0], count_weight=0.0, scale=9.0), want)
    assert torch.equal(count_clip(image, text, cf[:, 0], none, scale=9.0), want)


def test_count_clip_equal_logits_cost_log2_per_counting_row():
    image, text, _ = inputs()
    clip_rows = ck.clip(image, text, scale=9.0, reduction="none")
    got = count_clip(image, text, text.detach(), MASK, scale=9.0, reduction="none")
    torch.testing.assert_close(got - clip_rows, MASK.double() * math.log(2))
    got = count_clip(image, text, text.detach(), MASK, count_weight=2.0, scale=9.0)
    torch.testing.assert_close(got, clip_rows.mean() + 2 * math.log(2))


def test_count_clip_counting_term_is_image_grounded_contrast_with_one_negative():
    image, text, cf = inputs(k=1)
    all_rows = torch.ones(N, dtype=torch.bool)
    got = count_clip(image, text, cf[:, 0], all_rows, scale=4.0) - ck.clip(image, text, scale=4.0)
    torch.testing.assert_close(got, image_grounded_contrast(image, text, cf, scale=4.0))


def test_count_clip_ignores_counterfactuals_off_the_counting_subset():
    image, text, cf = inputs(k=1)
    cf = cf[:, 0].detach()
    other = cf.clone()
    other[~MASK] = 0.0  # anything finite
    a = count_clip(image, text, cf, MASK, scale=4.0)
    b = count_clip(image, text, other, MASK, scale=4.0)
    torch.testing.assert_close(a, b)
    cf = cf.requires_grad_()
    count_clip(image, text, cf, MASK, scale=4.0).backward()
    assert float(cf.grad[~MASK].abs().max()) == 0.0 and float(cf.grad[MASK].abs().max()) > 0


# ------------------------------------------------------------------------------------------
# every objective: module twin, reductions, half precision, bad input
# ------------------------------------------------------------------------------------------
def _calls():
    image, text, negs = inputs()
    return {
        "neg_clip": (neg_clip, NegCLIP, [image, text, negs], {"backend": "tiled", "chunk_size": 2}),
        "image_grounded_contrast": (
            image_grounded_contrast,
            ImageGroundedContrast,
            [image, text, negs],
            {},
        ),
        "text_grounded_contrast": (
            text_grounded_contrast,
            TextGroundedContrast,
            [text, image.detach(), negs],
            {"temperature": 0.2},
        ),
        "count_clip": (count_clip, CountCLIP, [image, text, negs[:, 0]], {"count_weight": 0.5}),
    }


NAMES = ["neg_clip", "image_grounded_contrast", "text_grounded_contrast", "count_clip"]
SCALED = {NegCLIP, ImageGroundedContrast, CountCLIP}


@pytest.mark.parametrize("name", NAMES)
def test_module_equals_functional(name):
    fn, cls, leaves, kw = _calls()[name]
    module = cls(**kw)
    if cls in SCALED:
        kw = {**kw, "scale": module.logit_scale.exp()}
        assert module.logit_scale.requires_grad
        assert math.isclose(module.scale.temperature, 0.07, rel_tol=1e-6)
    torch.testing.assert_close(module(*leaves), fn(*leaves, **kw))
    torch.testing.assert_close(
        module(*leaves, reduction="none"), fn(*leaves, **{**kw, "reduction": "none"})
    )
    assert fn.__name__.replace("_", "") == cls.__name__.lower()
    assert REGISTRY[name].family == "compositional" and REGISTRY[name].module is cls
    assert getattr(fn, "exact_under_group", None) is True


@pytest.mark.parametrize("name", NAMES)
def test_reductions_consistent(name):
    fn, _, leaves, kw = _calls()[name]
    rows = fn(*leaves, reduction="none", **kw)
    assert rows.shape == (N,)
    torch.testing.assert_close(fn(*leaves, reduction="sum", **kw), rows.sum())
    torch.testing.assert_close(fn(*leaves, **kw), rows.mean())  # count_clip: every row counts


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_finite_at_logit_scale_100(name, dtype):
    fn, _, leaves, kw = _calls()[name]
    leaves = [(10 * x.detach()).to(dtype).requires_grad_() for x in leaves]
    key = "temperature" if name == "text_grounded_contrast" else "scale"
    kw = {**kw, key: 0.01 if key == "temperature" else 100.0}
    out = fn(*leaves, **kw)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    for x in leaves:
        if x.grad is not None:
            assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()


def _bad_calls():
    image, text, negs = [x.detach() for x in inputs()]
    nan = negs.clone()
    nan[0, 0, 0] = float("nan")
    return [
        (neg_clip, (image, text[:-1]), {}, "text"),
        (neg_clip, (image, text, negs[:-1]), {}, "negatives"),
        (neg_clip, (image, text, negs[..., :-1]), {}, "negatives"),
        (neg_clip, (image, text, nan), {}, "negatives"),
        (neg_clip, (image, text, negs.float()), {}, "negatives"),
        (neg_clip, (image, text, negs[None]), {}, "negatives"),
        (neg_clip, (image[:1], text[:1]), {}, "image"),
        (neg_clip, (image, text, negs), {"scale": -1.0}, "scale"),
        (image_grounded_contrast, (image, text, negs[:, 0]), {}, "negatives"),
        (image_grounded_contrast, (image, text, negs[:-1]), {}, "negatives"),
        (image_grounded_contrast, (image, text, nan), {}, "negatives"),
        (
            image_grounded_contrast,
            (image, text, negs),
            {"temperature": torch.ones(3)},
            "temperature",
        ),
        (text_grounded_contrast, (text, image[:-1], negs), {}, "teacher_text"),
        (text_grounded_contrast, (text, image, negs[..., :2]), {}, "negatives"),
        (text_grounded_contrast, (text, image, negs), {"temperature": 0.0}, "temperature"),
        (count_clip, (image, text, negs), {}, "counterfactual"),
        (count_clip, (image, text, text[:-1]), {}, "counterfactual"),
        (count_clip, (image, text, text, MASK.long()), {}, "counting"),
        (count_clip, (image, text, text, MASK[:-1]), {}, "counting"),
        (count_clip, (image, text, text), {"count_weight": -1.0}, "count_weight"),
        (count_clip, (image, text, text), {"count_weight": float("nan")}, "count_weight"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_raises_naming_the_argument(case):
    fn, args, kw, name = _bad_calls()[case]
    with pytest.raises(ValueError, match=name):
        fn(*args, **kw)
