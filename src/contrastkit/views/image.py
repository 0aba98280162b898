"""Multi-crop views of image tensors (SwAV: Caron et al., "Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments", NeurIPS 2020, arXiv:2006.09882), pure torch.

Crops are random resized crops (area fraction uniform in ``scale``, log aspect ratio uniform in
``log ratio``, 10 attempts, then a central crop: the rule of torchvision's
``RandomResizedCrop``), resized with bilinear antialiased interpolation, flipped horizontally
with probability ``flip_p``. Photometric augmentation (colour jitter, grayscale, blur) is left to
an optional per-crop ``transform``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._random import check_generator, rand, randint

__all__ = ["multi_crop", "random_resized_crop_box", "MultiCrop"]


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: Optional[torch.Generator] = None,
) -> tuple[int, int, int, int]:
    """Top, left, height, width of one random resized crop of a ``height x width`` image."""
    area = height * width
    lr = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = rand(2, generator, "cpu", torch.float64)
        target = area * (scale[0] + (scale[1] - scale[0]) * float(u[0]))
        aspect = math.exp(lr[0] + (lr[1] - lr[0]) * float(u[1]))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(randint(0, height - h + 1, (1,), generator))
            j = int(randint(0, width - w + 1, (1,), generator))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class MultiCrop(NamedTuple):
    """``crops``: one ``(B, C, s, s)`` tensor per crop, in the order of the groups
    (``[global, global, local x 6]`` for SwAV); ``boxes (n_crops, B, 5)``: top, left, height,
    width, flipped."""

    crops: list
    boxes: Tensor


def _check_pair(name, v, lo, hi):
    ok = (
        isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
    )
    if not ok or not (lo < v[0] <= v[1] <= hi):
        raise ValueError(f"{name} must be a pair (lo, hi) with {lo} < lo <= hi <= {hi}, got {v!r}")


def multi_crop(
    images: Tensor,
    *,
    n_crops: Sequence[int] = (2, 6),
    sizes: Sequence[int] = (224, 96),
    scales: Sequence[tuple[float, float]] = ((0.14, 1.0), (0.05, 0.14)),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    transform: Optional[Callable[[Tensor, Optional[torch.Generator]], Tensor]] = None,
    generator: Optional[torch.Generator] = None,
) -> MultiCrop:
    """Multi-crop views of a batch ``(B, C, H, W)`` of floating images.

    Group ``g`` yields ``n_crops[g]`` crops of side ``sizes[g]`` with area fraction in
    ``scales[g]`` (SwAV README recipe: 2 x 224 in [0.14, 1] and 6 x 96 in [0.05, 0.14]); every
    image of the batch gets its own boxes. ``transform(crop_batch, generator)`` (optional) is
    applied to each crop's batch. Contrastive use: every local crop is a positive of every global
    crop; only global crops serve as targets / keys.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point (convert uint8 first), got {images.dtype}")
    check_generator(generator)
    groups = len(n_crops)
    if groups == 0 or len(sizes) != groups or len(scales) != groups:
        raise ValueError(
            f"n_crops, sizes and scales must have the same non-zero length, got "
            f"{len(n_crops)}, {len(sizes)}, {len(scales)}"
        )
    for n, s in zip(n_crops, sizes):
        if not (isinstance(n, int) and n >= 0 and isinstance(s, int) and s >= 1):
            raise ValueError(f"n_crops must be >= 0 and sizes >= 1 (integers), got {n!r}, {s!r}")
    for sc in scales:
        _check_pair("scales[g]", tuple(sc), 0.0, 1.0)
    _check_pair("ratio", tuple(ratio), 0.0, math.inf)
    if not 0.0 <= float(flip_p) <= 1.0:
        raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
    B, _, H, W = images.shape
    crops, boxes = [], []
    for n, size, sc in zip(n_crops, sizes, scales):
        for _ in range(n):
            outs, bx = [], []
            for b in range(B):
                i, j, h, w = random_resized_crop_box(
                    H, W, tuple(sc), tuple(ratio), generator=generator
                )
                patch = images[b : b + 1, :, i : i + h, j : j + w]
                if (h, w) != (size, size):
                    patch = F.interpolate(
                        patch,
                        size=(size, size),
                        mode="bilinear",
                        align_corners=False,
                        antialias=True,
                    )
                flip = bool(rand(1, generator, "cpu", torch.float64)[0] < flip_p)
                if flip:
                    patch = patch.flip(-1)
                outs.append(patch)
                bx.append((i, j, h, w, int(flip)))
            crop = torch.cat(outs)
            if transform is not None:
                crop = transform(crop, generator)
            crops.append(crop)
            boxes.append(bx)
    return MultiCrop(crops, torch.tensor(boxes, dtype=torch.long).reshape(len(crops), B, 5))
