"""Corpus-scale hard-negative mining on embeddings (the rules of sentence-transformers' utility).

Reference API: ``sentence_transformers.util.mine_hard_negatives`` (sentence-transformers 6.2.0,
``sentence_transformers/util/hard_negatives.py``); the option names and the order of the rules
follow it, the retrieval is :func:`contrastkit.mining.search.search_topk` (FAISS or torch,
streamed from disk under a memory budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np
import torch

from contrastkit.mining.search import (
    FAISS_GPU_MAX_K,
    _normalise,
    _rows,
    check_matrix,
    faiss_gpus,
    search_topk,
)

SAMPLING = ("top", "random")
FILTERS = ("absolute_margin", "relative_margin", "max_score", "min_score")
SELECT_ROWS = 16384  # queries filtered and sampled per chunk


@dataclass
class MinedNegatives:
    """Result of :func:`mine_hard_negatives` (one row per query).

    ``indices`` ``(Q, num_negatives)`` corpus rows, best first, padded with ``-1`` where fewer
    negatives survived; ``scores`` the matching similarities (``-inf`` padding);
    ``positive_scores`` ``(Q, P)`` the similarity of each given positive (NaN padding);
    ``reference_scores`` ``(Q,)`` the minimum positive score each margin is measured from;
    ``skipped`` how many retrieved candidates each rule removed (``"positive"``, ``"exclude"``,
    then the filters in the order they apply); ``range_max`` the window actually used.
    """

    indices: np.ndarray
    scores: np.ndarray
    positive_scores: np.ndarray
    reference_scores: np.ndarray
    range_max: int
    num_candidates: int
    skipped: dict = field(default_factory=dict)

    @property
    def counts(self) -> np.ndarray:
        """Number of negatives found for each query."""
        return (self.indices >= 0).sum(axis=1)


def _padded_ids(name: str, ids, n_rows: int, n_corpus: int) -> np.ndarray:
    """Ragged per-query corpus ids -> ``(n_rows, P)`` int64 padded with -1 (duplicates dropped)."""
    if ids is None:
        return np.full((n_rows, 0), -1, np.int64)
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, np.ndarray):
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} must hold integer corpus ids, got dtype {ids.dtype}")
        if ids.ndim not in (1, 2):
            raise ValueError(f"{name} must be 1-D or 2-D, got shape {ids.shape}")
        ids = ids.astype(np.int64)
        # -1 pads the rows of a 2-D array; any other negative id (or -1 in a 1-D array, one id
        # per query) would silently drop a positive, so it is an error
        bad = ids < (0 if ids.ndim == 1 else -1)
        if bad.any():
            q = int(np.argwhere(bad)[0][0])
            pad = "" if ids.ndim == 1 else " (only -1, the padding of a 2-D array, may be negative)"
            raise ValueError(
                f"{name}[{q}] has negative id {int(ids[bad][0])}: corpus ids must be >= 0{pad}"
            )
        if ids.ndim == 1:
            ids = ids[:, None]
        rows = [r[r >= 0] for r in ids]
    else:
        rows = []
        for r in ids:
            r = [r] if isinstance(r, (int, np.integer)) else list(r)
            if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in r):
                raise ValueError(f"{name} must hold integer corpus ids, got {r[:5]!r}")
            rows.append(np.asarray(r, np.int64))
    if len(rows) != n_rows:
        raise ValueError(f"{name} must have one entry per query: {len(rows)} vs {n_rows} queries")
    rows = [np.asarray(list(dict.fromkeys(r.tolist())), np.int64) for r in rows]
    width = max((len(r) for r in rows), default=0)
    out = np.full((n_rows, width), -1, np.int64)
    for q, r in enumerate(rows):
        if len(r) and (r.min() < 0 or r.max() >= n_corpus):
            raise ValueError(f"{name}[{q}] has ids {r.tolist()} outside the corpus [0, {n_corpus})")
        out[q, : len(r)] = r
    return out


def _check_optional_number(name: str, value, lo: float = -math.inf) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number or None, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _positive_scores(queries, corpus, pos: np.ndarray, normalize: bool, q_rows: int) -> np.ndarray:
    out = np.full(pos.shape, np.nan, np.float32)
    if pos.shape[1] == 0:
        return out
    for q0 in range(0, pos.shape[0], q_rows):
        q1 = min(q0 + q_rows, pos.shape[0])
        q = _rows(queries, q0, q1)
        block = pos[q0:q1]
        valid = block >= 0
        ids = np.unique(block[valid])
        if isinstance(corpus, torch.Tensor):
            vecs = corpus[torch.from_numpy(ids)].detach().to("cpu", torch.float32).numpy()
        else:
            vecs = np.asarray(corpus[ids], dtype=np.float32)
        vecs = np.ascontiguousarray(vecs)
        if normalize:
            _normalise(q)
            _normalise(vecs)
        where = np.searchsorted(ids, np.where(valid, block, ids[0]))
        dots = np.einsum("qd,qpd->qp", q, vecs[where])
        out[q0:q1] = np.where(valid, dots, np.nan)
    return out


def _select(scores, idx, pos, excl, ref, rules, skipped, range_min, range_max, n, strategy, rng):
    """Rules 2-5 on one chunk of queries' retrieved candidates (adds to ``skipped``)."""
    alive = idx >= 0

    def drop(name, mask):
        hit = mask & alive
        skipped[name] = skipped.get(name, 0) + int(hit.sum())
        alive[hit] = False

    if not rules["include_positives"] and pos.shape[1]:
        drop("positive", (idx[:, :, None] == pos[:, None, :]).any(-1))
    if excl.shape[1]:
        drop("exclude", (idx[:, :, None] == excl[:, None, :]).any(-1))
    if rules["absolute_margin"] is not None:
        drop("absolute_margin", scores + rules["absolute_margin"] > ref[:, None])
    if rules["relative_margin"] is not None:
        drop("relative_margin", scores > (ref - np.abs(ref) * rules["relative_margin"])[:, None])
    if rules["max_score"] is not None:
        drop("max_score", scores > rules["max_score"])
    if rules["min_score"] is not None:
        drop("min_score", scores < rules["min_score"])

    # survivors keep their retrieval order (score desc, index asc): rank them, keep the window
    rank = np.cumsum(alive, axis=1) - 1
    window = alive & (rank >= range_min) & (rank < range_max)
    if strategy == "top":
        key = np.where(window, 0.0, 1.0)  # first survivors of the window, in score order
    else:  # uniform sample without replacement: the smallest random keys of the window
        key = np.where(window, rng.random(window.shape), 2.0)
    chosen = np.argsort(key, axis=1, kind="stable")[:, :n]
    chosen = np.sort(chosen, axis=1)  # back to score order
    ok = np.take_along_axis(window, chosen, 1)
    # rows with fewer survivors than n: valid picks first, then padding
    chosen = np.take_along_axis(chosen, np.argsort(~ok, axis=1, kind="stable"), 1)
    ok = np.take_along_axis(window, chosen, 1)
    out_i = np.where(ok, np.take_along_axis(idx, chosen, 1), -1)
    out_s = np.where(ok, np.take_along_axis(scores, chosen, 1), -np.inf).astype(np.float32)
    return out_i, out_s


def mine_hard_negatives(
    queries,
    corpus,
    positives=None,
    *,
    num_negatives: int = 3,
    range_min: int = 0,
    range_max: Optional[int] = None,
    max_score: Optional[float] = None,
    min_score: Optional[float] = None,
    absolute_margin: Optional[float] = None,
    relative_margin: Optional[float] = None,
    margin: Optional[float] = None,
    sampling_strategy: Literal["top", "random"] = "top",
    include_positives: bool = False,
    exclude=None,
    index: str = "flat",
    normalize: bool = True,
    memory_budget=None,
    query_batch_size: Optional[int] = None,
    nlist: Optional[int] = None,
    nprobe: int = 16,
    use_gpu: Optional[bool] = None,
    device=None,
    seed: int = 0,
    progress=None,
) -> MinedNegatives:
    """Hard negatives for every query from a corpus of embeddings.

    ``queries`` ``(Q, d)`` and ``corpus`` ``(C, d)``: numpy arrays, ``numpy.memmap`` s (streamed
    block by block, see ``memory_budget``) or tensors. ``positives``: per query, the corpus ids of
    its positives (an int array ``(Q,)``, ``(Q, P)`` padded with -1, or a list of lists; any
    other negative id is a ``ValueError``); ``exclude``: more ids per query that may never be
    negatives (e.g. the query's own row). A NaN or infinite row of ``queries`` or ``corpus`` is a
    ``ValueError`` naming the row (found while the rows are streamed through the search).

    Rules, in order (sentence-transformers' ``mine_hard_negatives``, same names and defaults):

    1. retrieve the top ``range_max + P_max`` candidates (``P_max``: the most positives and
       exclusions of any query); ``range_max`` defaults to ``range_min + num_negatives + P_max``,
       or ``range_min + 10 num_negatives + P_max`` when a score filter is set (capped at the corpus
       size, and at 2048 on FAISS GPUs); a larger ``range_max`` given is capped at the corpus size;
    2. drop the positives (unless ``include_positives``) and the ``exclude`` ids;
    3. with ``pos`` = the *smallest* positive score of the query: ``absolute_margin`` drops
       ``s + absolute_margin > pos``; ``relative_margin`` drops ``s > pos - |pos| relative_margin``
       (as the 6.2.0 code; NV-Retriever writes ``pos (1 - r)``, which differs for ``pos < 0``);
       ``max_score`` drops ``s > max_score``; ``min_score`` drops ``s < min_score``;
    4. keep the best ``range_max`` survivors and skip the first ``range_min`` of them;
    5. ``sampling_strategy="top"``: the next ``num_negatives``; ``"random"``: a uniform sample of
       ``num_negatives`` survivors without replacement (``seed``), re-sorted by score.

    ``margin`` is the deprecated sentence-transformers name of ``absolute_margin``.
    ``normalize=True`` scores by cosine similarity. Queries with fewer survivors get ``-1``
    padding. Index, memory and device options: :func:`contrastkit.mining.search.search_topk`.
    """
    n_queries, dim = check_matrix("queries", queries)
    n_corpus, cdim = check_matrix("corpus", corpus)
    if cdim != dim:
        raise ValueError(
            f"corpus has dimension {cdim} (shape {(n_corpus, cdim)}) but queries have {dim} "
            f"(shape {(n_queries, dim)})"
        )
    num_negatives = _check_int("num_negatives", num_negatives, 1)
    range_min = _check_int("range_min", range_min, 0)
    if range_max is not None:
        range_max = _check_int("range_max", range_max, 1)
    _check_int("nprobe", nprobe, 1)
    if sampling_strategy not in SAMPLING:
        raise ValueError(f"sampling_strategy must be one of {SAMPLING}, got {sampling_strategy!r}")
    if margin is not None:
        if absolute_margin is not None:
            raise ValueError("give absolute_margin or its old name margin, not both")
        absolute_margin = margin
    for name, value in (("max_score", max_score), ("min_score", min_score)):
        _check_optional_number(name, value)
    _check_optional_number("absolute_margin", absolute_margin)
    _check_optional_number("relative_margin", relative_margin)
    pos = _padded_ids("positives", positives, n_queries, n_corpus)
    excl = _padded_ids("exclude", exclude, n_queries, n_corpus)
    n_pos = (pos >= 0).sum(1)
    uses_margin = absolute_margin is not None or relative_margin is not None
    if uses_margin and (pos.shape[1] == 0 or (n_pos == 0).any()):
        bad = int(np.flatnonzero(n_pos == 0)[0]) if pos.shape[1] else 0
        raise ValueError(
            f"absolute_margin/relative_margin need at least one positive per query; query {bad} "
            "has none"
        )
    if range_min + num_negatives > n_corpus:
        raise ValueError(
            f"range_min + num_negatives = {range_min + num_negatives} is larger than the corpus "
            f"({n_corpus} rows)"
        )
    dropped = n_pos * (not include_positives) + (excl >= 0).sum(1)
    p_max = int(dropped.max()) if n_queries else 0
    if range_max is None:
        filtered = uses_margin or max_score is not None or min_score is not None
        range_max = range_min + (10 if filtered else 1) * num_negatives + p_max
        range_max = min(range_max, n_corpus)
        if use_gpu or (use_gpu is None and index != "torch" and faiss_gpus() > 0):
            range_max = min(range_max, FAISS_GPU_MAX_K - p_max)
    else:  # capped at the corpus size, as the default and sentence-transformers do
        range_max = min(range_max, n_corpus)
    if range_min >= range_max:
        raise ValueError(f"range_min={range_min} must be smaller than range_max={range_max}")
    if num_negatives > range_max - range_min:
        raise ValueError(
            f"num_negatives={num_negatives} does not fit in the window range_min={range_min} .. "
            f"range_max={range_max}"
        )
    k = min(range_max + p_max, n_corpus)

    scores, idx = search_topk(
        queries,
        corpus,
        k,
        index=index,
        normalize=normalize,
        memory_budget=memory_budget,
        query_batch_size=query_batch_size,
        nlist=nlist,
        nprobe=nprobe,
        use_gpu=use_gpu,
        device=device,
        seed=seed,
        progress=progress,
    )
    pos_scores = _positive_scores(queries, corpus, pos, normalize, query_batch_size or 4096)
    with np.errstate(all="ignore"):
        ref = np.where(
            n_pos > 0,
            np.nanmin(np.where(pos >= 0, pos_scores, np.inf), axis=1, initial=np.inf),
            np.nan,
        ).astype(np.float32)

    skipped: dict[str, int] = {}
    out_i = np.full((n_queries, num_negatives), -1, np.int64)
    out_s = np.full((n_queries, num_negatives), -np.inf, np.float32)
    rng = np.random.default_rng(seed)
    rules = dict(
        include_positives=include_positives,
        absolute_margin=absolute_margin,
        relative_margin=relative_margin,
        max_score=max_score,
        min_score=min_score,
    )
    for q0 in range(0, n_queries, SELECT_ROWS):  # O(rows x k) temporaries per chunk
        sl = slice(q0, min(q0 + SELECT_ROWS, n_queries))
        out_i[sl], out_s[sl] = _select(
            scores[sl],
            idx[sl],
            pos[sl],
            excl[sl],
            ref[sl],
            rules,
            skipped,
            range_min,
            range_max,
            num_negatives,
            sampling_strategy,
            rng,
        )
    return MinedNegatives(
        indices=out_i,
        scores=out_s,
        positive_scores=pos_scores,
        reference_scores=ref,
        range_max=range_max,
        num_candidates=int((idx >= 0).sum()),
        skipped=skipped,
    )
