"""MoCo-style FIFO queue of keys (He et al., "Momentum Contrast for Unsupervised Visual
Representation Learning", CVPR 2020, arXiv:1911.05722).

The queue is a ring buffer of ``size`` rows held in registered buffers (so it is saved in a
``state_dict``). ``enqueue`` writes detached keys at the pointer with wrap-around, for any batch
size (MoCo's official code asserts ``size % batch == 0``; ``require_divisible=True`` keeps that
assert). ``keys`` returns a snapshot, oldest row first, to be used as shared negatives, e.g.
``InfoNCE()(q, k, queue.keys)`` (read the snapshot *before* this step's ``enqueue`` as MoCo does).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_embeddings

__all__ = ["Queue"]


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_ids(name: str, ids, n: int, ref: Tensor) -> Tensor:
    if not isinstance(ids, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(ids).__name__}")
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one per key), got {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer ids, got dtype {ids.dtype}")
    if ids.device != ref.device:
        raise ValueError(f"{name} is on {ids.device} but the queue is on {ref.device}")
    return ids


class Queue(nn.Module):
    """FIFO of ``size`` keys of dimension ``dim`` (MoCo: ``size=65536``, ``dim=128``).

    Args:
        size: capacity ``K``.
        dim: key dimension ``d``.
        labels: also store one integer label per key (``enqueue(..., labels=)`` then required).
        indices: also store one integer sample id per key (e.g. to mask a sample's own key).
        dtype, device: of the key buffer.
        require_divisible: raise unless every batch size divides ``size`` (MoCo's assert).

    The queue starts empty. MoCo initialises it with random unit vectors instead:
    ``Queue(K, d).random_init(generator)`` (labels and indices of those rows are ``-1``).
    ``keys`` / ``labels`` / ``indices`` are detached copies in insertion order (oldest first);
    ``len(queue)`` is the number of filled rows.
    """

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        labels: bool = False,
        indices: bool = False,
        dtype: torch.dtype = torch.float32,
        device=None,
        require_divisible: bool = False,
    ):
        super().__init__()
        self.size = _check_size("size", size)
        self.dim = _check_size("dim", dim)
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.track_labels = bool(labels)
        self.track_indices = bool(indices)
        self.require_divisible = bool(require_divisible)
        self.register_buffer("_keys", torch.zeros(size, dim, dtype=dtype, device=device))
        lab = torch.full((size if labels else 0,), -1, dtype=torch.long, device=device)
        idx = torch.full((size if indices else 0,), -1, dtype=torch.long, device=device)
        self.register_buffer("_labels", lab)
        self.register_buffer("_indices", idx)
        # next write position and number of filled rows
        self.register_buffer("_ptr", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("_count", torch.zeros((), dtype=torch.long, device=device))

    # ------------------------------------------------------------------ state
    @property
    def ptr(self) -> int:
        """Slot that the next key is written to (MoCo's ``queue_ptr``)."""
        return int(self._ptr)

    def __len__(self) -> int:
        return int(self._count)

    @property
    def is_full(self) -> bool:
        return int(self._count) == self.size

    def _ordered(self, buf: Tensor) -> Tensor:
        n, p = int(self._count), int(self._ptr)
        if n < self.size:
            return buf[:n].clone()
        return torch.cat([buf[p:], buf[:p]])

    @property
    def keys(self) -> Tensor:
        """Stored keys ``(len(self), dim)``, oldest first (a copy: safe to use in a loss while
        the queue is updated afterwards)."""
        return self._ordered(self._keys)

    @property
    def labels(self) -> Optional[Tensor]:
        """Labels ``(len(self),)`` aligned with :attr:`keys`, or ``None`` when not tracked."""
        return self._ordered(self._labels) if self.track_labels else None

    @property
    def indices(self) -> Optional[Tensor]:
        """Sample ids ``(len(self),)`` aligned with :attr:`keys`, or ``None`` when not tracked."""
        return self._ordered(self._indices) if self.track_indices else None

    def reset(self) -> "Queue":
        """Empty the queue (buffers zeroed, pointer 0)."""
        self._keys.zero_()
        self._labels.fill_(-1)
        self._indices.fill_(-1)
        self._ptr.zero_()
        self._count.zero_()
        return self

    @torch.no_grad()
    def random_init(self, generator: Optional[torch.Generator] = None) -> "Queue":
        """MoCo's initialisation: every row a standard-normal vector scaled to unit length, the
        queue counted as full, pointer 0; labels and indices ``-1`` ("no sample")."""
        g = torch.randn(self.size, self.dim, generator=generator, dtype=torch.float64)
        self._keys.copy_(F.normalize(g, dim=1))
        self._labels.fill_(-1)
        self._indices.fill_(-1)
        self._ptr.zero_()
        self._count.fill_(self.size)
        return self

    # ---------------------------------------------------------------- enqueue
    @torch.no_grad()
    def enqueue(
        self, keys: Tensor, labels: Optional[Tensor] = None, indices: Optional[Tensor] = None
    ) -> "Queue":
        """Append ``keys (n, dim)`` (detached, cast to the queue's dtype), overwriting the oldest
        rows once full. A batch larger than ``size`` keeps its newest (last) ``size`` rows."""
        check_embeddings("keys", keys)
        if keys.shape[1] != self.dim:
            raise ValueError(
                f"keys must have dimension dim={self.dim}, got shape {tuple(keys.shape)}"
            )
        if keys.device != self._keys.device:
            raise ValueError(f"keys are on {keys.device} but the queue is on {self._keys.device}")
        n = keys.shape[0]
        if self.require_divisible and self.size % n != 0:
            raise ValueError(
                f"require_divisible=True: the batch of keys ({n} rows) must divide size={self.size}"
            )
        extra = {}
        for name, value, tracked in (
            ("labels", labels, self.track_labels),
            ("indices", indices, self.track_indices),
        ):
            if tracked and value is None:
                raise ValueError(f"{name} is required: the queue was built with {name}=True")
            if not tracked and value is not None:
                raise ValueError(f"{name} were given but the queue was built with {name}=False")
            if tracked:
                extra[name] = _check_ids(name, value, n, self._keys)
        if n > self.size:  # only the newest rows survive
            keys = keys[n - self.size :]
            extra = {k: v[n - self.size :] for k, v in extra.items()}
            m = self.size
        else:
            m = n
        slots = (torch.arange(m, device=self._keys.device) + int(self._ptr)) % self.size
        self._keys[slots] = keys.detach().to(self._keys.dtype)
        if "labels" in extra:
            self._labels[slots] = extra["labels"].to(torch.long)
        if "indices" in extra:
            self._indices[slots] = extra["indices"].to(torch.long)
        self._ptr.fill_((int(self._ptr) + m) % self.size)
        self._count.fill_(min(self.size, int(self._count) + m))
        return self

    def extra_repr(self) -> str:
        flags = (("labels", self.track_labels), ("indices", self.track_indices))
        tracked = [name for name, on in flags if on]
        return f"size={self.size}, dim={self.dim}, filled={len(self)}" + (
            f", tracks={'+'.join(tracked)}" if tracked else ""
        )
