"""Errors for bad data, and the bookkeeping of ``skip_bad_rows``.

Every reader in :mod:`contrastkit.data` reports a problem with the data itself (a missing
column, an empty text, a score that is not a number, a byte that is not UTF-8, an image that
does not open) as a :class:`DataError`: a ``ValueError`` whose message starts with the place
(``path:line``, or ``path row N`` for Parquet and Hugging Face datasets) and the column, and
whose attributes carry the same facts for programs::

    try:
        rows = list(TextPairs("train.jsonl"))
    except DataError as err:
        print(err.file, err.line, err.column, err.reason)

Nothing is dropped silently. A reader built with ``skip_bad_rows=True`` skips rows that raise a
:class:`DataError` instead, counts them in :class:`BadRows` (``dataset.bad_rows``) and, at the
end of each pass, warns with the count and the first few errors (a ``UserWarning``).
Problems that concern the whole file (it does not exist, its format is unknown, a required
column is absent from its header) are never skipped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Union

__all__ = ["Location", "DataError", "BadRows", "MissingDependency"]


@dataclass(frozen=True)
class Location:
    """Where a row comes from: ``file`` and either its 1-based ``line`` (JSONL, CSV, TSV: the
    line the row starts on) or its 1-based ``row`` (Parquet, Hugging Face datasets)."""

    file: str
    line: Optional[int] = None
    row: Optional[int] = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}"
        if self.row is not None:
            return f"{self.file} row {self.row}"
        return self.file


class DataError(ValueError):
    """Bad data, with where it is: ``file``, ``line`` (or ``row``) and ``column``.

    ``column`` is a column name, or for a byte that does not decode as UTF-8, the 1-based byte
    position in the line. ``reason`` is the message without the place. ``str(err)`` reads
    ``path:12: column 'positive': empty text``. The attributes survive pickling; a ``DataLoader``
    worker's error reaches the main process as a ``DataError`` whose message (torch's, with the
    worker's traceback) holds the place, but whose attributes are not set.
    """

    def __init__(
        self,
        reason: str,
        *,
        file=None,
        line: Optional[int] = None,
        row: Optional[int] = None,
        column: Union[str, int, None] = None,
    ):
        self.reason = reason
        self.file = None if file is None else str(file)
        self.line = line
        self.row = row
        self.column = column
        place = str(Location(self.file, line, row)) if self.file is not None else ""
        if column is not None:
            col = f"column {column!r}" if isinstance(column, str) else f"column {column}"
            place = f"{place}: {col}" if place else col
        super().__init__(f"{place}: {reason}" if place else reason)

    def __reduce__(self):  # keep the attributes through pickling (DataLoader workers)
        return _rebuild, (type(self), self.reason, self.file, self.line, self.row, self.column)

    @classmethod
    def at(cls, location: Location, reason: str, column: Union[str, int, None] = None):
        """The error for ``reason`` at ``location`` (and ``column``)."""
        return cls(reason, file=location.file, line=location.line, row=location.row, column=column)


def _rebuild(cls, reason, file, line, row, column):
    return cls(reason, file=file, line=line, row=row, column=column)


class MissingDependency(ImportError, ValueError):
    """An optional package is not installed; the message names the pip extra that brings it.

    Both an ``ImportError`` and a ``ValueError``, so either ``except`` catches it.
    """


class BadRows:
    """Counts the rows skipped under ``skip_bad_rows=True`` (and raises when it is False).

    ``count`` is the number of rows skipped in the last pass, ``errors`` the first ``keep``
    :class:`DataError` s of it. With a multi-worker ``DataLoader`` each worker process keeps
    its own count and warns for its own rows; the parent's object is not updated.
    """

    def __init__(self, skip: bool = False, keep: int = 5):
        self.skip = bool(skip)
        self.keep = int(keep)
        self.count = 0
        self.errors: list[DataError] = []

    def reset(self) -> None:
        self.count = 0
        self.errors = []

    def handle(self, err: DataError) -> None:
        """Raise ``err``, or count it when skipping."""
        if not self.skip:
            raise err
        self.count += 1
        if len(self.errors) < self.keep:
            self.errors.append(err)

    def report(self, what: str) -> Optional[str]:
        """Warn (``UserWarning``) with the count of skipped rows of ``what``; return the text."""
        if not self.count:
            return None
        first = "; ".join(str(e) for e in self.errors)
        more = " ..." if self.count > len(self.errors) else ""
        text = f"skipped {self.count} bad row(s) of {what}: {first}{more}"
        warnings.warn(text, UserWarning, stacklevel=3)
        return text

    def __repr__(self) -> str:
        return f"BadRows(skip={self.skip}, count={self.count})"
