"""SigLIP: sigmoid loss for language-image pre-training (Zhai et al., 2023).

    z_ij = t <x_i, y_j> + b,   loss = (1 / N) sum_ij softplus(z_ij) - (1 / N) sum_i z_ii

(``-log sigmoid(label * z)`` with label +1 on the diagonal, -1 elsewhere; sum over all pairs
divided by N, as big_vision and open_clip). No log-sum-exp: the engine sweeps the elementwise
softplus term and its gradient ``t (sigmoid(z_ij) - 1[i = j]) / N``; ``b`` gets its gradient too.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .._validation import (
    check_compatible,
    check_embeddings,
    check_temperature,
)
from ..engine import RowSpec, compute_dtype
from ._common import (
    engine_args,
    exact_objective,
    kappa,
    prepare,
    replicated,
    row_weight,
    run,
)
from .logit_scale import ScaledLoss

__all__ = ["siglip_loss", "SigLIPLoss"]


@exact_objective
def siglip_loss(
    image: Tensor,
    text: Tensor,
    *,
    scale=10.0,
    bias=-10.0,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SigLIP loss of paired embeddings (N, d); ``scale`` t and ``bias`` b may be tensors."""
    eng = engine_args(chunk_size, backend)
    check_embeddings("image", image)
    check_embeddings("text", text)
    check_compatible("image", image, "text", text, same_rows=True)
    N = image.shape[0]
    k = kappa(image, scale=scale)
    if k.dim() != 0:
        raise ValueError("scale must be a scalar for SigLIP")
    dt = compute_dtype(image.dtype)
    if isinstance(bias, Tensor):
        if bias.dim() != 0 or not bool(torch.isfinite(bias)):
            raise ValueError(f"bias must be a finite scalar, got {bias}")
        b = replicated(bias.to(dt))  # global gradient under a process group
    else:
        if not isinstance(bias, (int, float)) or not math.isfinite(bias):
            raise ValueError(f"bias must be a finite number, got {bias!r}")
        b = torch.tensor(float(bias), dtype=dt, device=image.device)
    x, y = prepare(image, normalize), prepare(text, normalize)
    pos = (x * y).sum(-1) * k + b
    w = row_weight(reduction, N)
    spec = RowSpec(
        terms=(),
        softplus_bias=b,
        row_fn=lambda st, sd: w * (st["phi"] - sd["pos"]),
        row_side={"pos": pos},
    )
    return run(x, y, spec, k, reduction, eng)


class SigLIPLoss(ScaledLoss):
    """SigLIP loss owning ``logit_scale`` (init log 10, clamped to [0, log 100]) and ``logit_bias``
    (init -10), as open_clip's ``--siglip`` set-up. ``forward(image, text)``."""

    def __init__(
        self,
        init_scale: float = 10.0,
        init_bias: float = -10.0,
        learnable: bool = True,
        max_logit_scale: float = 100.0,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        check_temperature("init_scale", init_scale)
        super().__init__(
            1.0 / init_scale, learnable, max_logit_scale, reduction, normalize, chunk_size, backend
        )
        bias = torch.tensor(float(init_bias))
        if learnable:
            self.logit_bias = nn.Parameter(bias)
        else:
            self.register_buffer("logit_bias", bias)

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        bias = self.logit_bias.to(getattr(image, "device", None))
        return siglip_loss(image, text, bias=bias, **self.options(image))
