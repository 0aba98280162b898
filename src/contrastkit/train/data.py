"""Data that ships with the dependencies: scikit-learn's 8x8 digits, views and a second form.

Augmentations for 8x8 digits (SimCLR-style, scaled down): a random affine map (rotation up to
15 degrees, scale 0.9-1.1, shift up to 1 pixel) sampled bilinearly, a random 2x2 erasure with
probability 0.5, random intensity scaling in [0.7, 1.3] and Gaussian noise (sigma 0.05). All
randomness comes from the given ``torch.Generator``, so a resumed run sees the same views.

:func:`projections` gives the same digit in another form for the two-modality recipe: its
parallel-beam projections (line sums) at 0, 45, 90 and 135 degrees, i.e. a 4-angle Radon
sinogram of the image (8 + 15 + 8 + 15 = 46 values). It is computed from the image itself, so
pairs are honest: an image and its own sinogram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit._extras import require

PROFILE_DIM = 46


@dataclass
class Split:
    x_train: Tensor  # (n, 64) in [0, 1]
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits_split(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's digits (1,797 images), stratified fixed split."""
    require("sklearn", "train", "the digits recipes")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_fraction, random_state=seed % 2**32, stratify=y
    )
    return Split(x[idx_train], y[idx_train], x[idx_test], y[idx_test])


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """One random view of each flattened 8x8 image in ``x`` (n, 64)."""
    n = x.shape[0]
    img = x.view(n, 1, 8, 8)

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    angle = u(-15.0, 15.0, n) * math.pi / 180
    scale = u(0.9, 1.1, n)
    shift = u(-1.0, 1.0, n, 2) * (2.0 / 8.0)  # one pixel in normalised coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, (n, 1, 8, 8), align_corners=False)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    erase = torch.rand(n, generator=gen) < 0.5
    r0 = torch.randint(0, 7, (n,), generator=gen)
    c0 = torch.randint(0, 7, (n,), generator=gen)
    pix = torch.arange(8)
    in_rows = (pix[None, :, None] >= r0[:, None, None]) & (
        pix[None, :, None] <= r0[:, None, None] + 1
    )
    in_cols = (pix[None, None, :] >= c0[:, None, None]) & (
        pix[None, None, :] <= c0[:, None, None] + 1
    )
    mask = (in_rows & in_cols & erase[:, None, None])[:, None]
    out = out.masked_fill(mask, 0.0)
    out = out * u(0.7, 1.3, n, 1, 1, 1) + 0.05 * torch.randn(out.shape, generator=gen)
    return out.reshape(n, 64)


def projections(x: Tensor) -> Tensor:
    """Line sums of flattened 8x8 images ``(n, 64)`` at 0, 45, 90 and 135 degrees -> ``(n, 46)``,
    divided by 8 (the longest line) so values stay in about [0, 1]."""
    if x.dim() != 2 or x.shape[1] != 64:
        raise ValueError(f"x must be (n, 64) flattened 8x8 images, got {tuple(x.shape)}")
    img = x.view(-1, 8, 8)
    rows, cols = img.sum(2), img.sum(1)
    diag = torch.stack([torch.diagonal(img, off, 1, 2).sum(-1) for off in range(-7, 8)], 1)
    flipped = img.flip(2)
    anti = torch.stack([torch.diagonal(flipped, off, 1, 2).sum(-1) for off in range(-7, 8)], 1)
    return torch.cat([rows, diag, cols, anti], 1) / 8.0
