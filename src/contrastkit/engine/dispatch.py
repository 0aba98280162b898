"""The engine's entry point: pick a path (dense, single-sweep, two-sweep) and a tile size."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .fused import ColumnGroup, FusedRowLoss, PlainRows, plain_rows
from .recompute import row_statistics
from .spec import ColumnStatistics, RowSpec, RowStatistics, check_positive_index
from .tiles import tile_stats

BACKENDS = ("auto", "dense", "tiled")

#: auto uses the dense path below this many logits (512 x 512), where it measured faster, and
#: for two-sided objectives (column pre-pass) up to 1024 x 1024: per-tile overhead dominates
#: small problems, and dense memory (about 12 bytes per logit) is then at most 12 MiB.
#: Measured by benchmarks/crossover.py (docs/benchmarks.md).
DENSE_MAX_PAIRS = 1 << 18
DENSE_MAX_PAIRS_COLUMNS = 1 << 20
#: target logits per tile (fp32: 128 MiB). Tiles this large are served by fresh mappings from
#: the allocator (not the fragmenting heap) and keep GEMMs efficient.
TILE_ELEMS = 1 << 25
#: row-block bounds: GEMMs with fewer rows run slower (M = 65,536, d = 128, 2 threads:
#: 64 rows ~100 GFLOP/s, 128 ~110, 256 ~130, 512 ~140).
MIN_ROWS = 256
MAX_ROWS = 1024
#: the single-sweep path holds a row block against *every* candidate; above this many logits
#: per block it gives way to the two-sweep path (256 MiB fp32, i.e. M > 262,144 at 256 rows).
FUSED_MAX_ELEMS = 1 << 26


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 inputs are accumulated in fp32; fp32/fp64 stay as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _apply_fns(
    spec: RowSpec, row_stats: RowStatistics, col_stats: Optional[ColumnStatistics], reduce: bool
):
    rows = spec.row_fn(row_stats, spec.row_side) if spec.row_fn is not None else None
    cols = None
    if spec.columns and spec.col_fn is not None and col_stats is not None:
        cols = spec.col_fn(col_stats, spec.col_side)
    if not reduce:
        return rows, cols
    total = rows.sum() if rows is not None else 0.0
    if cols is not None:
        total = total + cols.sum()
    return total


def fused_block_rows(M: int, chunk_size: Optional[int]) -> int:
    """Rows per block: ``chunk_size`` if given, else about TILE_ELEMS / M within the bounds."""
    if chunk_size is not None:
        return chunk_size
    return max(MIN_ROWS, min(MAX_ROWS, TILE_ELEMS // max(M, 1)))


def recompute_tile(M: int, chunk_size: Optional[int]) -> tuple[int, int]:
    """(rows, columns) of a two-sweep tile: square ``chunk_size`` if given, else full-width
    row blocks as the single sweep uses, split into column tiles only for very large M."""
    if chunk_size is not None:
        return chunk_size, chunk_size
    rows = fused_block_rows(M, None)
    return rows, max(1, min(M, TILE_ELEMS // rows))


def dense_auto(N: int, M: int, columns: bool) -> bool:
    """``backend="auto"`` (no ``chunk_size``) takes the dense path for this problem size."""
    return (columns and N * M <= DENSE_MAX_PAIRS_COLUMNS) or N * M < DENSE_MAX_PAIRS


def choose_path(N: int, M: int, spec: RowSpec, reduce: bool, backend: str, chunk_size) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "dense":
        return "dense"
    if backend == "auto" and chunk_size is None:
        if dense_auto(N, M, bool(spec.columns)):
            return "dense"
    fusable = reduce and (spec.plain or not spec.columns)
    if fusable and (chunk_size is not None or fused_block_rows(M, None) * M <= FUSED_MAX_ELEMS):
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
    column_group: Optional[ColumnGroup] = None,
):
    """Compute a row-wise objective exactly without materialising the ``N x M`` logits.

    ``anchors`` (N, d) and ``candidates`` (M, d) are used as given (normalise before);
    ``kappa`` is 1/temperature, a 0-dim tensor or one value per anchor (N,), and may require
    grad. Returns the scalar loss ``sum_i row_fn_i (+ sum_j col_fn_j)`` when ``reduce``, else the
    tuple ``(row values (N,), column values (M,) or None)``.

    ``column_group`` (``contrastkit.distributed`` only): the anchors are this process's share of
    a two-sided plain spec's anchors (``reduce`` only); the single sweep then combines the
    column statistics across processes (:class:`~contrastkit.engine.fused.ColumnGroup`), and
    ``col_side`` holds the rows of ``column_group.own`` only.
    """
    N, M = anchors.shape[0], candidates.shape[0]
    check_positive_index(spec, N, M)
    dt = compute_dtype(anchors.dtype)
    A, B = anchors.to(dt), candidates.to(dt)
    kappa = kappa.to(dt)
    bias = spec.softplus_bias
    path = choose_path(N, M, spec, reduce, backend, chunk_size)
    if column_group is not None:
        if not (reduce and spec.plain and spec.columns):
            raise ValueError("column_group needs a two-sided plain spec and reduce=True")
        path = "fused"
    gpu_auto = column_group is None and backend == "auto" and chunk_size is None
    if path != "dense" and anchors.is_cuda and gpu_auto:
        from .gpu import maybe_contrast  # CUDA tensors only: on CPU nothing changes

        out = maybe_contrast(anchors, candidates, spec, kappa, reduce)
        if out is not None:
            return out
    if path == "dense":
        u = (A * (kappa if kappa.dim() == 0 else kappa[:, None])) @ B.t()
        return _apply_fns(spec, *tile_stats(u, spec, 0, N, 0, M), reduce)
    if path == "fused":
        sides = [("row", k, v) for k, v in spec.row_side.items()]
        if spec.columns:
            sides += [("col", k, v) for k, v in spec.col_side.items()]
        keys = tuple((scope, k) for scope, k, _ in sides)
        vals = [v.to(dt) if v.is_floating_point() else v for _, _, v in sides]
        rows = -(-fused_block_rows(M, chunk_size) // spec.row_group) * spec.row_group
        block = (rows, fused_block_rows(N, chunk_size))  # row blocks of whole row groups
        return FusedRowLoss.apply(A, B, kappa, bias, spec, block, column_group, keys, *vals)
    if (
        plain_rows(spec) and chunk_size is None and fused_block_rows(M, None) * M <= FUSED_MAX_ELEMS
    ):  # per-row plain log-sum-exps: the in-cache route, recomputed in backward
        lse = PlainRows.apply(A, B, kappa, spec, fused_block_rows(M, None))
        return _apply_fns(spec, RowStatistics(lse=lse[None]), None, reduce)
    tile = recompute_tile(M, chunk_size)
    return _apply_fns(spec, *row_statistics(A, B, kappa, bias, spec, tile), reduce)
