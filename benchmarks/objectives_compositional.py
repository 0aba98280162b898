"""Benchmark hook for the compositional objectives on the engine (NegCLIP, CountCLIP), with
symmetric CLIP as the same-run baseline.

``CASES[name](n, d, gen)`` builds inputs once (``requires_grad=True``) and returns a closure
computing the scalar loss (``backend="tiled"``); ``CASES[name + "-dense"]`` the same on
materialised logits (``backend="dense"``). NegCLIP: ``n`` image/caption pairs with K = 1
negative caption each (``n x 2n`` image-to-text logits, ``n x n`` text-to-image); CountCLIP:
``n`` pairs, every row a counting row.
"""

from __future__ import annotations

from typing import Callable

import torch

from contrastkit.losses.compositional import count_clip, neg_clip
from contrastkit.losses.infonce import clip

Factory = Callable[[int, int, torch.Generator], Callable[[], torch.Tensor]]
SCALE = 1 / 0.07


def _x(gen, *shape):
    return torch.randn(*shape, generator=gen).requires_grad_()


def _clip(backend):
    def factory(n, d, gen):
        image, text = _x(gen, n, d), _x(gen, n, d)
        return lambda: clip(image, text, scale=SCALE, backend=backend)

    return factory


def _neg_clip(backend):
    def factory(n, d, gen):
        image, text, negatives = _x(gen, n, d), _x(gen, n, d), _x(gen, n, 1, d)
        return lambda: neg_clip(image, text, negatives, scale=SCALE, backend=backend)

    return factory


def _count_clip(backend):
    def factory(n, d, gen):
        image, text, wrong = _x(gen, n, d), _x(gen, n, d), _x(gen, n, d)
        return lambda: count_clip(image, text, wrong, scale=SCALE, backend=backend)

    return factory


_BUILDERS = {"clip": _clip, "neg_clip": _neg_clip, "count_clip": _count_clip}
CASES: dict[str, Factory] = {}
for _name, _build in _BUILDERS.items():
    CASES[_name] = _build("tiled")
    CASES[_name + "-dense"] = _build("dense")
