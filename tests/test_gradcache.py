"""GradCache: parameter gradients equal those of one step that keeps every activation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from contrastkit.gradcache import GradCache, cached_embed, grad_cache_step, split_batch
from contrastkit.losses.infonce.clip import CLIPLoss
from contrastkit.losses.infonce.info_nce import InfoNCE

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: one thread is faster and does not spin-wait on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mlp(seed: int, p_drop: float = 0.0, d_in: int = 12, d_out: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d_in, 24), nn.Dropout(p_drop), nn.GELU(), nn.Linear(24, d_out)
    ).to(F64)


class TokenEncoder(nn.Module):
    """A tokenizer-style encoder: ``forward(input_ids, attention_mask)``, masked mean pooling."""

    def __init__(self, seed: int, vocab: int = 50, d: int = 8, p_drop: float = 0.0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, 16, dtype=F64)
        self.drop = nn.Dropout(p_drop)
        self.proj = nn.Linear(16, d, dtype=F64)

    def forward(self, input_ids, attention_mask):
        h = self.drop(self.emb(input_ids)) * attention_mask[..., None]
        return self.proj(h.sum(1) / attention_mask.sum(1, keepdim=True))


def tokens(n: int, length: int = 7, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (n, length), generator=g)
    mask = (torch.rand(n, length, generator=g) > 0.3).to(F64)
    mask[:, 0] = 1
    return {"input_ids": ids, "attention_mask": mask}


def grads(*modules) -> list[torch.Tensor]:
    return [p.grad.clone() for m in modules for p in m.parameters()]


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


def chunked_reference(encoder, batch, chunk):
    """Embed chunk by chunk *with* gradients (same RNG consumption as GradCache's first pass)."""
    return torch.cat([encoder(c) for c in batch.split(chunk)])


# ---------------------------------------------------------------------------
# exactness
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 5, 7, 32])
def test_info_nce_shared_encoder_equals_full_batch(chunk):
    enc = mlp(0)
    ref_enc = copy.deepcopy(enc)
    x, y = torch.randn(19, 12, dtype=F64), torch.randn(19, 12, dtype=F64)
    loss_fn = InfoNCE(temperature=0.1)

    got = GradCache(enc, loss_fn, chunk).step(x, y)
    want = loss_fn(ref_enc(x), ref_enc(y))  # one full-batch step
    want.backward()

    torch.testing.assert_close(got, want.detach(), **TOL)
    assert not got.requires_grad
    assert_same(grads(enc), grads(ref_enc))


def test_clip_two_towers_learnable_scale_equals_full_batch():
    q_enc, d_enc, clip = mlp(1), mlp(2), CLIPLoss(init_temperature=0.05).to(F64)
    q_ref, d_ref, clip_ref = map(copy.deepcopy, (q_enc, d_enc, clip))
    x, y = torch.randn(23, 12, dtype=F64), torch.randn(23, 12, dtype=F64)

    got = GradCache([q_enc, d_enc], clip, chunk_size=(4, 6)).step(x, y)
    want = clip_ref(q_ref(x), d_ref(y))
    want.backward()

    torch.testing.assert_close(got, want.detach(), **TOL)
    assert_same(grads(q_enc, d_enc, clip), grads(q_ref, d_ref, clip_ref))
    assert clip.logit_scale.grad is not None and clip.logit_scale.grad.abs() > 0


@pytest.mark.parametrize("objective", ["info_nce", "clip"])
def test_dropout_with_saved_rng_equals_full_step(objective):
    """Dropout on: the replay restores each chunk's RNG state, so the masks match the first
    pass; the reference keeps every chunk's activations (same RNG consumption) and backprops."""
    p = 0.4
    q_enc, d_enc = mlp(3, p), mlp(4, p)
    loss = InfoNCE(temperature=0.2) if objective == "info_nce" else CLIPLoss().to(F64)
    q_ref, d_ref, loss_ref = map(copy.deepcopy, (q_enc, d_enc, loss))
    x, y = torch.randn(17, 12, dtype=F64), torch.randn(17, 12, dtype=F64)

    torch.manual_seed(123)
    got = GradCache([q_enc, d_enc], loss, 5).step(x, y)
    after_gc = torch.rand(3)
    torch.manual_seed(123)
    want = loss_ref(chunked_reference(q_ref, x, 5), chunked_reference(d_ref, y, 5))
    want.backward()
    after_ref = torch.rand(3)

    torch.testing.assert_close(got, want.detach(), **TOL)
    assert_same(grads(q_enc, d_enc, loss), grads(q_ref, d_ref, loss_ref))
    # the replay leaves the global RNG where the first pass left it
    torch.testing.assert_close(after_gc, after_ref)


def test_dropout_without_saved_rng_gives_other_gradients():
    """The control for the test above: without restoring the RNG the replay draws new masks."""
    enc = mlp(5, p_drop=0.4)
    ref = copy.deepcopy(enc)
    x, y = torch.randn(16, 12, dtype=F64), torch.randn(16, 12, dtype=F64)
    loss = InfoNCE(temperature=0.2)
    torch.manual_seed(7)
    GradCache(enc, loss, 4, save_rng=False).step(x, y)
    torch.manual_seed(7)
    loss(chunked_reference(ref, x, 4), chunked_reference(ref, y, 4)).backward()
    diff = max((a - b).abs().max().item() for a, b in zip(grads(enc), grads(ref)))
    assert diff > 1e-3


def test_dict_batches_hard_negatives_and_dropout():
    """Tokenizer-style dict inputs, three batches (query, positive, hard negative) through one
    shared encoder, MoCo-style shared negatives in InfoNCE, dropout on."""
    enc = TokenEncoder(0, p_drop=0.3)
    ref = copy.deepcopy(enc)
    q, k, n = tokens(13, seed=1), tokens(13, seed=2), tokens(9, seed=3)
    loss = InfoNCE(temperature=0.1)

    torch.manual_seed(9)
    got = GradCache(enc, loss, 4).step(q, k, n)
    torch.manual_seed(9)
    embs = [
        torch.cat([ref(**c) for c in split_batch(b, 4)]) for b in (q, k, n)
    ]  # same chunks, with activations kept
    want = loss(*embs)
    want.backward()

    torch.testing.assert_close(got, want.detach(), **TOL)
    assert_same(grads(enc), grads(ref))


def test_functional_twin_and_loss_kwargs():
    enc_a, enc_b = mlp(6), mlp(6)
    x, y = torch.randn(10, 12, dtype=F64), torch.randn(10, 12, dtype=F64)
    a = GradCache(enc_a, InfoNCE(), 3).step(x, y, temperature=0.3)
    b = grad_cache_step(enc_b, InfoNCE(), x, y, chunk_size=3, loss_kwargs={"temperature": 0.3})
    torch.testing.assert_close(a, b, **TOL)
    assert_same(grads(enc_a), grads(enc_b))
    ref = mlp(6)
    InfoNCE(temperature=0.3)(ref(x), ref(y)).backward()
    assert_same(grads(enc_a), grads(ref))


def test_upstream_gradient_scales_the_replay():
    """cached_embed inside a hand-written step: gradient accumulation's 1/steps factor and a
    second loss term reach the encoder as they would through a plain forward."""
    enc, ref = mlp(8), mlp(8)
    x, y = torch.randn(12, 12, dtype=F64), torch.randn(12, 12, dtype=F64)
    loss = InfoNCE(temperature=0.1)

    zx, zy = cached_embed(enc, x, 5), cached_embed(enc, y, 5)
    (0.25 * loss(zx, zy) + zx.pow(2).mean()).backward()
    rx, ry = ref(x), ref(y)
    (0.25 * loss(rx, ry) + rx.pow(2).mean()).backward()
    assert_same(grads(enc), grads(ref))


def test_encoder_sees_at_most_one_chunk_and_runs_twice():
    calls = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(12, 8, dtype=F64)

        def forward(self, x):
            calls.append((x.shape[0], torch.is_grad_enabled()))
            return self.lin(x)

    x = torch.randn(22, 12, dtype=F64)
    GradCache(Spy(), InfoNCE(), 8).step(x, x.flip(0))
    rows = [r for r, _ in calls]
    assert max(rows) <= 8
    # two batches x three chunks, each once without and once with gradients
    assert sorted(rows) == sorted([8, 8, 6] * 4)
    assert [g for _, g in calls] == [False] * 6 + [True] * 6


def test_no_grad_is_a_plain_chunked_forward():
    enc = mlp(9)
    x = torch.randn(11, 12, dtype=F64)
    with torch.no_grad():
        z = cached_embed(enc, x, 4)
    assert not z.requires_grad
    torch.testing.assert_close(z, enc(x).detach(), **TOL)


def test_get_rep_fn_and_frozen_encoder():
    enc = mlp(10)
    for p in enc[0].parameters():
        p.requires_grad_(False)
    ref = copy.deepcopy(enc)
    x, y = torch.randn(9, 12, dtype=F64), torch.randn(9, 12, dtype=F64)

    def wrapped(t):
        return {"sentence_embedding": enc(t)}

    GradCache(wrapped, InfoNCE(), 4, get_rep_fn=lambda o: o["sentence_embedding"]).step(x, y)
    InfoNCE()(ref(x), ref(y)).backward()
    assert enc[0].weight.grad is None
    assert_same([p.grad for p in enc[3].parameters()], [p.grad for p in ref[3].parameters()])


def test_backward_runs_once():
    enc = mlp(11)
    z = cached_embed(enc, torch.randn(6, 12, dtype=F64), 4)
    loss = z.sum() * 2
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already backpropagated"):
        loss.backward()


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_bad_input():
    enc = mlp(12)
    x = torch.randn(6, 12, dtype=F64)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        GradCache(enc, InfoNCE(), 0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        cached_embed(enc, x, 2.5)
    with pytest.raises(ValueError, match="one per batch: got 3 encoders for 2 batches"):
        GradCache([enc, enc, enc], InfoNCE(), 2).step(x, x)
    with pytest.raises(ValueError, match="one integer or one per batch"):
        GradCache(enc, InfoNCE(), (2, 3, 4)).step(x, x)
    with pytest.raises(ValueError, match="same number of rows"):
        split_batch({"input_ids": torch.zeros(4, 3), "attention_mask": torch.zeros(5, 3)}, 2)
    with pytest.raises(ValueError, match="must be a tensor, a dict of tensors"):
        cached_embed(enc, "text", 2)
    with pytest.raises(ValueError, match="returned dict, not a tensor.*get_rep_fn"):
        cached_embed(lambda t: {"e": enc(t)}, x, 2)
    with pytest.raises(ValueError, match="one embedding per row: chunk of 2 rows gave shape"):
        cached_embed(lambda t: enc(t).sum(0), x, 2)
    with pytest.raises(ValueError, match="scalar tensor"):
        GradCache(enc, InfoNCE(reduction="none"), 2).step(x, x)
    with pytest.raises(ValueError, match="loss_fn must be callable"):
        GradCache(enc, "infonce", 2)
