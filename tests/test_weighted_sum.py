"""Weighted sums of objectives (contrastkit.objective.combine) and their config syntax."""

from __future__ import annotations

import pytest
import torch

import contrastkit as ck
from contrastkit.objective import WeightedSum, parse_weighted_sum


def test_parse():
    assert parse_weighted_sum("InfoNCE") == [(1.0, "InfoNCE")]
    assert parse_weighted_sum(" Alignment + 0.5*Uniformity ") == [
        (1.0, "Alignment"),
        (0.5, "Uniformity"),
    ]
    assert parse_weighted_sum("2e-3 * FLOPS + InfoNCE") == [(2e-3, "FLOPS"), (1.0, "InfoNCE")]
    for bad in ("", "InfoNCE +", "import os", "0.1 * ", "a * b", "InfoNCE + InfoNCE", "-1 * X"):
        with pytest.raises(ValueError, match="objective expression"):
            parse_weighted_sum(bad)


def _l2(x):  # a one-input regulariser
    return x.pow(2).sum(1).mean()


class L2(torch.nn.Module):
    def forward(self, x):
        return _l2(x)


def test_sum_equals_the_terms_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    align, unif = ck.losses.Alignment(), ck.losses.Uniformity()
    total = WeightedSum([(1.0, align), (0.25, unif), (0.1, L2())])(a, b)
    want = align(a, b) + 0.25 * unif(a, b) + 0.1 * (_l2(a) + _l2(b))
    torch.testing.assert_close(total, want)
    ga = torch.autograd.grad(total, (a, b))
    gw = torch.autograd.grad(want, (a, b))
    for x, y in zip(ga, gw):
        torch.testing.assert_close(x, y)


def test_learnable_terms_are_submodules():
    s = WeightedSum([(1.0, ck.losses.CLIP()), (0.5, ck.losses.Uniformity())])
    assert len(list(s.parameters())) == len(list(ck.losses.CLIP().parameters())) >= 1
    assert "term0.scale" in "".join(s.state_dict())


def test_bad_terms():
    with pytest.raises(ValueError, match="at least one"):
        WeightedSum([])
    with pytest.raises(TypeError, match="terms\\[0\\]"):
        WeightedSum([(1.0, lambda a, b: a)])
    with pytest.raises(ValueError, match="finite"):
        WeightedSum([(float("nan"), L2())])


def test_config_sum_of_losses():
    pytest.importorskip("typer")
    from contrastkit.train import load_config
    from contrastkit.train.config import build_loss

    cfg = load_config(
        "simclr-digits",
        overrides=[
            "loss='Alignment + 0.5 * Uniformity'",
            "loss_params={Uniformity={potential=3.0}}",
        ],
    )
    loss = build_loss(cfg)
    assert isinstance(loss, WeightedSum) and loss.weights == [1.0, 0.5]
    assert loss.term1.potential == 3.0
    with pytest.raises(ValueError, match="loss_params.Uniformity"):
        load_config(
            "simclr-digits",
            overrides=["loss='Alignment + Uniformity'", "loss_params={Uniformity={tau=1.0}}"],
        )
    with pytest.raises(ValueError, match="under its name"):
        load_config(
            "simclr-digits",
            overrides=["loss='Alignment + Uniformity'", "loss_params={temperature=0.1}"],
        )
    with pytest.raises(ValueError, match="unknown loss 'Nope'"):
        load_config("simclr-digits", overrides=["loss='Alignment + Nope'"])
