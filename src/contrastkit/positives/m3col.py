"""M3CoL multimodal mixup contrastive loss (Singhal et al., "Harnessing Shared Relations via
Multimodal Mixup Contrastive Learning for Multimodal Classification", TMLR 2025; official code
RaghavSinghal10/M3CoL, ``model/utils.py`` ``mixco_*``, ``soft_clip_loss``).

Mix modality X, contrast against the fixed modality Y::

    perm random, beta_i ~ Beta(0.15, 0.15), selected_i = (U(0, 1) <= 0.5)
    x~_i = beta_i x_i + (1 - beta_i) x_perm(i)   (selected; else x~_i = x_i, beta_i = 1)
    P_ii = beta_i,  P_i,perm(i) = 1 - beta_i
    loss = 1/2 [ mean_i CE_row(P_i., u_i.) + mean_j CE_col(P_.j, u_.j) ],   u = cos(x~, y) / 0.1

The term is ``loss(x mixed vs y) + loss(y mixed vs x)`` times ``lambda_mix = 0.1``. Runs on the
engine: ``CE_row = mass_i lse_i - sum_j P_ij u_ij`` and likewise per column, with the two (or
fewer) non-zero ``P`` entries per row as O(N d) side inputs. Official quirk: when ``perm(i) = i``
the code overwrites ``P_ii`` with ``1 - beta_i``; we set ``P_ii = 1`` (``official_self_pair=True``
reproduces the code).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._validation import (
    check_compatible,
    check_embeddings,
    check_index,
    check_reduction,
    check_temperature,
    check_tensor,
)
from ..engine import RowSpec
from ..losses._common import engine_args, kappa, prepare, run
from ._random import beta

__all__ = ["MultimodalMixup", "mixup_contrastive_loss"]


def mixup_contrastive_loss(
    x_mixed: Tensor,
    y: Tensor,
    perm: Tensor,
    mix: Tensor,
    *,
    temperature: float = 0.1,
    official_self_pair: bool = False,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Bidirectional soft-target InfoNCE of ``x_mixed`` (B, d) against ``y`` (B, d) with targets
    ``P_ii = mix_i``, ``P_i,perm(i) = 1 - mix_i`` (``mix`` (B,) = beta or 1)."""
    eng = engine_args(chunk_size, backend)
    check_reduction(reduction)
    check_temperature("temperature", temperature)
    check_embeddings("x_mixed", x_mixed)
    check_embeddings("y", y)
    check_compatible("x_mixed", x_mixed, "y", y, same_rows=True)
    B = x_mixed.shape[0]
    check_index("perm", perm, B, shape=(B,), ref=x_mixed)
    check_tensor("mix", mix, kind="float", shape=(B,), ref=x_mixed)
    X, Y = prepare(x_mixed, True), prepare(y, True)
    k = kappa(X, temperature)
    mix = mix.to(X.dtype).detach()
    diag = mix.clone()
    off = 1 - mix
    selfp = perm == torch.arange(B, device=perm.device)
    if official_self_pair:
        diag = torch.where(selfp, 1 - mix, diag)
        off = torch.where(selfp, torch.zeros_like(off), off)
    else:  # P_ii = beta + (1 - beta) = 1
        diag = torch.where(selfp, torch.ones_like(diag), diag)
        off = torch.where(selfp, torch.zeros_like(off), off)
    u_diag = (X * Y).sum(-1) * k
    u_off = (X * Y[perm]).sum(-1) * k  # u_i,perm(i)
    row_tgt = diag * u_diag + off * u_off
    row_mass = diag + off
    col_tgt = (diag * u_diag).index_add(0, perm, off * u_off)
    col_mass = diag.index_add(0, perm, off)
    w = (1.0 / B if reduction == "mean" else 1.0) / 2
    spec = RowSpec(
        row_fn=lambda st, sd: w * (sd["mass"] * st["lse"][0] - sd["tgt"]),
        row_side={"mass": row_mass, "tgt": row_tgt},
        columns=True,
        col_fn=lambda st, sd: w * (sd["mass"] * st["col_lse"] - sd["tgt"]),
        col_side={"mass": col_mass, "tgt": col_tgt},
    )
    return run(X, Y, spec, k, reduction, eng)


class MultimodalMixup:
    """M3CoL mixing and loss.

    Args:
        alpha: Beta(alpha, alpha) per sample (0.15); prob: probability a sample is mixed (0.5);
        temperature: tau (0.1); official_self_pair: reproduce the ``perm(i) = i`` quirk.

    ``mix(x, generator=None)`` -> ``(x_mixed, perm, mix)``; ``__call__(x, y, generator=None)`` ->
    :func:`mixup_contrastive_loss` of the mixed ``x`` against ``y``.
    """

    def __init__(
        self,
        alpha: float = 0.15,
        prob: float = 0.5,
        temperature: float = 0.1,
        *,
        official_self_pair: bool = False,
    ):
        if not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        check_temperature("temperature", temperature)
        self.alpha, self.prob, self.temperature = float(alpha), float(prob), float(temperature)
        self.official_self_pair = official_self_pair

    def mix(self, x: Tensor, generator: Optional[torch.Generator] = None):
        check_embeddings("x", x)
        B = x.shape[0]
        perm = torch.randperm(B, generator=generator).to(x.device)
        b = beta(self.alpha, self.alpha, (B,), generator, x)
        sel = (torch.rand(B, generator=generator) <= self.prob).to(x.device)
        b = torch.where(sel, b, torch.ones_like(b))
        x_mixed = b[:, None] * x + (1 - b[:, None]) * x[perm]
        return x_mixed, perm, b

    def __call__(self, x: Tensor, y: Tensor, generator: Optional[torch.Generator] = None, **kw):
        x_mixed, perm, b = self.mix(x, generator)
        return mixup_contrastive_loss(
            x_mixed,
            y,
            perm,
            b,
            temperature=self.temperature,
            official_self_pair=self.official_self_pair,
            **kw,
        )
