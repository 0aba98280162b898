"""Helpers every objective shares: input preparation, temperatures, reductions."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_positive, check_reduction
from ..distributed import _ops as _OPS
from ..distributed._ops import exact_objective  # noqa: F401  (the objectives take it from here)
from ..engine import compute_dtype

EPS = 1e-12


HALF = (torch.float16, torch.bfloat16)


def prepare(x: Tensor, normalize: bool, keep_half: bool = False) -> Tensor:
    """Compute dtype (fp32 for fp16/bf16) and, by default, L2 normalisation of the last axis.

    ``keep_half`` (see :func:`half_path`): fp16/bf16 stay in their dtype (normalised in fp32,
    rounded once) for the Triton kernels, which multiply them in that dtype with fp32
    accumulation."""
    if keep_half and x.dtype in HALF:
        return F.normalize(x.float(), dim=-1, eps=EPS).to(x.dtype) if normalize else x
    x = x.to(compute_dtype(x.dtype))
    return F.normalize(x, dim=-1, eps=EPS) if normalize else x


def wide(x: Tensor) -> Tensor:
    """``x`` in the compute dtype (fp32 for fp16/bf16, unchanged otherwise): the dtype of the
    O(N d) side statistics (positive logits, class sums) when embeddings stay in half."""
    return x.to(compute_dtype(x.dtype))


class _RowDotHalf(torch.autograd.Function):
    """``sum_k a_ik b_ik`` in fp32 for fp16/bf16 rows, keeping only the half inputs for the
    backward (``(a.float() * b.float()).sum(-1)`` would keep two fp32 copies)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return (a.float() * b.float()).sum(-1)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        g = g.unsqueeze(-1)
        ga = (g * b.float()).to(a.dtype) if ctx.needs_input_grad[0] else None
        gb = (g * a.float()).to(b.dtype) if ctx.needs_input_grad[1] else None
        return ga, gb


def row_dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot products ``<a_i, b_i>`` in the compute dtype (fp32 for fp16/bf16 rows)."""
    if a.dtype in HALF and b.dtype == a.dtype:
        return _RowDotHalf.apply(a, b)
    return (wide(a) * wide(b)).sum(-1)


def gpu_device(x: Tensor) -> bool:
    """Tensors on which ``engine.contrast`` tries the Triton kernels (CUDA). The interpreter tests
    patch this to send CPU tensors down the half-precision path too."""
    return x.is_cuda


def half_path(eng: dict, n_rows: int, n_cols: int, columns: bool, *xs: Tensor) -> bool:
    """Whether an objective whose spec the Triton kernels cover keeps its fp16/bf16 embeddings in
    their dtype: all of ``xs`` share one half dtype and live on a CUDA device, Triton is enabled,
    ``backend="auto"`` without ``chunk_size``, and the problem (``n_rows x n_cols`` logits,
    ``columns``: two-sided) is above the engine's dense threshold. Otherwise objectives upcast
    to fp32 as before (and the engine upcasts itself whenever it does not reach the kernels)."""
    if not xs or xs[0].dtype not in HALF or any(x.dtype != xs[0].dtype for x in xs):
        return False
    if eng.get("backend", "auto") != "auto" or eng.get("chunk_size") is not None:
        return False
    if not all(gpu_device(x) for x in xs):
        return False
    from ..engine.dispatch import dense_auto
    from ..engine.gpu import enabled

    return not dense_auto(n_rows, n_cols, columns) and enabled()


def kappa(
    ref: Tensor,
    temperature=None,
    scale=None,
    n_rows: Optional[int] = None,
) -> Tensor:
    """The logit multiplier 1/tau as a tensor: from ``scale`` if given, else ``temperature``.

    A tensor temperature may be 0-dim (global, possibly learnable) or ``(n_rows,)`` (per anchor).
    """
    if scale is not None and temperature is not None:
        raise ValueError("give either temperature or scale, not both")
    name, value = ("scale", scale) if scale is not None else ("temperature", temperature)
    if value is None:
        raise ValueError("temperature (or scale) is required")
    check_positive(name, value)
    dt = compute_dtype(ref.dtype)
    if isinstance(value, Tensor):
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != n_rows):
            raise ValueError(
                f"{name} must be a scalar or have one value per anchor ({n_rows},), "
                f"got shape {tuple(value.shape)}"
            )
        if value.device != ref.device:
            raise ValueError(f"{name} is on {value.device} but the embeddings on {ref.device}")
        value = value.to(dt)
        if value.dim() == 0:
            ctx = _group()
            if ctx is not None:
                from ..distributed._ops import replicated as rep

                value = rep(ctx, value)
        return value if name == "scale" else 1.0 / value
    k = float(value) if name == "scale" else 1.0 / float(value)
    return torch.tensor(k, dtype=dt, device=ref.device)


def row_weight(reduction: str, count, min_count: int = 0) -> float:
    """Factor that turns per-row losses into the requested reduction when summed.

    Under a process group ``count`` is this rank's and the mean is over the global count.
    """
    check_reduction(reduction)
    if reduction == "mean":
        ctx = _group()
        if ctx is not None:
            from ..distributed._ops import global_int

            count = global_int(ctx, count)
        return 1.0 / max(count, min_count)
    return 1.0


# --- distributed plumbing (contrastkit.distributed); identity without a process group ---------


def _group(strict: bool = False):
    """The active process group when an objective declared with
    :func:`~contrastkit.distributed.exact_objective` is running, else ``None`` (local), or a
    ``ValueError`` when ``strict`` (an engine-backed objective that is not declared exact would
    silently compute a per-rank loss)."""
    ctx = _OPS.current()
    if ctx is None:
        return None
    if _OPS.active_objective() is not None:
        return ctx
    if strict:
        raise _OPS.not_supported("an objective not declared with exact_objective")
    return None


def global_rows(n: int) -> int:
    """The number of rows over every rank of the active process group (``n`` locally)."""
    ctx = _group()
    if ctx is None:
        return n
    from ..distributed._ops import global_int

    return global_int(ctx, n)


def replicated(x: Tensor) -> Tensor:
    """A tensor every rank holds a copy of (a temperature, a bias): under a process group its
    gradient becomes that of the global loss on every rank (identity locally)."""
    ctx = _group()
    if ctx is None:
        return x
    from ..distributed._ops import replicated as rep

    return rep(ctx, x)


def gather_rows(x: Tensor, name: str = "x") -> Tensor:
    """Rank-major concatenation of ``x`` over the active group (gradients flow back); ``x``
    itself locally. Every rank must pass the same shape (checked, ValueError on every rank)."""
    ctx = _group()
    if ctx is None:
        return x
    from ..distributed._ops import gather

    return gather(ctx, x, check=name)


def row_offset(n: int) -> int:
    """Global index of this rank's first row (``rank * n``; 0 locally)."""
    ctx = _group()
    return 0 if ctx is None else ctx.rank * n


def sum_across_ranks(x: Tensor, name: str = "x") -> Tensor:
    """Sum over the active group's ranks, gradients all-reduced back (``x`` locally). Every
    rank must pass the same shape (checked, ValueError on every rank)."""
    ctx = _group()
    if ctx is None:
        return x
    from ..distributed._ops import check_same, sum_across

    check_same(ctx, **{name: x})
    return sum_across(ctx, x)


def global_total(x: Tensor) -> Tensor:
    """For an objective whose rows need no other rank's data (computed without ``run``): under
    a process group the scalar loss becomes the sum over ranks (the global loss on every rank)
    and per-row outputs get the group's gradient convention; identity locally."""
    ctx = _group()
    if ctx is None:
        return x
    from ..distributed._ops import global_loss_checked

    return global_loss_checked(ctx, x)


def check_has_negatives(name: str, x: Tensor, objective: str, unit: str = "row") -> None:
    """A batch of one has no negatives: ``ValueError`` when ``x`` has a single row (sample),
    unless other ranks of an active process group contribute candidates (no collective)."""
    if x.shape[0] >= 2:
        return
    ctx = _OPS.current()
    if ctx is not None and ctx.world > 1:
        return
    raise ValueError(
        f"{name} has {x.shape[0]} {unit}: {objective} needs at least 2 {unit}s (a batch with no "
        f"negatives), got shape {tuple(x.shape)}"
    )


def engine_args(chunk_size, backend) -> dict:
    from .._validation import optional_int
    from ..engine import BACKENDS

    optional_int("chunk_size", chunk_size)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return {"chunk_size": chunk_size, "backend": backend}


def local_contrast(*args, **kwargs):
    """``engine.contrast`` for objectives that reduce the engine's rows themselves (not through
    :func:`run`): they are per-rank only, so under a process group this raises (as ``run`` does
    for unregistered objectives) instead of silently computing a per-rank loss."""
    from ..engine import contrast

    _group(strict=True)
    return contrast(*args, **kwargs)


def run(anchors: Tensor, candidates: Tensor, spec, k: Tensor, reduction: str, engine_kw: dict):
    """Hand a spec to the engine; for ``reduction="none"`` add each row's and column's terms
    (the objective's row and column functions already carry their weights, e.g. 1/2 each)."""
    from ..engine import contrast

    ctx = _group(strict=True)
    if ctx is not None:
        from ..distributed._run import run_distributed

        return run_distributed(ctx, anchors, candidates, spec, k, reduction, engine_kw)
    out = contrast(anchors, candidates, spec, k, reduce=reduction != "none", **engine_kw)
    if reduction != "none":
        return out
    rows, cols = out
    return rows if cols is None else rows + cols[: rows.shape[0]]


def two_views(
    z1: Tensor,
    z2: Tensor,
    normalize: bool,
    names=("z1", "z2"),
    min_rows: int = 1,
    eng: Optional[dict] = None,
):
    """Stack two views (N, d) into 2N anchors that are also the candidates (view-major).

    Returns ``(Z, partner)``: ``Z = cat(z1, z2)`` prepared, ``partner[i] = (i + N) mod 2N``.
    ``eng`` (the engine options of an objective the kernels cover): keep fp16/bf16 when
    :func:`half_path` says so.
    """
    from .._validation import check_compatible, check_embeddings

    check_embeddings(names[0], z1, min_rows=min_rows)
    check_embeddings(names[1], z2, min_rows=min_rows)
    check_compatible(names[0], z1, names[1], z2, same_rows=True)
    N = z1.shape[0]
    keep = eng is not None and half_path(eng, 2 * N, 2 * N, False, z1, z2)
    Z = prepare(torch.cat([z1, z2]), normalize, keep)
    partner = torch.cat([torch.arange(N, 2 * N), torch.arange(0, N)]).to(z1.device)
    return Z, partner


def partner_logits(Z: Tensor, k: Tensor) -> Tensor:
    """u_i,partner(i) for view-major stacked views: the positive logit of every anchor."""
    N = Z.shape[0] // 2
    s = row_dot(Z[:N], Z[N:])  # fp32 for fp16/bf16 (the engine's statistics are fp32)
    return torch.cat([s, s]) * k


class FunctionalLoss(torch.nn.Module):
    """Module twin of a functional objective (the ``torch.nn.functional`` pairing).

    Stores the keyword options as attributes (validated here, so a bad temperature fails at
    construction) and forwards the current values to the functional on every call.
    """

    def __init__(self, fn, **options):
        super().__init__()
        self._fn = fn
        self._option_names = tuple(options)
        for name in ("temperature", "scale"):
            value = options.get(name)
            if value is not None and not isinstance(value, Tensor):
                check_positive(name, value)
        if "reduction" in options:
            check_reduction(options["reduction"])
        engine_args(options.get("chunk_size"), options.get("backend", "auto"))
        for name, value in options.items():
            setattr(self, name, value)

    def forward(self, *inputs, **kwargs):
        opts = {name: getattr(self, name) for name in self._option_names}
        opts.update(kwargs)
        return self._fn(*inputs, **opts)

    def extra_repr(self) -> str:
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in self._option_names)
