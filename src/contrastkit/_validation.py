"""Input checks shared by every objective, miner and filter: clear ``ValueError``s that name the
argument (and its shape or offending values).

The one entry point for a tensor argument is :func:`check_tensor` (type, rank, dtype kind, rows,
finiteness); :func:`check_embeddings` is its (N, d) floating special case, :func:`check_labels`
(integer class ids) and :func:`check_index` (integer indices in ``[0, size)``) its integer ones,
:func:`check_temperature` the check of a temperature or scale (a number, a 0-dim tensor or, where
the objective supports it, one value per anchor).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


KINDS = ("float", "real", "int", "bool")


def _is_int(x: Tensor) -> bool:
    return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


def check_tensor(
    name: str,
    x,
    *,
    ndim: int | tuple | None = None,
    kind: str = "float",
    min_rows: int = 1,
    rows: Optional[int] = None,
    shape: Optional[tuple] = None,
    finite: bool = True,
    allow_nonfinite: str = "",
    ref: Optional[Tensor] = None,
) -> Tensor:
    """The shared check of a tensor argument; every failure is a ``ValueError`` naming ``name``.

    ``kind``: ``"float"`` (floating dtype), ``"real"`` (floating or integer, not bool/complex),
    ``"int"`` (integer, not bool) or ``"bool"``. ``ndim``: allowed ranks; ``min_rows`` /
    ``rows``: bounds on the first dimension; ``shape``: the exact shape; ``finite``: no NaN/Inf
    (``allow_nonfinite="inf"`` lets +-Inf through, NaN never); ``ref``: must share its device.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else ndim
        if x.dim() not in dims:
            want = " or ".join(str(d) for d in dims)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if kind == "float" and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if kind == "real" and not (x.is_floating_point() or _is_int(x)):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if kind == "int" and not _is_int(x):
        raise ValueError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    if kind == "bool" and x.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {x.dtype}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if x.dim() > 0:
        if rows is not None and x.shape[0] != rows:
            raise ValueError(f"{name} must have {rows} rows, got shape {tuple(x.shape)}")
        if x.shape[0] < min_rows:
            raise ValueError(f"{name} needs at least {min_rows} rows, got shape {tuple(x.shape)}")
    if ref is not None and x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but the embeddings are on {ref.device}")
    if finite and x.is_floating_point():
        bad = torch.isnan(x) if allow_nonfinite == "inf" else ~torch.isfinite(x)
        if bool(bad.any()):
            what = "NaN" if allow_nonfinite == "inf" else "NaN or Inf"
            raise ValueError(
                f"{name} contains {int(bad.sum())} {what} values (shape {tuple(x.shape)})"
            )
    return x


def check_embeddings(name: str, x, ndim: int | tuple = 2, min_rows: int = 1) -> Tensor:
    """A floating tensor of the given rank, with at least ``min_rows`` rows, all finite."""
    check_tensor(name, x, ndim=ndim, kind="float", min_rows=min_rows, finite=False)
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has an empty feature dimension, shape {tuple(x.shape)}")
    return check_tensor(name, x, finite=True)


def check_index(
    name: str,
    idx,
    size: Optional[int],
    *,
    ndim: int | tuple | None = None,
    rows: Optional[int] = None,
    shape: Optional[tuple] = None,
    min_rows: int = 1,
    allow: tuple = (),
    ref: Optional[Tensor] = None,
    what: str = "rows",
) -> Tensor:
    """Integer indices into ``size`` ``what``: every entry in ``[0, size)`` (``size=None``: no
    upper bound) or one of ``allow``
    (e.g. -1 padding, an ``ignore_index``). Out of range is a ``ValueError`` naming ``name``
    and the range, not an ``IndexError`` from deep inside the objective."""
    check_tensor(
        name, idx, ndim=ndim, kind="int", rows=rows, shape=shape, min_rows=min_rows, ref=ref
    )
    if idx.numel():
        ok = idx >= 0 if size is None else (idx >= 0) & (idx < size)
        for a in allow:
            ok |= idx == a
        if not bool(ok.all()):
            bad = idx[~ok]
            extra = f" or {', '.join(str(a) for a in allow)}" if allow else ""
            where = f">= 0{extra}" if size is None else f"[0, {size}){extra} (the {size} {what})"
            raise ValueError(
                f"{name} holds {bad.numel()} indices outside {where}, e.g. {bad[:4].tolist()}"
            )
    return idx


def check_temperature(name: str, value, n_rows: Optional[int] = None) -> None:
    """A temperature or scale: finite and > 0; a number, a 0-dim tensor or, when ``n_rows`` is
    given, one value per anchor ``(n_rows,)``."""
    if isinstance(value, Tensor):
        per_row = n_rows is not None and value.dim() == 1 and value.shape[0] == n_rows
        if value.dim() != 0 and not per_row:
            want = "a scalar" if n_rows is None else f"a scalar or one value per anchor ({n_rows},)"
            raise ValueError(f"{name} must be {want}, got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    check_positive(name, value)


def check_number(name: str, value, *, minimum: Optional[float] = None) -> float:
    """A finite real number (an int, a float or a 0-dim floating tensor)."""
    if isinstance(value, Tensor):
        if value.dim() != 0 or not value.is_floating_point():
            raise ValueError(
                f"{name} must be a number or a 0-dim floating tensor, got {value.dtype} "
                f"tensor of shape {tuple(value.shape)}"
            )
        v = float(value.detach())
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    else:
        v = float(value)
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        limit = "" if minimum is None else f" and >= {minimum}"
        raise ValueError(f"{name} must be finite{limit}, got {value}")
    return v


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
        if value.numel() == 0 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a non-empty real tensor, got {value!r:.60}")
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
    if not _is_int(labels):
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
