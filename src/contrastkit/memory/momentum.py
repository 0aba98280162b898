"""Momentum (EMA) encoders: MoCo's key encoder and BYOL's target network.

    theta_k <- m theta_k + (1 - m) theta_q

MoCo (He et al., CVPR 2020) uses a constant ``m = 0.999``; BYOL (Grill et al., "Bootstrap Your
Own Latent", NeurIPS 2020) raises it with a cosine schedule
``m_k = 1 - (1 - m_0) (cos(pi k / K) + 1) / 2`` (``final_momentum = 1``; BYOL, arXiv:2006.07733).
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from torch import nn

from .._validation import check_range

__all__ = ["MomentumEncoder", "momentum_update", "momentum_schedule"]

SCHEDULES = ("constant", "cosine")
BUFFER_MODES = ("copy", "ema", "keep")


def _check_momentum(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    check_range(name, float(value), 0.0, 1.0, hi_open=False)
    return float(value)


def momentum_schedule(
    step: int,
    momentum: float = 0.999,
    *,
    schedule: str = "constant",
    total_steps: Optional[int] = None,
    final_momentum: float = 1.0,
) -> float:
    """Momentum at ``step`` (0-based). ``"cosine"`` (BYOL):
    ``m_k = m_final - (m_final - m_0) (cos(pi k / K) + 1) / 2`` for ``k <= K = total_steps``, and
    ``m_final`` after that."""
    m0 = _check_momentum("momentum", momentum)
    mf = _check_momentum("final_momentum", final_momentum)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if schedule == "constant":
        return m0
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(
            f"total_steps must be a positive integer for schedule='cosine', got {total_steps!r}"
        )
    k = min(step, total_steps)
    return mf - (mf - m0) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


def _pairs(target: nn.Module, online: nn.Module, what: str):
    get = (
        (lambda m: m.named_parameters()) if what == "parameters" else (lambda m: m.named_buffers())
    )
    t, o = list(get(target)), list(get(online))
    if len(t) != len(o):
        raise ValueError(
            f"online has {len(o)} {what} but the momentum copy has {len(t)}: "
            "online must have the architecture of the encoder that was copied"
        )
    for (nt, pt), (no, po) in zip(t, o):
        if nt != no or pt.shape != po.shape:
            raise ValueError(
                f"online {what[:-1]} {no!r} {tuple(po.shape)} does not match the momentum copy's "
                f"{nt!r} {tuple(pt.shape)}"
            )
    return [p for _, p in t], [p for _, p in o]


@torch.no_grad()
def momentum_update(
    target: nn.Module, online: nn.Module, momentum: float, *, buffers: str = "copy"
) -> None:
    """In place, for every parameter pair: ``target <- momentum * target + (1 - momentum) *
    online``. ``buffers``: ``"copy"`` (BN running statistics copied from ``online``), ``"ema"``
    (floating buffers averaged like parameters, others copied) or ``"keep"`` (untouched: the
    target's buffers evolve through its own forwards, as in MoCo's official code)."""
    m = _check_momentum("momentum", momentum)
    if buffers not in BUFFER_MODES:
        raise ValueError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
    tp, op = _pairs(target, online, "parameters")
    if tp:
        src = [p.detach().to(t.dtype) for t, p in zip(tp, op)]
        torch._foreach_mul_(tp, m)
        torch._foreach_add_(tp, src, alpha=1.0 - m)
    if buffers == "keep":
        return
    tb, ob = _pairs(target, online, "buffers")
    for t, o in zip(tb, ob):
        if buffers == "ema" and t.is_floating_point():
            t.mul_(m).add_(o.to(t.dtype), alpha=1.0 - m)
        else:
            t.copy_(o)


class MomentumEncoder(nn.Module):
    """An EMA copy of ``encoder`` (deep copy, parameters ``requires_grad=False``).

    Args:
        encoder: the online encoder to copy (its current weights are the copy's start).
        momentum: ``m_0`` (MoCo 0.999, BYOL 0.996, ESimCSE 0.995).
        schedule: ``"constant"`` or ``"cosine"`` (BYOL; needs ``total_steps``).
        total_steps: ``K`` of the cosine schedule.
        final_momentum: value the cosine schedule reaches at ``K`` (1.0 in BYOL).
        buffers: ``"copy"`` (default; buffers such as BN running statistics copied from the online
            encoder at each update), ``"ema"``, or ``"keep"`` (MoCo's official code averages
            parameters only; the key encoder's BN statistics come from its own forwards).

    ``update(online, step=None)`` applies one EMA step with ``momentum_at(step)``; without
    ``step`` an internal counter (``num_updates``, saved in the state dict) is used and
    incremented. ``forward(*args, **kwargs)`` runs the copy under ``torch.no_grad()`` in its
    current mode (``.train()`` / ``.eval()`` as for any module).
    """

    def __init__(
        self,
        encoder: nn.Module,
        momentum: float = 0.999,
        *,
        schedule: str = "constant",
        total_steps: Optional[int] = None,
        final_momentum: float = 1.0,
        buffers: str = "copy",
    ):
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise ValueError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        if buffers not in BUFFER_MODES:
            raise ValueError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
        self.momentum = _check_momentum("momentum", momentum)
        self.final_momentum = _check_momentum("final_momentum", final_momentum)
        self.schedule = schedule
        self.total_steps = total_steps
        self.buffers_mode = buffers
        momentum_schedule(0, momentum, schedule=schedule, total_steps=total_steps)  # validates
        self.encoder = copy.deepcopy(encoder)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def momentum_at(self, step: int) -> float:
        """The schedule's momentum at ``step`` (0-based)."""
        return momentum_schedule(
            step,
            self.momentum,
            schedule=self.schedule,
            total_steps=self.total_steps,
            final_momentum=self.final_momentum,
        )

    @torch.no_grad()
    def update(self, online: nn.Module, step: Optional[int] = None) -> float:
        """One EMA step towards ``online``; returns the momentum used. ``step`` defaults to the
        number of updates done so far (the counter is then set to ``step + 1``)."""
        if not isinstance(online, nn.Module):
            raise ValueError(f"online must be a torch.nn.Module, got {type(online).__name__}")
        k = int(self.num_updates) if step is None else step
        m = self.momentum_at(k)
        momentum_update(self.encoder, online, m, buffers=self.buffers_mode)
        self.num_updates.fill_(k + 1)
        return m

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.encoder(*args, **kwargs)

    def extra_repr(self) -> str:
        s = f"momentum={self.momentum}, schedule={self.schedule!r}"
        if self.schedule == "cosine":
            s += f", total_steps={self.total_steps}, final_momentum={self.final_momentum}"
        return s + f", buffers={self.buffers_mode!r}"
