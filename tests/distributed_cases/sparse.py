"""Distributed cases of the sparse family (flops, idf_flops; exact: the column means are over
every rank's rows): 2 ranks == 1 process on the global batch."""

from __future__ import annotations

import torch

from contrastkit.losses.sparse import FLOPS, IDFFLOPS, flops, idf_flops


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _reps(g, n, d):
    """Non-negative term weights with exact zeros, one row with a single active term."""
    w = torch.relu(_rand(g, n, d))
    w[1] = 0.0
    w[1, 3] = 2.0
    return [w], []


def _signed(g, n, d):
    return [_rand(g, n, d)], []


def _idf(d):
    g = torch.Generator().manual_seed(11)  # the same vector on every rank
    return 0.5 + 4 * torch.rand(d, generator=g, dtype=torch.float64)


CASES = {
    "flops": (_reps, lambda rows, shared: flops(*rows)),
    "flops_signed": (_signed, lambda rows, shared: flops(*rows)),
    "flops_threshold_module": (_reps, lambda rows, shared: FLOPS(threshold=1)(*rows)),
    "idf_flops": (
        _reps,
        lambda rows, shared: idf_flops(rows[0], _idf(rows[0].shape[1]), threshold=2),
    ),
    "idf_flops_module": (
        _signed,
        lambda rows, shared: IDFFLOPS()(rows[0], _idf(rows[0].shape[1])),
    ),
}
