"""Distributed cases of the compositional family (neg_clip, image_grounded_contrast,
text_grounded_contrast, count_clip; all exact): 2 ranks == 1 process on the global batch.

NegCLIP: every rank's captions and negatives are columns of every image (the gather order of
the ranks' [captions; negatives] blocks cannot shift a label: positives are row dot products).
The grounded contrasts are per-sample means; CountCLIP's counting mean is over the global
number of counting rows (unequal per rank here)."""

from __future__ import annotations

import torch

from contrastkit.losses.compositional import (
    CountCLIP,
    ImageGroundedContrast,
    NegCLIP,
    TextGroundedContrast,
    count_clip,
    image_grounded_contrast,
    neg_clip,
    text_grounded_contrast,
)

K = 3  # generated negatives per sample


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _log_scale():
    return torch.tensor(1.5, dtype=torch.float64)  # t' (open_clip's logit_scale); scale = e^t'


def _negatives(g, n, d):
    return [_rand(g, n, d), _rand(g, n, d), _rand(g, n, K, d)], [_log_scale()]


def _flat(g, n, d):
    return [_rand(g, n, d), _rand(g, n, d), _rand(g, n, d)], [_log_scale()]


def _per_row_temperature(g, n, d):
    rows, _ = _negatives(g, n, d)
    return rows + [0.1 + torch.rand(n, generator=g, dtype=torch.float64)], []


def _counting(g, n, d):
    counting = torch.arange(n) % 4 == 0  # 2 rows on rank 0, 1 on rank 1 (n = 10)
    return [_rand(g, n, d), _rand(g, n, d), _rand(g, n, d), counting], [_log_scale()]


CASES = {
    "neg_clip": (_negatives, lambda rows, shared: neg_clip(*rows, scale=shared[0].exp())),
    "neg_clip_tiled_sum_flat": (
        _flat,
        lambda rows, shared: neg_clip(
            *rows, scale=shared[0].exp(), reduction="sum", backend="tiled", chunk_size=3
        ),
    ),
    "neg_clip_none_module": (
        _negatives,
        lambda rows, shared: NegCLIP(
            init_temperature=0.1, reduction="none", backend="tiled", chunk_size=2
        )(*rows),
    ),
    "image_grounded_contrast": (
        _negatives,
        lambda rows, shared: image_grounded_contrast(*rows, scale=shared[0].exp()),
    ),
    "image_grounded_contrast_per_row_temperature_sum": (
        _per_row_temperature,
        lambda rows, shared: image_grounded_contrast(
            *rows[:3], temperature=rows[3], reduction="sum"
        ),
    ),
    "image_grounded_contrast_none_module": (
        _negatives,
        lambda rows, shared: ImageGroundedContrast(reduction="none")(*rows),
    ),
    "text_grounded_contrast": (
        _negatives,
        lambda rows, shared: text_grounded_contrast(*rows),
    ),
    "text_grounded_contrast_none_module": (
        _negatives,
        lambda rows, shared: TextGroundedContrast(temperature=0.3, reduction="none")(*rows),
    ),
    "count_clip": (
        _counting,
        lambda rows, shared: count_clip(*rows, scale=shared[0].exp(), count_weight=0.5),
    ),
    "count_clip_tiled_sum": (
        _counting,
        lambda rows, shared: count_clip(
            *rows, scale=shared[0].exp(), reduction="sum", backend="tiled", chunk_size=2
        ),
    ),
    "count_clip_none_module": (
        _counting,
        lambda rows, shared: CountCLIP(reduction="none", backend="tiled", chunk_size=3)(*rows),
    ),
}
