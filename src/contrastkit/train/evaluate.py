"""End-of-run evaluation with honest baselines from the same run: the trained encoder, the same
encoder at its random initialisation, and the raw pixels, under the same kNN (k = 20,
temperature 0.07) and linear-probe protocols on the fixed digits split."""

from __future__ import annotations

import torch
from torch import nn

from ..metrics import knn_accuracy, linear_probe_accuracy
from .data import Split


@torch.no_grad()
def _embed(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    encoder.eval()
    out = encoder(x)
    encoder.train()
    return out


def evaluate(encoders: dict[str, nn.Module], data: Split) -> dict:
    """``{name: {"knn_top1": %, "linear_probe": %}}`` for each encoder and for ``pixels``."""
    feats = {"pixels": (data.x_train, data.x_test)}
    for name, enc in encoders.items():
        feats[name] = (_embed(enc, data.x_train), _embed(enc, data.x_test))
    out = {}
    for name, (tr, te) in feats.items():
        out[name] = {
            "knn_top1": knn_accuracy(tr, data.y_train, te, data.y_test, k=20, temperature=0.07),
            "linear_probe": linear_probe_accuracy(tr, data.y_train, te, data.y_test),
        }
    return out
