"""Learned sparse retrieval: FLOPS, IDF-aware FLOPS and the SPLADE activation. Float64 references
written here (loops), value and gradient equality, gradcheck, the paper and code oracles,
sentence-transformers parity (FlopsLoss, SpladePooling), half precision, module twins, bad
input."""

from __future__ import annotations

import importlib
import re
import textwrap

import pytest
import torch

import contrastkit as ck
from contrastkit.losses.sparse import FLOPS, IDFFLOPS, flops, idf_flops, splade
from contrastkit.objective import REGISTRY

import peers

N, V = 6, 9


def rnd(*shape, seed=0, dtype=torch.float64, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)


def sparse_reps(n=N, v=V, seed=0):
    """Non-negative term weights with exact zeros (about half the entries)."""
    return torch.relu(rnd(n, v, seed=seed, grad=False)).requires_grad_()


def st_module(name):
    try:
        peers.ensure_torchvision()
        with peers._quiet():
            return importlib.import_module(f"sentence_transformers.sparse_encoder.{name}")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"sentence-transformers unavailable: {type(exc).__name__}: {exc}"[:200])


def value_and_grads(fn, leaves):
    leaves = [x.detach().clone().requires_grad_() for x in leaves]
    out = fn(*leaves)
    grads = torch.autograd.grad(out.sum(), leaves)
    return out.detach(), grads


def assert_same(fn_a, fn_b, leaves, **tol):
    va, ga = value_and_grads(fn_a, leaves)
    vb, gb = value_and_grads(fn_b, leaves)
    torch.testing.assert_close(va, vb, **tol)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **tol)
    return (va - vb).abs().max().item()


# ------------------------------------------------------------------------------------------
# float64 references (loops over terms and rows)
# ------------------------------------------------------------------------------------------
def ref_flops(w, threshold=None, idf=None):
    n, v = w.shape
    keep = [threshold is None or int((w[i] != 0).sum()) > threshold for i in range(n)]
    total = w.new_zeros(())
    for j in range(v):
        s = w.new_zeros(())
        for i in range(n):
            if keep[i]:
                # |w|, with the derivative of w at 0 (non-negative weights, as FlopsLoss)
                s = s + (w[i, j] if w[i, j] >= 0 else -w[i, j])
        term = (s / n) ** 2
        total = total + (term if idf is None else term / idf[j] ** 2)
    return total


def ref_splade(logits, mask, pooling="max", activation="relu"):
    n, seq, v = logits.shape
    rows = []
    for i in range(n):
        cols = []
        for j in range(v):
            vals = [
                torch.log1p(torch.relu(logits[i, t, j])) for t in range(seq) if bool(mask[i, t])
            ]
            if activation == "log1p_relu":
                vals = [torch.log1p(x) for x in vals]
            if not vals:
                cols.append(logits.new_zeros(()))
            elif pooling == "max":
                cols.append(torch.stack(vals).max())
            else:
                cols.append(torch.stack(vals).sum())
        rows.append(torch.stack(cols))
    return torch.stack(rows)


# ------------------------------------------------------------------------------------------
# FLOPS
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [None, 0, 3])
def test_flops_matches_reference(threshold):
    w = sparse_reps()
    assert_same(lambda w: flops(w, threshold=threshold), lambda w: ref_flops(w, threshold), [w])


def test_flops_signed_weights_use_absolute_values():
    w = rnd(N, V)  # negative weights: |w| (OpenSearch takes abs; sentence-transformers not)
    assert_same(flops, ref_flops, [w])


def test_flops_gradcheck():
    w = sparse_reps(4, 5) + 0.1  # away from 0 (|w| is not differentiable there)
    assert torch.autograd.gradcheck(flops, (w,))
    assert torch.autograd.gradcheck(lambda w: flops(w, threshold=3), (w,))


def test_flops_oracles():
    assert flops(torch.zeros(4, V)).item() == 0.0
    # N rows one-hot on distinct terms: N * (1/N)^2 = 1/N
    torch.testing.assert_close(flops(torch.eye(N, V, dtype=torch.float64)).item(), 1 / N)
    # all rows one-hot on the same term: 1
    same = torch.zeros(N, V, dtype=torch.float64)
    same[:, 2] = 1.0
    torch.testing.assert_close(flops(same), torch.tensor(1.0, dtype=torch.float64))
    # gradient 2 mean_v(W) / N per entry (w >= 0)
    w = sparse_reps() + 0.01
    (g,) = torch.autograd.grad(flops(w), (w,))
    torch.testing.assert_close(g, (2 * w.detach().mean(0) / N).expand(N, V))


def test_flops_threshold_zeroes_short_rows_but_keeps_them_in_the_count():
    w = sparse_reps().detach()
    w[1] = 0.0
    w[1, 0] = 5.0  # one active term: masked with threshold >= 1
    kept = ((w != 0).sum(1, keepdim=True) > 1).to(w.dtype)
    assert kept[1] == 0 and kept.sum() >= N - 2
    torch.testing.assert_close(flops(w, threshold=1), flops(w * kept))
    assert flops(w, threshold=1) < flops(w)


def test_flops_matches_sentence_transformers():
    F = st_module("losses.flops")
    w = sparse_reps()
    for threshold in (None, 2):
        peer = F.FlopsLoss(peers._placeholder_model(), threshold=threshold)
        diff = assert_same(
            lambda w, t=threshold: flops(w, threshold=t),
            lambda w, peer=peer: peer.compute_loss_from_embeddings(w),
            [w],
        )
        assert diff < 1e-14


def test_flops_matches_opensearch_flops_value_transcription():
    """OpenSearch ``flops_value(rep, group_num)``: reshape (N, G, V), mean over dim 0 of |rep|,
    squared, summed: FLOPS per group position, summed over positions."""
    w = rnd(N * 2, V, grad=False)
    grouped = (w.abs().reshape(-1, 2, V).mean(0) ** 2).sum()
    per_position = flops(w.reshape(-1, 2, V)[:, 0]) + flops(w.reshape(-1, 2, V)[:, 1])
    torch.testing.assert_close(per_position, grouped)


def test_flops_composes_with_a_contrastive_objective():
    logits_q = rnd(4, 5, 30, grad=True)
    logits_d = rnd(4, 7, 30, seed=1, grad=True)
    q = splade(logits_q, torch.ones(4, 5, dtype=torch.bool))
    d = splade(logits_d, torch.ones(4, 7, dtype=torch.bool))
    loss = ck.info_nce(q, d) + 1e-3 * ck.flops(q) + 1e-3 * ck.flops(d)
    loss.backward()
    assert torch.isfinite(loss) and logits_q.grad is not None and logits_d.grad is not None
    torch.testing.assert_close(loss, ck.info_nce(q, d) + 1e-3 * (ref_flops(q) + ref_flops(d)))


# ------------------------------------------------------------------------------------------
# IDF-aware FLOPS
# ------------------------------------------------------------------------------------------
def _idf(v=V, seed=3):
    g = torch.Generator().manual_seed(seed)
    return 0.5 + 4 * torch.rand(v, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("threshold", [None, 2])
def test_idf_flops_matches_reference(threshold):
    c, idf = sparse_reps(), _idf()
    assert_same(
        lambda c: idf_flops(c, idf, threshold=threshold),
        lambda c: ref_flops(c, threshold, idf=idf),
        [c],
    )


def test_idf_flops_gradcheck():
    c = sparse_reps(4, 5) + 0.1
    idf = _idf(5).requires_grad_()
    assert torch.autograd.gradcheck(idf_flops, (c, idf))


def test_idf_flops_oracles_identity_and_idf_one():
    w, idf = sparse_reps(), _idf().requires_grad_()
    # contributions c = idf * w: the value and the gradient w.r.t. w are FLOPS(w)'s ...
    loss = idf_flops(idf * w, idf)
    gw, gidf = torch.autograd.grad(loss, (w, idf))
    plain = flops(w)
    (gw_plain,) = torch.autograd.grad(plain, (w,))
    torch.testing.assert_close(loss, plain)
    torch.testing.assert_close(gw, gw_plain)
    # ... and a learned IDF gets no gradient from the penalty (its two paths cancel)
    assert gidf.abs().max() < 1e-12
    # idf = 1: plain FLOPS
    ones = torch.ones(V, dtype=torch.float64)
    torch.testing.assert_close(idf_flops(w, ones), flops(w))


def test_idf_flops_penalises_low_idf_terms_more():
    c = torch.zeros(2, 2, dtype=torch.float64)
    c[:, 0] = c[:, 1] = 1.0  # the same contribution to the score on both terms
    idf = torch.tensor([0.5, 5.0], dtype=torch.float64)
    c.requires_grad_()
    (g,) = torch.autograd.grad(idf_flops(c, idf), (c,))
    torch.testing.assert_close(g[:, 0] / g[:, 1], torch.full((2,), 100.0, dtype=torch.float64))


# ------------------------------------------------------------------------------------------
# SPLADE activation
# ------------------------------------------------------------------------------------------
def _mask():
    return torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_splade_matches_reference(pooling, activation):
    logits, mask = rnd(4, 4, 5), _mask()
    kw = {"pooling": pooling, "activation": activation}
    assert_same(lambda x: splade(x, mask, **kw), lambda x: ref_splade(x, mask, **kw), [logits])
    assert_same(
        lambda x: splade(x, mask.bool(), **kw), lambda x: ref_splade(x, mask, **kw), [logits]
    )
    full = torch.ones(4, 4, dtype=torch.bool)
    torch.testing.assert_close(splade(logits, **kw), splade(logits, full, **kw))


def test_splade_gradcheck():
    logits = rnd(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    for pooling in ("max", "sum"):
        assert torch.autograd.gradcheck(lambda x, p=pooling: splade(x, mask, pooling=p), (logits,))


def test_splade_oracles():
    logits = rnd(3, 4, 6, grad=False)
    mask = torch.ones(3, 4, dtype=torch.bool)
    # all logits <= 0: the zero vector
    assert splade(-logits.abs(), mask).abs().max() == 0
    # monotone in the logits
    assert (splade(logits + 0.5, mask) >= splade(logits, mask)).all()
    # max <= sum
    assert (splade(logits, mask) <= splade(logits, mask, pooling="sum") + 1e-15).all()
    # padded positions never matter, even -inf or huge logits there
    padded = logits.clone()
    pad = torch.zeros(3, 4, dtype=torch.bool)
    pad[:, 3] = True
    padded[:, 3] = 1e4
    padded[0, 3, 0] = float("-inf")
    torch.testing.assert_close(splade(padded, ~pad), splade(logits[:, :3], mask[:, :3]))
    # a sequence without unmasked positions: zeros, finite gradient
    x = logits.clone().requires_grad_()
    out = splade(x, torch.zeros(3, 4, dtype=torch.bool))
    out.sum().backward()
    assert out.abs().max() == 0 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_splade_matches_sentence_transformers_splade_pooling(pooling, activation):
    S = st_module("modules.splade_pooling")
    logits, mask = rnd(4, 4, 5), _mask()
    peer = S.SpladePooling(pooling_strategy=pooling, activation_function=activation)
    peer.train()  # out-of-place ops: gradients

    def theirs(x):
        return peer({"token_embeddings": x.clone(), "attention_mask": mask})["sentence_embedding"]

    diff = assert_same(
        lambda x: splade(x, mask, pooling=pooling, activation=activation), theirs, [logits]
    )
    assert diff < 1e-14


def test_splade_half_precision():
    logits = (10 * rnd(3, 4, 6, grad=False)).to(torch.bfloat16).requires_grad_()
    out = splade(logits, torch.ones(3, 4, dtype=torch.bool))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: splade(torch.randn(3, 4)), "logits"),
        (lambda: splade(torch.randn(3, 4, 5).long()), "logits"),
        (lambda: splade(torch.full((2, 3, 4), float("nan"))), "logits"),
        (lambda: splade(torch.full((2, 3, 4), float("inf"))), "logits"),
        (lambda: splade(torch.randn(2, 0, 4)), "logits"),
        (lambda: splade(torch.randn(2, 3, 4), torch.ones(2, 4)), "attention_mask"),
        (lambda: splade(torch.randn(2, 3, 4), torch.ones(2, 3) * 2), "attention_mask"),
        (lambda: splade(torch.randn(2, 3, 4), [[1, 1, 1]] * 2), "attention_mask"),
        (lambda: splade(torch.randn(2, 3, 4), pooling="mean"), "pooling"),
        (lambda: splade(torch.randn(2, 3, 4), activation="gelu"), "activation"),
    ],
)
def test_splade_bad_input_names_the_argument(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


# ------------------------------------------------------------------------------------------
# shared: half precision, modules, registry, examples, bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_finite(dtype):
    w = (40 * sparse_reps().detach()).to(dtype).requires_grad_()
    idf = _idf().to(dtype)
    for out in (flops(w), idf_flops(w, idf), flops(w, threshold=3)):
        assert out.dtype == torch.float32 and torch.isfinite(out)
        (g,) = torch.autograd.grad(out, (w,))
        assert g.dtype == dtype and torch.isfinite(g).all()


def test_modules_equal_functionals_and_registry():
    w, idf = sparse_reps(), _idf()
    torch.testing.assert_close(FLOPS(threshold=2)(w), flops(w, threshold=2))
    torch.testing.assert_close(IDFFLOPS()(w, idf), idf_flops(w, idf))
    for fn, cls in ((flops, FLOPS), (idf_flops, IDFFLOPS)):
        assert fn.__name__.replace("_", "") == cls.__name__.lower()
        assert REGISTRY[fn.__name__].family == "sparse" and REGISTRY[fn.__name__].module is cls
        assert fn.exact_under_group is True
    assert ck.flops is flops and ck.IDFFLOPS is IDFFLOPS


@pytest.mark.parametrize("cls", [FLOPS, IDFFLOPS])
def test_docstring_is_a_manual_with_a_runnable_example(cls):
    doc = cls.__doc__
    for section in ("::", "Args:", "Inputs:", "Example::", "See also:", "References:"):
        assert section in doc, section
    assert re.search(r"arXiv:\d{4}\.\d{5}", doc)
    example = textwrap.dedent(doc.split("Example::")[1].split("See also:")[0])
    scope: dict = {}
    exec(compile(example, f"<{cls.__name__} example>", "exec"), scope)
    assert torch.isfinite(scope["loss"])


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda w, idf: flops(w, threshold=-1), "threshold"),
        (lambda w, idf: flops(w, threshold=1.5), "threshold"),
        (lambda w, idf: flops(w[0]), "embeddings"),
        (lambda w, idf: flops(w[:0]), "embeddings"),
        (lambda w, idf: idf_flops(w, idf[:-1]), "idf"),
        (lambda w, idf: idf_flops(w, idf.float()), "idf"),
        (lambda w, idf: idf_flops(w, idf * 0), "idf"),
        (lambda w, idf: idf_flops(w, -idf), "idf"),
        (lambda w, idf: idf_flops(w, idf[None]), "idf"),
        (lambda w, idf: idf_flops(w.long(), idf), "contributions"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, needle):
    with pytest.raises(ValueError, match=needle):
        call(sparse_reps().detach(), _idf())
