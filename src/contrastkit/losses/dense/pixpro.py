"""PixPro (Xie et al. 2021, arXiv:2011.10043): pixel-to-propagation consistency between the
propagated online features of one view and the momentum features of the other, on the pixels
whose centres in the original image are close. Per image (``H W x H' W'`` matrices, dense and
batched: 49 x 49 for a ResNet-50 at 224 pixels); exact under a process group (a mean over
images)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_number
from ...objective import EPS, Objective, exact_objective, objective_group, reduce, wide
from ._geometry import check_boxes, check_feature_map, distance, pixel_centres

__all__ = ["pixel_propagation", "pixpro", "PixPro"]

#: the official code's guard against a pair of views without close pixels
_MASK_EPS = 1e-6


def pixel_propagation(
    x: Tensor, value: Optional[Tensor] = None, *, gamma: float = 2.0, clamp: float = 0.0
) -> Tensor:
    """PixPro's pixel propagation module (not an objective).

    ``y_i = sum_j s_ij v_j`` over the pixels ``j`` of the same image, with
    ``s_ij = max(cos(x_i, x_j), clamp) ** gamma`` and ``v = normalize(value)`` (the value
    transform's output, ``x`` itself when ``None``), both normalised over the channels;
    ``x``, ``value``: ``(N, C, H, W)``; returns ``(N, C, H, W)`` (not normalised). With
    ``gamma < 1`` ``1e-6`` is added to the similarities before the power, as the official code
    does.
    """
    check_feature_map("x", x)
    if value is not None:
        check_feature_map("value", value)
        if value.shape[0] != x.shape[0] or value.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"value must have the images and pixels of x {tuple(x.shape)}, got "
                f"{tuple(value.shape)}"
            )
    gamma, clamp = _check_power(gamma, clamp)
    n, c, h, w = x.shape
    xw = wide(x)
    vx = xw if value is None else wide(value)
    v = F.normalize(vx, dim=1, eps=EPS).reshape(n, vx.shape[1], h * w)
    f = F.normalize(xw, dim=1, eps=EPS).reshape(n, c, h * w)
    sim = torch.bmm(f.transpose(1, 2), f).clamp(min=clamp)
    if gamma < 1:
        sim = sim + 1e-6
    sim = sim**gamma
    return torch.bmm(v, sim.transpose(1, 2)).reshape(n, vx.shape[1], h, w)


def _check_power(gamma, clamp) -> tuple[float, float]:
    gamma = check_number("gamma", gamma, minimum=0.0)
    clamp = check_number("clamp", clamp)
    if clamp < 0 and gamma != int(gamma):
        raise ValueError(
            f"clamp={clamp} < 0 lets negative similarities reach the power gamma={gamma}, "
            "which is not an integer (NaN): use clamp >= 0 or an integer gamma"
        )
    return gamma, clamp


def _consistency(y: Tensor, k: Tensor, yb: Tensor, kb: Tensor, ratio: float) -> Tensor:
    """Per image: ``-2 sum_ij cos(y_i, k_j) M_ij / (sum_ij M_ij + 1e-6)`` ``(N,)``."""
    yc, yd = pixel_centres(yb, y.shape[2], y.shape[3], y.dtype)
    kc, kd = pixel_centres(kb, k.shape[2], k.shape[3], y.dtype)
    mask = (distance(yc, kc) / torch.maximum(yd, kd)[:, None, None] < ratio).to(y.dtype)
    yn = F.normalize(y, dim=1, eps=EPS).flatten(2)
    kn = F.normalize(k, dim=1, eps=EPS).flatten(2)
    cos = torch.bmm(yn.transpose(1, 2), kn)
    return -2.0 * (cos * mask).sum((1, 2)) / (mask.sum((1, 2)) + _MASK_EPS)


@exact_objective
def pixpro(
    x1: Tensor,
    x2: Tensor,
    key1: Tensor,
    key2: Tensor,
    boxes1: Tensor,
    boxes2: Tensor,
    value1: Optional[Tensor] = None,
    value2: Optional[Tensor] = None,
    *,
    pos_ratio: float = 0.7,
    gamma: float = 2.0,
    clamp: float = 0.0,
    propagate: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """PixPro's pixel-to-propagation consistency of two views; see :class:`PixPro`."""
    group = objective_group()
    check_feature_map("x1", x1)
    check_feature_map("x2", x2, x1, "x1")
    n = x1.shape[0]
    for name, t, ref in (("key1", key1, x1), ("key2", key2, x2)):
        check_feature_map(name, t, ref, "x1" if ref is x1 else "x2")
        if t.shape[2:] != ref.shape[2:]:
            raise ValueError(
                f"{name} must have the pixels of its view {tuple(ref.shape)}, got {tuple(t.shape)}"
            )
    check_boxes("boxes1", boxes1, n, x1)
    check_boxes("boxes2", boxes2, n, x1)
    ratio = check_number("pos_ratio", pos_ratio, minimum=0.0)
    if not isinstance(propagate, bool):
        raise ValueError(f"propagate must be a bool, got {propagate!r}")
    values = []
    for name, v, ref in (("value1", value1, x1), ("value2", value2, x2)):
        if v is not None:
            check_feature_map(name, v)
            if v.shape != ref.shape:
                raise ValueError(
                    f"{name} must have the shape of its view {tuple(ref.shape)} (the keys' "
                    f"channels), got {tuple(v.shape)}"
                )
            if not propagate:
                raise ValueError(
                    f"{name} is the value transform of the propagation: propagate=False"
                )
        values.append(v)
    if propagate:
        y1 = pixel_propagation(x1, values[0], gamma=gamma, clamp=clamp)
        y2 = pixel_propagation(x2, values[1], gamma=gamma, clamp=clamp)
    else:
        _check_power(gamma, clamp)
        y1, y2 = wide(x1), wide(x2)
    k1, k2 = wide(key1.detach()), wide(key2.detach())
    rows = _consistency(y1, k2, boxes1, boxes2, ratio) + _consistency(y2, k1, boxes2, boxes1, ratio)
    return reduce(rows, reduction, group=group)


class PixPro(Objective, functional=pixpro):
    """PixPro: pixel-to-propagation consistency between two augmented views of each image.

    Each image gives two crops; their feature maps (online projections ``x1``, ``x2`` and
    momentum-encoder projections ``key1``, ``key2``) have pixels whose centres, mapped back to
    the original image through the crop boxes, may be close. The online features are first
    smoothed by the pixel propagation module (each pixel becomes a similarity-weighted sum of
    the same view's pixels, :func:`pixel_propagation`); the loss then pulls every propagated
    pixel of one view towards the momentum features of the other view's close pixels, and
    vice versa. No negatives: as in BYOL, the momentum branch (detached here) prevents
    collapse. A mean over images, hence exact under a process group.

    Pixel ``i`` of view a has centre ``c_i`` (``x0 + (col + 1/2) w / W``, likewise for y) and
    the pair's bin diagonal ``D = max(diag_a, diag_b)``; ``M_ij = [||c_i - c_j|| / D < T]``::

        s_ij = max(cos(x_i, x_j), clamp) ** gamma          (pixels of the same view)
        y_i  = sum_j s_ij normalize(v_j)                   (v = value transform of x, or x)
        L_ab = -2 sum_ij cos(y^a_i, k^b_j) M_ij / (sum_ij M_ij + 1e-6)      (per image)
        l    = L_12 + L_21,   loss = mean over images

    With unit vectors ``-2 cos(y, k) = ||y - k||^2 - 2`` (BYOL's regression loss); identical
    views with identical features give -2 per direction. The momentum schedule
    ``m = 1 - (1 - m0)(cos(pi k / K) + 1) / 2`` (m0 = 0.99) belongs to the training loop.

    Args:
        pos_ratio (float): ``T``, the distance threshold in bin diagonals; default 0.7 (the
            official training script; the official function's own default is 0.5).
        gamma (float): sharpness of the propagation similarities, default 2.
        clamp (float): lower clamp of the cosines before the power, default 0.
        propagate (bool): apply the propagation module (default ``True``); ``False`` compares
            ``x`` with the keys directly (the ablation without propagation).
        reduction (str): ``"mean"`` over images (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        - ``x1``: ``(N, C, H, W)`` float; online projections of view 1.
        - ``x2``: ``(N, C, H', W')`` float; online projections of view 2.
        - ``key1``, ``key2``: the momentum projections of views 1 and 2, shapes as ``x1``,
          ``x2`` (detached here).
        - ``boxes1``, ``boxes2``: ``(N, 4)`` real; each view's crop in the original image,
          ``(x0, y0, x1, y1)``; ``x0 > x1`` marks a horizontally flipped crop.
        - ``value1``, ``value2`` (optional): shapes as ``x1``, ``x2``; the
          value transform ``g(x1)``, ``g(x2)`` (a 1x1 convolution in the official recipe);
          default ``x1``, ``x2``.
        - returns a scalar, or ``(N,)`` with ``reduction="none"``.

    Example::

        import torch
        from contrastkit.losses.dense import PixPro

        x1, x2 = torch.randn(2, 8, 7, 7), torch.randn(2, 8, 7, 7)
        k1, k2 = torch.randn(2, 8, 7, 7), torch.randn(2, 8, 7, 7)
        b1 = torch.tensor([[0.0, 0.0, 0.6, 0.6], [0.1, 0.2, 0.9, 0.8]])
        b2 = torch.tensor([[0.2, 0.2, 0.8, 0.8], [0.9, 0.1, 0.3, 0.7]])  # second one flipped
        loss = PixPro()(x1, x2, k1, k2, b1, b2)

    See also:
        :class:`PixelContrast` (the pixel-level InfoNCE of the same paper),
        :func:`pixel_propagation`.

    References:
        Xie, Lin, Zhang, Cao, Lin, Hu, "Propagate Yourself: Exploring Pixel-Level Consistency
        for Unsupervised Visual Representation Learning", CVPR 2021, arXiv:2011.10043.
    """
