"""Benchmark hook for the dense family on the engine (PixelContrast, TemporalContrast).

``CASES[name](n, d, gen)`` -> closure computing the scalar loss (``backend="tiled"``);
``name + "-dense"`` the same on materialised logits (``backend="dense"``). Shapes, so that
every sweep contrasts n anchors with n candidates: PixelContrast ``n / 49`` images of 7 x 7
maps (n query pixels against n key pixels, random overlapping crops); TemporalContrast
``n / 32`` videos x 16 frames x 2 views (n frames, positive_window=1, negative_gap=3); and
InfoNCE on n rows as the same-run baseline.
"""

from __future__ import annotations

import torch

from contrastkit.losses.dense import pixel_contrast, temporal_contrast
from contrastkit.losses.infonce import info_nce


def _x(gen, *shape):
    return torch.randn(*shape, generator=gen).requires_grad_()


def _boxes(gen, m):
    x0 = torch.rand(m, 2, generator=gen) * 0.4
    return torch.cat([x0, x0 + 0.6], 1)


def _pixel(backend):
    def factory(n, d, gen):
        m = max(1, n // 49)
        q, k = _x(gen, m, d, 7, 7), _x(gen, m, d, 7, 7)
        qb, kb = _boxes(gen, m), _boxes(gen, m)
        return lambda: pixel_contrast(q, k, qb, kb, backend=backend)

    return factory


def _temporal(backend):
    def factory(n, d, gen):
        m = max(1, n // 32)
        z1, z2 = _x(gen, m, 16, d), _x(gen, m, 16, d)
        return lambda: temporal_contrast(z1, z2, positive_window=1, negative_gap=3, backend=backend)

    return factory


def _info_nce(backend):
    def factory(n, d, gen):
        a, b = _x(gen, n, d), _x(gen, n, d)
        return lambda: info_nce(a, b, backend=backend)

    return factory


CASES = {
    "info_nce": _info_nce("tiled"),
    "info_nce-dense": _info_nce("dense"),
    "pixel_contrast": _pixel("tiled"),
    "pixel_contrast-dense": _pixel("dense"),
    "temporal_contrast": _temporal("tiled"),
    "temporal_contrast-dense": _temporal("dense"),
}
