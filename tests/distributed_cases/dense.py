"""Distributed cases of the dense family (pixpro, pixel_contrast, temporal_contrast, comet;
all exact): 2 ranks == 1 process on the global batch. Crop boxes are integer rows (no gradient);
feature maps and frame sequences are sharded by image / video."""

from __future__ import annotations

import torch

from contrastkit.losses.dense import (
    COMET,
    PixelContrast,
    PixPro,
    TemporalContrast,
    comet,
    pixel_contrast,
    pixpro,
    temporal_contrast,
)


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _boxes(g, n):
    """Integer crops (x0, y0, x1, y1) inside a 12 x 12 image; every third one flipped."""
    x0 = torch.randint(0, 5, (n,), generator=g)
    y0 = torch.randint(0, 5, (n,), generator=g)
    w = torch.randint(4, 8, (n,), generator=g)
    h = torch.randint(4, 8, (n,), generator=g)
    b = torch.stack([x0, y0, x0 + w, y0 + h], 1)
    flip = torch.arange(n) % 3 == 2
    b[flip] = b[flip][:, [2, 1, 0, 3]]
    return b


def _pixpro(g, n, d):
    rows = [_rand(g, n, d, 2, 3), _rand(g, n, d, 3, 2), _rand(g, n, d, 2, 3)]
    return rows + [_rand(g, n, d, 3, 2), _boxes(g, n), _boxes(g, n)], []


def _pixels(g, n, d):
    rows = [_rand(g, n, d, 2, 2), _rand(g, n, d, 2, 3), _boxes(g, n), _boxes(g, n)]
    return rows, [torch.tensor(0.4, dtype=torch.float64)]


def _frames(g, n, d):
    return [_rand(g, n, 3, d), _rand(g, n, 3, d)], [torch.tensor(0.3, dtype=torch.float64)]


def _series(g, n, d):
    """Two views (n, 5, d) and patient / trial ids that pair samples across the two ranks."""
    ids = torch.arange(n) % 3
    return [_rand(g, n, 5, d), _rand(g, n, 5, d), ids, torch.arange(n) % 4], []


CASES = {
    "pixpro": (_pixpro, lambda rows, shared: pixpro(*rows)),
    "pixpro_sum_no_propagation": (
        _pixpro,
        lambda rows, shared: pixpro(*rows, propagate=False, pos_ratio=1.0, reduction="sum"),
    ),
    "pixpro_none_module": (_pixpro, lambda rows, shared: PixPro(reduction="none")(*rows)),
    # every rank's key pixels are candidates; positives stay on their image's rank
    "pixel_contrast": (
        _pixels,
        lambda rows, shared: pixel_contrast(*rows, temperature=shared[0]),
    ),
    "pixel_contrast_view_mean_tiled": (
        _pixels,
        lambda rows, shared: pixel_contrast(
            *rows,
            negatives="view",
            multi_positive="mean",
            pos_ratio=1.2,
            backend="tiled",
            chunk_size=3,
        ),
    ),
    "pixel_contrast_none_module": (
        _pixels,
        lambda rows, shared: PixelContrast(reduction="none", temperature=0.2)(*rows),
    ),
    "temporal_contrast": (
        _frames,
        lambda rows, shared: temporal_contrast(*rows, temperature=shared[0]),
    ),
    "temporal_contrast_band_same_video_tiled": (
        _frames,
        lambda rows, shared: temporal_contrast(
            *rows,
            positive_window=0,
            negative_gap=2,
            other_videos=False,
            multi_positive="mean",
            reduction="sum",
            backend="tiled",
            chunk_size=4,
        ),
    ),
    "temporal_contrast_window_none_module": (  # per video: the (2, N, T) terms summed
        _frames,
        lambda rows, shared: TemporalContrast(positive_window=1, negative_gap=2, reduction="none")(
            *rows
        ).sum((0, 2)),
    ),
    # the other ranks' samples are gathered: sample level per timestamp, id levels per pair
    "comet": (_series, lambda rows, shared: comet(*rows)),
    "comet_flat_weighted": (
        _series,
        lambda rows, shared: comet(
            *rows, weights=(0.1, 0.2, 0.3, 0.4), hierarchical=False, temperature=0.5
        ),
    ),
    "comet_none_module": (_series, lambda rows, shared: COMET(reduction="none")(*rows)),
}
