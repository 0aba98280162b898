"""Collectives with autograd, the active process-group context, and a byte counter.

Nothing here runs unless a process group is active (see :func:`current`): with
``torch.distributed`` not initialised (or a world of one) every objective takes exactly the
single-process code path.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as _DIST
from torch import Tensor

GRADIENTS = ("ddp", "exact")
STRATEGIES = ("gather", "ring")

#: sentinel: "the default" (world group when initialised with world size > 1)
_DEFAULT = object()
_STATE: contextvars.ContextVar = contextvars.ContextVar("contrastkit_group", default=_DEFAULT)


#: modules whose objectives compute every batch-level quantity through the shared helpers of
#: ``losses._common`` (counts, temperatures, labels, weights) and are exact under a group; any
#: other engine-backed objective raises under a group instead of silently computing a
#: per-rank loss (objectives that do not use the engine compute per-rank losses, as before).
EXACT_MODULES = {
    "contrastkit.losses.info_nce",  # InfoNCE, symmetric InfoNCE, MNRL (CLIP calls info_nce)
    "contrastkit.losses.ntxent",
    "contrastkit.losses.dcl",  # DCL, DCLW
    "contrastkit.losses.supcon",
    "contrastkit.losses.siglip",
    "contrastkit.losses.debiased",  # Debiased InfoNCE, HCL
    "contrastkit.losses.cwcl",
}


def register_exact(module: str) -> None:
    """Declare that the objectives of ``module`` make every batch-level quantity global through
    the helpers of ``contrastkit.losses._common`` (``row_weight``, ``kappa``, ``global_rows``,
    ``gather_rows``, ``row_offset``, ``sum_across_ranks``, ``replicated``) and may run under a
    process group."""
    EXACT_MODULES.add(module)


def not_supported(what: str) -> ValueError:
    return ValueError(
        f"{what} is not supported under a torch.distributed process group yet, so the global "
        "loss cannot be computed exactly; compute a per-rank loss explicitly inside "
        "`with contrastkit.distributed.local():` (or gather the inputs yourself)"
    )


def _dist():
    return _DIST


@dataclass(frozen=True)
class Context:
    """The active group: ``world`` ranks, this process is ``rank``; ``scale`` multiplies the
    gradient that flows back into this rank's inputs (world size for ``"ddp"``, 1 for
    ``"exact"``)."""

    group: object
    world: int
    rank: int
    gradients: str
    strategy: str = "gather"

    @property
    def scale(self) -> float:
        return float(self.world) if self.gradients == "ddp" else 1.0


def make_context(group, gradients: str, strategy: str = "gather") -> Optional[Context]:
    if gradients not in GRADIENTS:
        raise ValueError(f"gradients must be one of {GRADIENTS}, got {gradients!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    dist = _dist()
    if group is None:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "a process group was given but torch.distributed is not initialised "
            "(call torch.distributed.init_process_group first)"
        )
    grp = dist.group.WORLD if group == "world" else group
    world = dist.get_world_size(grp)
    if world < 1:
        raise ValueError(f"this process is not a member of the given group {group!r}")
    return Context(grp, world, dist.get_rank(grp), gradients, strategy)


def current() -> Optional[Context]:
    """The active context: the innermost :func:`contrastkit.distributed.group` /
    :func:`~contrastkit.distributed.local` block, else the world group when
    ``torch.distributed`` is initialised with more than one rank, else ``None``."""
    state = _STATE.get()
    if state is not _DEFAULT:
        return state
    dist = _DIST
    if not (dist.is_available() and dist.is_initialized()):
        return None
    if dist.get_world_size() <= 1:
        return None
    return Context(dist.group.WORLD, dist.get_world_size(), dist.get_rank(), "ddp")


# ---------------------------------------------------------------------------------------------
# byte counter (ring-algorithm bytes sent by this rank; see docs/distributed.md)

_COUNTERS: list = []


class CommCounter:
    """Counts the bytes this rank sends in the collectives contrastkit issues, per kind.

    Bytes are those of the bandwidth-optimal ring algorithms (what NCCL and gloo use for
    large messages): all-gather and reduce-scatter of ``n`` bytes per rank send ``(W - 1) n``,
    all-reduce of ``n`` bytes sends ``2 (W - 1) n / W``; a ring step (``strategy="ring"``)
    sends its ``n`` bytes once.
    """

    def __init__(self):
        kinds = ("all_gather", "reduce_scatter", "all_reduce", "ring")
        self.bytes = dict.fromkeys(kinds, 0)
        self.calls = dict.fromkeys(kinds, 0)

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def __enter__(self):
        _COUNTERS.append(self)
        return self

    def __exit__(self, *exc):
        _COUNTERS.remove(self)
        return False


def _count(kind: str, nbytes: float):
    for c in _COUNTERS:
        c.bytes[kind] += int(round(nbytes))
        c.calls[kind] += 1


def _nbytes(x: Tensor) -> int:
    return x.numel() * x.element_size()


def _all_gather(ctx: Context, x: Tensor) -> Tensor:
    x = x.contiguous()
    out = x.new_empty((ctx.world * x.shape[0],) + tuple(x.shape[1:]))
    _count("all_gather", (ctx.world - 1) * _nbytes(x))
    dist = _dist()
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(out, x, group=ctx.group)
    return out


def _reduce_scatter(ctx: Context, x: Tensor) -> Tensor:
    x = x.contiguous()
    out = x.new_empty((x.shape[0] // ctx.world,) + tuple(x.shape[1:]))
    _count("reduce_scatter", (ctx.world - 1) * _nbytes(out))
    dist = _dist()
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    fn(out, x, group=ctx.group)
    return out


def _all_reduce(ctx: Context, x: Tensor, op=None) -> Tensor:
    dist = _dist()
    x = x.clone().contiguous()
    _count("all_reduce", 2 * (ctx.world - 1) * _nbytes(x) / ctx.world)
    dist.all_reduce(x, op=op if op is not None else dist.ReduceOp.SUM, group=ctx.group)
    return x


# ---------------------------------------------------------------------------------------------
# shape agreement: every rank learns every rank's shapes before any data moves

_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32]


def check_same(ctx: Context, **tensors: Tensor) -> None:
    """All-gather the shapes (and dtypes) of ``tensors``; raise the same ``ValueError`` on every
    rank when any rank differs (instead of a collective that hangs or fails obscurely)."""
    meta = []
    for x in tensors.values():
        shape = list(x.shape) + [-1] * (3 - x.dim())
        code = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else 99
        meta += [x.dim()] + shape[:3] + [code]
    ref = next(iter(tensors.values()))
    mine = torch.tensor(meta, dtype=torch.int64, device=ref.device)
    every = _all_gather(ctx, mine[None]).view(ctx.world, -1)
    if bool((every == every[0]).all()):
        return
    names, lines = list(tensors), []
    for r in range(ctx.world):
        row = every[r].tolist()
        parts = []
        for i, name in enumerate(names):
            s = row[5 * i + 1 : 5 * i + 1 + row[5 * i]]
            dt = _DTYPES[row[5 * i + 4]] if row[5 * i + 4] < len(_DTYPES) else "other"
            parts.append(f"{name} {tuple(s)} {dt}")
        lines.append(f"rank {r}: " + ", ".join(parts))
    raise ValueError(
        "every rank of the process group must pass inputs of the same shape and dtype "
        "(same batch size per rank and embedding dimension); got " + "; ".join(lines)
    )


# ---------------------------------------------------------------------------------------------
# autograd functions


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all-gather (rank-major). Backward: reduce-scatter (sum) of the gradient, so
    each rank receives the sum over ranks of the gradients with respect to its own rows."""

    @staticmethod
    def forward(ctx_, x, ctx: Context):
        ctx_.dctx = ctx
        return _all_gather(ctx, x.detach())

    @staticmethod
    def backward(ctx_, g):
        return _reduce_scatter(ctx_.dctx, g), None


class _ReplicatedGrad(torch.autograd.Function):
    """Identity forward on a tensor every rank holds a copy of (a temperature, a bias);
    backward all-reduces its gradient (divided by the output scale), so every copy receives
    the gradient of the global loss and the replicas stay equal."""

    @staticmethod
    def forward(ctx_, x, ctx: Context):
        ctx_.dctx = ctx
        return x.view_as(x)

    @staticmethod
    def backward(ctx_, g):
        c = ctx_.dctx
        out = _all_reduce(c, g)
        return (out / c.scale if c.scale != 1.0 else out), None


class _SumAcrossRanks(torch.autograd.Function):
    """Forward: all-reduce (sum). Backward: all-reduce (sum) of the gradient, for a quantity
    every rank's loss depends on (SupCon's class sums)."""

    @staticmethod
    def forward(ctx_, x, ctx: Context):
        ctx_.dctx = ctx
        return _all_reduce(ctx, x.detach())

    @staticmethod
    def backward(ctx_, g):
        return _all_reduce(ctx_.dctx, g), None


class _GlobalLoss(torch.autograd.Function):
    """Forward: the sum over ranks of the per-rank partial losses (the same value everywhere).
    Backward: the incoming gradient times ``scale`` into this rank's partial loss."""

    @staticmethod
    def forward(ctx_, x, ctx: Context):
        ctx_.scale = ctx.scale
        return _all_reduce(ctx, x.detach())

    @staticmethod
    def backward(ctx_, g):
        return g * ctx_.scale, None


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx_, x, scale: float):
        ctx_.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx_, g):
        return g * ctx_.scale, None


def gather(ctx: Context, x: Tensor, check: Optional[str] = None) -> Tensor:
    """Rank-major concatenation of every rank's ``x`` (gradients reduce-scattered back).

    ``check`` names ``x`` for the shape agreement check (skipped when ``None``)."""
    if check is not None:
        check_same(ctx, **{check: x})
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _all_gather(ctx, x.detach())
    return _GatherWithGrad.apply(x, ctx)


def replicated(ctx: Context, x: Tensor) -> Tensor:
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x
    return _ReplicatedGrad.apply(x, ctx)


def sum_across(ctx: Context, x: Tensor) -> Tensor:
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _all_reduce(ctx, x.detach())
    return _SumAcrossRanks.apply(x, ctx)


def global_loss(ctx: Context, x: Tensor) -> Tensor:
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _all_reduce(ctx, x.detach())
    return _GlobalLoss.apply(x, ctx)


def scale_grad(x: Tensor, scale: float) -> Tensor:
    if scale == 1.0 or not (x.requires_grad and torch.is_grad_enabled()):
        return x
    return _ScaleGrad.apply(x, scale)


def global_int(ctx: Context, n: int, device=None) -> int:
    t = torch.tensor([int(n)], dtype=torch.int64, device=device)
    return int(_all_reduce(ctx, t)[0])
