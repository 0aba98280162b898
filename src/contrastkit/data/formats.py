"""Streaming row readers for JSONL, CSV, TSV and Parquet files.

A :class:`RowReader` yields ``(location, row)`` pairs one row at a time: ``row`` is a ``dict``
from column name to value and ``location`` a :class:`~contrastkit.data.errors.Location` (file and
line for text formats, file and row for Parquet). Nothing reads the whole file: JSONL and
CSV/TSV are read line by line, Parquet one batch (at most ``batch_size`` rows of a row group) at
a time, so a file larger than memory streams.

==========  ====================  =====================================================
format      extensions            how it is read
==========  ====================  =====================================================
``jsonl``   .jsonl .ndjson .json  one JSON object per line; blank lines are ignored
``csv``     .csv                  header line, then rows (the ``csv`` module, ``,``)
``tsv``     .tsv                  the same with tabs (quoting as in CSV: a field that
                                  starts with ``"`` is a quoted field)
``parquet`` .parquet .pq          pyarrow (``pip install 'contrastkit[data]'``)
==========  ====================  =====================================================

Values keep their type: JSON and Parquet values as stored, CSV/TSV values as strings (an empty
cell is ``""``). Text files must be UTF-8 (a leading byte-order mark is ignored). Problems raise
:class:`~contrastkit.data.errors.DataError` naming the file and line: a byte that is not UTF-8
(with its byte position as the column), a line that is not a JSON object, a CSV row with more or
fewer cells than the header, a duplicate header name.

Example::

    from contrastkit.data.formats import RowReader

    for location, row in RowReader("pairs.csv"):
        print(location, row["anchor"])        # pairs.csv:2 ...

A file object (text or binary) or any iterable of lines can be read too; give ``format`` and a
``name`` for the messages. It is read once (a path can be read any number of times).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

from .errors import BadRows, DataError, Location, MissingDependency

__all__ = ["FORMATS", "RowReader", "iter_rows", "detect_format"]

#: file extension -> format name
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_NAMES = ("jsonl", "csv", "tsv", "parquet")


def detect_format(path) -> str:
    """The format of ``path`` from its extension (``DataError`` when unknown)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"cannot tell the format from the extension {suffix or '(none)'!r}: use one of "
            f"{', '.join(sorted(FORMATS))}, or pass format= ({', '.join(_NAMES)})",
            file=path,
        )
    return FORMATS[suffix]


def pyarrow_parquet():
    """``pyarrow.parquet``, or :class:`MissingDependency` naming the ``data`` extra."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependency(
            "reading Parquet needs pyarrow: pip install 'contrastkit[data]' (or pyarrow)"
        ) from exc
    return pq


class RowReader:
    """Rows of one JSONL, CSV, TSV or Parquet file, streamed as ``(location, row)`` pairs.

    Args:
        source: a path, or (JSONL/CSV/TSV only) an open file or an iterable of lines
            (``str`` or ``bytes``).
        format: ``"jsonl"``, ``"csv"``, ``"tsv"`` or ``"parquet"``; default from the extension.
        name: the file name used in messages (default: the path, or the file object's name).
        batch_size: Parquet rows decoded at a time.
        bad_rows: a :class:`~contrastkit.data.errors.BadRows`; with ``BadRows(skip=True)``
            unreadable rows are counted and skipped instead of raised.

    ``columns`` is the header (CSV/TSV) or schema (Parquet) once iteration has started, and
    ``None`` for JSONL, whose rows may each have their own keys.

    Example::

        reader = RowReader("train.parquet")
        location, row = next(iter(reader))    # reads one batch, not the file
        reader.columns                        # ['anchor', 'positive', ...]
    """

    def __init__(
        self,
        source,
        format: Optional[str] = None,
        *,
        name: Optional[str] = None,
        batch_size: int = 1024,
        bad_rows: Optional[BadRows] = None,
    ):
        self.is_path = isinstance(source, (str, os.PathLike))
        if self.is_path:
            self.name = str(name if name is not None else source)
            self.format = format or detect_format(source)
        else:
            self.name = str(name if name is not None else getattr(source, "name", "<stream>"))
            if format is None:
                raise ValueError("format= is required to read a file object or lines")
            self.format = format
        if self.format not in _NAMES:
            raise ValueError(f"format must be one of {_NAMES}, got {self.format!r}")
        if not self.is_path and self.format == "parquet":
            raise ValueError("Parquet is read from a path, not from a file object")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.source = source
        self.batch_size = int(batch_size)
        self.bad_rows = bad_rows
        self.columns: Optional[list[str]] = None

    def __repr__(self) -> str:
        return f"RowReader({self.name!r}, format={self.format!r})"

    def __iter__(self) -> Iterator[tuple[Location, dict]]:
        for where, row in self.items():
            if isinstance(row, DataError):
                if self.bad_rows is None:
                    raise row
                self.bad_rows.handle(row)
                continue
            yield where, row

    def items(
        self, keep: Optional[Callable[[], bool]] = None
    ) -> Iterator[tuple[Location, Union[dict, DataError, None]]]:
        """Like iteration, but a bad row (a line that is not UTF-8, not a JSON object, or a CSV
        row of the wrong length) comes as ``(location, DataError)`` instead of being raised or
        skipped, so a caller can decide per row. Errors about the whole file still raise.

        ``keep``, called once per row in order, selects rows (a worker's share): a row it
        rejects comes as ``(location, None)`` without being parsed or checked."""
        if self.format == "parquet":
            return self._parquet(keep)
        return self._text(keep)

    # -- text formats ------------------------------------------------------------------------
    def _open(self):
        if not self.is_path:
            return None, self.source
        path = Path(self.source)
        if not path.is_file():
            raise DataError("file not found" if not path.exists() else "not a file", file=self.name)
        f = open(path, "rb")
        return f, f

    def _lines(self, lines: Iterable) -> Iterator[tuple[str, Optional[DataError]]]:
        """Decoded lines with the byte-order mark removed, each with a ``DataError`` when it is
        not UTF-8 (then decoded with ``surrogateescape`` so that a CSV record stays whole)."""
        for lineno, raw in enumerate(lines, 1):
            bad = None
            if isinstance(raw, bytes):
                try:
                    raw = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    byte = raw[exc.start : exc.start + 1].hex()
                    bad = DataError(
                        f"not valid UTF-8 (byte 0x{byte}); re-encode the file as UTF-8",
                        file=self.name,
                        line=lineno,
                        column=exc.start + 1,
                    )
                    raw = raw.decode("utf-8", "surrogateescape")
            if lineno == 1 and raw.startswith("\ufeff"):
                raw = raw[1:]
            yield raw, bad

    def _text(self, keep) -> Iterator[tuple[Location, Union[dict, DataError]]]:
        handle, lines = self._open()
        try:
            if self.format == "jsonl":
                yield from self._jsonl(self._lines(lines), keep)
            else:
                yield from self._csv(self._lines(lines), keep)
        finally:
            if handle is not None:
                handle.close()

    def _jsonl(self, lines, keep) -> Iterator[tuple[Location, Union[dict, DataError]]]:
        for lineno, (line, bad) in enumerate(lines, 1):
            if not line.strip():
                continue
            where = Location(self.name, line=lineno)
            if keep is not None and not keep():
                yield where, None
                continue
            if bad is not None:
                yield where, bad
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                hint = ""
                if lineno == 1 and line.lstrip().startswith("["):
                    hint = " (a JSON array is not JSON Lines: write one object per line)"
                yield where, DataError.at(where, f"not valid JSON ({exc.msg}){hint}")
                continue
            if not isinstance(row, dict):
                hint = ""
                if lineno == 1 and isinstance(row, list):
                    hint = " (a JSON array is not JSON Lines: write one object per line)"
                yield where, DataError.at(where, f"expected a JSON object, got {row!r:.60}{hint}")
                continue
            yield where, row

    def _csv(self, lines, keep) -> Iterator[tuple[Location, Union[dict, DataError]]]:
        errors: list[DataError] = []  # UTF-8 errors of the lines the current record spans

        def text():
            for line, bad in lines:
                if bad is not None:
                    errors.append(bad)
                yield line

        reader = csv.reader(text(), delimiter="\t" if self.format == "tsv" else ",")
        header = None
        end = 0  # last line consumed by the previous record
        while True:
            errors.clear()
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise DataError(
                    f"not valid {self.format.upper()} ({exc})", file=self.name, line=end + 1
                ) from None
            start, end = end + 1, reader.line_num
            if not cells:  # a blank line
                continue
            if header is None:
                if errors:
                    raise errors[0]
                dupes = sorted({c for c in cells if cells.count(c) > 1})
                if dupes:
                    raise DataError(
                        f"duplicate column name(s) in the header: {dupes}",
                        file=self.name,
                        line=start,
                    )
                header = cells
                self.columns = list(header)
                continue
            where = Location(self.name, line=start)
            if keep is not None and not keep():
                yield where, None
            elif errors:
                yield where, errors[0]
            elif len(cells) != len(header):
                yield (
                    where,
                    DataError.at(
                        where, f"{len(cells)} cells, but the header has {len(header)} columns"
                    ),
                )
            else:
                yield where, dict(zip(header, cells))
        if header is None:
            self.columns = []

    # -- Parquet -----------------------------------------------------------------------------
    def _parquet(self, keep) -> Iterator[tuple[Location, Union[dict, DataError]]]:
        pq = pyarrow_parquet()
        path = Path(self.source)
        if not path.is_file():
            raise DataError("file not found" if not path.exists() else "not a file", file=self.name)
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a bad file
            raise DataError(f"not a readable Parquet file ({exc})", file=self.name) from None
        try:
            self.columns = list(pf.schema_arrow.names)
            n = 0
            for batch in pf.iter_batches(batch_size=self.batch_size):
                for row in batch.to_pylist():
                    n += 1
                    yield Location(self.name, row=n), (row if keep is None or keep() else None)
        finally:
            pf.close()


def iter_rows(source, format: Optional[str] = None, **options) -> Iterator[tuple[Location, dict]]:
    """``iter(RowReader(source, format, **options))``: ``(location, row)`` pairs, streamed."""
    return iter(RowReader(source, format, **options))
