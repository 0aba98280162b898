"""Cross-batch memory (XBM; Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020,
arXiv:1912.06798).

Embeddings and labels of past batches are kept (detached) as extra candidates of a pair-based
loss. Per step: ``f = model(x)``; ``mem = xbm(f, y)`` enqueues ``sg(f), y`` (once past
``start_iteration``) and returns the whole memory, *current batch included*, with ``self_index``:
the memory row of each anchor, so a loss drops exactly the self-pairs
(the official code drops "positives" with similarity >= 1 - 1e-5 instead). Then
``L = L_batch + weight * loss(f, y, mem.features, mem.labels, self_index)``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from .._validation import check_embeddings, check_labels
from .queue import _check_size

__all__ = ["CrossBatchMemory", "MemoryBatch"]

OVERFLOW = ("wrap", "tail")


class MemoryBatch(NamedTuple):
    """What :class:`CrossBatchMemory` returns: ``features (n, d)``, ``labels (n,)`` and
    ``self_index (N,)`` (row of ``features`` holding each anchor)."""

    features: Tensor
    labels: Tensor
    self_index: Tensor


class CrossBatchMemory(nn.Module):
    """XBM memory of ``size`` embeddings of dimension ``dim`` with integer labels.

    Args:
        size: capacity ``K`` (official defaults 8192; 55000 in the SOP sample config).
        dim: embedding dimension.
        start_iteration: calls up to and including this one neither write nor read (returns
            ``None``): the official ``iteration > START_ITERATION`` (default there 1000 or 2000;
            0 here, i.e. active from the first call).
        overflow: ``"wrap"`` (ring buffer, as pytorch-metric-learning's ``CrossBatchMemory``)
            or ``"tail"`` (official XBM: the pointer runs up to ``size``; a batch that does not
            fit is written into the last ``N`` slots and the pointer reset to 0).
        dtype, device: of the feature buffer.

    Rows are returned in slot order (order does not change a pair loss); only slots written so
    far are returned (a mask of written slots replaces the official ``targets[-1] != 0`` "full"
    test, which fails when class 0 lands in the last slot).
    """

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        start_iteration: int = 0,
        overflow: str = "wrap",
        dtype: torch.dtype = torch.float32,
        device=None,
    ):
        super().__init__()
        self.size = _check_size("size", size)
        self.dim = _check_size("dim", dim)
        if isinstance(start_iteration, bool) or not isinstance(start_iteration, int):
            raise ValueError(f"start_iteration must be an integer, got {start_iteration!r}")
        if start_iteration < 0:
            raise ValueError(f"start_iteration must be >= 0, got {start_iteration}")
        if overflow not in OVERFLOW:
            raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
        self.start_iteration = start_iteration
        self.overflow = overflow
        self.register_buffer("feats", torch.zeros(size, dim, dtype=dtype, device=device))
        self.register_buffer("targets", torch.zeros(size, dtype=torch.long, device=device))
        self.register_buffer("_ptr", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("_written", torch.zeros(size, dtype=torch.bool, device=device))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long, device=device))

    def __len__(self) -> int:
        return int(self._written.sum())

    @property
    def is_full(self) -> bool:
        return bool(self._written.all())

    @property
    def active(self) -> bool:
        """Whether the next call writes and reads (``iteration + 1 > start_iteration``)."""
        return int(self.iteration) + 1 > self.start_iteration

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Write ``sg(embeddings)``, ``labels``; returns the slots written (one per row)."""
        check_embeddings("embeddings", embeddings)
        n = embeddings.shape[0]
        if embeddings.shape[1] != self.dim:
            raise ValueError(
                f"embeddings must have dimension dim={self.dim}, got {tuple(embeddings.shape)}"
            )
        if n > self.size:
            raise ValueError(f"a batch of {n} rows does not fit a memory of size={self.size}")
        if embeddings.device != self.feats.device:
            raise ValueError(
                f"embeddings are on {embeddings.device} but the memory is on {self.feats.device}"
            )
        check_labels("labels", labels, n, embeddings)
        p = int(self._ptr)
        dev = self.feats.device
        if self.overflow == "tail":
            # official: the pointer runs up to size; a batch that does not fit goes to the end
            if p + n > self.size:
                slots, new_ptr = torch.arange(self.size - n, self.size, device=dev), 0
            else:
                slots, new_ptr = torch.arange(p, p + n, device=dev), p + n
        else:
            slots, new_ptr = (torch.arange(n, device=dev) + p) % self.size, (p + n) % self.size
        self.feats[slots] = embeddings.detach().to(self.feats.dtype)
        self.targets[slots] = labels.to(torch.long)
        self._written[slots] = True
        self._ptr.fill_(new_ptr)
        return slots

    def memory(self) -> tuple[Tensor, Tensor]:
        """Stored ``(features, labels)`` in slot order (only slots written so far)."""
        if self.is_full:
            return self.feats.clone(), self.targets.clone()
        return self.feats[self._written], self.targets[self._written]

    def forward(self, embeddings: Tensor, labels: Tensor) -> Optional[MemoryBatch]:
        """One training step: count it; once active, enqueue and return the memory."""
        check_embeddings("embeddings", embeddings)
        check_labels("labels", labels, embeddings.shape[0], embeddings)
        self.iteration += 1
        if int(self.iteration) <= self.start_iteration:
            return None
        slots = self.enqueue(embeddings, labels)
        feats, targets = self.memory()
        row_of_slot = torch.cumsum(self._written.long(), 0) - 1
        return MemoryBatch(feats, targets, row_of_slot[slots])
