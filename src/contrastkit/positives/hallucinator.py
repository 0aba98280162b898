"""Hallucinator (Wu, Hobbs, Hovakimyan, "Hallucination Improves the Performance of Unsupervised
Visual Representation Learning", ICCV 2023; official code jingwu6/Hallucination-improves-the-
performance-of-unsupervised-visual-representation-learning, ``models/generator.py``).

Learned extra positives in feature space (MoCo variant)::

    r ~ U(0, 0.1) (one scalar per step),   e = (1 + r) q_raw - r k      (away from the key)
    g = MLP([q_raw || e]),   MLP = Linear(2d, h) - ReLU - Linear(h, h) - ReLU - Linear(h, d)
    queries = normalize([q_raw; g]) (2N, d),   keys = [k; k]

The generator is trained by the same MoCo loss. The official code enqueues both key copies;
``keys`` is returned doubled and enqueueing once or twice is the caller's choice.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_compatible, check_embeddings

__all__ = ["Hallucinator"]


class Hallucinator(torch.nn.Module):
    """``forward(q_raw, key, generator=None) -> (queries (2N, d), keys (2N, d))``.

    Args:
        dim: embedding size d (128); hidden: h (256 for d = 128); max_ratio: r's upper bound 0.1.
    """

    def __init__(self, dim: int = 128, hidden: int = 256, max_ratio: float = 0.1):
        super().__init__()
        if not isinstance(max_ratio, (int, float)) or max_ratio < 0:
            raise ValueError(f"max_ratio must be a number >= 0, got {max_ratio!r}")
        self.dim, self.max_ratio = dim, float(max_ratio)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 * dim, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, dim),
        )
        self.last_ratio: Optional[float] = None

    def extrapolate(self, q_raw: Tensor, key: Tensor, r: float) -> Tensor:
        return (1 + r) * q_raw - r * key.detach()

    def forward(self, q_raw: Tensor, key: Tensor, generator: Optional[torch.Generator] = None):
        check_embeddings("q_raw", q_raw)
        check_embeddings("key", key)
        check_compatible("q_raw", q_raw, "key", key, same_rows=True)
        if q_raw.shape[1] != self.dim:
            raise ValueError(f"q_raw has feature dimension {q_raw.shape[1]}, expected {self.dim}")
        r = float(torch.rand((), generator=generator)) * self.max_ratio
        self.last_ratio = r
        e = self.extrapolate(q_raw, key, r)
        g = self.mlp(torch.cat([q_raw, e], dim=1))
        queries = F.normalize(torch.cat([q_raw, g]), dim=-1)
        k = key.detach()
        return queries, torch.cat([k, k])
