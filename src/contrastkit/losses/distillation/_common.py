"""Helpers the distillation objectives share: the listed-candidate student scores and the
teacher-tensor checks."""

from __future__ import annotations

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_tensor
from ...objective import prepare


def listed_scores(query: Tensor, candidates: Tensor, normalize: bool) -> Tensor:
    """Student scores ``s_ik = <query_i, candidates_ik>`` (cosine when ``normalize``), ``(N, K)``
    in the compute dtype (fp32 for fp16/bf16 inputs); at least 2 candidates per query."""
    check_embeddings("query", query)
    check_embeddings("candidates", candidates, ndim=3)
    check_compatible("query", query, "candidates", candidates, same_rows=True)
    if candidates.shape[1] < 2:
        raise ValueError(
            "candidates needs at least 2 candidates per query (the positive and a negative), "
            f"got shape {tuple(candidates.shape)}"
        )
    q, c = prepare(query, normalize), prepare(candidates, normalize)
    return torch.einsum("nd,nkd->nk", q, c)


def teacher_tensor(name: str, t, shapes: tuple, ref: Tensor, inf_ok: bool = False) -> Tensor:
    """A real teacher tensor of one of ``shapes``, on ``ref``'s device, detached and cast to
    ``ref``'s dtype; ``inf_ok``: -inf entries (padding) are allowed, NaN and +inf never."""
    check_tensor(name, t, kind="real", min_rows=0, allow_nonfinite="inf" if inf_ok else "")
    if tuple(t.shape) not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but the embeddings are on {ref.device}")
    t = t.detach().to(ref.dtype)
    if inf_ok and bool(torch.isposinf(t).any()):
        raise ValueError(f"{name} contains +inf values (shape {tuple(t.shape)}); only -inf pads")
    return t
