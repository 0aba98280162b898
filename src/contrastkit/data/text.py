"""Text pairs, triplets and groups for contrastive training, streamed from files.

:class:`TextPairs` is a ``torch.utils.data.IterableDataset`` of :class:`TextExample` s read from
JSONL, CSV, TSV or Parquet files (:mod:`contrastkit.data.formats`), a directory saved by
Hugging Face ``datasets`` or a ``datasets.Dataset`` (:mod:`contrastkit.data.hf`). Rows are read
one at a time, so a file larger than memory trains; with a multi-worker ``DataLoader`` (and
optionally across distributed ranks) each row goes to exactly one worker.

An example has an ``anchor`` text, a ``positive`` text, any number of hard ``negatives``, and
optionally a ``label``, a graded ``score`` and ``teacher_scores`` (one per candidate:
the positive, then each negative).

Column names
------------
Columns are found by name, case-insensitively, with the names sentence-transformers' datasets
use (where sentence-transformers takes columns by position, the usual names of its Hub datasets
are recognised: ``anchor, positive, negative``, ``query, answer``, ``sentence1, sentence2,
score``, ``premise, hypothesis, label``, the ``negative_1 .. negative_n`` of its
``mine_hard_negatives`` and ``contrastkit mine``, and SimCSE's ``sent0, sent1, hard_neg``):

==================  ============================================================================
field               column names recognised
==================  ============================================================================
``anchor``          anchor, query, question, sentence1, sentence_a, premise, text1, sent0
``positive``        positive, pos, answer, document, passage, response, sentence2, sentence_b,
                    hypothesis, text2, sent1
``negatives``       negative, neg, hard_negative, hard_neg, each optionally numbered
                    (``negative_1`` ... ``negative_n``, in number order), one text each; and
                    list columns negatives, hard_negatives, negs (a JSON array in CSV/TSV)
``label``           label (an int, a float or a class name; a CSV cell is parsed as a number
                    when it is one)
``score``           score, similarity_score, relatedness_score, similarity (a finite number)
``teacher_scores``  teacher_scores, scores (a list, a JSON array in CSV/TSV); or one
                    ``<candidate column>_score`` column per candidate, e.g. ``positive_score``
                    and ``negative_score`` as ``contrastkit mine --output-scores`` writes them
==================  ============================================================================

``columns={"anchor": "title", "negatives": ["n1", "n2"], "label": None}`` overrides the
detection (``None`` turns a field off); the other fields are still detected. Two columns that
could both be one field (say ``query`` and ``question``) are an error, not a guess. Columns that
match no field are ignored (``TextPairs.mapping_for`` shows the mapping). A negatives column
holds one text, except columns named like a list column (``negatives``, ...), which hold lists;
a JSON or Parquet list in a one-text negative column is read as several negatives too.
sentence-transformers' MarginMSE datasets keep the teacher margin in ``label``: map it with
``{"score": "label"}``, or a list of teacher scores with ``{"teacher_scores": "label"}``.

Checks
------
Every row is checked and a bad one raises :class:`~contrastkit.data.errors.DataError` naming
the file, the line (or row) and the column: a missing column, an empty or non-text value, a
score or teacher score that is not a finite number, a ``teacher_scores`` list whose length is
not the number of candidates, and the reader's own errors (UTF-8, JSON). With
``skip_bad_rows=True`` such rows are skipped, counted in ``dataset.bad_rows`` and reported in a
warning at the end of each pass.

Example::

    from torch.utils.data import DataLoader
    from contrastkit.data import TextPairs

    pairs = TextPairs("train.jsonl")   # {"query": ..., "positive": ..., "negative_1": ...}
    loader = DataLoader(pairs, batch_size=64, num_workers=2, collate_fn=TextPairs.collate)
    for batch in loader:
        batch["anchor"], batch["positive"], batch["negatives"]   # lists of texts
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import hf
from .errors import BadRows, DataError, Location
from .formats import RowReader, detect_format

__all__ = [
    "TextExample",
    "TextPairs",
    "ColumnMapping",
    "ColumnError",
    "resolve_columns",
    "parse_example",
    "COLUMN_NAMES",
]

#: field -> column names recognised (lower case), see the module docstring
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "anchor": (
        "anchor", "query", "question", "sentence1", "sentence_a", "premise", "text1", "sent0",
    ),
    "positive": (
        "positive", "pos", "answer", "document", "passage", "response", "sentence2",
        "sentence_b", "hypothesis", "text2", "sent1",
    ),
    "negatives": ("negatives", "hard_negatives", "negs"),
    "label": ("label",),
    "score": ("score", "similarity_score", "relatedness_score", "similarity"),
    "teacher_scores": ("teacher_scores", "scores"),
}  # fmt: skip
_NEGATIVE = re.compile(r"^(?:negative|neg|hard_negative|hard_neg)(?:_?(\d+))?$", re.I)
_FIELDS = ("anchor", "positive", "negatives", "label", "score", "teacher_scores")


class ColumnError(ValueError):
    """A table's columns do not fit: ``column`` is the missing column (or field) name."""

    def __init__(self, message: str, column: str):
        super().__init__(message)
        self.column = column


@dataclass
class TextExample:
    """One training example. ``texts`` lists anchor, positive and negatives in that order
    (sentence-transformers' column order); ``candidates`` = positive and negatives."""

    anchor: str
    positive: Optional[str] = None
    negatives: list[str] = field(default_factory=list)
    label: Union[int, float, str, None] = None
    score: Optional[float] = None
    teacher_scores: Optional[list[float]] = None
    location: Optional[Location] = field(default=None, compare=False)

    @property
    def candidates(self) -> list[str]:
        return ([self.positive] if self.positive is not None else []) + list(self.negatives)

    @property
    def texts(self) -> list[str]:
        return [self.anchor, *self.candidates]


@dataclass(frozen=True)
class ColumnMapping:
    """Which column holds which field. ``negatives`` are one-text columns (in order),
    ``negative_lists`` list columns; ``teacher_scores`` is one list column or, in
    ``teacher_score_columns``, one number column per candidate."""

    anchor: str
    positive: Optional[str] = None
    negatives: tuple[str, ...] = ()
    negative_lists: tuple[str, ...] = ()
    label: Optional[str] = None
    score: Optional[str] = None
    teacher_scores: Optional[str] = None
    teacher_score_columns: tuple[str, ...] = ()

    @property
    def used(self) -> list[str]:
        cols = [self.anchor, self.positive, *self.negatives, *self.negative_lists]
        cols += [self.label, self.score, self.teacher_scores, *self.teacher_score_columns]
        return [c for c in cols if c is not None]


def _check_overrides(columns: Optional[Mapping]) -> dict:
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(_FIELDS))
    if unknown:
        raise ValueError(f"columns: unknown field(s) {unknown}; fields are {list(_FIELDS)}")
    for key, value in columns.items():
        if key == "negatives" and isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) for v in value):
                raise ValueError(f"columns['negatives'] must be column names, got {value!r}")
        elif value is not None and not isinstance(value, str):
            raise ValueError(f"columns[{key!r}] must be a column name or None, got {value!r}")
    return columns


def resolve_columns(
    names: Sequence[str], columns: Optional[Mapping] = None, require_positive: bool = True
) -> ColumnMapping:
    """The :class:`ColumnMapping` for a table with column ``names``.

    Args:
        names: the table's column names.
        columns: overrides, field -> column name (``"negatives"``: a name or a list of names;
            ``None`` turns a field off).
        require_positive: an anchor-only table (e.g. unsupervised SimCSE) is an error unless
            False.

    Raises ``ValueError`` when a required field has no column, a named column does not exist or
    two columns could be the same field.
    """
    columns = _check_overrides(columns)
    names = [str(n) for n in names]
    lower: dict[str, list[str]] = {}
    for n in names:
        lower.setdefault(n.lower(), []).append(n)
    taken = {v for k, v in columns.items() if k != "negatives" and isinstance(v, str)}
    if isinstance(columns.get("negatives"), (list, tuple)):
        taken |= set(columns["negatives"])
    elif isinstance(columns.get("negatives"), str):
        taken.add(columns["negatives"])
    for name in sorted(taken):
        if name not in names:
            raise ColumnError(f"missing column (named in columns=); columns: {names}", name)

    def detect(fieldname: str) -> Optional[str]:
        if fieldname in columns:
            return columns[fieldname]
        found = [n for c in COLUMN_NAMES[fieldname] for n in lower.get(c, []) if n not in taken]
        if len(found) > 1:
            raise ValueError(
                f"columns {found} could each be the {fieldname}: pass columns="
                f"{{{fieldname!r}: ...}} to choose"
            )
        if found:
            taken.add(found[0])
            return found[0]
        return None

    anchor = detect("anchor")
    if anchor is None:
        raise ColumnError(
            f"no anchor column among {names}: name one of {list(COLUMN_NAMES['anchor'])} or "
            "pass columns={'anchor': ...}",
            "anchor",
        )
    positive = detect("positive")
    if positive is None and require_positive:
        raise ColumnError(
            f"no positive column among {names}: name one of {list(COLUMN_NAMES['positive'])}, "
            "pass columns={'positive': ...}, or require_positive=False for anchors alone",
            "positive",
        )
    label, score = detect("label"), detect("score")
    if "negatives" in columns:
        given = columns["negatives"]
        given = [] if given is None else [given] if isinstance(given, str) else list(given)
        lists = set(COLUMN_NAMES["negatives"])  # these names hold lists (JSON in CSV/TSV)
        negatives = tuple(n for n in given if n.lower() not in lists)
        negative_lists = tuple(n for n in given if n.lower() in lists)
    else:
        numbered = []
        for i, n in enumerate(names):
            m = _NEGATIVE.match(n)
            if m and n not in taken:
                numbered.append((int(m.group(1) or 0), i, n))
        negatives = tuple(n for _, _, n in sorted(numbered))
        taken.update(negatives)
        negative_lists = tuple(
            n for c in COLUMN_NAMES["negatives"] for n in lower.get(c, []) if n not in taken
        )
        taken.update(negative_lists)
    teacher = detect("teacher_scores")
    per_candidate: tuple[str, ...] = ()
    if teacher is None and "teacher_scores" not in columns:
        cands = ([positive] if positive else []) + list(negatives)
        have = [f"{c}_score" for c in cands if f"{c}_score" in names]
        if have and (len(have) < len(cands) or negative_lists):
            missing = [f"{c}_score" for c in cands if f"{c}_score" not in names]
            raise ValueError(
                f"teacher score columns {have} cover only some candidates (missing: "
                f"{missing or list(negative_lists)}); pass columns={{'teacher_scores': ...}}"
            )
        per_candidate = tuple(have)
    return ColumnMapping(
        anchor=anchor,
        positive=positive,
        negatives=negatives,
        negative_lists=negative_lists,
        label=label,
        score=score,
        teacher_scores=teacher,
        teacher_score_columns=per_candidate,
    )


# -- value checks ------------------------------------------------------------------------------
def _text(row: dict, col: str, where: Location) -> str:
    if col not in row:
        raise DataError.at(where, "missing column", col)
    v = row[col]
    if v is None:
        raise DataError.at(where, "missing value (null)", col)
    if not isinstance(v, str):
        raise DataError.at(where, f"expected text, got {type(v).__name__} {v!r:.40}", col)
    if not v.strip():
        raise DataError.at(where, "empty text", col)
    return v


def _number(v, col: str, where: Location, what: str) -> float:
    if isinstance(v, bool) or v is None:
        raise DataError.at(where, f"bad {what} {v!r}: expected a number", col)
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise DataError.at(where, f"bad {what} {v!r:.40}: not a number", col) from None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise DataError.at(where, f"bad {what} {v!r:.40}: not a number", col) from None
    if not math.isfinite(f):
        raise DataError.at(where, f"bad {what} {v!r}: not finite", col)
    return f


def _list(row: dict, col: str, where: Location, is_text_file: bool) -> list:
    if col not in row:
        raise DataError.at(where, "missing column", col)
    v = row[col]
    if isinstance(v, str) and is_text_file:
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise DataError.at(
                where, f"expected a JSON array in this column, got {v!r:.40}", col
            ) from None
    if isinstance(v, tuple) or (hasattr(v, "tolist") and not isinstance(v, str)):
        v = list(v.tolist() if hasattr(v, "tolist") else v)
    if not isinstance(v, list):
        raise DataError.at(where, f"expected a list, got {type(v).__name__} {v!r:.40}", col)
    return v


def _label(v, col: str, where: Location, from_text: bool):
    if v is None or (isinstance(v, str) and not v.strip()):
        raise DataError.at(where, "missing label", col)
    if isinstance(v, (list, tuple, dict)):
        raise DataError.at(
            where,
            "label is a list; if these are teacher scores, pass columns={'teacher_scores': "
            f"{col!r}}}",
            col,
        )
    if isinstance(v, float) and not math.isfinite(v):
        raise DataError.at(where, f"bad label {v!r}: not finite", col)
    if isinstance(v, str) and from_text:
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            return v
        if not math.isfinite(f):
            raise DataError.at(where, f"bad label {v!r}: not finite", col)
        return f
    return v


def parse_example(
    row: dict, where: Location, mapping: ColumnMapping, from_text: bool = False
) -> TextExample:
    """The :class:`TextExample` of ``row`` under ``mapping`` (``DataError`` when it is bad).
    ``from_text``: the row comes from CSV/TSV (list cells are JSON, numbers are strings)."""
    m = mapping
    anchor = _text(row, m.anchor, where)
    positive = _text(row, m.positive, where) if m.positive else None
    negatives = []
    for col in m.negatives:
        v = row.get(col)
        if isinstance(v, (list, tuple)):  # JSON / Parquet: a list in a negative column
            negatives.extend(_text({col: t}, col, where) for t in v)
        else:
            negatives.append(_text(row, col, where))
    for col in m.negative_lists:
        for t in _list(row, col, where, from_text):
            negatives.append(_text({col: t}, col, where))
    label = None
    if m.label:
        if m.label not in row:
            raise DataError.at(where, "missing column", m.label)
        label = _label(row[m.label], m.label, where, from_text)
    score = None
    if m.score:
        if m.score not in row:
            raise DataError.at(where, "missing column", m.score)
        score = _number(row[m.score], m.score, where, "score")
    teacher = None
    n_cand = len(negatives) + (positive is not None)
    if m.teacher_scores:
        values = _list(row, m.teacher_scores, where, from_text)
        teacher = [_number(v, m.teacher_scores, where, "teacher score") for v in values]
        col = m.teacher_scores
    elif m.teacher_score_columns:
        teacher = []
        for col in m.teacher_score_columns:
            if col not in row:
                raise DataError.at(where, "missing column", col)
            teacher.append(_number(row[col], col, where, "teacher score"))
        col = m.teacher_score_columns[0]
    if teacher is not None and len(teacher) != n_cand:
        raise DataError.at(
            where,
            f"{len(teacher)} teacher scores for {n_cand} candidates (positive + negatives)",
            col,
        )
    return TextExample(anchor, positive, negatives, label, score, teacher, where)


# -- the dataset -------------------------------------------------------------------------------
def _share(rank: int, world_size: int) -> Optional[Callable[[], bool]]:
    """The ``keep`` of this process's ``DataLoader`` worker: row ``i`` (counted over all files)
    belongs to share ``i mod (world_size x workers)``; ``None`` when there is one share."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    shard, shards = rank * workers + worker, world_size * workers
    if shards == 1:
        return None
    counter = itertools.count()
    return lambda: next(counter) % shards == shard


def _sources(source, format: Optional[str], split: Optional[str]) -> list:
    """Readers' arguments: a list of ``(kind, value)``; ``kind`` is ``"file"`` or ``"hf"``."""
    if hf.is_hf_dataset(source):
        return [("hf", hf.select_split(source, split, "<datasets.Dataset>"))]
    if isinstance(source, (str, os.PathLike)):
        items = [source]
    elif isinstance(source, (list, tuple)) and source:
        items = list(source)
    else:
        raise ValueError(
            "source must be a path, a non-empty list of paths or a datasets.Dataset, got "
            f"{type(source).__name__}"
        )
    out = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise ValueError(f"source entries must be paths, got {type(item).__name__}")
        if Path(item).is_dir():
            out.append(("hf", (item, hf.load_hf_dataset(item, split))))
        else:
            if split is not None:
                raise ValueError("split= applies to a Hugging Face dataset directory, not files")
            if not Path(item).exists():
                raise DataError("file not found", file=item)
            if format is None:
                detect_format(item)  # an unknown extension fails now, not at the first batch
            out.append(("file", item))
    return out


def _column(exc: Exception) -> Optional[str]:
    return getattr(exc, "column", None)


def _file_error(reader, exc: Exception) -> DataError:
    """A column problem of a file with a header (line 1) or a schema."""
    line = 1 if reader.format in ("csv", "tsv") else None
    return DataError(str(exc), file=reader.name, line=line, column=_column(exc))


class TextPairs(IterableDataset):
    """Text pairs, triplets or groups (anchor, positive, negatives, label, score, teacher
    scores) streamed from files or a Hugging Face dataset; see the module docstring for the
    column names.

    Args:
        source: a JSONL/CSV/TSV/Parquet path, a list of them (read in order), a directory saved
            by ``datasets`` (``save_to_disk``) or a ``datasets.Dataset``.
        columns: field -> column overrides, e.g. ``{"anchor": "title", "label": None}``.
        format: the file format when the extension does not tell (``"jsonl"``, ``"csv"``,
            ``"tsv"``, ``"parquet"``).
        split: the split of a saved ``DatasetDict``.
        require_positive: False accepts rows with an anchor alone.
        skip_bad_rows: skip (and count in ``bad_rows``, and warn about) bad rows instead of
            raising :class:`~contrastkit.data.errors.DataError`.
        rank, world_size: this process's share under ``torch.distributed`` (rows are split over
            ``world_size x DataLoader workers``); by default every process reads every row.
        batch_size: Parquet rows decoded at a time.

    Iterating yields :class:`TextExample` s in file order (shuffle with a shuffle buffer or
    shuffle the files beforehand). ``TextPairs.collate`` batches them for a ``DataLoader``.

    Example::

        ds = TextPairs(["part-0.parquet", "part-1.parquet"], skip_bad_rows=True)
        first = next(iter(ds))        # reads one batch of the first file
        first.anchor, first.positive, first.negatives
    """

    def __init__(
        self,
        source,
        *,
        columns: Optional[Mapping] = None,
        format: Optional[str] = None,
        split: Optional[str] = None,
        require_positive: bool = True,
        skip_bad_rows: bool = False,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        batch_size: int = 1024,
    ):
        super().__init__()
        self.columns = _check_overrides(columns)
        self.format = format
        self.require_positive = bool(require_positive)
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None and not (
            isinstance(world_size, int)
            and world_size >= 1
            and isinstance(rank, int)
            and 0 <= rank < world_size
        ):
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        self.rank, self.world_size = rank or 0, world_size or 1
        self.batch_size = int(batch_size)
        self.bad_rows = BadRows(skip=skip_bad_rows)
        self._sources = _sources(source, format, split)

    def __repr__(self) -> str:
        names = [v if k == "file" else v[0] if isinstance(v, tuple) else "<dataset>"
                 for k, v in self._sources]  # fmt: skip
        return f"TextPairs({[str(n) for n in names]}, skip_bad_rows={self.bad_rows.skip})"

    def _readers(self):
        for kind, value in self._sources:
            if kind == "file":
                yield RowReader(value, self.format, batch_size=self.batch_size)
            elif isinstance(value, tuple):
                yield hf.HFRows(value[1], name=value[0])
            else:
                yield hf.HFRows(value)

    def mapping_for(self, names: Sequence[str]) -> ColumnMapping:
        """The column mapping used for a table with column ``names``."""
        return resolve_columns(names, self.columns, self.require_positive)

    def __iter__(self) -> Iterator[TextExample]:
        keep = _share(self.rank, self.world_size)
        self.bad_rows.reset()
        for reader in self._readers():
            fixed: Optional[ColumnMapping] = None
            cache: dict[tuple, ColumnMapping] = {}
            from_text = reader.format in ("csv", "tsv")
            seen = 0
            for where, row in reader.items(keep):
                seen += 1
                if row is None:  # another worker's row
                    continue
                if isinstance(row, DataError):
                    self.bad_rows.handle(row)
                    continue
                if reader.columns is not None:
                    if fixed is None:  # a whole-file problem: raised, never skipped
                        try:
                            fixed = self.mapping_for(reader.columns)
                        except ValueError as exc:
                            raise _file_error(reader, exc) from None
                    mapping = fixed
                else:  # JSONL: each object names its own fields
                    key = tuple(row)
                    mapping = cache.get(key)
                    if mapping is None:
                        try:
                            mapping = self.mapping_for(key)
                        except ValueError as exc:
                            self.bad_rows.handle(DataError.at(where, str(exc), _column(exc)))
                            continue
                        if len(cache) > 64:
                            cache.clear()
                        cache[key] = mapping
                try:
                    example = parse_example(row, where, mapping, from_text)
                except DataError as err:
                    self.bad_rows.handle(err)
                    continue
                yield example
            if seen == 0:
                raise DataError("no rows", file=reader.name)
        self.bad_rows.report(repr(self))

    @staticmethod
    def collate(batch: Sequence[TextExample]) -> dict:
        """Batch examples for a ``DataLoader``: ``anchor``, ``positive`` (lists of texts),
        ``negatives`` (a list of lists), ``label`` (a tensor when all are numbers, ``None`` when
        none has one, else a list), ``score`` (a float tensor, or ``None`` when no example has
        one), ``teacher_scores`` (a float tensor ``(B, candidates)`` when all have the same
        count, else a list of lists, or ``None``). Mixing examples with and without a score or
        teacher scores is an error."""
        out: dict = {
            "anchor": [e.anchor for e in batch],
            "positive": [e.positive for e in batch],
            "negatives": [list(e.negatives) for e in batch],
        }
        labels = [e.label for e in batch]
        if all(x is None for x in labels):
            out["label"] = None
        elif all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in labels):
            out["label"] = torch.tensor(labels)
        else:
            out["label"] = labels
        for name in ("score", "teacher_scores"):
            values = [getattr(e, name) for e in batch]
            present = [v is not None for v in values]
            if not any(present):
                out[name] = None
            elif not all(present):
                where = [str(e.location) for e, p in zip(batch, present) if not p][:3]
                raise ValueError(f"some examples of the batch have no {name} ({where})")
            elif name == "score":
                out[name] = torch.tensor(values, dtype=torch.float32)
            elif len({len(v) for v in values}) == 1:
                out[name] = torch.tensor(values, dtype=torch.float32)
            else:
                out[name] = [list(v) for v in values]
        return out
