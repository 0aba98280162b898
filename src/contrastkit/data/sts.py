"""Semantic textual similarity (STS) pairs with gold scores, for evaluation.

:func:`load_sts` reads sentence pairs and their graded scores from a JSONL, CSV, TSV or Parquet
file (or a saved Hugging Face dataset), with the column names of sentence-transformers' STS
datasets: ``sentence1`` / ``sentence2`` / ``score`` (STS-B), ``sentence_A`` / ``sentence_B`` /
``relatedness_score`` (SICK), and the other names of :data:`contrastkit.data.text.COLUMN_NAMES`
(``label`` is the score when there is no score column). ``columns={"sentence1": ...,
"sentence2": ..., "score": ...}`` names them explicitly.

``score_range=(0, 5)`` checks every score lies in the range (a score outside is a
:class:`~contrastkit.data.errors.DataError`) and, with ``normalize=True``, maps it to [0, 1].
``normalize=True`` alone scales by the smallest and largest score found.

Example::

    from contrastkit.data import load_sts
    from contrastkit.metrics import sts_spearman

    sts = load_sts("sts-test.csv", score_range=(0, 5), normalize=True)
    sts_spearman(encode(sts.sentences1), encode(sts.sentences2), sts.gold)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch
from torch import Tensor

from .errors import BadRows, DataError, Location
from .text import TextPairs, _number

__all__ = ["STSPairs", "load_sts"]


@dataclass
class STSPairs:
    """``sentences1[i]`` and ``sentences2[i]`` with gold ``scores[i]``; ``locations[i]`` is
    where the pair was read; ``gold`` is the scores as a float64 tensor."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    locations: list[Location] = field(default_factory=list, repr=False)
    bad_rows: BadRows = field(default_factory=BadRows, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def gold(self) -> Tensor:
        return torch.tensor(self.scores, dtype=torch.float64)


def load_sts(
    source,
    *,
    columns: Optional[Mapping[str, str]] = None,
    score_range: Optional[tuple[float, float]] = None,
    normalize: bool = False,
    format: Optional[str] = None,
    split: Optional[str] = None,
    skip_bad_rows: bool = False,
) -> STSPairs:
    """Read STS pairs (see the module docstring).

    Args:
        source: a file, a list of files, a saved Hugging Face dataset directory or a
            ``datasets.Dataset``.
        columns: ``{"sentence1": ..., "sentence2": ..., "score": ...}`` (any of them).
        score_range: ``(low, high)``: scores outside are errors.
        normalize: map scores to [0, 1] (by ``score_range``, or by the scores' own range).
        format, split, skip_bad_rows: as in :class:`~contrastkit.data.text.TextPairs`.
    """
    columns = dict(columns or {})
    unknown = sorted(set(columns) - {"sentence1", "sentence2", "score"})
    if unknown:
        raise ValueError(f"columns: unknown key(s) {unknown}; keys are sentence1, sentence2, score")
    if score_range is not None:
        lo, hi = (float(v) for v in score_range)
        if not lo < hi:
            raise ValueError(f"score_range must be (low, high) with low < high, got {score_range}")
    mapping: dict = {"negatives": None, "teacher_scores": None}
    for ours, theirs in (("sentence1", "anchor"), ("sentence2", "positive"), ("score", "score")):
        if ours in columns:
            mapping[theirs] = columns[ours]
    if "score" in columns:
        mapping["label"] = None
    pairs = TextPairs(
        source, columns=mapping, format=format, split=split, skip_bad_rows=skip_bad_rows
    )
    s1, s2, scores, where = [], [], [], []
    skipped = 0
    for e in pairs:
        try:
            if e.score is not None:
                score = e.score
            elif e.label is not None:  # sentence-transformers' pair datasets: score in "label"
                score = _number(e.label, "label", e.location, "score")
            else:
                raise DataError.at(
                    e.location,
                    "no score column: name one of score, similarity_score, relatedness_score, "
                    "similarity, label, or pass columns={'score': ...}",
                )
            if score_range is not None and not lo <= score <= hi:
                col = columns.get("score") or ("score" if e.score is not None else "label")
                raise DataError.at(
                    e.location, f"score {score} outside score_range ({lo:g}, {hi:g})", col
                )
        except DataError as err:
            if "no score column" in err.reason:
                raise
            pairs.bad_rows.handle(err)
            skipped += 1
            continue
        s1.append(e.anchor)
        s2.append(e.positive)
        scores.append(score)
        where.append(e.location)
    if normalize and scores:
        if score_range is None:
            lo, hi = min(scores), max(scores)
            if not lo < hi:
                raise ValueError(f"cannot normalize: every score is {lo}")
        scores = [(s - lo) / (hi - lo) for s in scores]
    if skipped:
        pairs.bad_rows.report(f"{pairs!r} (scores)")
    return STSPairs(s1, s2, scores, where, pairs.bad_rows)
