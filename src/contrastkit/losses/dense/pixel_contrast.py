"""Pixel-level InfoNCE with spatial positives (PixContrast, Xie et al. 2021,
arXiv:2011.10043): the positives of a query pixel are the key pixels of the same image whose
centres in the original image are close; the negatives are the other key pixels of that image
and, by default, every key pixel of the other images. On the engine (no ``NHW x NHW``
tensor): the batch-wide denominator in one sweep, the positives per block of whole images
from the pixel coordinates; exact under a process group."""

from __future__ import annotations

from typing import Optional, Union, cast

import torch
from torch import Tensor

from ..._validation import check_number, check_temperature
from ...engine import LSETerm, PairMask, RowSpec, RowStatistics, SoftTargets
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    kappa,
    local_contrast,
    objective_group,
    prepare,
    reduce,
    row_weight,
    run,
)
from ._geometry import PixelPairs, check_boxes, check_feature_map, pixel_rows
from ._multi import check_multi_positive

__all__ = ["pixel_contrast", "PixelContrast"]

NEGATIVES = ("batch", "view")
#: anchors (query pixels) per engine call of the per-image passes
BLOCK_PIXELS = 1024


@exact_objective
def pixel_contrast(
    query: Tensor,
    key: Tensor,
    query_boxes: Tensor,
    key_boxes: Tensor,
    *,
    temperature: Union[float, Tensor] = 0.3,
    pos_ratio: float = 0.7,
    negatives: str = "batch",
    multi_positive: str = "sum",
    normalize: bool = True,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Pixel-level InfoNCE with spatial positives; see :class:`PixelContrast`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    check_feature_map("query", query)
    check_feature_map("key", key, query, "query")
    n = query.shape[0]
    check_boxes("query_boxes", query_boxes, n, query)
    check_boxes("key_boxes", key_boxes, n, query)
    check_temperature("temperature", temperature)
    ratio = check_number("pos_ratio", pos_ratio, minimum=0.0)
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    form = check_multi_positive(multi_positive)
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool, got {normalize!r}")
    A, B = prepare(pixel_rows(query), normalize), prepare(pixel_rows(key), normalize)
    k = kappa(A, temperature, group=group)
    pairs = PixelPairs(query_boxes, key_boxes, query.shape[2:], key.shape[2:], ratio, A.dtype)
    # which anchors carry a term, and each image's share (a mean over its anchors)
    has_pos = pairs.counts() > 0
    per_image = torch.zeros(n, dtype=A.dtype, device=A.device).index_add_(
        0, pairs.q_img, has_pos.to(A.dtype)
    )
    images = int((per_image > 0).sum())
    share = has_pos.to(A.dtype) / per_image[pairs.q_img].clamp(min=1.0)
    w = share * row_weight(reduction, images, group=group)
    # every positive is in the anchor's image, hence on this rank: image blocks on the engine
    local = _image_blocks(A, B, k, pairs, form, negatives == "view", eng)
    local = torch.where(has_pos, local, torch.zeros_like(local))
    if negatives == "view":  # the whole objective is per image
        per_img = torch.zeros(n, dtype=A.dtype, device=A.device)
        per_img = per_img.index_add(0, pairs.q_img, share * local)
        return reduce(per_img, reduction, images, group=group)
    spec = RowSpec(
        terms=(LSETerm(),),
        row_fn=lambda st, sd: sd["w"] * (cast(Tensor, st.lse)[0] - sd["pos"]),
        row_side={"w": w, "pos": local},
    )
    out = run(A, B, spec, k, reduction, eng, group=group)
    if reduction != "none":
        return out
    return torch.zeros(n, dtype=out.dtype, device=out.device).index_add(0, pairs.q_img, out)


def _image_blocks(
    A: Tensor, B: Tensor, k: Tensor, pairs: PixelPairs, form: str, view: bool, eng: dict
) -> Tensor:
    """Per query pixel, from the pixels of its own image only (engine calls on blocks of whole
    images, about ``BLOCK_PIXELS`` anchors each, with the block's positive relation computed
    from the pixel centres: work O(N P_q P_k d), not O(N^2 P_q P_k d)): the positive term
    (``log sum_P e^u``, or ``mean_P u`` for ``form="mean"``), or with ``view`` the whole row
    term ``log sum_{image} e^u`` minus it."""
    pq, pk = pairs.qc.shape[1], pairs.kc.shape[1]
    step = max(1, BLOCK_PIXELS // max(pq, pk, 1))
    out = []
    for i0 in range(0, pairs.n, step):
        i1 = min(i0 + step, pairs.n)
        r, c = i0 * pq, i0 * pk

        # the block's pair relation from coordinates (bounded: BLOCK_PIXELS^2 booleans)
        pos = pairs.positive(r, i1 * pq, c, i1 * pk)
        terms = [LSETerm(exclude=PairMask(dense=~pos))]
        if view and i1 - i0 > 1:  # other images' pixels leave the denominator
            q_img, k_img = pairs.q_img[r : i1 * pq], pairs.k_img[c : i1 * pk]
            exclude = PairMask(row_labels=q_img, col_labels=k_img, labels="different")
            terms.append(LSETerm(exclude=exclude))
        elif view:
            terms.append(LSETerm())
        soft = None
        if form == "mean":
            p = pos.to(A.dtype)

            def targets(r0: int, r1: int, c0: int, c1: int, p: Tensor = p) -> Tensor:
                return p[r0:r1, c0:c1]

            soft = SoftTargets(targets)

        def row_fn(st: RowStatistics, sd: dict) -> Tensor:
            assert st.lse is not None
            pos = st.lse[0]
            if st.tgt is not None and st.mass is not None:
                pos = st.tgt / st.mass.clamp(min=1.0)
            return st.lse[1] - pos if st.lse.shape[0] > 1 else pos

        spec = RowSpec(terms=tuple(terms), soft_targets=soft, row_fn=row_fn)
        rows, _ = local_contrast(
            A[r : i1 * pq], B[c : i1 * pk], spec, k, reduce=False, group=None, **eng
        )
        out.append(rows)
    if not out:
        return A.new_zeros(0)
    return torch.cat(out)


class PixelContrast(Objective, functional=pixel_contrast):
    """PixContrast: InfoNCE between the pixels of two views, positives given by geometry.

    Every pixel of the query feature maps is an anchor; its candidates are key pixels. Mapped
    back to the original image through the crop boxes, a key pixel of the same image whose
    centre lies within ``pos_ratio`` bin diagonals of the anchor's is a positive (usually
    several per anchor); every other key pixel of that image is a negative, and with
    ``negatives="batch"`` (default) so is every key pixel of the other images. The positives
    are summed inside the log (the paper), or with ``multi_positive="mean"`` every positive
    gives its own term (SupCon's L_out); the two agree when an anchor has one positive.
    Each image's loss is the mean over its anchors with at least one positive; the loss is the
    mean over the images that have one. One direction: anchors from ``query``, candidates from
    ``key``; add the call with the roles swapped for the paper's symmetric loss.

    It runs on the engine without any ``NHW x NHW`` tensor. The denominator with
    ``negatives="batch"`` is one plain log-sum-exp over every key pixel (exact under a process
    group: every rank's key pixels are candidates). Positives never leave their image: the
    positive term (and with ``negatives="view"`` the whole loss) comes from engine calls on
    blocks of whole images (about 1,024 query pixels each), the block's positive relation
    computed from the pixel centres, so that part costs O(N (HW)^2 d) and one block's
    relation in memory, on each rank.

    With ``u_ij = cos(q_i, k_j) / tau``, centres ``c``, and the pair's larger bin diagonal
    ``D``::

        P(i) = {j in the same image : ||c_i - c_j|| / D < T}
        N(i) = {j in the same image, not in P(i)}  (+ every pixel of the other images)
        "sum":  l_i = -log sum_{P(i)} e^{u_ij} + log sum_{P(i) + N(i)} e^{u_ij}
        "mean": l_i = -mean_{j in P(i)} u_ij + log sum_{P(i) + N(i)} e^{u_ij}
        loss = mean over images (with a positive) of mean_{i : P(i) non-empty} l_i

    Args:
        temperature (float or Tensor): ``tau``, default 0.3 (the paper); a number or a 0-dim
            tensor (learnable).
        pos_ratio (float): ``T``, the distance threshold in bin diagonals, default 0.7.
        negatives (str): ``"batch"`` (default): the key pixels of every image are candidates;
            ``"view"``: only those of the anchor's own image (the paper's wording).
        multi_positive (str): ``"sum"`` (default, positives inside the log) or ``"mean"``.
        normalize (bool): cosine similarities (default ``True``).
        reduction (str): ``"mean"`` over images (default), ``"sum"`` or ``"none"`` (``(N,)``
            per image, 0 for an image without a positive).
        chunk_size (int, optional): engine tile size.
        backend (str): ``"auto"``, ``"dense"`` or ``"tiled"``.

    Inputs:
        - ``query``: ``(N, C, H, W)`` float; feature maps of the anchors' views.
        - ``key``: ``(N, C, H', W')`` float; feature maps of the other views (a momentum
          encoder's, detached by the caller, or the same encoder's).
        - ``query_boxes``, ``key_boxes``: ``(N, 4)`` real; each view's crop in the original
          image, ``(x0, y0, x1, y1)``; ``x0 > x1`` marks a horizontally flipped crop.
        - returns a scalar, or ``(N,)`` with ``reduction="none"``.

    Example::

        import torch
        from contrastkit.losses.dense import PixelContrast

        q, k = torch.randn(3, 8, 7, 7), torch.randn(3, 8, 7, 7)
        qb = torch.tensor([[0.0, 0.0, 0.6, 0.6], [0.1, 0.2, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]])
        kb = torch.tensor([[0.2, 0.2, 0.8, 0.8], [0.9, 0.1, 0.3, 0.7], [0.5, 0.5, 1.0, 1.0]])
        loss = PixelContrast(temperature=0.3)(q, k, qb, kb) + PixelContrast()(k, q, kb, qb)

    See also:
        :class:`PixPro` (the propagation consistency of the same paper), :class:`SupCon`
        (label positives), :class:`TemporalContrast` (positives by time offset).

    References:
        Xie, Lin, Zhang, Cao, Lin, Hu, "Propagate Yourself: Exploring Pixel-Level Consistency
        for Unsupervised Visual Representation Learning", CVPR 2021, arXiv:2011.10043.
    """
