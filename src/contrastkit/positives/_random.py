"""Seeded draws shared by the synthesis pieces."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def beta(a: float, b: float, shape, generator: Optional[torch.Generator], like: Tensor) -> Tensor:
    """``Beta(a, b)`` samples of ``shape`` from ``generator`` (``G_a / (G_a + G_b)``, gammas drawn
    in float64 on the CPU so a seeded generator reproduces the same values everywhere)."""
    shape = tuple(shape) if not isinstance(shape, int) else (shape,)
    ga = torch._standard_gamma(
        torch.full(shape, float(a), dtype=torch.float64), generator=generator
    )
    gb = torch._standard_gamma(
        torch.full(shape, float(b), dtype=torch.float64), generator=generator
    )
    return (ga / (ga + gb)).to(device=like.device, dtype=like.dtype)
