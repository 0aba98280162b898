"""Retrieval evaluation data in the BEIR layout.

A BEIR dataset is a folder::

    scifact/
      corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."}   one document a line
      queries.jsonl       {"_id": "q1", "text": "..."}                   one query a line
      qrels/test.tsv      query-id <TAB> corpus-id <TAB> score            header line first

:func:`load_beir` reads it into plain Python structures (``corpus``: id -> ``{"title", "text"}``,
``queries``: id -> text, ``qrels``: query id -> {document id -> graded relevance}), and
:meth:`BeirData.relevance` turns the qrels into the ``(queries, documents)`` matrix that
:func:`contrastkit.metrics.recall_at_k`, ``mrr_at_k`` and ``ndcg_at_k`` take. As in BEIR, only
the queries judged in the split's qrels are kept (``only_judged=False`` keeps all). Ids are
strings (a number in ``_id`` is read as its decimal text).

Every problem is a :class:`~contrastkit.data.errors.DataError` naming the file, line and
column: a missing ``_id`` or ``text``, a document with neither title nor text, a duplicate id, a
relevance that is not an integer, a duplicate judgement, and a qrels line naming a query or
document that is not in ``queries.jsonl`` / ``corpus.jsonl`` (``check_ids=False`` keeps such
lines' judgements instead of failing; they are counted in ``BeirData.unknown_ids``).

Example::

    from contrastkit.data import load_beir
    from contrastkit.metrics import ndcg_at_k

    data = load_beir("scifact", split="test")
    qids, dids = list(data.queries), list(data.corpus)
    scores = model_scores(qids, dids)             # your (len(qids), len(dids)) tensor
    ndcg_at_k(scores, data.relevance(qids, dids), k=10)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

from .errors import BadRows, DataError, Location
from .formats import RowReader

__all__ = ["BeirData", "load_beir", "iter_corpus", "read_queries", "read_qrels"]


def _id(row: dict, where: Location) -> str:
    if "_id" not in row:
        raise DataError.at(where, "missing column", "_id")
    v = row["_id"]
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise DataError.at(where, f"expected a string id, got {v!r:.40}", "_id")
    v = str(v)
    if not v.strip():
        raise DataError.at(where, "empty id", "_id")
    return v


def _str(row: dict, col: str, where: Location, required: bool) -> str:
    if col not in row or row[col] is None:
        if required:
            raise DataError.at(where, "missing column", col)
        return ""
    v = row[col]
    if not isinstance(v, str):
        raise DataError.at(where, f"expected text, got {type(v).__name__} {v!r:.40}", col)
    return v


def _corpus_rows(path, bad_rows: BadRows) -> Iterator[tuple[Location, str, dict]]:
    for where, row in RowReader(path, "jsonl").items():
        try:
            if isinstance(row, DataError):
                raise row
            doc_id = _id(row, where)
            text = _str(row, "text", where, required=True)
            title = _str(row, "title", where, required=False)
            if not (text.strip() or title.strip()):
                raise DataError.at(where, "empty text (and no title)", "text")
        except DataError as err:
            bad_rows.handle(err)
            continue
        yield where, doc_id, {"title": title, "text": text}


def iter_corpus(path, bad_rows: Optional[BadRows] = None) -> Iterator[tuple[str, dict]]:
    """``(doc_id, {"title": ..., "text": ...})`` for each line of a BEIR ``corpus.jsonl``,
    streamed (for a corpus larger than memory). Duplicate ids are not checked here."""
    for _, doc_id, doc in _corpus_rows(path, bad_rows or BadRows()):
        yield doc_id, doc


def read_corpus(path, bad_rows: Optional[BadRows] = None) -> dict[str, dict]:
    """``corpus.jsonl`` as ``{doc_id: {"title", "text"}}`` (duplicate ids are errors)."""
    bad_rows = bad_rows or BadRows()
    out: dict = {}
    for where, doc_id, doc in _corpus_rows(path, bad_rows):
        if doc_id in out:
            bad_rows.handle(DataError.at(where, f"duplicate document id {doc_id!r}", "_id"))
            continue
        out[doc_id] = doc
    return out


def read_queries(path, bad_rows: Optional[BadRows] = None) -> dict[str, str]:
    """``queries.jsonl`` as ``{query_id: text}`` (duplicate ids and empty texts are errors)."""
    bad_rows = bad_rows or BadRows()
    out: dict = {}
    for where, row in RowReader(path, "jsonl").items():
        try:
            if isinstance(row, DataError):
                raise row
            qid = _id(row, where)
            text = _str(row, "text", where, required=True)
            if not text.strip():
                raise DataError.at(where, "empty text", "text")
            if qid in out:
                raise DataError.at(where, f"duplicate query id {qid!r}", "_id")
        except DataError as err:
            bad_rows.handle(err)
            continue
        out[qid] = text
    return out


def read_qrels(path, bad_rows: Optional[BadRows] = None) -> dict[str, dict[str, int]]:
    """``qrels/<split>.tsv`` (header ``query-id  corpus-id  score``) as
    ``{query_id: {doc_id: relevance}}``; a repeated (query, document) pair is an error."""
    return _read_qrels(path, bad_rows or BadRows())[0]


def _read_qrels(path, bad_rows: BadRows, queries=None, corpus=None, check_ids=True):
    reader = RowReader(path, "tsv")
    out: dict = {}
    unknown = 0
    for where, row in reader.items():
        if not isinstance(row, DataError):
            for col in ("query-id", "corpus-id", "score"):
                if col not in row:  # a header problem is the whole file's: never skipped
                    raise DataError(
                        f"missing column (header: {reader.columns}; expected query-id, "
                        "corpus-id, score)",
                        file=reader.name,
                        line=1,
                        column=col,
                    )
        try:
            if isinstance(row, DataError):
                raise row
            qid, did, score = row["query-id"], row["corpus-id"], row["score"].strip()
            for col, v in (("query-id", qid), ("corpus-id", did)):
                if not v.strip():
                    raise DataError.at(where, "empty id", col)
            try:
                rel = int(score)
            except ValueError:
                raise DataError.at(
                    where, f"bad score {score!r:.40}: expected an integer relevance", "score"
                ) from None
            if did in out.get(qid, {}):
                raise DataError.at(where, f"duplicate judgement of ({qid!r}, {did!r})", "corpus-id")
            missing = [
                (col, key, what)
                for col, key, what, table in (
                    ("query-id", qid, "query", queries),
                    ("corpus-id", did, "document", corpus),
                )
                if table is not None and key not in table
            ]
            if missing and check_ids:
                col, key, what = missing[0]
                raise DataError.at(where, f"unknown {what} id {key!r}", col)
            unknown += bool(missing)
        except DataError as err:
            bad_rows.handle(err)
            continue
        out.setdefault(qid, {})[did] = rel
    return out, unknown


@dataclass
class BeirData:
    """A BEIR dataset in memory: ``corpus`` (id -> ``{"title", "text"}``), ``queries``
    (id -> text), ``qrels`` (query id -> {document id -> relevance}), and ``unknown_ids``
    (judgements naming an unknown query or document, kept under ``check_ids=False``)."""

    corpus: dict[str, dict]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    unknown_ids: int = 0
    bad_rows: BadRows = field(default_factory=BadRows, repr=False)

    def documents(self, sep: str = " ") -> list[str]:
        """Corpus texts in corpus order, ``title + sep + text`` where there is a title."""
        return [
            f"{d['title']}{sep}{d['text']}".strip() if d["title"] else d["text"]
            for d in self.corpus.values()
        ]

    def relevance(
        self, query_ids: Optional[Sequence[str]] = None, doc_ids: Optional[Sequence[str]] = None
    ) -> Tensor:
        """``(len(query_ids), len(doc_ids))`` float tensor of graded relevance (0 where not
        judged), for :func:`contrastkit.metrics.ndcg_at_k` and friends. Defaults: all queries and
        all documents, in their file order."""
        qids = list(self.queries) if query_ids is None else list(query_ids)
        dids = list(self.corpus) if doc_ids is None else list(doc_ids)
        col = {d: j for j, d in enumerate(dids)}
        rel = torch.zeros(len(qids), len(dids))
        for i, q in enumerate(qids):
            for d, r in self.qrels.get(q, {}).items():
                j = col.get(d)
                if j is not None:
                    rel[i, j] = float(r)
        return rel


def load_beir(
    folder,
    split: str = "test",
    *,
    only_judged: bool = True,
    check_ids: bool = True,
    skip_bad_rows: bool = False,
) -> BeirData:
    """Read a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

    Args:
        folder: the dataset folder.
        split: which ``qrels/<split>.tsv`` to read (``"test"``, ``"dev"``, ``"train"``).
        only_judged: keep only the queries that have a judgement in the split (as BEIR does).
        check_ids: a judgement naming an unknown query or document is an error (with
            ``False``, it is kept and counted in ``unknown_ids``).
        skip_bad_rows: skip and count bad lines (``BeirData.bad_rows``, and a warning) instead
            of raising :class:`~contrastkit.data.errors.DataError`.
    """
    root = Path(folder)
    paths = {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }
    for name, p in paths.items():
        if not p.is_file():
            present = (
                sorted(x.stem for x in (root / "qrels").glob("*.tsv")) if name == "qrels" else []
            )
            hint = f" (qrels splits here: {present})" if present else ""
            raise DataError(f"missing BEIR file {name}{hint}", file=p)
    bad = BadRows(skip=skip_bad_rows)
    corpus = read_corpus(paths["corpus"], bad)
    queries = read_queries(paths["queries"], bad)
    qrels, unknown = _read_qrels(paths["qrels"], bad, queries, corpus, check_ids)
    if only_judged:
        queries = {q: t for q, t in queries.items() if q in qrels}
    bad.report(str(root))
    return BeirData(corpus, queries, qrels, unknown, bad)
