"""Every objective: engine (all paths, many tile sizes) == dense reference, values and grads."""

from __future__ import annotations

import pytest
import torch

from cases import NAMES, call, inputs, reference

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
    from contrastkit.functional import info_nce

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
