"""Inputs of an objective: dtype and normalisation, stacked views, positive logits, engine
options.

Every objective prepares its embeddings with :func:`prepare` (fp16/bf16 computed in fp32 unless
the Triton kernels take them as they are, see :func:`half_path`; L2 normalisation by default),
stacks two views with :func:`two_views` when the anchors are also the candidates, computes the
positive logits as O(N d) dot products (:func:`row_dot`, :func:`partner_logits`) and validates
the engine options with :func:`engine_args`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import compute_dtype

__all__ = [
    "EPS",
    "HALF",
    "engine_args",
    "gpu_device",
    "half_path",
    "index_dot",
    "partner_logits",
    "prepare",
    "row_dot",
    "two_views",
    "wide",
]

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


#: elements of one gathered ``(rows, l, d)`` block of :func:`index_dot` (4 MiB in fp32)
INDEX_DOT_ELEMS = 1 << 20


class _IndexDot(torch.autograd.Function):
    """``u_il = <a_i, b_{index_il}>`` block by block: neither direction keeps the gathered
    ``(N, l, d)`` rows (they are gathered again, a block at a time, in backward)."""

    @staticmethod
    def forward(ctx, a, b, index):
        N, L = index.shape
        out = a.new_empty(N, L)
        rows = max(1, INDEX_DOT_ELEMS // max(1, L * a.shape[1]))
        for r0 in range(0, N, rows):
            r1 = min(r0 + rows, N)
            torch.bmm(b[index[r0:r1]], a[r0:r1, :, None], out=out[r0:r1, :, None])
        ctx.save_for_backward(a, b, index)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, index = ctx.saved_tensors
        N = index.shape[0]
        ga = torch.empty_like(a) if ctx.needs_input_grad[0] else None
        gb = torch.zeros_like(b) if ctx.needs_input_grad[1] else None
        for r0 in range(0, N, ctx.rows):
            r1 = min(r0 + ctx.rows, N)
            idx, gc = index[r0:r1], g[r0:r1]
            if ga is not None:
                torch.bmm(gc[:, None, :], b[idx], out=ga[r0:r1, None, :])
            if gb is not None:
                gb.index_add_(
                    0, idx.reshape(-1), (gc[:, :, None] * a[r0:r1, None, :]).flatten(0, 1)
                )
        return ga, gb, None


def index_dot(a: Tensor, b: Tensor, index: Tensor) -> Tensor:
    """Dot products of every row of ``a (N, d)`` with the rows of ``b (K, d)`` that ``index
    (N, l)`` names: ``u_il = <a_i, b_{index_il}>``, shape ``(N, l)``, differentiable in ``a`` and
    ``b``. Memory O(N l) beside the inputs: the ``(N, l, d)`` gathered rows that
    ``(a[:, None] * b[index]).sum(-1)`` builds (and keeps for backward) are formed a block of
    about ``2**20`` elements at a time in both directions. ``index`` must be valid (``0 <= index
    < K``); mask invalid slots afterwards."""
    if index.dim() != 2 or index.shape[0] != a.shape[0]:
        raise ValueError(f"index must have shape ({a.shape[0]}, l), got {tuple(index.shape)}")
    dt = torch.promote_types(compute_dtype(a.dtype), compute_dtype(b.dtype))
    return _IndexDot.apply(a.to(dt), b.to(dt), index.long())


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


def engine_args(chunk_size, backend) -> dict:
    from .._validation import optional_int
    from ..engine import BACKENDS

    optional_int("chunk_size", chunk_size)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return {"chunk_size": chunk_size, "backend": backend}


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
