"""Where candidates come from: the one interface through which every engine sweep reads them.

A candidate source yields column tiles ``(c0, c1, B[c0:c1])`` with global column offsets. The
local source slices one tensor; a distributed source (next scale step) yields the shards of
other ranks with the same offsets, so positives, exclusions and pair functions, which are all
expressed in global columns, do not change.
"""

from __future__ import annotations

from typing import Iterator

from torch import Tensor


class LocalCandidates:
    """All candidates live in this process as one ``(M, d)`` tensor."""

    def __init__(self, B: Tensor):
        self.B = B

    def __len__(self) -> int:
        return self.B.shape[0]

    def tiles(self, size: int) -> Iterator[tuple[int, int, Tensor]]:
        M = self.B.shape[0]
        for c0 in range(0, M, size):
            c1 = min(c0 + size, M)
            yield c0, c1, self.B[c0:c1]
