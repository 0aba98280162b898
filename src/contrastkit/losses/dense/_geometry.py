"""Pixel geometry shared by the pixel objectives: feature-map pixels as rows, their centres in
original-image coordinates from the crop boxes, and the positive relation (same image, centre
distance below a threshold in units of the larger bin diagonal)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..._validation import check_tensor

#: image chunks of the coordinate-only passes hold at most this many pixel pairs
PAIR_CHUNK = 1 << 22


def check_feature_map(name: str, x, ref=None, ref_name: str = "") -> Tensor:
    """A finite floating ``(N, C, H, W)`` map; with ``ref``: same N, C, dtype and device."""
    check_tensor(name, x, ndim=4, kind="float", min_rows=0)
    if x.shape[1] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must have C, H, W >= 1, got shape {tuple(x.shape)}")
    if ref is not None:
        if x.dtype != ref.dtype:
            raise ValueError(f"{name} has dtype {x.dtype} but {ref_name} has dtype {ref.dtype}")
        if x.device != ref.device:
            raise ValueError(f"{name} is on {x.device} but {ref_name} is on {ref.device}")
        if x.shape[0] != ref.shape[0] or x.shape[1] != ref.shape[1]:
            raise ValueError(
                f"{name} must have the images and channels of {ref_name} (N, C) = "
                f"{tuple(ref.shape[:2])}, got shape {tuple(x.shape)}"
            )
    return x


def check_boxes(name: str, boxes, n: int, ref: Tensor) -> Tensor:
    """``(N, 4)`` crop boxes ``(x0, y0, x1, y1)`` in original-image coordinates: real, finite,
    on ``ref``'s device, of non-zero width and height (``x0 > x1``: a horizontally flipped
    view, whose pixel columns run right to left)."""
    check_tensor(name, boxes, ndim=2, kind="real", min_rows=0, ref=ref)
    if tuple(boxes.shape) != (n, 4):
        raise ValueError(
            f"{name} must have shape ({n}, 4) (x0, y0, x1, y1), got {tuple(boxes.shape)}"
        )
    if n and bool(((boxes[:, 2] == boxes[:, 0]) | (boxes[:, 3] == boxes[:, 1])).any()):
        raise ValueError(f"{name} holds a box of zero width or height: {boxes.tolist()[:4]}")
    return boxes


def pixel_rows(x: Tensor) -> Tensor:
    """``(N, C, H, W)`` -> ``(N H W, C)``: image-major rows, pixels in row-major order."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0] * x.shape[2] * x.shape[3], x.shape[1])


def pixel_centres(boxes: Tensor, h: int, w: int, dtype) -> tuple[Tensor, Tensor]:
    """Centres ``(N, h w, 2)`` of an ``h x w`` feature map's bins in original-image coordinates
    (``x0 + (col + 1/2) * bin_width``, likewise for y) and each box's bin diagonal ``(N,)``."""
    b = boxes.detach().to(dtype)
    bw = (b[:, 2] - b[:, 0]) / w
    bh = (b[:, 3] - b[:, 1]) / h
    cols = torch.arange(w, dtype=dtype, device=b.device) + 0.5
    rows = torch.arange(h, dtype=dtype, device=b.device) + 0.5
    cx = (cols[None, None, :] * bw[:, None, None] + b[:, 0, None, None]).expand(-1, h, w)
    cy = (rows[None, :, None] * bh[:, None, None] + b[:, 1, None, None]).expand(-1, h, w)
    centres = torch.stack([cx, cy], dim=-1).reshape(b.shape[0], h * w, 2)
    return centres, torch.sqrt(bw**2 + bh**2)


def distance(qc: Tensor, kc: Tensor) -> Tensor:
    """Euclidean distances ``(..., P, Q)`` between centres ``(..., P, 2)`` and ``(..., Q, 2)``."""
    d2 = (qc[..., :, None, 0] - kc[..., None, :, 0]) ** 2
    return torch.sqrt(d2 + (qc[..., :, None, 1] - kc[..., None, :, 1]) ** 2)


class PixelPairs:
    """Query pixels (rows) and key pixels (columns) of N image pairs with their geometry.

    ``positive(r0, r1, c0, c1)`` is the pair relation of a block of rows and columns (bool
    ``(b, t)``, True = the two pixels belong to the same image and lie closer than ``ratio``
    bin diagonals), computed from O(rows + columns) coordinates; ``counts()`` the number of
    positives of every row, computed image by image in bounded chunks (no embeddings).
    """

    def __init__(self, qboxes, kboxes, q_hw, k_hw, ratio: float, dtype):
        self.n = qboxes.shape[0]
        self.q_hw, self.k_hw, self.ratio = q_hw, k_hw, ratio
        qc, qd = pixel_centres(qboxes, q_hw[0], q_hw[1], dtype)
        kc, kd = pixel_centres(kboxes, k_hw[0], k_hw[1], dtype)
        self.qc, self.kc = qc, kc  # (N, P, 2)
        self.diag = torch.maximum(qd, kd)  # the larger bin diagonal of each pair (N,)
        pq, pk = q_hw[0] * q_hw[1], k_hw[0] * k_hw[1]
        dev = qboxes.device
        self.q_img = torch.arange(self.n, device=dev).repeat_interleave(pq)
        self.k_img = torch.arange(self.n, device=dev).repeat_interleave(pk)
        self.q_flat, self.k_flat = qc.reshape(self.n * pq, 2), kc.reshape(self.n * pk, 2)

    def positive(self, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        qi, ki = self.q_img[r0:r1], self.k_img[c0:c1]
        d = distance(self.q_flat[r0:r1], self.k_flat[c0:c1]) / self.diag[qi][:, None]
        return (d < self.ratio) & (qi[:, None] == ki[None, :])

    def counts(self) -> Tensor:
        """Positives per query pixel ``(N P_q,)``."""
        pq, pk = self.qc.shape[1], self.kc.shape[1]
        out = torch.zeros(self.n, pq, dtype=torch.long, device=self.qc.device)
        step = max(1, PAIR_CHUNK // max(pq * pk, 1))
        for i in range(0, self.n, step):
            j = min(i + step, self.n)
            d = distance(self.qc[i:j], self.kc[i:j]) / self.diag[i:j, None, None]
            out[i:j] = (d < self.ratio).sum(-1)
        return out.reshape(-1)
