"""Checks and conversions the preference objectives share: log-probability tensors of a policy
and of a frozen reference, the coefficient ``beta``, the per-pair reduction."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from ..._validation import check_temperature, check_tensor
from ...engine import compute_dtype
from ...objective import replicated


def check_log_probs(
    named: dict,
    ndim: int,
    *,
    rows: Optional[tuple] = None,
    same_shape: bool = True,
) -> None:
    """Every tensor of ``named`` (``None`` entries skipped): floating, ``ndim`` dimensions,
    finite, on the device of the first and, with ``same_shape``, of the first one's shape;
    ``rows`` = ``(name, tensor)``: the same number of rows as that tensor. Messages name both
    arguments."""
    first_name, first = None, None
    for name, x in named.items():
        if x is None:
            continue
        check_tensor(name, x, ndim=ndim, kind="float", min_rows=0)
        if first is None:
            first_name, first = name, x
            continue
        if x.device != first.device:
            raise ValueError(f"{name} is on {x.device} but {first_name} is on {first.device}")
        if same_shape and x.shape != first.shape:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but {first_name} has shape "
                f"{tuple(first.shape)}: they must match"
            )
    if rows is not None and first is not None:
        ref_name, ref = rows
        if first.shape[0] != ref.shape[0]:
            raise ValueError(
                f"{first_name} has {first.shape[0]} rows (shape {tuple(first.shape)}) but "
                f"{ref_name} has {ref.shape[0]} (shape {tuple(ref.shape)}): one row per pair"
            )
        if first.device != ref.device:
            raise ValueError(f"{first_name} is on {first.device} but {ref_name} is on {ref.device}")


def compute_type(*xs: Optional[Tensor]) -> torch.dtype:
    """The dtype the loss is computed in: fp32 for fp16/bf16 log-probabilities, otherwise the
    widest floating dtype among ``xs``."""
    dt: Optional[torch.dtype] = None
    for x in xs:
        if x is None:
            continue
        d = compute_dtype(x.dtype)
        dt = d if dt is None else torch.promote_types(dt, d)
    return torch.float32 if dt is None else dt


def policy(x: Tensor, dt: torch.dtype) -> Tensor:
    """A policy tensor in the compute dtype (gradients flow back to ``x``)."""
    return x.to(dt)


def reference(x: Tensor, dt: torch.dtype) -> Tensor:
    """A reference tensor in the compute dtype, detached: the reference model is frozen."""
    return x.detach().to(dt)


def coefficient(
    name: str, value: Union[float, Tensor], like: Tensor, *, group
) -> Union[float, Tensor]:
    """A positive coefficient (``beta``): a number, or a 0-dim tensor (learnable: under a
    process group its gradient is the global loss's on every rank)."""
    check_temperature(name, value)
    if isinstance(value, Tensor):
        return replicated(value.to(like.device, like.dtype), group=group)
    return float(value)


def check_fraction(name: str, value, lo: float, hi: float) -> float:
    """A plain number in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not (lo <= v <= hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return v


def check_nonnegative(name: str, value) -> float:
    """A finite plain number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not (v >= 0 and v < float("inf")):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return v
