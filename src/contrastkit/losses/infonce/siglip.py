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

from ..._validation import check_compatible, check_embeddings, check_temperature
from ...engine import RowSpec, compute_dtype
from ...objective import (
    LogitScale,
    check_options,
    engine_args,
    exact_objective,
    kappa,
    objective_group,
    prepare,
    replicated,
    row_weight,
    run,
)

__all__ = ["siglip", "SigLIP", "siglip_loss", "SigLIPLoss"]


@exact_objective
def siglip(
    image: Tensor,
    text: Tensor,
    *,
    scale=None,
    temperature=None,
    bias=-10.0,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SigLIP loss of paired embeddings (N, d); see :class:`SigLIP`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    if scale is None and temperature is None:
        scale = 10.0
    check_embeddings("image", image)
    check_embeddings("text", text)
    check_compatible("image", image, "text", text, same_rows=True)
    N = image.shape[0]
    k = kappa(image, temperature, scale, group=group)
    if k.dim() != 0:
        raise ValueError("scale must be a scalar for SigLIP")
    dt = compute_dtype(image.dtype)
    if isinstance(bias, Tensor):
        if bias.dim() != 0 or not bool(torch.isfinite(bias)):
            raise ValueError(f"bias must be a finite scalar, got {bias}")
        b = replicated(bias.to(dt), group=group)  # global gradient under a process group
    else:
        if not isinstance(bias, (int, float)) or not math.isfinite(bias):
            raise ValueError(f"bias must be a finite number, got {bias!r}")
        b = torch.tensor(float(bias), dtype=dt, device=image.device)
    x, y = prepare(image, normalize), prepare(text, normalize)
    pos = (x * y).sum(-1) * k + b
    w = row_weight(reduction, N, group=group)
    spec = RowSpec(
        terms=(),
        softplus_bias=b,
        row_fn=lambda st, sd: w * (st.phi - sd["pos"]),
        row_side={"pos": pos},
    )
    return run(x, y, spec, k, reduction, eng, group=group)


class SigLIP(nn.Module):
    """SigLIP, the sigmoid loss for language-image pre-training: every (image, text) pair of the
    batch is an independent binary classification (matching pair or not), so no softmax over
    the batch is needed.

    The module owns open_clip's two learnable parameters: ``logit_scale`` ``t'`` (``t =
    exp(t')``, init ``log 10``, clamped to ``[0, log max_logit_scale]`` before each use) and
    ``logit_bias`` ``b`` (init -10), as open_clip's ``--siglip`` set-up. It holds state, so it
    is written by hand; each call is :func:`siglip` with ``scale=t, bias=b`` and the options
    below. The loss is summed over all N^2 pairs and divided by N (big_vision, open_clip).
    Exact under a process group (every rank's texts are candidates of every image).

    Formula::

        z_ij = t <x_i, y_j> + b,   label_ij = +1 if i = j else -1
        loss = -(1 / N) sum_ij log sigmoid(label_ij z_ij)
             = (1 / N) sum_ij softplus(z_ij) - (1 / N) sum_i z_ii

    Args:
        init_scale (float, default 10.0): initial ``t`` (``t' = log t``); > 0.
        init_bias (float, default -10.0): initial bias ``b``.
        learnable (bool, default True): learn ``t'`` and ``b`` (parameters) or keep them fixed
            (buffers).
        max_logit_scale (float, default 100.0): clamp of ``t``.
        reduction (str, default "mean"): ``"mean"`` (sum over pairs / N) | ``"sum"`` |
            ``"none"`` (one row per image: its sum over texts).
        normalize (bool, default True): L2-normalise both inputs.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``image``: (N, d) float.
        - ``text``: (N, d) float; row ``i`` is the positive of ``image[i]``, every other pair a
          negative.
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        image, text = torch.randn(8, 16), torch.randn(8, 16)
        loss_fn = ck.SigLIP(init_scale=10.0, init_bias=-10.0)
        loss = loss_fn(image, text)
        same = ck.siglip(image, text, scale=10.0, bias=-10.0)

    See also:
        :class:`CLIP` (softmax loss), :class:`CWCL`. ``SigLIPLoss`` / ``siglip_loss`` are the
        names earlier releases used (aliases of the same objects).

    References:
        Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image Pre-Training",
        ICCV 2023, arXiv:2303.15343. Official code: github.com/google-research/big_vision.
    """

    #: the options passed unchanged to :func:`siglip`
    options = ("reduction", "normalize", "chunk_size", "backend")

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
        super().__init__()
        check_temperature("init_scale", init_scale)
        if not isinstance(init_bias, (int, float)) or not math.isfinite(init_bias):
            raise ValueError(f"init_bias must be a finite number, got {init_bias!r}")
        check_options({"reduction": reduction, "chunk_size": chunk_size, "backend": backend})
        self.scale = LogitScale(1.0 / init_scale, learnable, max_logit_scale)
        bias = torch.tensor(float(init_bias))
        if learnable:
            self.logit_bias = nn.Parameter(bias)
        else:
            self.register_buffer("logit_bias", bias)
        self.reduction, self.normalize = reduction, normalize
        self.chunk_size, self.backend = chunk_size, backend

    @property
    def logit_scale(self) -> Tensor:
        """The learned parameter ``t'`` (open_clip's ``logit_scale``)."""
        return self.scale.logit_scale

    def forward(self, image: Tensor, text: Tensor, **overrides) -> Tensor:
        """:func:`siglip` with the current scale and bias and this module's options (keyword
        arguments override them for this call)."""
        device = getattr(image, "device", None)
        opts = {n: getattr(self, n) for n in self.options}
        opts.update(scale=self.scale().to(device), bias=self.logit_bias.to(device))
        return siglip(image, text, **{**opts, **overrides})

    def extra_repr(self) -> str:
        opts = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.options)
        return f"bias={float(self.logit_bias.detach()):.4g}, {opts}"


#: the names earlier releases published
siglip_loss = siglip
SigLIPLoss = SigLIP
