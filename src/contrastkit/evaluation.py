"""Evaluate text models on your data: retrieval on a BEIR folder, STS on scored sentence pairs.

:func:`evaluate` is what ``contrastkit eval --model PATH --data DIR`` runs:

* **retrieval** (``DIR`` holds ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``): the
  corpus is embedded batch by batch into a ``.npy`` file on disk, then every query's top-K
  documents by cosine similarity are found with the blocked FAISS search of
  :func:`contrastkit.mining.search_topk` (``memory_budget`` bounds its working memory), and
  nDCG@k, Recall@k, MRR@k, MAP@k and Precision@k come from the ranked ids
  (:func:`contrastkit.metrics.ranked_retrieval_metrics`; no dense score matrix). Queries without a
  relevant document are left out, as in BEIR.
* **STS** (a JSONL / CSV / TSV / Parquet file or a saved Hugging Face dataset with two sentence
  columns and a score): Spearman and Pearson ×100 between pair cosines and gold scores.
* **representation** metrics of :mod:`contrastkit.metrics` on the embeddings (a sample of at most
  ``sample`` rows): uniformity, effective rank, RankMe, cone effect, and alignment of the
  (query, best judged document) or (sentence1, sentence2) pairs.

A model is a local transformers / sentence-transformers directory (:class:`TextEncoder`), or
``"hashing"`` / ``"hashing:<dim>"`` for the model-free hashing encoder (smoke tests).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["DEFAULT_KS", "detect_task", "evaluate", "format_table", "load_text_model"]

DEFAULT_KS = (1, 10, 100)
#: rows used for the representation metrics (uniformity is quadratic in them)
SAMPLE = 2000


def load_text_model(spec=None, *, pooling=None, normalize=None, max_length=None, device=None):
    """A text encoder with ``encode(texts) -> (n, d) float32``: ``"hashing[:dim]"`` or a model
    directory (``None``: the offline MiniLM)."""
    if spec is not None and str(spec).split(":")[0] == "hashing":
        from .mining.encoders import HashingEncoder

        _, _, dim = str(spec).partition(":")
        try:
            return HashingEncoder(dim=int(dim) if dim else 256)
        except ValueError:
            raise ValueError(
                f"--model {spec!r}: the hashing dimension must be an integer"
            ) from None
    from .models import TextEncoder

    return TextEncoder.from_pretrained(
        spec, pooling=pooling, normalize=normalize, max_length=max_length, device=device
    )


def detect_task(data) -> str:
    """``"retrieval"`` for a BEIR folder, ``"sts"`` for a pairs file or saved HF dataset."""
    path = Path(data)
    if not path.exists():
        raise ValueError(f"--data {path}: no such file or directory")
    if path.is_dir():
        if (path / "corpus.jsonl").is_file() or (path / "qrels").is_dir():
            return "retrieval"
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "sts"
        raise ValueError(
            f"--data {path}: neither a BEIR folder (corpus.jsonl, queries.jsonl, "
            "qrels/<split>.tsv) nor a saved Hugging Face dataset"
        )
    return "sts"


def _encode(encoder, texts: Sequence[str], batch_size: int) -> np.ndarray:
    parts = [
        np.asarray(_call(encoder, texts[i : i + batch_size], batch_size), dtype=np.float32)
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts)


def _call(encoder, texts, batch_size):
    if "batch_size" in inspect.signature(encoder.encode).parameters:
        return encoder.encode(list(texts), batch_size=batch_size)
    return encoder.encode(list(texts))


def _sample(x: np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    if x.shape[0] > n:
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], n, replace=False))
        x = x[idx]
    return torch.from_numpy(np.array(x, dtype=np.float32))


def representation_metrics(
    embeddings: np.ndarray, pairs: Optional[tuple] = None, sample: int = SAMPLE
) -> dict:
    """Uniformity, effective rank, RankMe and cone effect of (a sample of) ``embeddings``, and
    the alignment of ``pairs = (a, b)`` (row ``i`` with row ``i``)."""
    from . import metrics as M

    z = _sample(embeddings, sample)
    out = {}
    if z.shape[0] >= 2:
        out["uniformity"] = M.uniformity(z)
        out["cone_effect"] = M.cone_effect(z)
    out["effective_rank"] = M.effective_rank(z)
    out["rankme"] = M.rankme(z)
    if pairs is not None and len(pairs[0]):
        a, b = (_sample(np.asarray(p), sample) for p in pairs)
        out["alignment"] = M.alignment(a, b)
    return out


def evaluate_retrieval(
    encoder,
    data,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 64,
    memory_budget=None,
    index: str = "flat",
    work_dir=None,
    sample: int = SAMPLE,
    progress: bool = False,
) -> dict:
    """Retrieval metrics of ``encoder`` on a :class:`~contrastkit.data.BeirData`
    (``progress``: tqdm bars for the corpus embedding and the search, on stderr)."""
    from .metrics import ranked_retrieval_metrics
    from .mining.search import search_topk
    from .mining.store import embed_to_memmap

    if not data.queries:
        raise ValueError("the BEIR split has no judged query")
    if not data.corpus:
        raise ValueError("the BEIR corpus is empty")
    doc_ids = list(data.corpus)
    n_docs = len(doc_ids)
    qids = list(data.queries)
    col = {d: j for j, d in enumerate(doc_ids)}
    relevance = [{col[d]: r for d, r in data.qrels.get(q, {}).items() if d in col} for q in qids]
    queries = _encode(encoder, [data.queries[q] for q in qids], batch_size)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        with _bar(progress, n_docs, "embedding the corpus", "doc") as bar:
            corpus = embed_to_memmap(
                data.documents(),
                lambda t: _call(encoder, t, batch_size),
                Path(tmp) / "corpus.npy",
                batch_size=batch_size,
                progress=bar.update if bar is not None else None,
            )
        depth = min(max(ks), n_docs)
        with _bar(progress, None, "searching", "block") as bar:
            _, top = search_topk(
                queries,
                corpus,
                depth,
                index=index,
                normalize=True,
                memory_budget=memory_budget,
                progress=_total_progress(bar),
            )
        if depth < max(ks):  # a cut-off beyond the corpus: the ranking is the whole corpus
            top = np.pad(top, ((0, 0), (0, max(ks) - depth)), constant_values=-1)
        out = ranked_retrieval_metrics(top, relevance, ks)
        kept = [i for i, r in enumerate(relevance) if any(v > 0 for v in r.values())]
        best = [max(relevance[i], key=relevance[i].get) for i in kept]
        pairs = (queries[kept], np.asarray(corpus[np.asarray(best, dtype=np.int64)]))
        out.update(representation_metrics(np.asarray(corpus[: min(n_docs, 10 * sample)]), pairs))
        del corpus
    out["queries"] = len(kept)
    out["documents"] = n_docs
    return out


@contextlib.contextmanager
def _bar(enabled: bool, total, desc: str, unit: str):
    """A tqdm bar on stderr (``None`` when not ``enabled``)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, leave=False)
    try:
        yield bar
    finally:
        bar.close()


def _total_progress(bar):
    """``progress(done, total)`` of :func:`contrastkit.mining.search_topk` moving ``bar``."""
    if bar is None:
        return None

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update


def evaluate_sts(encoder, pairs, *, batch_size: int = 64, sample: int = SAMPLE) -> dict:
    """Spearman and Pearson ×100 of ``encoder`` on :class:`~contrastkit.data.STSPairs`."""
    from .metrics import sts_pearson, sts_spearman

    if len(pairs) < 2:
        raise ValueError(f"STS evaluation needs at least 2 scored pairs, got {len(pairs)}")
    a = _encode(encoder, pairs.sentences1, batch_size)
    b = _encode(encoder, pairs.sentences2, batch_size)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out = {"spearman": sts_spearman(ta, tb, pairs.gold), "pearson": sts_pearson(ta, tb, pairs.gold)}
    out.update(representation_metrics(np.concatenate([a, b]), (a, b), sample))
    out["pairs"] = len(pairs)
    return out


def evaluate(
    model=None,
    data=None,
    *,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 64,
    memory_budget=None,
    pooling: Optional[str] = None,
    max_length: Optional[int] = None,
    device=None,
    loaded=None,
    progress: bool = False,
) -> dict:
    """``{"model": ..., "task": "retrieval"|"sts", "data": ..., "metrics": {...}}`` for one
    model on ``data`` (a BEIR folder or an STS file); ``loaded`` reuses already-read data."""
    from .data import load_beir, load_sts

    if data is None:
        raise ValueError("give the evaluation data (--data DIR)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"--k values must be integers >= 1, got {ks}")
    task = detect_task(data)
    if loaded is None:
        loaded = load_beir(data, split=split) if task == "retrieval" else load_sts(data)
    encoder = load_text_model(model, pooling=pooling, max_length=max_length, device=device)
    if task == "retrieval":
        metrics = evaluate_retrieval(
            encoder,
            loaded,
            ks=ks,
            batch_size=batch_size,
            memory_budget=memory_budget,
            progress=progress,
        )
    else:
        metrics = evaluate_sts(encoder, loaded, batch_size=batch_size)
    name = str(model) if model is not None else "all-MiniLM-L6-v2 (default)"
    return {"model": name, "task": task, "data": str(data), "metrics": metrics}


def _fmt(v) -> str:
    if isinstance(v, int):
        return str(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def format_table(results: Sequence[dict]) -> str:
    """The metrics of several :func:`evaluate` results side by side (one column per model)."""
    names = []
    for r in results:
        for k in r["metrics"]:
            if k not in names:
                names.append(k)
    heads = [f"[{i + 1}]" for i in range(len(results))]
    rows = [[n] + [_fmt(r["metrics"].get(n)) for r in results] for n in names]
    width = [max(len(x) for x in col) for col in zip(["metric"] + heads, *rows)]
    lines = [f"  {h}  {r['model']}" for h, r in zip(heads, results)]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, width))
        )

    lines.append(line(["metric"] + heads))
    lines += [line(r) for r in rows]
    return "\n".join(lines) + "\n"
