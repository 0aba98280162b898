"""Text-level mining: (anchor, positive) pairs + corpus -> (anchor, positive, negative) triplets."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from contrastkit._extras import require
from contrastkit.mining.miner import MinedNegatives, mine_hard_negatives
from contrastkit.mining.store import embed_to_memmap


def _check_texts(name: str, texts) -> list[str]:
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"{name}[{i}] must be a string, got {type(t).__name__}")
    return texts


def mine_triplets(
    anchors: Sequence[str],
    positives: Sequence[str],
    encoder,
    corpus: Optional[Sequence[str]] = None,
    *,
    batch_size: int = 64,
    work_dir=None,
    exclude_anchor_text: bool = True,
    output_scores: bool = False,
    anchor_column: str = "anchor",
    positive_column: str = "positive",
    progress: bool = False,
    **mine_options,
) -> tuple[dict[str, list], MinedNegatives]:
    """Hard-negative triplets for text pairs; returns ``(columns, mined)``.

    The candidate pool is ``corpus + positives`` with duplicate texts removed (first occurrence
    kept), as in sentence-transformers; without ``corpus`` it is the positives. Identical anchors
    are one query whose positives are all excluded from its negatives; a pool text equal to the
    anchor is excluded too (``exclude_anchor_text``). Pool and queries are embedded with
    ``encoder.encode`` in batches of ``batch_size`` into ``.npy`` memmaps under ``work_dir`` (a
    temporary folder by default) and mined by :func:`mine_hard_negatives` (``mine_options``:
    ``num_negatives``, ``range_min``, ``memory_budget``, ``index``, ...).

    Output: one row per distinct (anchor, positive) pair and negative found, in input order, with
    columns ``anchor_column``, ``positive_column``, ``"negative"`` (plus ``"positive_score"`` and
    ``"negative_score"`` with ``output_scores``).
    """
    anchors = _check_texts("anchors", anchors)
    positives = _check_texts("positives", positives)
    if len(anchors) != len(positives):
        raise ValueError(
            f"anchors and positives differ in length: {len(anchors)} vs {len(positives)}"
        )
    if not anchors:
        raise ValueError("no (anchor, positive) pairs to mine")
    extra = _check_texts("corpus", corpus) if corpus is not None else []
    if corpus is not None and not extra:
        raise ValueError("corpus is empty (give texts, or None to use the positives as corpus)")
    if "negative" in (anchor_column, positive_column) or anchor_column == positive_column:
        raise ValueError(
            f"anchor_column and positive_column must differ from each other and from 'negative', "
            f"got {anchor_column!r}, {positive_column!r}"
        )
    pool = list(dict.fromkeys(extra + positives))
    pool_id = {t: i for i, t in enumerate(pool)}
    queries = list(dict.fromkeys(anchors))
    query_id = {t: i for i, t in enumerate(queries)}
    pos_ids: list[list[int]] = [[] for _ in queries]
    for a, p in zip(anchors, positives):
        ids = pos_ids[query_id[a]]
        if pool_id[p] not in ids:
            ids.append(pool_id[p])
    exclude = None
    if exclude_anchor_text:
        exclude = [[pool_id[q]] if q in pool_id else [] for q in queries]

    def bar(total, desc, unit="text"):
        if not progress:
            return None
        require("tqdm", "mining", "contrastkit.mining's progress bars")
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=False)

    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="contrastkit-mine-")
        work_dir = tmp.name
    work_dir = Path(work_dir)
    try:
        embedded = {}
        for key, texts in (("corpus", pool), ("queries", queries)):
            pb = bar(len(texts), f"embedding {key}")
            embedded[key] = embed_to_memmap(
                texts,
                encoder.encode,
                work_dir / f"{key}.npy",
                batch_size=batch_size,
                progress=pb.update if pb is not None else None,
            )
            if pb is not None:
                pb.close()
        pb = bar(None, "searching", "query")

        def on_search(done, total):
            pb.total = total
            pb.n = done
            pb.refresh()

        mined = mine_hard_negatives(
            embedded["queries"],
            embedded["corpus"],
            pos_ids,
            exclude=exclude,
            progress=on_search if pb is not None else None,
            **mine_options,
        )
        if pb is not None:
            pb.close()
    finally:
        embedded = None
        if tmp is not None:
            tmp.cleanup()

    cols: dict[str, list] = {anchor_column: [], positive_column: [], "negative": []}
    if output_scores:
        cols["positive_score"], cols["negative_score"] = [], []
    for q, query in enumerate(queries):
        negs = [(int(i), float(s)) for i, s in zip(mined.indices[q], mined.scores[q]) if i >= 0]
        for j, p in enumerate(pos_ids[q]):
            for i, s in negs:
                cols[anchor_column].append(query)
                cols[positive_column].append(pool[p])
                cols["negative"].append(pool[i])
                if output_scores:
                    cols["positive_score"].append(float(mined.positive_scores[q, j]))
                    cols["negative_score"].append(s)
    return cols, mined


def summary(mined: MinedNegatives) -> str:
    """A few lines on what was mined (counts, score quantiles, candidates each rule removed)."""
    found = mined.counts
    scores = mined.scores[np.isfinite(mined.scores)]
    lines = [
        f"queries: {len(found)}, negatives: {int(found.sum())} "
        f"({int((found < mined.indices.shape[1]).sum())} queries with fewer than requested)"
    ]
    if scores.size:
        q = np.quantile(scores, [0.0, 0.5, 1.0])
        lines.append(f"negative scores: min {q[0]:.4f}  median {q[1]:.4f}  max {q[2]:.4f}")
    for name, n in mined.skipped.items():
        lines.append(f"skipped by {name}: {n} of {mined.num_candidates} candidates")
    return "\n".join(lines)
