"""Blocked top-k inner-product search over a corpus that may live on disk.

The corpus is any ``(C, d)`` array-like that supports row slicing (a numpy array, a
``numpy.memmap``, a torch tensor). It is read in corpus blocks of ``BlockPlan.corpus_rows`` rows;
every block is searched for every query (in query blocks) and each query keeps a running top-k
that is merged with the block's top-k. The blocks partition ``[0, C)``, so every corpus row is
scored exactly once and no row can be lost or returned twice; the running lists are ordered by
(score descending, index ascending), which makes the result independent of the block size.

Backends: ``index="flat"`` (exact FAISS search: on CPU ``faiss.knn`` on each block in place, the
exhaustive search ``IndexFlatIP`` runs; on GPUs, when ``faiss`` sees one, a sharded
``IndexFlatIP``), ``index="torch"`` (brute-force ``torch`` matmul + ``topk``, exact; CUDA when
available), ``index="ivf"`` (FAISS ``IVF<nlist>,Flat``, approximate) or any other FAISS
``index_factory`` string (approximate; such an index holds the whole corpus in its own, possibly
compressed, codes: ``memory_budget`` then only bounds the blocks used to train and fill it).
"""

from __future__ import annotations

import math
import mmap
import re
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from contrastkit._extras import require

EXACT_INDEXES = ("flat", "torch")
FAISS_GPU_MAX_K = 2048  # FAISS GPU indexes cannot return more neighbours per query
DEFAULT_QUERY_BLOCK = 4096
ADD_CHUNK_BYTES = 64 << 20  # rows added to an approximate index per call
READ_CHUNK_BYTES = 8 << 20  # memmap rows are copied (then released) this many bytes at a time
SCORE_BUFFER_BYTES = 256 << 20  # torch backend without a budget: scores of one query block
SMALL_SEARCH = 1 << 26  # multiply-adds below which a FAISS CPU search runs on one thread
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30})


def parse_memory(value) -> Optional[int]:
    """Bytes from an int or a string such as ``"512MB"``, ``"2GiB"``, ``"100k"`` (None: no cap)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"memory_budget must be a number of bytes or a string, got {value!r}")
    if isinstance(value, (int, float)):
        nbytes = value
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"memory_budget must look like 1000000, '512MB' or '2GiB', got {value!r}"
            )
        nbytes = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(nbytes) or nbytes <= 0:
        raise ValueError(f"memory_budget must be > 0 bytes, got {value!r}")
    return int(nbytes)


@dataclass(frozen=True)
class BlockPlan:
    """Rows per corpus block and per query block chosen for a memory budget."""

    corpus_rows: int
    query_rows: int

    @staticmethod
    def for_budget(
        n_corpus: int,
        n_queries: int,
        dim: int,
        k: int,
        memory_budget: Optional[int],
        score_buffer: bool = True,
    ) -> "BlockPlan":
        """Split ``memory_budget`` bytes between a corpus block and a query block.

        Half the budget holds the corpus block (``cb * d * 4`` bytes, searched in place); the
        other half the query block: per query ``d * 4`` for
        its row, ``72 k`` for the top-k merge and, with ``score_buffer`` (torch backend),
        ``4 cb`` for its scores against the block. FAISS computes scores in its own tiles
        (at most 4096 x 1024 floats, 16 MiB) outside this budget. The outputs (``Q x k``
        scores and ids, 12 bytes each) are not counted. ``None``: the corpus in one block
        (and, with ``score_buffer``, query blocks whose scores fit in 256 MiB).
        """
        if memory_budget is None:
            rows = min(n_queries, DEFAULT_QUERY_BLOCK)
            if score_buffer:  # torch: keep the query block's scores within SCORE_BUFFER_BYTES
                rows = min(rows, SCORE_BUFFER_BYTES // (4 * max(n_corpus, 1)))
            return BlockPlan(max(n_corpus, 1), max(rows, 1))
        half = memory_budget // 2
        corpus_rows = min(int(half // (dim * 4)), n_corpus)
        per_query = dim * 4 + 72 * k + (4 * corpus_rows if score_buffer else 0)
        if corpus_rows < 1 or half < per_query - (4 * corpus_rows if score_buffer else 0) + 4:
            need = 2 * (dim * 4 + dim * 4 + 72 * k + 4)
            raise ValueError(
                f"memory_budget={memory_budget} bytes is too small for one corpus row of "
                f"dimension {dim} and one query with k={k} (needs at least {need} bytes)"
            )
        if score_buffer and half // per_query < 1:  # shrink the block until one query fits
            corpus_rows = max(1, int((half - dim * 4 - 72 * k) // 4))
            per_query = dim * 4 + 72 * k + 4 * corpus_rows
        query_rows = int(half // per_query)
        query_rows = min(query_rows, max(n_queries, 1), DEFAULT_QUERY_BLOCK * 4)
        return BlockPlan(max(corpus_rows, 1), max(query_rows, 1))


def _rows(array, start: int, stop: int, name: Optional[str] = None) -> np.ndarray:
    """Rows ``start:stop`` as a fresh C-contiguous float32 numpy array.

    For a shared ``numpy.memmap`` the pages just read are then dropped from this process's page
    tables (``madvise(MADV_DONTNEED)``; the OS page cache keeps them), so streaming a file does
    not grow the resident set by the whole file. With ``name``, a row holding NaN or Inf is a
    ``ValueError`` naming ``name`` and the row (so the check streams with the search).
    """
    block = array[start:stop]
    if isinstance(block, torch.Tensor):
        block = block.detach().to("cpu", torch.float32).numpy()
    if not isinstance(block, np.memmap):
        out = np.array(block, dtype=np.float32, order="C", copy=True)  # never the caller's
    else:
        out = np.empty(block.shape, np.float32)
        step = max(1, READ_CHUNK_BYTES // max(1, block.strides[0]))
        for r0 in range(0, block.shape[0], step):  # read and release the file a chunk at a time
            out[r0 : r0 + step] = block[r0 : r0 + step]
            _release(block[r0 : r0 + step])
    if name is not None:
        _check_finite(name, out, start)
    return out


def _check_finite(name: str, block: np.ndarray, offset: int = 0, rows=None) -> None:
    """ValueError naming the first row of ``block`` (global row ``offset + i``) with NaN/Inf."""
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        row = int(rows[i]) if rows is not None else offset + i
        raise ValueError(f"{name} row {row} holds NaN or Inf: every embedding must be finite")


def _release(view: np.memmap) -> None:
    mm = getattr(view, "_mmap", None)
    if mm is None or view.mode not in ("r", "r+", "w+") or not hasattr(mmap, "MADV_DONTNEED"):
        return  # copy-on-write maps ("c") would lose their private changes
    if not view.flags.c_contiguous or view.nbytes == 0:
        return
    try:
        base = np.frombuffer(mm, np.uint8).__array_interface__["data"][0]
        start = view.__array_interface__["data"][0] - base
        aligned = start - start % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, aligned, start - aligned + view.nbytes)
    except (ValueError, OSError, BufferError):  # an optimisation only
        return


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows to unit L2 norm, in place (no full-size temporary, unlike ``np.linalg.norm``)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    np.maximum(norms, 1e-12, out=norms)
    x /= norms.astype(np.float32)[:, None]
    return x


def check_matrix(name: str, x) -> tuple[int, int]:
    """Shape of a 2-D float array-like with at least one row and column (clear ValueErrors)."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise ValueError(f"{name} must be a 2-D array or tensor, got {type(x).__name__}")
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (rows, dim), got shape {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(shape)}")
    if shape[1] == 0:
        raise ValueError(f"{name} has an empty feature dimension: shape {tuple(shape)}")
    dtype = getattr(x, "dtype", None)
    is_float = (
        x.is_floating_point() if isinstance(x, torch.Tensor) else np.issubdtype(dtype, np.floating)
    )
    if not is_float:
        raise ValueError(f"{name} must hold floating-point values, got dtype {dtype}")
    return int(shape[0]), int(shape[1])


def merge_topk(
    scores_a: np.ndarray, idx_a: np.ndarray, scores_b: np.ndarray, idx_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-``k`` of two candidate lists, ordered by (score desc, index asc).

    Padding entries (index ``-1``, score ``-inf``) sort last. The lists must hold disjoint indices.
    """
    scores = np.concatenate([scores_a, scores_b], axis=1)
    idx = np.concatenate([idx_a, idx_b], axis=1)
    tie = np.where(idx < 0, np.iinfo(np.int64).max, idx)
    order = np.lexsort((tie, -scores.astype(np.float64)), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)


def _faiss():
    # index='torch' (brute force) searches without FAISS
    return require("faiss", "mining", "contrastkit.mining with index='flat'/'ivf'")


def faiss_gpus() -> int:
    """Number of GPUs FAISS can use (0 for faiss-cpu or when FAISS is missing)."""
    try:
        faiss = _faiss()
    except ImportError:
        return 0
    return int(getattr(faiss, "get_num_gpus", lambda: 0)())


class _BlockSearcher:
    """Search one corpus block (global offset ``c0``) for the top-k of a query block."""

    def __init__(self, corpus, c0: int, c1: int, normalize: bool, index: str, use_gpu, device):
        self.c0 = c0
        self.n = c1 - c0
        self.gpu = bool(use_gpu) and index != "torch"
        if index == "torch":
            self.kind = "torch"
            self.device = torch.device(device)
            block = _rows(corpus, c0, c1, "corpus")
            if normalize:
                _normalise(block)
            self.block = torch.from_numpy(block).to(self.device)
            return
        faiss = _faiss()
        self.kind = "faiss"
        self.faiss = faiss
        block = _rows(corpus, c0, c1, "corpus")
        if normalize:
            _normalise(block)
        if self.gpu:  # an IndexFlatIP on the GPUs (sharded), the block copied to device memory
            self.index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(corpus.shape[1]))
            self.index.add(block)
        else:  # faiss.knn: IndexFlatIP's exhaustive search (BLAS + heaps) on the block as is
            self.block = block

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        kk = min(k, self.n)
        if self.kind == "torch":
            q = torch.from_numpy(queries).to(self.device)
            s, i = torch.topk(q @ self.block.T, kk, dim=1)
            s, i = s.cpu().numpy(), i.cpu().numpy().astype(np.int64)
        else:
            small = not self.gpu and queries.shape[0] * self.n * queries.shape[1] < SMALL_SEARCH
            threads = self.faiss.omp_get_max_threads()
            if small and threads > 1:  # OpenMP start-up dominates small searches (and spins
                self.faiss.omp_set_num_threads(1)  # badly on a busy machine): one thread
            try:
                if self.gpu:
                    s, i = self.index.search(queries, kk)
                else:
                    s, i = self.faiss.knn(
                        queries, self.block, kk, metric=self.faiss.METRIC_INNER_PRODUCT
                    )
            finally:
                if small and threads > 1:
                    self.faiss.omp_set_num_threads(threads)
            i = i.astype(np.int64, copy=False)
        i = np.where(i >= 0, i + self.c0, -1)
        s = np.where(i >= 0, s, -np.inf).astype(np.float32)
        if kk < k:  # pad to k so that blocks merge with fixed shapes
            pad = k - kk
            s = np.concatenate([s, np.full((s.shape[0], pad), -np.inf, np.float32)], 1)
            i = np.concatenate([i, np.full((i.shape[0], pad), -1, np.int64)], 1)
        return s, i


def _default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def search_topk(
    queries,
    corpus,
    k: int,
    *,
    index: str = "flat",
    normalize: bool = True,
    memory_budget=None,
    query_batch_size: Optional[int] = None,
    nlist: Optional[int] = None,
    nprobe: int = 16,
    use_gpu: Optional[bool] = None,
    device=None,
    seed: int = 0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` corpus rows by inner product for every query: ``(scores, indices)``, ``(Q, k)``.

    ``queries`` ``(Q, d)`` and ``corpus`` ``(C, d)`` may be numpy arrays, memmaps or tensors;
    with ``normalize`` both are L2-normalised block by block (cosine similarity), the inputs are
    never modified. ``memory_budget`` (bytes or ``"512MB"``) sets the block sizes of the exact
    indexes (:class:`BlockPlan`); ``None`` searches the corpus as one block. Rows are ordered by
    score (descending), ties by corpus index; a query whose corpus is exhausted (approximate
    indexes only) is padded with index -1 and score -inf. ``progress(done, total)`` is called
    after each step, counting query rows times corpus blocks.
    """
    n_queries, dim = check_matrix("queries", queries)
    n_corpus, cdim = check_matrix("corpus", corpus)
    if cdim != dim:
        raise ValueError(
            f"corpus has dimension {cdim} (shape {(n_corpus, cdim)}) but queries have {dim} "
            f"(shape {(n_queries, dim)})"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k > n_corpus:
        raise ValueError(f"k={k} is larger than the corpus ({n_corpus} rows)")
    if not isinstance(index, str) or not index:
        raise ValueError(
            f"index must be 'flat', 'torch', 'ivf' or a FAISS factory string, got {index!r}"
        )
    if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
        raise ValueError(f"nprobe must be an integer >= 1 (IVF lists visited), got {nprobe!r}")
    if nlist is not None and (
        isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)) or nlist < 1
    ):
        raise ValueError(f"nlist must be an integer >= 1 or None, got {nlist!r}")
    budget = parse_memory(memory_budget)
    if use_gpu is None:
        use_gpu = index != "torch" and faiss_gpus() > 0
    if use_gpu and index != "torch" and k > FAISS_GPU_MAX_K:
        raise ValueError(
            f"k={k} exceeds FAISS's GPU limit of {FAISS_GPU_MAX_K} neighbours per query"
        )
    if index not in EXACT_INDEXES:
        return _search_approximate(
            queries,
            corpus,
            k,
            index,
            normalize,
            budget,
            query_batch_size,
            nlist,
            nprobe,
            use_gpu,
            seed,
            progress,
        )
    device = device or _default_device()
    plan = BlockPlan.for_budget(n_corpus, n_queries, dim, k, budget, index == "torch")
    q_rows = query_batch_size or plan.query_rows
    n_blocks = -(-n_corpus // plan.corpus_rows)
    done = 0
    best_s = np.full((n_queries, k), -np.inf, np.float32)
    best_i = np.full((n_queries, k), -1, np.int64)
    single_q = None
    if n_queries <= q_rows:  # read (and normalise) the queries once
        single_q = _rows(queries, 0, n_queries, "queries")
        if normalize:
            _normalise(single_q)
    for c0 in range(0, n_corpus, plan.corpus_rows):
        c1 = min(c0 + plan.corpus_rows, n_corpus)
        searcher = _BlockSearcher(corpus, c0, c1, normalize, index, use_gpu, device)
        for q0 in range(0, n_queries, q_rows):
            q1 = min(q0 + q_rows, n_queries)
            if single_q is not None:
                q = single_q
            else:
                q = _rows(queries, q0, q1, "queries")
                if normalize:
                    _normalise(q)
            s, i = searcher.search(q, k)
            if c0 == 0:
                best_s[q0:q1], best_i[q0:q1] = merge_topk(s[:, :0], i[:, :0], s, i, k)
            else:
                best_s[q0:q1], best_i[q0:q1] = merge_topk(best_s[q0:q1], best_i[q0:q1], s, i, k)
            done += q1 - q0
            if progress is not None:
                progress(done, n_queries * n_blocks)
        del searcher
    return best_s, best_i


def _search_approximate(
    queries,
    corpus,
    k,
    index,
    normalize,
    budget,
    query_batch_size,
    nlist,
    nprobe,
    use_gpu,
    seed,
    progress,
):
    faiss = _faiss()
    n_queries, dim = queries.shape[0], queries.shape[1]
    n_corpus = corpus.shape[0]
    if index == "ivf":
        lists = nlist or max(1, min(int(math.sqrt(n_corpus)), n_corpus // 39 or 1))
        factory = f"IVF{lists},Flat"
    else:
        factory = index
    try:
        idx = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(
            f"index={index!r} is not a valid FAISS index_factory string: {exc}"
        ) from None
    plan = BlockPlan.for_budget(n_corpus, n_queries, dim, k, budget, False)
    if not idx.is_trained:
        n_train = min(n_corpus, max(64 * getattr(idx, "nlist", 1), 10_000))
        rows = np.sort(np.random.default_rng(seed).choice(n_corpus, n_train, replace=False))
        train = np.ascontiguousarray(
            np.asarray(
                corpus[rows]
                if not isinstance(corpus, torch.Tensor)
                else corpus[torch.from_numpy(rows)].cpu().numpy(),
                dtype=np.float32,
            )
        )
        _check_finite("corpus", train, rows=rows)
        if normalize:
            _normalise(train)
        idx.train(train)
        del train
        if isinstance(corpus, np.memmap):
            _release(corpus)
    if hasattr(idx, "nprobe"):
        idx.nprobe = int(nprobe)
    add_rows = min(plan.corpus_rows, max(1, ADD_CHUNK_BYTES // (4 * dim)))
    for c0 in range(0, n_corpus, add_rows):  # the index keeps its own copy: add in chunks
        block = _rows(corpus, c0, min(c0 + add_rows, n_corpus), "corpus")
        if normalize:
            _normalise(block)
        idx.add(block)
        del block
    if use_gpu:
        idx = faiss.index_cpu_to_all_gpus(idx)
    q_rows = query_batch_size or plan.query_rows
    out_s = np.empty((n_queries, k), np.float32)
    out_i = np.empty((n_queries, k), np.int64)
    for q0 in range(0, n_queries, q_rows):
        q1 = min(q0 + q_rows, n_queries)
        q = _rows(queries, q0, q1, "queries")
        if normalize:
            _normalise(q)
        s, i = idx.search(q, k)
        i = i.astype(np.int64, copy=False)
        s = np.where(i >= 0, s, -np.inf).astype(np.float32)
        out_s[q0:q1], out_i[q0:q1] = merge_topk(s[:, :0], i[:, :0], s, i, k)
        if progress is not None:
            progress(q1, n_queries)
    return out_s, out_i
