"""1-to-K contrastive learning ("Improving the Consistency in Cross-Lingual Cross-Modal Retrieval
with 1-to-K Contrastive Learning", KDD 2024, arXiv 2406.18254; BUAADreamer/CCRK).

Images ``v`` (B, d) and texts ``t`` (B K, d), image ``i``'s K language versions in rows
``K i .. K i + K - 1``; ``U = v t^T / tau`` (B x BK), both normalised::

    i2t:  l_i = -sum_k log softmax_row_i(U)[K i + k]    (K positives, full denominator)
          = K LSE_j U_ij - sum_k U_i,Ki+k
    t2i:  l_r = -log softmax(U^T_r)[floor(r / K)]       (column softmax over the B images)
    L     = (mean_i l_i + mean_r l_r) / 2 / K           (``divide_by`` replaces K)

K = 1 is the CLIP loss with divide-by-tau. The module's temperature is learnable (init 0.07)
and clamped in place to [0.001, 0.5] at every forward, as the official code. Engine form: rows
(images) with ``g = K LSE``, columns (texts) one-hot; the positive sums are O(BKd) dot
products. ``reduction="none"`` gives per-image values ``(l_i + (1/K) sum_k l_{Ki+k}) / (2K)``
(their mean is the loss).
"""

from __future__ import annotations

import math
from typing import Optional, cast

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_reduction
from ...engine import RowSpec
from ...objective import (
    engine_args,
    exact_objective,
    kappa,
    objective_group,
    prepare,
    row_weight,
    run,
)

__all__ = ["one_to_k_contrastive", "OneToKContrastive"]


@exact_objective
def one_to_k_contrastive(
    images: Tensor,
    texts: Tensor,
    *,
    temperature=0.07,
    divide_by: Optional[float] = None,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """1-to-K loss of ``images`` (B, d) and ``texts`` (B K, d); see :class:`OneToKContrastive`."""
    eng = engine_args(chunk_size, backend)
    group = objective_group()  # None without a process group
    check_reduction(reduction)
    check_embeddings("images", images)
    check_embeddings("texts", texts)
    check_compatible("images", images, "texts", texts)
    B, BK = images.shape[0], texts.shape[0]
    if BK % B:
        raise ValueError(
            f"texts must hold K rows per image (B K, d): images {tuple(images.shape)}, "
            f"texts {tuple(texts.shape)} ({BK} is not a multiple of {B})"
        )
    K = BK // B
    if divide_by is not None and (
        not isinstance(divide_by, (int, float)) or not math.isfinite(divide_by) or divide_by <= 0
    ):
        raise ValueError(f"divide_by must be a finite number > 0 or None, got {divide_by!r}")
    div = float(K if divide_by is None else divide_by)
    k = kappa(images, temperature, group=group)
    if k.dim() != 0:
        raise ValueError("temperature must be a scalar for the 1-to-K loss")
    v, t = prepare(images, normalize), prepare(texts, normalize)
    pos_rows = (v * t.view(B, K, -1).sum(1)).sum(-1) * k  # sum_k U_i,Ki+k
    pos_cols = (v.repeat_interleave(K, dim=0) * t).sum(-1) * k  # U_floor(r/K), r
    # mean: mean_i l_i and mean_r l_r; sum / none: per image l_i + (1/K) sum_k l_Ki+k
    wr = row_weight(reduction, B, group=group) / (2 * div)
    wc = (
        row_weight(reduction, BK, group=group)
        / (2 * div)
        * (1.0 if reduction == "mean" else 1.0 / K)
    )

    def row_fn(st, sd):
        return wr * (K * cast(Tensor, st.lse)[0] - sd["pos"])

    def col_fn(st, sd):
        return wc * (st.lse - sd["pos"])

    if reduction != "none":  # one two-sided spec (every rank's texts / images under a group)
        spec = RowSpec(
            row_fn=row_fn,
            row_side={"pos": pos_rows},
            columns=True,
            col_fn=col_fn,
            col_side={"pos": pos_cols},
        )
        return run(v, t, spec, k, reduction, eng, group=group)
    # per image: its row plus its K captions' rows of the transposed problem
    rows = run(
        v, t, RowSpec(row_fn=row_fn, row_side={"pos": pos_rows}), k, "none", eng, group=group
    )
    cols = run(
        t, v, RowSpec(row_fn=col_fn, row_side={"pos": pos_cols}), k, "none", eng, group=group
    )
    return rows + cols.view(B, K).sum(1)


class OneToKContrastive(torch.nn.Module):
    """1-to-K contrastive learning: each image has K captions (e.g. K languages), all of them
    positives; the image row contrasts its K captions against every caption of the batch at
    once, and every caption contrasts its image against all images (Nie et al., CCRK).

    With ``U = v t^T / temperature`` (B x BK) and image ``i``'s captions in rows
    ``K i .. K i + K - 1``::

        l_i = K LSE_j U_ij - sum_k U_i,Ki+k                   (image -> texts)
        l_r = LSE_i U_ir - U_floor(r/K),r                     (text -> images)
        loss = (mean_i l_i + mean_r l_r) / 2 / K              (divide_by replaces K)

    K = 1 is the CLIP loss. The temperature is a learnable parameter clamped in place to
    ``clamp`` before every forward, as the official code (a hand-written module: it owns that
    parameter). Exact under a process group (every rank's captions and images).

    Args:
        temperature (float, default 0.07): initial tau, inside ``clamp``.
        learnable (bool, default True): a parameter; ``False`` keeps tau as a fixed buffer.
        clamp (tuple, default (0.001, 0.5)): (lo, hi) applied to tau before every forward.
        divide_by (float or None, default None): the final divisor (None: K, the official
            ``need_divm = 0``).
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-image terms (B,),
            ``(l_i + (1/K) sum_k l_Ki+k) / (2K)``, whose mean is the loss).
        normalize (bool, default True): L2-normalise both sides.
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``images`` (B, d) float.
        - ``texts`` (B K, d) float: rows ``K i .. K i + K - 1`` are the positives of image
          ``i``; every other row is a negative.

    Example::

        import torch
        import contrastkit as ck

        images, texts = torch.randn(4, 16), torch.randn(4 * 3, 16)
        loss = ck.OneToKContrastive(temperature=0.07)(images, texts)

    See also:
        :class:`CLIP`, :class:`InfoNCE`, :class:`SogCLRBimodal`.

    References:
        Nie et al., "Improving the Consistency in Cross-Lingual Cross-Modal Retrieval with
        1-to-K Contrastive Learning", KDD 2024, arXiv:2406.18254 (github.com/BUAADreamer/CCRK).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learnable: bool = True,
        clamp: tuple = (0.001, 0.5),
        divide_by: Optional[float] = None,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__()
        lo, hi = clamp
        if not (0 < lo <= hi) or not math.isfinite(hi):
            raise ValueError(f"clamp must be (lo, hi) with 0 < lo <= hi, got {clamp!r}")
        if not isinstance(temperature, (int, float)) or not lo <= temperature <= hi:
            raise ValueError(f"temperature must be a number in [{lo}, {hi}], got {temperature!r}")
        check_reduction(reduction)
        engine_args(chunk_size, backend)
        tau = torch.tensor(float(temperature))
        if learnable:
            self.temperature = torch.nn.Parameter(tau)
        else:
            self.register_buffer("temperature", tau)
        self.clamp, self.divide_by = (float(lo), float(hi)), divide_by
        self.reduction, self.normalize = reduction, normalize
        self.chunk_size, self.backend = chunk_size, backend

    def forward(self, images: Tensor, texts: Tensor) -> Tensor:
        check_embeddings("images", images)
        with torch.no_grad():
            self.temperature.clamp_(*self.clamp)
        return one_to_k_contrastive(
            images,
            texts,
            temperature=self.temperature.to(images.dtype),
            divide_by=self.divide_by,
            reduction=self.reduction,
            normalize=self.normalize,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
