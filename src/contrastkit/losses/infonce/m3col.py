"""M3CoL mixup contrastive loss: soft targets of mixed pairs on the engine (Kumar, Singhal et al.,
TMLR 2025, arXiv:2409.17777; official code RaghavSinghal10/M3CoL, ``model/utils.py``
``soft_clip_loss``).

The mixing itself (``x~ = beta x + (1 - beta) x[perm]``) is
:class:`contrastkit.positives.MultimodalMixup`; this module is the loss of the mixed batch.

Under a process group the loss is that of the global batch: ``perm`` gives each of this rank's
rows its partner as a *global* row index (a permutation of the global batch, sharded by rows like
every per-row input), the partners' ``y`` rows are gathered, and the soft targets that other
ranks' mixed rows put on this rank's columns are gathered with them (one value per row).
"""

from __future__ import annotations

from typing import Optional, cast

import torch
from torch import Tensor

from ..._validation import (
    check_compatible,
    check_embeddings,
    check_index,
    check_temperature,
    check_tensor,
)
from ...engine import RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    gather_rows,
    kappa,
    objective_group,
    prepare,
    row_offset,
    row_weight,
    run,
)

__all__ = ["mixup_contrastive", "MixupContrastive", "mixup_contrastive_loss"]


@exact_objective
def mixup_contrastive(
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
    """M3CoL's bidirectional soft-target InfoNCE of a mixed batch; see
    :class:`MixupContrastive`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    check_temperature("temperature", temperature)
    check_embeddings("x_mixed", x_mixed)
    check_embeddings("y", y)
    check_compatible("x_mixed", x_mixed, "y", y, same_rows=True)
    B = x_mixed.shape[0]
    B_all = B * (1 if group is None else group.world)  # rows of the global batch
    check_index("perm", perm, B_all, shape=(B,), ref=x_mixed)
    check_tensor("mix", mix, kind="float", shape=(B,), ref=x_mixed)
    X, Y = prepare(x_mixed, True), prepare(y, True)
    k = kappa(X, temperature, group=group)
    mix = mix.to(X.dtype).detach()
    diag = mix.clone()
    off = 1 - mix
    start = row_offset(B, group=group)  # global index of this rank's first row
    selfp = perm == torch.arange(start, start + B, device=perm.device)
    if official_self_pair:
        diag = torch.where(selfp, 1 - mix, diag)
        off = torch.where(selfp, torch.zeros_like(off), off)
    else:  # P_ii = beta + (1 - beta) = 1
        diag = torch.where(selfp, torch.ones_like(diag), diag)
        off = torch.where(selfp, torch.zeros_like(off), off)
    w = row_weight(reduction, B, group=group) / 2
    u_diag = (X * Y).sum(-1) * k
    Y_all = gather_rows(Y, "y", group=group)  # the partners y_perm(i) live on any rank
    u_off = (X * Y_all[perm]).sum(-1) * k  # u_i,perm(i)
    row_tgt = diag * u_diag + off * u_off
    row_mass = diag + off
    # column j gets P_ij = 1 - beta_i from every row i with perm(i) = j, on any rank
    pair = gather_rows(torch.stack([off * u_off, off], 1), "mix", group=group)
    perm_all = gather_rows(perm, "perm", group=group)
    into = pair.new_zeros(B_all, 2).index_add(0, perm_all, pair)[start : start + B]
    col_tgt = diag * u_diag + into[:, 0]
    col_mass = diag + into[:, 1]
    spec = RowSpec(
        row_fn=lambda st, sd: w * (sd["mass"] * cast(Tensor, st.lse)[0] - sd["tgt"]),
        row_side={"mass": row_mass, "tgt": row_tgt},
        columns=True,
        col_fn=lambda st, sd: w * (sd["mass"] * st.lse - sd["tgt"]),
        col_side={"mass": col_mass, "tgt": col_tgt},
    )
    return run(X, Y, spec, k, reduction, eng, group=group)


class MixupContrastive(Objective, functional=mixup_contrastive):
    """M3CoL's mixup contrastive loss: a batch of one modality, mixed with a permutation of
    itself, is contrasted against the other modality with soft targets that share each mixed
    sample's credit between its two sources.

    Mixed sample ``i`` is ``beta_i x_i + (1 - beta_i) x_perm(i)``; its target distribution over
    the other modality puts ``beta_i`` on ``y_i`` and ``1 - beta_i`` on ``y_perm(i)``. The loss
    averages the row (mixed to ``y``) and column (``y`` to mixed) soft cross-entropies, on the
    tiled engine (the two non-zero targets per row are O(N d) side inputs). Inputs are always
    L2-normalised. Official quirk: when ``perm(i) = i`` the official code overwrites ``P_ii``
    with ``1 - beta_i``; here ``P_ii = 1`` (``official_self_pair=True`` reproduces the code).
    Exact under a process group (either strategy): the loss of the global batch, with
    ``perm`` a permutation of the global batch given by rows (each rank passes its rows'
    partners as global row indices, and its rows' ``mix``); the partners' ``y`` rows and the
    targets other ranks' rows put on this rank's columns are gathered: ``2 (W - 1) B d``
    elements per step more than CLIP (``y`` all-gathered, its gradient reduce-scattered) plus
    ``5 (W - 1) B`` small values. The official code computes the loss per device on its local
    batch (``perm`` local); ``contrastkit.distributed.local()`` gives that.

    Mixing and loss in two lines (M3CoL adds ``loss(x mixed vs y) + loss(y mixed vs x)`` times
    ``lambda_mix = 0.1`` to its classification loss)::

        x_mixed, perm, mix = MultimodalMixup().mix(x, generator=g)
        loss = MixupContrastive()(x_mixed, y, perm, mix)

    Formula::

        P_ii = beta_i,  P_i,perm(i) = 1 - beta_i,   u_ij = cos(x~_i, y_j) / tau
        loss = 1/2 [ mean_i CE(P_i., softmax_j u_i.) + mean_j CE(P_.j, softmax_i u_.j) ]

    Args:
        temperature (float, default 0.1): tau, as the paper.
        official_self_pair (bool, default False): reproduce the official ``perm(i) = i`` quirk.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per sample, its
            row and column terms added, each weighted 1/2).
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``x_mixed``: (B, d) float; the mixed modality.
        - ``y``: (B, d) float; the other modality, ``y_i`` pairs with ``x_i``.
        - ``perm``: (B,) long; the mixing permutation (under a process group: this rank's
          rows' partners, as global row indices).
        - ``mix``: (B,) float; ``beta_i`` (1 for an unmixed sample); no gradient.
        - returns a scalar, or (B,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck
        from contrastkit.positives import MultimodalMixup

        x, y = torch.randn(8, 16), torch.randn(8, 16)
        g = torch.Generator().manual_seed(0)
        x_mixed, perm, mix = MultimodalMixup().mix(x, generator=g)
        loss = ck.MixupContrastive(temperature=0.1)(x_mixed, y, perm, mix)

    See also:
        :class:`CLIP` (the same loss with one-hot targets), :class:`CWCL` (soft targets from a
        frozen modality), ``contrastkit.positives.MultimodalMixup`` (the mixing).
        ``mixup_contrastive_loss`` is the name earlier releases used (an alias).

    References:
        Kumar, Singhal, Kulkarni, Mehta, Jadhav, "Harnessing Shared Relations via Multimodal
        Mixup Contrastive Learning for Multimodal Classification" (M3CoL), TMLR 2025,
        arXiv:2409.17777. Official code: github.com/RaghavSinghal10/M3CoL.
    """


#: the name earlier releases published
mixup_contrastive_loss = mixup_contrastive
