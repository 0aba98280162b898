"""Tables for ``contrastkit mine``: JSONL, CSV/TSV and Parquet (pyarrow), chosen by extension."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from contrastkit._extras import require

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}
FORMATS.update({".parquet": "parquet", ".pq": "parquet", ".txt": "txt"})


def table_format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot tell the format of {str(path)!r}: use one of {', '.join(sorted(FORMATS))}"
        )
    return FORMATS[suffix]


def _pyarrow():
    require("pyarrow.parquet", "data", "reading and writing Parquet files")
    return require("pyarrow", "data", "reading and writing Parquet files")


def _utf8_error(path: Path, exc: UnicodeDecodeError) -> str:
    """``path:line: not valid UTF-8 ...`` for the first line of ``path`` that does not decode."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):  # a UTF-8 multi-byte sequence never holds b"\n"
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                byte = raw[bad.start : bad.start + 1].hex()
                return (
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{byte} at column {bad.start + 1}); "
                    "re-encode the file as UTF-8"
                )
    return f"{path}: not valid UTF-8 ({exc.reason}); re-encode the file as UTF-8"


def read_table(path) -> dict[str, list]:
    """Columns of a JSONL (one object per line), CSV, TSV, Parquet or TXT (column ``text``) file.

    Text files must be UTF-8: a byte that does not decode is a ``ValueError`` naming the file
    and the line.
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise ValueError(f"file not found: {str(path)!r}")
    if fmt == "parquet":
        return _pyarrow().parquet.read_table(path).to_pydict()
    try:
        return _read_text_table(path, fmt)
    except UnicodeDecodeError as exc:
        raise ValueError(_utf8_error(path, exc)) from None


def _read_text_table(path: Path, fmt: str) -> dict[str, list]:
    if fmt == "txt":
        with open(path, encoding="utf-8") as f:
            return {"text": [line.rstrip("\n") for line in f if line.strip()]}
    rows: list[dict] = []
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{lineno}: expected a JSON object, got {row!r:.60}")
                rows.append(row)
        else:
            rows = list(csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ","))
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {name: [row.get(name) for row in rows] for name in names}


def text_column(table: dict, name: str, path) -> list[str]:
    """Column ``name`` as a list of strings (ValueError naming the column and the file)."""
    if name not in table:
        raise ValueError(f"{str(path)!r} has no column {name!r}; columns: {sorted(table)}")
    values = table[name]
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"{str(path)!r} column {name!r} row {i} is not a string: {v!r:.60}")
    return list(values)


def write_table(path, columns: dict[str, list]) -> None:
    """Write equal-length columns to ``path`` (format by extension; parent folders created)."""
    path = Path(path)
    fmt = table_format(path)
    if fmt == "txt":
        raise ValueError(
            f"cannot write a table to {str(path)!r}: use .jsonl, .csv, .tsv or .parquet"
        )
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(
            f"columns have different lengths: { {k: len(v) for k, v in columns.items()} }"
        )
    if fmt == "parquet":
        pa = _pyarrow()
        path.parent.mkdir(parents=True, exist_ok=True)
        pa.parquet.write_table(pa.table(columns), path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns)
    n = lengths.pop() if lengths else 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            for i in range(n):
                f.write(json.dumps({k: columns[k][i] for k in names}, ensure_ascii=False) + "\n")
        else:
            w = csv.writer(f, delimiter="\t" if fmt == "tsv" else ",")
            w.writerow(names)
            for i in range(n):
                w.writerow([columns[k][i] for k in names])
