"""contrastkit.views: each view builder's defining property, determinism and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.views import (
    drop_edges,
    dropout_views,
    jitter,
    mask_features,
    multi_crop,
    normalize_bipartite,
    permute_segments,
    scaling,
    svd_view,
    time_mask,
    word_repetition,
    word_repetition_batch,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- SimCSE


class _Enc(nn.Module):
    def __init__(self, p=0.1):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 16)
        self.drop = nn.Dropout(p)
        self.lin = nn.Linear(16, 8)
        self.calls = []

    def forward(self, input_ids, attention_mask=None):
        self.calls.append(input_ids.shape[0])
        h = self.drop(self.emb(input_ids))
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return self.lin(h.mean(1))


def test_dropout_views_independent_masks_in_train_mode_and_mode_restored():
    enc = _Enc(0.1).eval()
    enc.lin.train()  # a mixed mode must come back exactly
    ids = torch.randint(0, 50, (6, 7), generator=_gen())
    z1, z2 = dropout_views(enc, ids, generator=_gen(1))
    assert z1.shape == z2.shape == (6, 8)
    assert enc.calls == [12]  # one stacked forward on [x; x]
    assert bool((F.cosine_similarity(z1, z2) < 1 - 1e-6).all())
    assert not enc.training and enc.lin.training and not enc.drop.training
    # eval mode (no dropout): the two copies are identical
    with torch.no_grad():
        assert torch.equal(enc(ids), enc(ids))


def test_dropout_views_p0_identical_seeded_and_rng_untouched():
    ids = torch.randint(0, 50, (5, 4), generator=_gen())
    z1, z2 = dropout_views(_Enc(0.0), ids)
    assert torch.equal(z1, z2)  # card oracle: p = 0 -> every positive similarity is 1
    enc = _Enc(0.3)
    state = torch.get_rng_state()
    a = dropout_views(enc, ids, generator=_gen(7))
    assert torch.equal(torch.get_rng_state(), state)
    b = dropout_views(enc, ids, generator=_gen(7))
    c = dropout_views(enc, ids, generator=_gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    # two separate forwards, mapping inputs (every tensor duplicated when stacked)
    mask = torch.ones(5, 4)
    enc.calls.clear()
    z1, z2 = dropout_views(enc, {"input_ids": ids, "attention_mask": mask}, stacked=False)
    assert enc.calls == [5, 5] and not torch.equal(z1, z2)
    z1, z2 = dropout_views(enc, {"input_ids": ids, "attention_mask": mask})
    assert enc.calls[-1] == 10
    with pytest.raises(ValueError, match="encoder must be"):
        dropout_views(lambda x: x, ids)
    with pytest.raises(ValueError, match="inputs"):
        dropout_views(enc, [1, 2])


# ------------------------------------------------------------------------------------ ESimCSE


def _undo(out, positions):
    """Delete the inserted copies: copy of input position p sits at output index p + rank + 1."""
    drop = {p + r + 1 for r, p in enumerate(positions)}
    return [t for i, t in enumerate(out) if i not in drop]


@pytest.mark.parametrize("L", [3, 4, 10, 32, 64])
def test_word_repetition_card_oracle(L):
    r = 0.32
    cap = int(r * L)
    tokens = [101] + list(range(1000, 1000 + L - 2)) + [102]
    g = _gen(L)
    counts = set()
    for _ in range(300):
        out, pos = word_repetition(tokens, r, generator=g, return_positions=True)
        counts.add(len(pos))
        assert len(out) == L + len(pos)
        assert out[0] == 101 and out[-1] == 102
        assert all(1 <= p <= L - 2 for p in pos) and len(set(pos)) == len(pos)
        assert _undo(out, pos) == tokens
        for p in pos:  # a duplicated token is followed by its copy
            k = p + sum(q < p for q in pos)
            assert out[k] == out[k + 1] == tokens[p]
    if cap == 0:
        assert counts == {0}  # short sequences stay unchanged
    else:  # n_dup uniform in [0, min(10, int(rL)) - 1]: every value occurs, none beyond
        assert counts == set(range(min(10, cap)))


def test_word_repetition_tensor_list_and_batch_agree():
    tokens = torch.arange(100, 140)
    a, pa = word_repetition(tokens, 0.32, generator=_gen(3), return_positions=True)
    b, pb = word_repetition(tokens.tolist(), 0.32, generator=_gen(3), return_positions=True)
    assert isinstance(a, torch.Tensor) and a.tolist() == b and pa == pb
    ids = torch.zeros(3, 30, dtype=torch.long)
    lens = [30, 12, 20]
    for i, n in enumerate(lens):
        ids[i, :n] = torch.arange(1, n + 1) + 100 * i
    mask = (torch.arange(30)[None] < torch.tensor(lens)[:, None]).long()
    out = word_repetition_batch(ids, mask, 0.32, generator=_gen(5), pad_token_id=-1)
    g = _gen(5)
    for i, n in enumerate(lens):
        want = word_repetition(ids[i, :n], 0.32, generator=g)
        m = int(out.lengths[i])
        assert torch.equal(out.input_ids[i, :m], want)
        assert bool((out.input_ids[i, m:] == -1).all())
        assert int(out.attention_mask[i].sum()) == m and bool(out.attention_mask[i, :m].all())
    with pytest.raises(ValueError, match="dup_rate"):
        word_repetition([1, 2, 3], 1.5)
    with pytest.raises(ValueError, match="right-padded"):
        word_repetition_batch(ids, 1 - mask)
    with pytest.raises(ValueError, match="2-D"):
        word_repetition_batch(torch.arange(5))


# ----------------------------------------------------------------------------------- multi-crop


def test_multi_crop_order_shapes_and_boxes():
    g = _gen(0)
    imgs = torch.rand(3, 3, 40, 32, generator=g, dtype=torch.float64)
    res = multi_crop(imgs, sizes=(24, 12), generator=_gen(1))
    assert [tuple(c.shape) for c in res.crops] == [(3, 3, 24, 24)] * 2 + [(3, 3, 12, 12)] * 6
    assert res.boxes.shape == (8, 3, 5)
    for k, crop in enumerate(res.crops):
        size = 24 if k < 2 else 12
        lo, hi = ((0.14, 1.0), (0.05, 0.14))[0 if k < 2 else 1]
        for b in range(3):
            i, j, h, w, flip = res.boxes[k, b].tolist()
            assert 0 <= i and i + h <= 40 and 0 <= j and j + w <= 32
            frac = h * w / (40 * 32)
            # rounding of h and w moves the area by at most (h + w + 1) pixels
            slack = (h + w + 1) / (40 * 32)
            assert lo - slack <= frac <= hi + slack, (k, frac)
            want = F.interpolate(
                imgs[b : b + 1, :, i : i + h, j : j + w],
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            if flip:
                want = want.flip(-1)
            torch.testing.assert_close(crop[b : b + 1], want)
    again = multi_crop(imgs, sizes=(24, 12), generator=_gen(1))
    assert torch.equal(again.boxes, res.boxes)


def test_multi_crop_identity_flip_rate_transform_and_bad_input():
    imgs = torch.rand(2, 1, 16, 16, generator=_gen(0))
    res = multi_crop(
        imgs, n_crops=(2,), sizes=(16,), scales=((1.0, 1.0),), ratio=(1.0, 1.0), flip_p=0.0
    )
    assert all(torch.equal(c, imgs) for c in res.crops)
    res = multi_crop(imgs, n_crops=(200,), sizes=(4,), scales=((0.2, 0.5),), generator=_gen(2))
    rate = float(res.boxes[..., 4].float().mean())
    assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / 400)
    seen = []
    res = multi_crop(
        imgs, n_crops=(1, 2), sizes=(8, 4), transform=lambda x, g: seen.append(1) or -x
    )
    assert len(seen) == 3 and bool((res.crops[0] <= 0).all())
    with pytest.raises(ValueError, match="floating"):
        multi_crop(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        multi_crop(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="same non-zero length"):
        multi_crop(imgs, n_crops=(2, 6), sizes=(8,))
    with pytest.raises(ValueError, match="scales"):
        multi_crop(imgs, scales=((0.5, 0.2), (0.05, 0.14)))


# ---------------------------------------------------------------------------------------- graph


def _graph(n=30, e=200, seed=0):
    g = _gen(seed)
    a = (torch.rand(n, n, generator=g) < e / n**2).double() * torch.rand(n, n, generator=g).add(0.5)
    a.fill_diagonal_(0)
    return a


def test_drop_edges_three_representations_agree():
    dense = _graph()
    sparse = dense.to_sparse().coalesce()
    edge_index = sparse.indices()  # row-major, the order of the dense non-zeros
    p = 0.4
    ei, k1 = drop_edges(edge_index, p, generator=_gen(3), return_mask=True)
    sp, k2 = drop_edges(sparse, p, generator=_gen(3), return_mask=True)
    de, k3 = drop_edges(dense, p, generator=_gen(3), return_mask=True)
    assert torch.equal(k1, k2) and torch.equal(k2, k3)
    assert torch.equal(ei, edge_index[:, k1])
    assert torch.equal(sp.to_dense(), de)
    assert torch.equal(sp.indices(), ei)
    # kept entries unchanged, dropped ones zero; nothing new appears
    assert bool(((de == dense) | (de == 0)).all()) and int((de != 0).sum()) == int(k1.sum())
    scaled = drop_edges(sparse, p, generator=_gen(3), rescale=True)
    torch.testing.assert_close(scaled.to_dense(), de / (1 - p))


def test_drop_edges_and_feature_masking_rates():
    assert torch.equal(
        drop_edges(torch.tensor([[0, 1], [1, 2]]), 0.0), torch.tensor([[0, 1], [1, 2]])
    )
    assert drop_edges(torch.tensor([[0, 1], [1, 2]]), 1.0).shape == (2, 0)
    n_e = 20000
    ei = torch.randint(0, 100, (2, n_e), generator=_gen(0))
    kept = drop_edges(ei, 0.3, generator=_gen(1)).shape[1]
    assert abs(kept / n_e - 0.7) < 4 * math.sqrt(0.21 / n_e)
    x = torch.rand(50, 4000, generator=_gen(2)) + 0.1
    out, keep = mask_features(x, 0.25, generator=_gen(3), return_mask=True)
    zero_cols = (out == 0).all(0)
    assert torch.equal(zero_cols, ~keep)  # whole columns only
    assert torch.equal(out[:, keep], x[:, keep])
    assert abs(float(zero_cols.float().mean()) - 0.25) < 4 * math.sqrt(0.1875 / 4000)
    assert torch.equal(mask_features(x, 0.0), x)
    with pytest.raises(ValueError, match="probability"):
        drop_edges(ei, 1.5)
    with pytest.raises(ValueError, match="edge_index"):
        drop_edges(torch.zeros(3, 4, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="rescale"):
        drop_edges(ei, 0.1, rescale=True)
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        mask_features(torch.zeros(3), 0.1)


def test_normalize_bipartite_by_hand():
    a = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])
    du, di = a.sum(1), a.sum(0)
    want = torch.zeros_like(a)
    for u in range(2):
        for i in range(3):
            if a[u, i] != 0:
                want[u, i] = a[u, i] / math.sqrt(du[u] * di[i])
    torch.testing.assert_close(normalize_bipartite(a), want)
    torch.testing.assert_close(normalize_bipartite(a.to_sparse()).to_dense(), want)


def test_svd_view_lightgcl_oracles():
    g = _gen(0)
    n_u, n_i, r = 40, 30, 6  # a rank-6 interaction matrix
    a = ((torch.rand(n_u, r, generator=g) @ torch.rand(r, n_i, generator=g)) > 1.6).double()
    a[a.sum(1) == 0, 0] = 1.0
    a[0, a.sum(0) == 0] = 1.0
    a_hat = normalize_bipartite(a)
    rank = int(torch.linalg.matrix_rank(a_hat))
    errs = [
        float(
            torch.linalg.norm(
                svd_view(a.to_sparse(), q, niter=4, generator=_gen(1)).reconstruct() - a_hat
            )
        )
        for q in (1, 3, 6, 10, rank)
    ]
    assert all(x >= y - 1e-9 for x, y in zip(errs, errs[1:])), errs  # decreasing in q
    assert errs[-1] < 1e-8
    # q = rank: the SVD view propagates exactly like the main view without edge dropout
    view = svd_view(a, rank, niter=4, generator=_gen(1))
    e_u = torch.randn(n_u, 8, generator=g, dtype=torch.float64)
    e_i = torch.randn(n_i, 8, generator=g, dtype=torch.float64)
    g_u, g_i = view.propagate(e_u, e_i)
    torch.testing.assert_close(g_u, a_hat @ e_i)
    torch.testing.assert_close(g_i, a_hat.T @ e_u)
    same = svd_view(a, 3, generator=_gen(5))
    assert torch.equal(same.u, svd_view(a, 3, generator=_gen(5)).u)
    with pytest.raises(ValueError, match="exceeds"):
        svd_view(a, 31)
    with pytest.raises(ValueError, match="rows"):
        view.propagate(e_i, e_u)


# ---------------------------------------------------------------------------------- time series


def test_jitter_and_scaling():
    x = torch.randn(8, 3, 500, generator=_gen(0), dtype=torch.float64)
    assert torch.equal(jitter(x, 0.0), x)
    y = jitter(x, 0.2, generator=_gen(1))
    assert abs(float((y - x).std()) - 0.2) < 0.01 and abs(float((y - x).mean())) < 0.01
    assert torch.equal(y, jitter(x, 0.2, generator=_gen(1)))
    s = scaling(x, 0.1, generator=_gen(2))
    ratio = s / x
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))  # constant over time
    many = scaling(torch.ones(4000, 2, 3), 0.1, generator=_gen(3))[..., 0]
    assert abs(float(many.mean()) - 1.0) < 0.01 and abs(float(many.std()) - 0.1) < 0.01
    # (B, T, C) with time_dim=1 scales each channel over time
    st = scaling(x.transpose(1, 2), 0.1, time_dim=1, generator=_gen(2))
    torch.testing.assert_close(st.transpose(1, 2), s)


@pytest.mark.parametrize("seg_mode", ["random", "equal"])
def test_permute_segments(seg_mode):
    x = torch.randn(20, 2, 37, generator=_gen(0))
    out, order = permute_segments(x, 5, seg_mode=seg_mode, generator=_gen(1), return_order=True)
    assert torch.equal(out, torch.gather(x, 2, order[:, None, :].expand(-1, 2, -1)))
    for row in order:
        assert sorted(row.tolist()) == list(range(37))  # a permutation of the time steps
        breaks = int((row[1:] != row[:-1] + 1).sum())
        assert breaks <= 4  # at most 5 contiguous increasing runs
    assert bool((order != torch.arange(37)).any())  # something moved
    assert torch.equal(permute_segments(x, 1, generator=_gen(2)), x)
    bt = permute_segments(x.transpose(1, 2), 5, seg_mode=seg_mode, time_dim=1, generator=_gen(1))
    assert torch.equal(bt.transpose(1, 2), out)
    with pytest.raises(ValueError, match="max_segments"):
        permute_segments(x, 0)
    with pytest.raises(ValueError, match="time_dim"):
        permute_segments(x, 3, time_dim=0)


def test_time_mask():
    x = torch.randn(16, 3, 50, generator=_gen(0)) + 5.0
    out, mask = time_mask(x, 0.2, generator=_gen(1), return_mask=True)
    assert torch.equal(mask.sum(1), torch.full((16,), 10))
    for row in mask:  # one contiguous span
        idx = row.nonzero().squeeze(1)
        assert int(idx[-1] - idx[0]) == 9
    assert bool((out.transpose(1, 2)[mask] == 0).all())  # every channel of a masked step
    assert torch.equal(out.transpose(1, 2)[~mask], x.transpose(1, 2)[~mask])
    out2, mask2 = time_mask(x, 0.1, n_spans=3, value=-1.0, generator=_gen(2), return_mask=True)
    assert bool((mask2.sum(1) >= 5).all()) and bool((mask2.sum(1) <= 15).all())
    assert bool((out2.transpose(1, 2)[mask2] == -1).all())
    assert torch.equal(time_mask(x, 0.0), x)
    with pytest.raises(ValueError, match="ratio"):
        time_mask(x, 1.5)
    with pytest.raises(ValueError, match="floating"):
        jitter(torch.zeros(2, 3, dtype=torch.long))


def test_docs_examples_run():
    """The code blocks of docs/memory-and-views.md run as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "memory-and-views.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    for code in blocks:
        exec(compile(code, "docs/memory-and-views.md", "exec"), {})
