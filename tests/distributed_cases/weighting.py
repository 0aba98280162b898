"""Distributed cases of the weighting family's exact objectives (see ``__init__``).

Debiased InfoNCE and HCL have theirs in tests/test_distributed.py ("debiased", "hcl")."""

from __future__ import annotations

import torch

import contrastkit as ck

D_TILED = {"backend": "tiled", "chunk_size": 3}


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _focal_inputs(g, n, d):
    rows = [_rand(g, n, d), _rand(g, n, d), _rand(g, n, 2, d)]
    return rows, [torch.tensor(0.3, dtype=torch.float64)]


CASES = {
    # queries against every rank's positives and hard negatives, learnable temperature
    "focal_info_nce": (
        _focal_inputs,
        lambda rows, shared: ck.focal_info_nce(
            rows[0], rows[1], rows[2], temperature=shared[0], gamma=2.0, **D_TILED
        ),
    ),
    "focal_info_nce_none": (
        _focal_inputs,
        lambda rows, shared: ck.focal_info_nce(
            rows[0], rows[1], temperature=shared[0], gamma=1.0, reduction="none"
        ),
    ),
    "focal_info_nce_sum_detached": (
        _focal_inputs,
        lambda rows, shared: ck.FocalInfoNCE(
            temperature=shared[0], gamma=0.5, detach_weight=True, reduction="sum"
        )(rows[0], rows[1], rows[2]),
    ),
}
