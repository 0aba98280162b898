"""Exact contrastive losses over the global batch of a ``torch.distributed`` process group.

The engine-backed objectives (InfoNCE, symmetric InfoNCE / CLIP, MNRL, NT-Xent, DCL, DCLW,
SupCon, SigLIP, CWCL, Debiased InfoNCE, HCL) compute, under a process group, the loss of the
rank-major concatenation of every rank's batch, exactly: each rank keeps its anchors, the
candidates are all-gathered without gradients and their gradients reduce-scattered back (or
passed around a ring, ``strategy="ring"``); the engine tiles each rank's rows, so no rank ever
holds the global similarity matrix. Other engine-backed objectives raise a ``ValueError`` under a
group (see ``exact_objective``).

Which group (see docs/distributed.md):

* default: the world group when ``torch.distributed`` is initialised with world size > 1;
* ``with group(pg, gradients=...):`` another group or gradient convention;
* ``with local():`` opt out: every rank computes the loss of its own batch, as before.

Conventions: the loss is the global value (``reduction="mean"``: the mean over the global
batch), the same on every rank. ``gradients="ddp"`` (default) gives every rank's inputs
``world_size`` times their exact gradient, so DDP's averaging over ranks yields the gradient of
the single-process loss; ``gradients="exact"`` gives every rank the exact gradient of the global
loss with respect to its own inputs. A shared temperature / scale / bias (a 0-dim tensor every
rank holds) always receives the exact gradient of the global loss, the same on every rank.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor

from . import _ops
from ._ops import (
    GRADIENTS,
    STRATEGIES,
    CommCounter,
    Context,
    current,
    exact_objective,
)

__all__ = [
    "GRADIENTS",
    "STRATEGIES",
    "CommCounter",
    "Context",
    "DistributedLoss",
    "all_gather_with_grad",
    "current",
    "group",
    "local",
    "exact_objective",
]


@contextlib.contextmanager
def group(pg="world", gradients: str = "ddp", strategy: str = "gather"):
    """Compute every objective called inside the block over the global batch of ``pg``.

    ``pg``: a process group, ``"world"`` (the default group), or ``None`` (local losses).
    ``gradients``: ``"ddp"`` (inputs receive ``world_size`` x their gradient, to be averaged by
    DDP) or ``"exact"`` (the exact gradient of the global loss).
    ``strategy``: ``"gather"`` (all-gather the candidates, reduce-scatter their gradients;
    fewest bytes) or ``"ring"`` (shards passed around a ring as in Inf-CL; candidate memory
    O(M d) per rank instead of O(W M d), about 1.5x the bytes; one-sided and symmetric
    objectives without label or dense masks).
    """
    ctx = _ops.make_context(pg, gradients, strategy)
    token = _ops._STATE.set(ctx)
    try:
        yield ctx
    finally:
        _ops._STATE.reset(token)


def local():
    """Opt out: objectives inside the block see only this rank's batch (no communication)."""
    return group(None)


def all_gather_with_grad(x: Tensor, pg="world") -> Tensor:
    """Rank-major concatenation ``(world * N, ...)`` of every rank's ``x`` with gradients.

    Backward reduce-scatters (sums over ranks) the gradient, so rank ``r``'s ``x`` receives
    the sum over all ranks' losses of their gradients with respect to it. As in open_clip
    (``gather_with_grad=True``): compute each rank's loss on its *local* rows against the
    gathered columns, averaged over the local rows (open_clip's ``local_loss=True``); the sum of
    those per-rank losses is ``world_size`` times the global mean, so every rank's gradient is
    ``world_size`` times the exact one and DDP's average equals the single-process gradient.
    Computing the full global loss on every rank (``local_loss=False``) with this function
    would instead count every term ``world_size`` times. The shapes are checked first: a rank
    with a different shape raises a ``ValueError`` on every rank.
    """
    ctx = _ops.make_context(pg, "exact")
    if ctx is None:
        return x
    return _ops.gather(ctx, x, check="x")


class DistributedLoss(torch.nn.Module):
    """Wrap any contrastkit loss module: its ``forward`` runs inside :func:`group`.

    ``pg=None`` wraps it in :func:`local` instead (per-rank loss).
    """

    def __init__(
        self, loss: torch.nn.Module, pg="world", gradients: str = "ddp", strategy: str = "gather"
    ):
        super().__init__()
        if gradients not in GRADIENTS:
            raise ValueError(f"gradients must be one of {GRADIENTS}, got {gradients!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.loss, self.pg, self.gradients, self.strategy = loss, pg, gradients, strategy

    def forward(self, *args, **kwargs):
        with group(self.pg, self.gradients, self.strategy):
            return self.loss(*args, **kwargs)


def world_info() -> Optional[tuple]:
    """``(rank, world_size)`` of the active group, or ``None`` when objectives run locally."""
    ctx = current()
    return None if ctx is None else (ctx.rank, ctx.world)
