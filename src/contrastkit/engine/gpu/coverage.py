"""Which specs the Triton kernels cover, and soft targets they can use (torch only, no Triton).

The kernels compute the canonical softmax cross-entropy rows: one plain log-sum-exp
(``r = 1``, no per-pair weights) with exclusions evaluated in the tile (self at an offset, up to
``MAX_INDEX`` indices per row, equal or different labels), optionally its column log-sum-exps
(symmetric losses), and soft targets given as embeddings (:class:`EmbeddingSoftTargets`, whose
linear terms are closed-form). Everything else (several terms, ``r != 1``, weighted negatives,
SigLIP's softplus term, dense masks, opaque per-tile target functions, fp64) runs on the torch
tiled path.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Optional

import torch
from torch import Tensor

from ..spec import RowSpec, SoftTargets

__all__ = ["EmbeddingSoftTargets", "MAX_INDEX", "available", "covers", "enabled"]

#: most excluded indices per row the kernels compare in the tile (``PairMask.index`` (N, P))
MAX_INDEX = 8
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class EmbeddingSoftTargets(SoftTargets):
    """Soft targets from a second pair of embeddings: ``p_ij = alpha <t_i, s_j> + beta``.

    CWCL's ``W_ij = (<t_i, t_j> + 1) / 2`` is ``EmbeddingSoftTargets(t, t, 0.5, 0.5)``. The
    per-tile ``fn`` (torch paths) is kept; the GPU backend uses the closed forms
    ``tgt_i = kappa_i (alpha t_i^T (S^T B) a_i + beta <a_i, sum_j b_j>)`` and
    ``mass_i = alpha <t_i, sum_j s_j> + beta M`` (and the column twins), which cost
    ``O((N + M) d^2)`` instead of a sweep. ``rows`` (N, e) and ``cols`` (M, e) get no gradient.
    ``transposed``: as :class:`~contrastkit.engine.SoftTargets` (a per-tile function of the
    transposed problem, for ``contrastkit.distributed``).
    """

    # set in __init__ (frozen: through object.__setattr__); declared here for the type checker
    rows: Tensor
    cols: Tensor
    alpha: float
    beta: float

    def __init__(
        self,
        rows: Tensor,
        cols: Tensor,
        alpha: float = 1.0,
        beta: float = 0.0,
        transposed=None,
    ):
        if rows.dim() != 2 or cols.dim() != 2 or rows.shape[1] != cols.shape[1]:
            raise ValueError(
                "rows and cols must be (N, e) and (M, e) embeddings, got shapes "
                f"{tuple(rows.shape)} and {tuple(cols.shape)}"
            )
        rows, cols = rows.detach(), cols.detach()
        alpha, beta = float(alpha), float(beta)

        def fn(r0: int, r1: int, c0: int, c1: int) -> Tensor:
            return (rows[r0:r1] @ cols[c0:c1].T) * alpha + beta

        super().__init__(fn, transposed)
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "cols", cols)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)


def available() -> bool:
    """Triton is importable (the kernels module is imported only then)."""
    return importlib.util.find_spec("triton") is not None


def enabled() -> bool:
    """``CONTRASTKIT_TRITON=0`` keeps ``backend="auto"`` on the torch path on GPUs too."""
    return os.environ.get("CONTRASTKIT_TRITON", "1") != "0" and available()


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def covers(
    spec: RowSpec, anchors: Tensor, candidates: Tensor, kappa: Tensor
) -> tuple[bool, Optional[str]]:
    """``(True, None)`` if the Triton kernels compute this problem, else ``(False, reason)``.

    Tensors must be CUDA tensors (or any device under ``TRITON_INTERPRET=1``).
    """
    if len(spec.terms) != 1:
        return False, f"{len(spec.terms)} log-sum-exp terms (kernels: exactly 1)"
    term = spec.terms[0]
    if term.r != 1.0:
        return False, f"term with r = {term.r} (kernels: r = 1)"
    if term.weights is not None:
        return False, "per-pair weights"
    ex = term.exclude
    if ex.dense is not None:
        return False, "a dense pair mask"
    if ex.index is not None:
        if ex.index.dim() not in (1, 2) or ex.index.shape[0] != anchors.shape[0]:
            return False, f"index exclusions of shape {tuple(ex.index.shape)}"
        if ex.index.dim() == 2 and ex.index.shape[1] > MAX_INDEX:
            return False, f"{ex.index.shape[1]} excluded indices per row (max {MAX_INDEX})"
    if ex.labels is not None:
        if ex.labels not in ("same", "different"):
            return False, f"labels={ex.labels!r}"
        for lab in (ex.row_labels, ex.col_labels):
            if lab is None or lab.is_floating_point() or lab.dim() != 1:
                return False, "labels must be two 1-D integer tensors"
    if spec.softplus_bias is not None:
        return False, "an elementwise softplus term (SigLIP)"
    if getattr(spec, "moment", False):
        return False, "a first-moment statistic"
    if getattr(spec, "row_group", 1) != 1:
        return False, "row groups"
    st = spec.soft_targets
    if st is not None and not isinstance(st, EmbeddingSoftTargets):
        return False, "soft targets given only as a per-tile function"
    if anchors.dim() != 2 or candidates.dim() != 2 or anchors.shape[1] != candidates.shape[1]:
        return False, "anchors and candidates must be (N, d) and (M, d)"
    if anchors.dtype not in DTYPES or candidates.dtype != anchors.dtype:
        return False, f"dtypes {anchors.dtype}/{candidates.dtype} (kernels: fp16, bf16, fp32)"
    if kappa.dim() > 1 or (kappa.dim() == 1 and kappa.shape[0] != anchors.shape[0]):
        return False, f"kappa of shape {tuple(kappa.shape)}"
    if anchors.shape[0] == 0 or candidates.shape[0] == 0:
        return False, "empty inputs"
    if not _interpreting() and not (anchors.is_cuda and candidates.is_cuda):
        return False, "tensors not on a CUDA device (and TRITON_INTERPRET is not set)"
    return True, None
