"""Temperature schedules (contrastkit.schedules): values against their formulas written out,
the oracles (constant = fixed temperature, the periodic cosine's extremes, per-anchor
temperatures all equal = a scalar), and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit as ck
from contrastkit.schedules import (
    ConstantSchedule,
    CosineSchedule,
    CyclicCosineSchedule,
    LinearSchedule,
    StepSchedule,
)


def test_constant_schedule_is_a_fixed_temperature():
    s = ConstantSchedule(0.07)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for step in (0, 1, 10_000, 2.5):
        assert s(step) == 0.07
        torch.testing.assert_close(
            ck.info_nce(q, k, temperature=s(step)), ck.info_nce(q, k, temperature=0.07)
        )


def test_linear_and_cosine_ramps():
    lin = LinearSchedule(1.0, 0.1, 10)
    assert [lin(t) for t in (0, 5, 10, 50)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    cos = CosineSchedule(1.0, 0.1, 10)
    for t in (0, 2.5, 5, 7.5, 10, 20):
        x = min(t / 10, 1.0)
        assert cos(t) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * x)))
    assert cos(0) == pytest.approx(1.0) and cos(10) == pytest.approx(0.1)
    assert cos(5) == pytest.approx(0.55)


def test_cyclic_cosine_extremes_and_formula():
    s = CyclicCosineSchedule(minimum=0.1, maximum=1.0, period=400)
    for t in (0, 400, 800):
        assert s(t) == pytest.approx(1.0)
    for t in (200, 600):
        assert s(t) == pytest.approx(0.1)
    for t in (37, 123.5, 399):
        want = 0.9 * (1 + math.cos(2 * math.pi * t / 400)) / 2 + 0.1
        assert s(t) == pytest.approx(want)
    assert 0.1 <= min(s(t) for t in range(0, 800, 7)) and max(s(t) for t in range(800)) <= 1.0


def test_step_schedule_and_floor():
    s = StepSchedule([0.5, 0.2, 0.07], [10, 20])
    assert [s(t) for t in (0, 9.9, 10, 19, 20, 1e6)] == [0.5, 0.5, 0.2, 0.2, 0.07, 0.07]
    assert LinearSchedule(0.1, -0.1, 10, floor=1e-4)(10) == 1e-4
    assert "LinearSchedule" in repr(LinearSchedule(0.1, 0.2, 3))


def test_per_anchor_temperatures_all_equal_are_the_scalar():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    tau = CyclicCosineSchedule(0.1, 1.0, 400)(100)
    torch.testing.assert_close(
        ck.info_nce(q, k, temperature=torch.full((7,), tau)), ck.info_nce(q, k, temperature=tau)
    )


def test_bad_input_names_the_argument():
    for make, name in [
        (lambda: LinearSchedule(1.0, 0.1, 0), "steps"),
        (lambda: CosineSchedule(1.0, float("nan"), 10), "end"),
        (lambda: CyclicCosineSchedule(1.0, 0.1, 400), "maximum"),
        (lambda: CyclicCosineSchedule(0.1, 1.0, -1), "period"),
        (lambda: StepSchedule([0.1], [5]), "values"),
        (lambda: StepSchedule([0.1, 0.2, 0.3], [5, 5]), "boundaries"),
        (lambda: ConstantSchedule("0.1"), "v"),
        (lambda: ConstantSchedule(0.1, floor=float("inf")), "floor"),
        (lambda: ConstantSchedule(0.1)(-1), "step"),
        (lambda: ConstantSchedule(0.1)(True), "step"),
    ]:
        with pytest.raises(ValueError, match=name):
            make()
