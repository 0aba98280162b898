"""Step-dependent coefficients: temperature schedules (and any other coefficient over training).

Every schedule is a small callable object: ``schedule(step) -> float`` for a step (or epoch)
``t >= 0``; pass the value as ``temperature=`` to an objective at each step::

    tau = CyclicCosineSchedule(minimum=0.1, maximum=1.0, period=400)
    loss = contrastkit.info_nce(q, k, temperature=tau(epoch))

* :class:`ConstantSchedule`: ``v``;
* :class:`LinearSchedule`: ``start -> end`` linearly over ``steps``, then ``end`` (warm-up);
* :class:`CosineSchedule`: ``start -> end`` along a half cosine over ``steps``, then ``end``;
* :class:`CyclicCosineSchedule`: ``(max - min) (1 + cos(2 pi t / T)) / 2 + min``, periodic (Kukleva
  et al., "Temperature Schedules for Self-Supervised Contrastive Methods on Long-Tail Data",
  ICLR 2023, arXiv:2303.13664);
* :class:`StepSchedule`: piecewise constant, ``values[i]`` from ``boundaries[i - 1]`` on.

``floor`` (optional, every schedule) clamps the value from below, e.g. a temperature that must
stay positive. Learned temperatures are :class:`contrastkit.objective.LogitScale` (one scalar)
or the per-anchor temperatures the objectives accept (``temperature`` of shape ``(N,)``). A
temperature per *pair* (a function of the two samples' semantic similarity, one reading of
CLSR's "adaptive temperature with semantic guidance") is not expressible as a schedule or as
log-sum-exp weights: it needs a per-tile scaling of the logits in the engine.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = [
    "ConstantSchedule",
    "CosineSchedule",
    "CyclicCosineSchedule",
    "LinearSchedule",
    "Schedule",
    "StepSchedule",
]


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _count(name: str, value) -> float:
    v = _finite(name, value)
    if v <= 0:
        raise ValueError(f"{name} must be > 0 (a number of steps), got {value!r}")
    return v


class Schedule:
    """Base class: ``schedule(step)`` checks ``step`` (a finite number >= 0), evaluates
    :meth:`value` and applies ``floor``."""

    def __init__(self, floor: Optional[float] = None):
        self.floor = None if floor is None else _finite("floor", floor)

    def value(self, t: float) -> float:
        raise NotImplementedError

    def __call__(self, step) -> float:
        t = _finite("step", step)
        if t < 0:
            raise ValueError(f"step must be >= 0, got {step!r}")
        v = self.value(t)
        return v if self.floor is None else max(v, self.floor)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if v is not None)
        return f"{type(self).__name__}({args})"


class ConstantSchedule(Schedule):
    """``v`` at every step (a fixed temperature)."""

    def __init__(self, v: float, *, floor: Optional[float] = None):
        super().__init__(floor)
        self.v = _finite("v", v)

    def value(self, t: float) -> float:
        return self.v


class LinearSchedule(Schedule):
    """``start + (end - start) min(t / steps, 1)``: a linear ramp, then ``end``."""

    def __init__(self, start: float, end: float, steps: float, *, floor: Optional[float] = None):
        super().__init__(floor)
        self.start, self.end = _finite("start", start), _finite("end", end)
        self.steps = _count("steps", steps)

    def value(self, t: float) -> float:
        return self.start + (self.end - self.start) * min(t / self.steps, 1.0)


class CosineSchedule(Schedule):
    """``end + (start - end) (1 + cos(pi min(t / steps, 1))) / 2``: from ``start`` to ``end``
    along a half cosine (flat at both ends), then ``end``."""

    def __init__(self, start: float, end: float, steps: float, *, floor: Optional[float] = None):
        super().__init__(floor)
        self.start, self.end = _finite("start", start), _finite("end", end)
        self.steps = _count("steps", steps)

    def value(self, t: float) -> float:
        x = min(t / self.steps, 1.0)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * x))


class CyclicCosineSchedule(Schedule):
    """``(maximum - minimum) (1 + cos(2 pi t / period)) / 2 + minimum``: ``maximum`` at
    ``t = 0, T, 2T, ...``, ``minimum`` at ``T / 2``. Kukleva et al. (ICLR 2023) use
    ``minimum=0.1, maximum=1.0, period=400`` epochs for contrastive pre-training on long-tailed
    data (alternating instance discrimination and group-wise discrimination)."""

    def __init__(
        self, minimum: float, maximum: float, period: float, *, floor: Optional[float] = None
    ):
        super().__init__(floor)
        self.minimum, self.maximum = _finite("minimum", minimum), _finite("maximum", maximum)
        if self.maximum < self.minimum:
            raise ValueError(f"maximum must be >= minimum, got {maximum} < {minimum}")
        self.period = _count("period", period)

    def value(self, t: float) -> float:
        c = math.cos(2.0 * math.pi * t / self.period)
        return (self.maximum - self.minimum) * 0.5 * (1.0 + c) + self.minimum


class StepSchedule(Schedule):
    """Piecewise constant: ``values[0]`` before ``boundaries[0]``, ``values[i]`` from
    ``boundaries[i - 1]`` (inclusive) on; ``len(values) == len(boundaries) + 1``."""

    def __init__(
        self,
        values: Sequence[float],
        boundaries: Sequence[float],
        *,
        floor: Optional[float] = None,
    ):
        super().__init__(floor)
        self.values = [_finite("values", v) for v in values]
        self.boundaries = [_finite("boundaries", b) for b in boundaries]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"values needs one more entry than boundaries, got {len(self.values)} values "
                f"and {len(self.boundaries)} boundaries"
            )
        if any(b <= a for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"boundaries must be increasing, got {self.boundaries}")

    def value(self, t: float) -> float:
        i = sum(1 for b in self.boundaries if t >= b)
        return self.values[i]
