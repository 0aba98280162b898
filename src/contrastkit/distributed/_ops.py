"""Collectives with autograd, the active process-group context, and a byte counter.

Nothing here runs unless a process group is active (see :func:`current`): with
``torch.distributed`` not initialised (or a world of one) every objective takes exactly the
single-process code path.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import struct
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
@dataclass(frozen=True)
class Call:
    """One call of an objective declared exact under a process group: its name and the
    arguments it was called with (defaults applied)."""

    name: str
    options: dict


_CALL: contextvars.ContextVar = contextvars.ContextVar("contrastkit_objective", default=None)


def active_objective() -> Optional[Call]:
    """The innermost running call of an objective declared with :func:`exact_objective`."""
    return _CALL.get()


def exact_objective(fn):
    """Declare an objective exact under a process group.

    Use it on an objective whose every batch-level quantity goes through the helpers of
    ``contrastkit.objective`` (``row_weight``, ``kappa``, ``global_rows``, ``gather_rows``,
    ``row_offset``, ``sum_across_ranks``, ``replicated``, ``global_total``). Under an active
    group the call is recorded (its name and arguments, which the group's exchange compares
    across ranks), those helpers then work on the global batch, and an input error raised
    before the call's first exchange is shared so that every rank raises together. Any other
    engine objective raises under a group instead of computing a per-rank loss. Without a group
    the call is unchanged.
    """
    import functools
    import inspect

    name = f"{fn.__module__}.{fn.__name__}"
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = current()
        if ctx is None:
            return fn(*args, **kwargs)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return fn(*args, **kwargs)  # raises the call's own TypeError
        bound.apply_defaults()
        token = _CALL.set(Call(name, dict(bound.arguments)))
        try:
            with shared_errors(ctx):
                return fn(*args, **kwargs)
        finally:
            _CALL.reset(token)

    wrapper.exact_under_group = True
    return wrapper


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


def logsumexp_across(ctx: Context, partial: Tensor) -> Tensor:
    """``log sum_r exp(partial_r)`` elementwise over the ranks (no gradient): an all-reduce of
    the maximum, then one of ``sum exp(partial - max)``; ``-inf`` everywhere gives ``-inf``.
    Bytes: ``2 x 2 (W - 1) n / W`` for ``n`` bytes of ``partial``."""
    dist = _dist()
    m = _all_reduce(ctx, partial.detach(), op=dist.ReduceOp.MAX)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = _all_reduce(ctx, torch.exp(partial.detach() - m))
    return torch.log(s) + m


def all_gather_values(ctx: Context, x: Tensor) -> Tensor:
    """Rank-major concatenation of every rank's ``x`` (no gradient, no shape check)."""
    return _all_gather(ctx, x.detach())


# ---------------------------------------------------------------------------------------------
# the exchange: before any data moves, every rank learns every rank's shapes, the options that
# must match (objective, temperature, symmetric, reduction, strategy, ...) and whether its input
# checks failed, in one fixed-size all-gather, so a mismatch or a bad input on one rank raises a
# ValueError on every rank at once instead of a collective that hangs until the group's timeout

_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32]

_MAGIC = 0x636B7831  # "ckx1": the layout below
_SLOTS = 24  # options compared: (name hash, kind, value) each
_PAYLOAD = 48  # int64 payload: 5 per tensor of a shape check, 1 for a row count
_MSG = 256  # bytes of the objective's name (status ok) or of the error message (status error)
_HEAD = 6  # magic, status, kind, number of options, payload length, message length
_WIDTH = _HEAD + 3 * _SLOTS + _PAYLOAD + _MSG // 8
KINDS = ("error", "shapes", "count", "total")
#: arguments of an objective that need not match across ranks (engine tiling only)
NOT_COMPARED = frozenset({"chunk_size", "backend"})


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def _float_bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]


def _bits_float(v: int) -> float:
    return struct.unpack("<d", struct.pack("<q", int(v)))[0]


# value kinds of an option slot (_OTHER: a value not compared, e.g. an input tensor)
_NONE, _BOOL, _FLOAT, _SHORT_STR, _LONG_STR, _OTHER, _INT = 1, 2, 3, 4, 5, 6, 7


def _encode(name: str, value) -> tuple[int, int]:
    """``(kind, int64)`` of an argument: its value when it must match on every rank, else only
    whether it is ``None`` (tensors with rows, lists, ...)."""
    if value is None:
        return _NONE, 0
    if isinstance(value, bool):
        return _BOOL, int(value)
    if isinstance(value, float) or (isinstance(value, int) and name in ("temperature", "scale")):
        return _FLOAT, _float_bits(value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return _INT, value
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) <= 8:
            return _SHORT_STR, int.from_bytes(raw.ljust(8, b"\0"), "little", signed=True)
        return _LONG_STR, _hash64(raw)
    if isinstance(value, Tensor) and value.dim() == 0 and value.is_floating_point():
        return _FLOAT, _float_bits(value.detach().item())
    return _OTHER, 0


def _decode(kind: int, value: int) -> str:
    if kind == _NONE:
        return "None"
    if kind == _BOOL:
        return str(bool(value))
    if kind == _FLOAT:
        return f"{_bits_float(value):g}"
    if kind == _SHORT_STR:
        return repr(int(value).to_bytes(8, "little", signed=True).rstrip(b"\0").decode())
    if kind == _INT:
        return str(value)
    if kind == _OTHER:
        return "a value (not None)"
    return "another value"


def _options(ctx: Context, call: Optional[Call]) -> tuple[str, list]:
    """``(objective name, sorted [(option name, kind, value)])`` of this rank's call."""
    opts = {"strategy": _encode("strategy", ctx.strategy), "gradients": _encode("", ctx.gradients)}
    objective = ""
    if call is not None:
        objective = call.name
        for name, value in call.options.items():
            if name not in NOT_COMPARED:
                opts[name] = _encode(name, value)
    items = sorted((n, *kv) for n, kv in opts.items())
    if len(items) > _SLOTS:  # fold the rest into one slot
        rest = repr(items[_SLOTS - 1 :]).encode()
        items = items[: _SLOTS - 1] + [("other options", _LONG_STR, _hash64(rest))]
    return objective, items


def _pack_text(text: str) -> list[int]:
    raw = text.encode("utf-8", "replace")[:_MSG].ljust(_MSG, b"\0")
    return [int.from_bytes(raw[i : i + 8], "little", signed=True) for i in range(0, _MSG, 8)]


def _unpack_text(words: list[int], n: int) -> str:
    raw = b"".join(int(w).to_bytes(8, "little", signed=True) for w in words)
    return raw[:n].decode("utf-8", "replace")


def _exchange_device(ctx: Context):
    try:
        backend = str(_dist().get_backend(ctx.group)).lower()
    except Exception:  # noqa: BLE001 - a backend that cannot say: CPU tensors
        backend = "gloo"
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _Scope:
    """One guarded call: how many exchanges it has issued so far."""

    __slots__ = ("count",)

    def __init__(self):
        self.count = 0


_SCOPE: contextvars.ContextVar = contextvars.ContextVar("contrastkit_scope", default=None)


@contextlib.contextmanager
def shared_errors(ctx: Optional[Context]):
    """Run one objective call so that an input error found on this rank reaches every rank.

    Used by :func:`exact_objective`. An exception raised inside the objective before the call's
    first exchange (its input checks: NaN input, bad labels, ...) is sent in an exchange of its own,
    which the other ranks meet at their first exchange of the same call: they raise a
    ``ValueError`` naming this rank and its error, and this rank re-raises its own. Every exact
    objective issues an exchange before any other collective, so no rank waits for the
    process-group timeout. Without a group this is a no-op.
    """
    if ctx is None:
        yield
        return
    scope = _Scope()
    token = _SCOPE.set(scope)
    try:
        yield
    except Exception as exc:
        if scope.count == 0:
            exchange(ctx, "error", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _SCOPE.reset(token)
        parent = _SCOPE.get()
        if parent is not None:
            parent.count += scope.count


def exchange(ctx: Context, kind: str, payload=(), error: Optional[str] = None) -> list[list[int]]:
    """All-gather one fixed-size record per rank; returns every rank's ``payload``.

    The record holds the objective's name and the options that must match (see
    :func:`_options`), the exchange ``kind`` and, for ``kind="error"``, this rank's error. Raises
    the same ``ValueError`` on every rank when a rank reports an error (except on that rank,
    which re-raises its own), when ranks reach different objectives or steps, or when an option
    differs.
    """
    payload = [int(v) for v in payload]
    if len(payload) > _PAYLOAD:
        raise ValueError(f"exchange payload of {len(payload)} values exceeds {_PAYLOAD}")
    if kind == "error":
        objective, items = "", []
    else:
        objective, items = _options(ctx, active_objective())
    text = error if kind == "error" else objective
    nbytes = len(text.encode("utf-8", "replace")[:_MSG])
    row = [_MAGIC, int(kind == "error"), KINDS.index(kind), len(items), len(payload), nbytes]
    for name, k, v in items:
        row += [_hash64(name.encode()), k, v]
    row += [0] * (3 * (_SLOTS - len(items)))
    row += payload + [0] * (_PAYLOAD - len(payload))
    row += _pack_text(text)
    scope = _SCOPE.get()
    if scope is not None:  # counted first: a failing collective is not retried as an error
        scope.count += 1
    mine = torch.tensor(row, dtype=torch.int64, device=_exchange_device(ctx))
    every = _all_gather(ctx, mine[None]).view(ctx.world, _WIDTH).cpu().tolist()
    _raise_on_disagreement(ctx, every, items, objective, kind)
    p0 = _HEAD + 3 * _SLOTS
    return [r[p0 : p0 + r[4]] for r in every]


def _raise_on_disagreement(ctx: Context, every: list, items: list, objective: str, kind: str):
    msg0 = _HEAD + 3 * _SLOTS + _PAYLOAD
    if any(r[0] != _MAGIC for r in every):
        raise ValueError("ranks of the process group run different contrastkit versions")
    errors = [(r, _unpack_text(row[msg0:], row[5])) for r, row in enumerate(every) if row[1]]
    if errors:
        if kind == "error":  # this rank re-raises its own error
            return
        detail = "; ".join(f"rank {r}: {m}" for r, m in errors)
        ranks = ", ".join(str(r) for r, _ in errors)
        raise ValueError(
            f"rank {ranks} of the process group failed its input checks, so rank {ctx.rank} "
            f"stops too: {detail}"
        )
    names = [_unpack_text(row[msg0:], row[5]) for row in every]
    if len(set(names)) > 1:
        detail = ", ".join(f"rank {r}: {n or '(no objective)'}" for r, n in enumerate(names))
        raise ValueError(f"every rank must call the same objective at the same step; got {detail}")
    slots = [row[_HEAD : _HEAD + 3 * _SLOTS] for row in every]
    if all(sl == slots[0] and row[3] == every[0][3] for sl, row in zip(slots, every)):
        kinds = [row[2] for row in every]
        if len(set(kinds)) > 1:
            detail = ", ".join(f"rank {r}: {KINDS[k]}" for r, k in enumerate(kinds))
            raise ValueError(
                f"the ranks reached different collectives of {objective or 'the same call'}; "
                f"got {detail}"
            )
        return
    for i, (name, _k, _v) in enumerate(items):
        col = [tuple(sl[3 * i : 3 * i + 3]) for sl in slots]
        if len(set(col)) > 1:
            if len({c[0] for c in col}) > 1:
                break  # the option names themselves differ
            values = ", ".join(f"rank {r}: {_decode(k, v)}" for r, (_h, k, v) in enumerate(col))
            raise ValueError(
                f"option {name!r} of {objective or 'the collective'} must be the same on every "
                f"rank of the process group; got {values}"
            )
    raise ValueError(
        f"the options of {objective or 'the collective'} differ across the ranks of the "
        "process group (different option names were given)"
    )


def check_same(ctx: Context, **tensors: Tensor) -> None:
    """Exchange the shapes (and dtypes) of ``tensors`` with the options of the calling objective
    (see :func:`exchange`); raise the same ``ValueError`` on every rank when any rank differs
    (instead of a collective that hangs or fails obscurely)."""
    meta = []
    for x in tensors.values():
        shape = list(x.shape) + [-1] * (3 - x.dim())
        code = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else 99
        meta += [x.dim()] + shape[:3] + [code]
    every = exchange(ctx, "shapes", meta)
    if all(row == every[0] for row in every):
        return
    names, lines = list(tensors), []
    for r in range(ctx.world):
        row = every[r]
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
    """The sum of ``n`` over the ranks, through the exchange (options and errors checked too)."""
    return sum(row[0] for row in exchange(ctx, "count", [n]))


def global_loss_checked(ctx: Context, x: Tensor) -> Tensor:
    """:func:`global_loss` (or the gradient scaling of per-row losses) after an exchange, for an
    objective whose rows need no other rank: its first collective is an exchange as well."""
    exchange(ctx, "total")
    return global_loss(ctx, x) if x.dim() == 0 else scale_grad(x, ctx.scale)
