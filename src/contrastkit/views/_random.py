"""Random draws from an optional seeded ``torch.Generator`` (``None``: torch's global RNG).

Numbers are drawn on the generator's device (CPU for ``torch.Generator()``) and moved to the
data's device, so a CPU generator gives the same views on every device.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor


def check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator)}")


def _dev(generator: Optional[torch.Generator]):
    return generator.device if generator is not None else torch.device("cpu")


def rand(shape, generator, device, dtype=torch.float32) -> Tensor:
    return torch.rand(shape, generator=generator, device=_dev(generator), dtype=dtype).to(device)


def randn(shape, generator, device, dtype=torch.float32) -> Tensor:
    return torch.randn(shape, generator=generator, device=_dev(generator), dtype=dtype).to(device)


def randint(low: int, high: int, shape, generator, device=None) -> Tensor:
    out = torch.randint(low, high, shape, generator=generator, device=_dev(generator))
    return out if device is None else out.to(device)


def randperm(n: int, generator, device=None) -> Tensor:
    out = torch.randperm(n, generator=generator, device=_dev(generator))
    return out if device is None else out.to(device)


@contextlib.contextmanager
def seeded_global_rng(generator: Optional[torch.Generator], devices=()):
    """Run a block whose randomness comes from torch's global RNG (dropout, ``svd_lowrank``)
    under a seed drawn from ``generator``; the global RNG state is restored afterwards."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_dev(generator)))
    with torch.random.fork_rng(devices=list(devices)):
        torch.manual_seed(seed)
        yield
