"""Training pairs streamed from their file every epoch (``stream = true``): a file larger than
memory trains.

Nothing but a shuffle buffer is held: each epoch reads the file from the start and passes the
examples through a buffer of ``buffer`` examples (seeded by the run's ``seed`` and the epoch):
when the buffer is full, a random slot is emitted and replaced by the next example; at the end
of the file the buffer is emitted in a random order. This is the shuffle of streamed datasets
(``datasets.IterableDataset.shuffle``, WebDataset): the order is random within a window of
``buffer`` examples of the file, so a file sorted by topic should be shuffled once beforehand or
given a buffer larger than a topic.

Position ``p`` of epoch ``e`` is a fixed example for a given seed, so a resumed run (which
re-reads the file and skips to its position) and every process of a multi-process run see the
same batches as an uninterrupted single-process run.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Iterator, Optional

__all__ = ["ShuffleStream"]


class ShuffleStream:
    """Examples by epoch position, read through a seeded shuffle buffer.

    Args:
        examples: a callable returning a fresh iterator over the training examples in file
            order (the held-out ones already left out).
        length: how many examples the iterator yields.
        buffer: shuffle-buffer size (examples held in memory).
        seed: the run's seed.
    """

    def __init__(self, examples: Callable[[], Iterable], length: int, buffer: int, seed: int):
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {buffer}")
        self._examples, self.length, self.buffer, self.seed = examples, length, buffer, seed
        self._epoch: Optional[int] = None
        self._it: Optional[Iterator] = None
        self._next = 0  # position of the next example the iterator yields
        self._window: dict[int, object] = {}

    def __len__(self) -> int:
        return self.length

    def _shuffled(self, epoch: int) -> Iterator:
        rng = random.Random((self.seed * 1_000_003 + epoch) % 2**63)
        buf: list = []
        for example in self._examples():
            if len(buf) < self.buffer:
                buf.append(example)
                continue
            j = rng.randrange(self.buffer)
            yield buf[j]
            buf[j] = example
        rng.shuffle(buf)
        yield from buf

    def rows(self, epoch: int, positions: Iterable[int]) -> list:
        """The examples at ``positions`` (increasing, within one batch) of ``epoch``'s order."""
        positions = list(positions)
        if not positions:
            return []
        first, last = min(positions), max(positions)
        if last >= self.length:
            raise IndexError(f"position {last} is past the {self.length} streamed examples")
        if (
            epoch != self._epoch
            or first < self._next - len(self._window)
            or (self._window and first < min(self._window))
        ):
            self._epoch, self._it, self._next = epoch, self._shuffled(epoch), 0
            self._window = {}
        window = {p: e for p, e in self._window.items() if p >= first}
        assert self._it is not None
        while self._next <= last:
            example = next(self._it)
            if self._next >= first:
                window[self._next] = example
            self._next += 1
        self._window = window
        return [window[p] for p in positions]
