"""CSGCL team-up contrast: similarities shifted by community strength."""

from __future__ import annotations

from typing import Optional, cast

import torch
from torch import Tensor

from ..._validation import (
    check_temperature,
    check_tensor,
)
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    gather_rows,
    kappa,
    objective_group,
    partner_logits,
    row_weight,
    run,
    two_views,
)

__all__ = ["team_up", "TeamUp"]


@exact_objective
def team_up(
    h1: Tensor,
    h2: Tensor,
    strength: Tensor,
    gamma: float,
    *,
    temperature: float = 0.2,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """CSGCL team-up contrast of two views ``h1, h2`` (N, d) with node ``strength`` (N,) and
    the schedule's ``gamma``; see :class:`TeamUp`."""
    eng = engine_args(chunk_size, backend)
    group = objective_group()  # None without a process group
    check_temperature("temperature", temperature)
    Z, partner = two_views(h1, h2, normalize=True, names=("h1", "h2"), min_rows=1)
    N = h1.shape[0]
    check_tensor("strength", strength, kind="float", shape=(N,), ref=h1)
    cs = torch.cat([strength, strength]).to(Z.dtype).detach()
    k = kappa(Z, temperature, group=group)
    shift = gamma * cs / temperature
    # every rank's candidates' strengths (global columns); one constant over the global batch
    shift_all = gather_rows(shift, "strength", group=group)
    top = shift_all.max()
    col_w = torch.exp(shift_all - top)  # weights up to a constant factor, added back below
    w = row_weight(reduction, 2 * N, group=group)

    def weights(r0, r1, c0, c1):  # local rows, global columns
        return col_w[None, c0:c1].expand(r1 - r0, c1 - c0)

    weights.global_columns = True  # type: ignore[attr-defined]
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0), weights=weights),),
        row_fn=lambda st, sd: w * (cast(Tensor, st.lse)[0] + sd["const"] - sd["pos"] - sd["shift"]),
        row_side={
            "pos": partner_logits(Z, k),
            "shift": shift,
            "const": top.expand(2 * N),
        },
    )
    return run(Z, Z, spec, k, reduction, eng, group=group)


class TeamUp(Objective, functional=team_up):
    """CSGCL "team-up" contrast: GRACE's node contrast between two graph views, with every
    similarity raised by the strength of both nodes' communities, so that nodes of strong
    communities are pulled and pushed harder as training goes on (Chen et al., CSGCL).

    Anchors are both views' nodes (2N), candidates every other node of both views, the
    positive the same node in the other view::

        s'_ij = cos(h_i, h_j) + gamma (cs_i + cs_j)
        l_i   = -s'_i,pos / temperature + log sum_{j != i} exp(s'_ij / temperature)
        loss  = mean over the 2N anchors

    ``cs`` is the node strength (:func:`contrastkit.negatives.community_strength` read at the
    nodes' communities); ``gamma`` follows the schedule
    :func:`contrastkit.negatives.team_up_gamma` and is an input of each call; ``gamma = 0`` is
    GRACE (= NT-Xent). Exact under a process group (every rank's nodes are candidates, their
    strengths gathered).

    Args:
        temperature (float, default 0.2): tau.
        reduction (str, default "mean"): "mean" | "sum" | "none" (2N per-anchor terms).
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``h1``, ``h2`` (N, d) float: the two views' node embeddings; row ``i`` of each is a
          positive pair, every other node of both views a negative.
        - ``strength`` (N,) float: community strength of each node.
        - ``gamma`` (float): the team-up coefficient of this epoch.

    Example::

        import torch
        import contrastkit as ck

        h1, h2 = torch.randn(8, 16), torch.randn(8, 16)
        strength = torch.rand(8)
        loss = ck.TeamUp(temperature=0.2)(h1, h2, strength, 0.5)

    See also:
        :class:`CommunityContrast`, :class:`NTXent`.

    References:
        Chen et al., "CSGCL: Community-Strength-Enhanced Graph Contrastive Learning", IJCAI
        2023, arXiv:2305.04658 (github.com/HanChen-HUST/CSGCL).
    """


#: the name published before the naming rule
team_up_loss = team_up
