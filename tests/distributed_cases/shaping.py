"""Distributed cases of the shaping family's exact objective (whitened_cse, a sum of exact
InfoNCE passes): 2 ranks == 1 process on the global batch. The rank-local ones
(shuffled_group_whitening, simctg, simctg_contrastive) raise under a group, which the central
rank-local test checks."""

from __future__ import annotations

import torch

from contrastkit.losses.shaping import WhitenedCSE, whitened_cse


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _three_views(g, n, d):
    return [_rand(g, n, d), _rand(g, n, d), _rand(g, n, d)], [
        torch.tensor(0.1, dtype=torch.float64)
    ]


CASES = {
    "whitened_cse": (
        _three_views,
        lambda rows, shared: whitened_cse(*rows, temperature=shared[0]),
    ),
    "whitened_cse_tiled_sum": (
        _three_views,
        lambda rows, shared: whitened_cse(
            *rows, temperature=shared[0], reduction="sum", backend="tiled", chunk_size=3
        ),
    ),
    "whitened_cse_none": (
        _three_views,
        lambda rows, shared: WhitenedCSE(temperature=0.2, reduction="none")(*rows),
    ),
    "whitened_cse_two_views": (
        _three_views,
        lambda rows, shared: whitened_cse(rows[0], rows[1], temperature=shared[0]),
    ),
}
