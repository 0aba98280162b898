"""Input checks shared by every objective: clear ``ValueError``s that name the argument."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def check_embeddings(name: str, x, ndim: int | tuple = 2, min_rows: int = 1) -> Tensor:
    """A floating tensor of the given rank, with at least ``min_rows`` rows, all finite."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if x.dim() not in dims:
        want = " or ".join(str(d) for d in dims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got shape {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has an empty feature dimension, shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf values (shape {tuple(x.shape)})")
    return x


def check_compatible(ref_name: str, ref: Tensor, name: str, x: Tensor, same_rows: bool = False):
    """Same dtype, device and feature dimension (and row count when ``same_rows``)."""
    if x.dtype != ref.dtype:
        raise ValueError(f"{name} has dtype {x.dtype} but {ref_name} has dtype {ref.dtype}")
    if x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but {ref_name} is on {ref.device}")
    if x.shape[-1] != ref.shape[-1]:
        raise ValueError(
            f"{name} has feature dimension {x.shape[-1]} (shape {tuple(x.shape)}) but "
            f"{ref_name} has {ref.shape[-1]} (shape {tuple(ref.shape)})"
        )
    if same_rows and x.shape[0] != ref.shape[0]:
        raise ValueError(
            f"{name} must have as many rows as {ref_name}: {tuple(x.shape)} vs {tuple(ref.shape)}"
        )


def check_positive(name: str, value) -> None:
    """A temperature or scale: a finite number > 0 (a tensor is checked element-wise)."""
    if isinstance(value, Tensor):
        if not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
            raise ValueError(f"{name} must be finite and > 0, got {value.detach().flatten()[:8]}")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_labels(name: str, labels, n: int, ref: Tensor) -> Tensor:
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    if labels.device != ref.device:
        raise ValueError(f"{name} is on {labels.device} but the features are on {ref.device}")
    return labels


def check_range(name: str, value: float, lo: float, hi: float, lo_open=False, hi_open=True):
    ok_lo = value > lo if lo_open else value >= lo
    ok_hi = value < hi if hi_open else value <= hi
    if not (ok_lo and ok_hi):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {value}")


def optional_int(name: str, value: Optional[int]) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
