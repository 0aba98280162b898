"""Parity with peer libraries that implement the same objectives (test-only dependencies).

Convention differences, stated where they matter:
* pytorch-metric-learning defines positives by labels over one embedding set, so SimCLR's two
  views are passed as cat(z1, z2) with labels arange(N).repeat(2); it averages over anchors with
  a positive (AvgNonZeroReducer), as our SupCon default does.
* lightly's NTXentLoss/DCLLoss/DCLWLoss normalise inside and average over the 2N anchors.
* open_clip's ClipLoss/SigLipLoss do not normalise and take the *scale* t = logit_scale.exp();
  we pass normalised features and the same t.
* sentence-transformers' MNRL uses cosine similarity times ``scale`` (20).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import contrastkit as ck

import peers

N, D = 12, 16


@pytest.fixture
def views():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)


def _close(a, b):
    torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-6)


def _grads(loss, xs):
    return torch.autograd.grad(loss, xs)


def _check_value_and_grad(ours_fn, peer_fn, xs):
    xs = [x.clone().requires_grad_() for x in xs]
    ours = ours_fn(*xs)
    go = _grads(ours, xs)
    ys = [x.detach().clone().requires_grad_() for x in xs]
    theirs = peer_fn(*ys)
    gt = _grads(theirs, ys)
    _close(ours, theirs)
    for a, b in zip(go, gt):
        _close(a, b)


def test_pml_ntxent(views):
    pml = peers.require("pml_losses")
    peer = pml.NTXentLoss(temperature=0.2)
    labels = torch.arange(N).repeat(2)
    _check_value_and_grad(
        lambda a, b: ck.nt_xent(a, b, temperature=0.2, backend="tiled", chunk_size=5),
        lambda a, b: peer(torch.cat([a, b]), labels),
        views,
    )


def test_pml_supcon():
    pml = peers.require("pml_losses")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, D, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5, 5, 5, 6, 7, 7, 8, 9])
    peer = pml.SupConLoss(temperature=0.1)
    _check_value_and_grad(
        lambda f: ck.supcon(f, labels, temperature=0.1, backend="tiled", chunk_size=7),
        lambda f: peer(f, labels),
        [x],
    )


@pytest.mark.parametrize("which", ["NTXentLoss", "DCLLoss", "DCLWLoss"])
def test_lightly(views, which):
    lightly = peers.require("lightly_losses")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if which == "NTXentLoss":
            peer, ours = lightly.NTXentLoss(temperature=0.3), ck.NTXent(temperature=0.3)
        elif which == "DCLLoss":
            peer, ours = lightly.DCLLoss(temperature=0.1), ck.DCL(temperature=0.1)
        else:
            peer, ours = (
                lightly.DCLWLoss(temperature=0.1, sigma=0.5),
                ck.DCLW(temperature=0.1, sigma=0.5),
            )
        ours.backend, ours.chunk_size = "tiled", 5
        _check_value_and_grad(ours, peer, views)


def test_open_clip_clip(views):
    oc = peers.require("open_clip_losses")
    peer = oc.ClipLoss()
    t = torch.tensor(1 / 0.07)
    _check_value_and_grad(
        lambda a, b: ck.clip_loss(a, b, scale=t, backend="tiled", chunk_size=5),
        lambda a, b: peer(F.normalize(a, dim=-1), F.normalize(b, dim=-1), t),
        views,
    )


def test_open_clip_clip_logit_scale_gradient(views):
    oc = peers.require("open_clip_losses")
    a, b = views
    ours = ck.CLIPLoss(chunk_size=5, backend="tiled")
    ours(a, b).backward()
    ls = torch.tensor(ours.logit_scale.item(), requires_grad=True)
    oc.ClipLoss()(F.normalize(a, dim=-1), F.normalize(b, dim=-1), ls.exp()).backward()
    _close(ours.logit_scale.grad, ls.grad)


def test_open_clip_siglip(views):
    oc = peers.require("open_clip_losses")
    peer = oc.SigLipLoss()
    t, bias = torch.tensor(10.0), torch.tensor(-10.0)
    _check_value_and_grad(
        lambda a, b: ck.siglip_loss(a, b, scale=t, bias=bias, backend="tiled", chunk_size=5),
        lambda a, b: peer(F.normalize(a, dim=-1), F.normalize(b, dim=-1), t, bias),
        views,
    )


def test_sentence_transformers_mnrl(views):
    st = peers.require("st_mnrl")
    a, p = views
    g = torch.Generator().manual_seed(2)
    n1, n2 = torch.randn(2, N, D, generator=g)
    _check_value_and_grad(
        lambda *xs: ck.multiple_negatives_ranking(*xs, scale=20.0, backend="tiled", chunk_size=5),
        lambda *xs: st.loss(*xs, scale=20.0),
        [a, p, n1, n2],
    )
