"""Heterogeneous ensemble teacher scores: each teacher's scores min-max normalised per query,
averaged over the teachers and scaled (a plain function that builds teacher labels for
:func:`kl_distillation` or :func:`margin_mse`; not an objective)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from ..._validation import check_number, check_tensor

__all__ = ["ensemble_teacher_scores"]


def ensemble_teacher_scores(
    scores: Sequence[Tensor], *, scale: float = 30.0, eps: float = 1e-6
) -> Tensor:
    """One teacher score per candidate from several heterogeneous teachers.

    Dense and sparse bi-encoders (or cross-encoders) score on different scales: cosines in
    [-1, 1], sparse dot products in the tens, logits. Each teacher's row of scores over a
    query's candidates is min-max normalised to [0, 1), the teachers are averaged with equal
    weight and the result is multiplied by ``scale``, so every query's targets span about
    ``[0, scale]`` whatever the teachers::

        tn^e_ij = (t^e_ij - min_j t^e_ij) / (max_j t^e_ij - min_j t^e_ij + eps)
        t_ij    = scale * mean_e tn^e_ij

    Use the result as ``teacher_scores`` of :func:`kl_distillation` (temperature 1, no
    ``T^2`` scaling: ``temperature_squared=False``) or as ``teacher`` of :func:`margin_mse`.
    The rows are a query's listed candidates ``(N, K)`` or, in-batch, all gathered candidates
    ``(N, M)``; the normalisation is per row. Invariant to a positive affine rescaling of any
    teacher's scores (up to ``eps``). No gradient (teachers are labels).

    Args:
        scores: one ``(N, K)`` real tensor per teacher (same shape, dtype and device).
        scale: the multiplier (default 30, the reference training code's ``score_scale``).
        eps: added to each row's range (default 1e-6; a constant row maps to 0).

    Returns:
        ``(N, K)`` detached ensemble scores.

    References:
        Geng, Ru, Yang, "Towards Competitive Search Relevance For Inference-Free Learned Sparse
        Retrievers", arXiv:2411.04403.
    """
    if isinstance(scores, Tensor) or not isinstance(scores, (list, tuple)) or not scores:
        raise ValueError(
            "scores must be a non-empty list or tuple of (N, K) tensors, one per teacher, got "
            f"{type(scores).__name__}"
        )
    scale = check_number("scale", scale)
    eps = check_number("eps", eps)
    if scale <= 0 or eps <= 0:
        raise ValueError(f"scale and eps must be > 0, got scale={scale}, eps={eps}")
    ref = scores[0]
    total = None
    for e, t in enumerate(scores):
        name = f"scores[{e}]"
        check_tensor(name, t, ndim=2, kind="float", ref=ref if isinstance(ref, Tensor) else None)
        if t.shape != ref.shape or t.dtype != ref.dtype:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} and dtype {t.dtype}, but scores[0] has "
                f"{tuple(ref.shape)} and {ref.dtype}: every teacher scores the same candidates"
            )
        if t.shape[1] == 0:
            raise ValueError(f"{name} has no candidates, shape {tuple(t.shape)}")
        t = t.detach()
        lo = t.min(dim=1, keepdim=True).values
        hi = t.max(dim=1, keepdim=True).values
        tn = (t - lo) / (hi - lo + eps)
        total = tn if total is None else total + tn
    assert total is not None
    return total * (scale / len(scores))
