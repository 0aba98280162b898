"""The engine's entry point: pick a path (dense, single-sweep, two-sweep) and a tile size."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .fused import FusedRowLoss
from .recompute import RowStats, output_keys
from .spec import RowSpec
from .tiles import tile_stats

BACKENDS = ("auto", "dense", "tiled")

#: auto uses the dense path only below this many logits (it is faster only for tiny problems,
#: where per-tile Python overhead dominates; see docs/benchmarks.md).
DENSE_MAX_PAIRS = 1 << 16
#: logits held by one row block of the single-sweep path (fp32: 4 bytes each).
FUSED_BUFFER_ELEMS = 1 << 23
FUSED_MIN_ROWS = 16
FUSED_MAX_ROWS = 1024
#: tile of the two-sweep path (rows, columns).
RECOMPUTE_TILE = (256, 8192)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 inputs are accumulated in fp32; fp32/fp64 stay as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype



def _apply_fns(spec: RowSpec, stats: dict, reduce: bool):
    row_stats = {k: v for k, v in stats.items() if not k.startswith("col_")}
    rows = spec.row_fn(row_stats, spec.row_side) if spec.row_fn is not None else None
    cols = None
    if spec.columns and spec.col_fn is not None:
        col_stats = {k: v for k, v in stats.items() if k.startswith("col_")}
        cols = spec.col_fn(col_stats, spec.col_side)
    if not reduce:
        return rows, cols
    total = rows.sum() if rows is not None else 0.0
    if cols is not None:
        total = total + cols.sum()
    return total


def fused_block_rows(M: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        return chunk_size
    return max(FUSED_MIN_ROWS, min(FUSED_MAX_ROWS, FUSED_BUFFER_ELEMS // max(M, 1)))


def choose_path(N: int, M: int, spec: RowSpec, reduce: bool, backend: str, chunk_size) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "dense":
        return "dense"
    if backend == "auto" and N * M <= DENSE_MAX_PAIRS and chunk_size is None:
        return "dense"
    fusable = reduce and not spec.columns
    if fusable and (chunk_size is not None or FUSED_BUFFER_ELEMS // max(M, 1) >= FUSED_MIN_ROWS):
        return "fused"
    return "recompute"


def contrast(
    anchors: Tensor,
    candidates: Tensor,
    spec: RowSpec,
    kappa: Tensor,
    *,
    reduce: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
):
    """Compute a row-wise objective exactly without materialising the ``N x M`` logits.

    ``anchors`` (N, d) and ``candidates`` (M, d) are used as given (normalise before);
    ``kappa`` is 1/temperature, a 0-dim tensor or one value per anchor (N,), and may require
    grad. Returns the scalar loss ``sum_i row_fn_i (+ sum_j col_fn_j)`` when ``reduce``, else the
    tuple ``(row values (N,), column values (M,) or None)``.
    """
    N, M = anchors.shape[0], candidates.shape[0]
    dt = compute_dtype(anchors.dtype)
    A, B = anchors.to(dt), candidates.to(dt)
    kappa = kappa.to(dt)
    bias = spec.softplus_bias
    path = choose_path(N, M, spec, reduce, backend, chunk_size)
    if path == "dense":
        u = (A * (kappa if kappa.dim() == 0 else kappa[:, None])) @ B.t()
        return _apply_fns(spec, tile_stats(u, spec, 0, N, 0, M), reduce)
    if path == "fused":
        keys = tuple(spec.row_side)
        vals = [v.to(dt) if v.is_floating_point() else v for v in spec.row_side.values()]
        block = fused_block_rows(M, chunk_size)
        return FusedRowLoss.apply(A, B, kappa, bias, spec, block, keys, *vals)
    tile = RECOMPUTE_TILE if chunk_size is None else (chunk_size, max(chunk_size, 1))
    outs = RowStats.apply(A, B, kappa, bias, spec, tile)
    return _apply_fns(spec, dict(zip(output_keys(spec), outs)), reduce)
