"""Temporal contrast: frames of two views of N videos; positives are the frames of the same
video within a time offset, temporally misaligned frames of the same video are negatives (with
an optional ignored band in between), other videos' frames too unless switched off. Positives
are listed per frame (O(N T P d)); the denominator runs on the engine with index and label
masks; exact under a process group."""

from __future__ import annotations

import math
from typing import Optional, Union, cast

import torch
from torch import Tensor

from ..._validation import check_temperature, check_tensor
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    kappa,
    objective_group,
    prepare,
    row_offset,
    row_weight,
    run,
)
from ._multi import check_multi_positive, listed_positive_term

__all__ = ["temporal_contrast", "TemporalContrast"]


def _window(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _offsets_index(n: int, t: int, offsets: Tensor, device) -> Tensor:
    """Columns ``(2 N T, 2 len(offsets))`` of frame ``(view b, video v, time s + o)`` for every
    row ``(a, v, s)``, both views ``b``, every offset ``o``; -1 outside ``[0, T)`` and for the
    row itself."""
    r = torch.arange(2 * n * t, device=device)
    a, v, s = r // (n * t), (r // t) % n, r % t
    tt = s[:, None, None] + offsets[None, None, :]  # (R, 1, K)
    b = torch.arange(2, device=device)[None, :, None]  # (1, 2, 1)
    col = b * (n * t) + v[:, None, None] * t + tt
    bad = (tt < 0) | (tt >= t) | ((b == a[:, None, None]) & (tt == s[:, None, None]))
    return col.masked_fill(bad, -1).reshape(r.shape[0], 2 * offsets.shape[0])


@exact_objective
def temporal_contrast(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: Union[float, Tensor] = 0.1,
    positive_window: int = 0,
    negative_gap: Optional[Union[int, float]] = None,
    other_videos: bool = True,
    multi_positive: str = "sum",
    normalize: bool = True,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Temporal contrast with time-offset positives; see :class:`TemporalContrast`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    for name, z in (("z1", z1), ("z2", z2)):
        check_tensor(name, z, ndim=3, kind="float", min_rows=0)
        if z.shape[1] == 0 or z.shape[2] == 0:
            raise ValueError(f"{name} must have T, d >= 1, got shape {tuple(z.shape)}")
    if z2.shape != z1.shape:
        raise ValueError(f"z2 must have the shape of z1 {tuple(z1.shape)}, got {tuple(z2.shape)}")
    if z2.dtype != z1.dtype or z2.device != z1.device:
        raise ValueError(f"z2 ({z2.dtype}, {z2.device}) must match z1 ({z1.dtype}, {z1.device})")
    check_temperature("temperature", temperature)
    delta = _window("positive_window", positive_window, 0)
    if negative_gap is None:
        gap = delta + 1
    elif isinstance(negative_gap, float) and math.isinf(negative_gap) and negative_gap > 0:
        gap = None  # every same-video frame that is not a positive is ignored
    else:
        gap = _window("negative_gap", negative_gap, delta + 1)
    if not isinstance(other_videos, bool):
        raise ValueError(f"other_videos must be a bool, got {other_videos!r}")
    form = check_multi_positive(multi_positive)
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool, got {normalize!r}")
    n, t, d = z1.shape
    Z = prepare(torch.cat([z1.reshape(n * t, d), z2.reshape(n * t, d)]), normalize)
    k = kappa(Z, temperature, group=group)
    dev = Z.device
    pos_off = torch.arange(-delta, delta + 1, device=dev)
    pos_idx = _offsets_index(n, t, pos_off, dev)
    pos = listed_positive_term(Z, Z, k, pos_idx, form)  # every frame has its other view
    last = t - 1 if gap is None else min(gap - 1, t - 1)
    ign = torch.arange(delta + 1, last + 1, device=dev)
    index = None
    if ign.numel():
        index = _offsets_index(n, t, torch.cat([-ign.flip(0), ign]), dev)
    exclude = PairMask(self_offset=0, index=index)
    if not other_videos:  # other videos' frames leave the denominator
        vid = (torch.arange(2 * n * t, device=dev) // t) % n + row_offset(n, group=group)
        exclude = PairMask(
            self_offset=0, index=index, row_labels=vid, col_labels=vid, labels="different"
        )
    w = row_weight(reduction, 2 * n * t, group=group)
    spec = RowSpec(
        terms=(LSETerm(exclude=exclude),),
        row_fn=lambda st, sd: w * (cast(Tensor, st.lse)[0] - sd["pos"]),
        row_side={"pos": pos},
    )
    out = run(Z, Z, spec, k, reduction, eng, group=group)
    return out if reduction != "none" else out.reshape(2, n, t)


class TemporalContrast(Objective, functional=temporal_contrast):
    """Temporal contrast: frames close in time are positives, misaligned frames negatives.

    Two views (augmentations) of N videos of T frames give 2NT frame embeddings, each an
    anchor. A frame's positives are the frames of the same video, in either view, at most
    ``positive_window`` (delta) steps away (always at least the same time step of the other
    view); the frames of the same video at least ``negative_gap`` (Delta, default delta + 1)
    steps away are hard negatives (temporally misaligned), those in between are ignored (left
    out of the denominator), and with ``other_videos=True`` (default) every frame of the other
    videos is a negative. The frame itself is left out. Positives are summed inside the log
    (``multi_positive="sum"``) or averaged as per-positive terms (``"mean"``, SupCon's L_out).

    With one frame per video and delta = 0 this is NT-Xent; ``negative_gap=float("inf")``
    ignores every non-positive frame of the same video; ``other_videos=False`` with delta = 0
    contrasts each frame only against the misaligned frames of its own clip (the event
    contrastive loss as described by EventTransAct; no official code). Positives are listed
    (at most ``2 (2 delta + 1) - 1`` per frame, O(N T delta d)); the denominator runs on the
    engine, the ignored band as an index mask and "same video only" as a label mask, never an
    ``NT x NT`` matrix. Exact under a process group (every rank's frames are candidates).

    With ``u = cos / tau`` over frames ``(v, s)`` of both views::

        P(v, s) = {(v, s') in either view : |s - s'| <= delta} minus the frame itself
        I(v, s) = {(v, s') : delta < |s - s'| < Delta}                    (ignored)
        D(v, s) = every frame but itself and I(v, s) (only video v if not other_videos)
        "sum":  l = -log sum_{P} e^u + log sum_{D} e^u
        "mean": l = -mean_{P} u + log sum_{D} e^u
        loss = mean over the 2 N T frames

    Args:
        temperature (float or Tensor): ``tau``, default 0.1; a number or a 0-dim tensor.
        positive_window (int): delta, default 0 (the same time step of the other view).
        negative_gap (int or inf, optional): Delta > delta; ``None`` (default): delta + 1 (no
            ignored band); ``float("inf")``: no same-video negatives.
        other_videos (bool): the other videos' frames are negatives (default ``True``).
        multi_positive (str): ``"sum"`` (default) or ``"mean"``.
        normalize (bool): cosine similarities (default ``True``).
        reduction (str): ``"mean"`` over frames (default), ``"sum"`` or ``"none"``
            (``(2, N, T)``: view, video, time).
        chunk_size (int, optional): engine tile size.
        backend (str): ``"auto"``, ``"dense"`` or ``"tiled"``.

    Inputs:
        - ``z1``: ``(N, T, d)`` float; frame embeddings of view 1 (video, time, feature).
        - ``z2``: ``(N, T, d)`` float; view 2 of the same frames.
        - returns a scalar, or ``(2, N, T)`` with ``reduction="none"``.

    Example::

        import torch
        from contrastkit.losses.dense import TemporalContrast

        z1, z2 = torch.randn(4, 6, 16), torch.randn(4, 6, 16)
        loss = TemporalContrast(positive_window=1, negative_gap=3)(z1, z2)

    See also:
        :class:`NTXent` (one frame per video), :class:`PixelContrast` (spatial positives),
        :class:`SupCon` (positives by label).

    References:
        Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of
        Visual Representations", arXiv:2002.05709 (the NT-Xent special case);
        Misra, Saran, Lee, Langford et al., "Towards Principled Representation Learning from
        Videos for Reinforcement Learning", arXiv:2403.13765 (temporal contrastive learning
        with offset positives); EventTransAct, arXiv:2308.13004 (misaligned frames as
        negatives).
    """
