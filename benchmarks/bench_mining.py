"""Hard-negative mining throughput (queries/s) and peak RSS: contrastkit vs brute-force torch.

A synthetic corpus of ``--corpus`` unit vectors (d = ``--d``, default 1,000,000 x 384) is written
to a ``.npy`` file once; ``--queries`` queries are noisy copies of the first corpus rows, each with
that row as its positive. Every method then runs in a fresh process (peak RSS from
``VmHWM``, the process baseline after imports reported apart) and mines ``--k`` negatives per
query with ``relative_margin=0.05`` (NV-Retriever's TopK-PercPos):

* ``mine-flat``: :func:`contrastkit.mining.mine_hard_negatives`, exact FAISS ``IndexFlatIP``,
  corpus in memory (one block);
* ``mine-flat-stream``: the same, streamed from the memmap under ``--budget``;
* ``mine-torch-stream``: the same with the torch matmul backend instead of FAISS;
* ``mine-ivf``: FAISS ``IVF<nlist>,Flat`` (approximate; recall against the exact result printed);
* ``torch-brute``: the plain baseline: load the corpus into a tensor, ``q @ C.T`` and ``topk``
  per query batch, same filter rules.

Text encoding is not timed (it is the encoder's cost, the same for every method).
Run: ``python benchmarks/bench_mining.py`` (1M) or ``--corpus 100000`` for a quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("mine-flat", "mine-flat-stream", "mine-torch-stream", "mine-ivf", "torch-brute")


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` field in MiB. ``VmHWM`` (peak RSS) belongs to this process image;
    ``getrusage``'s ``ru_maxrss`` would carry the parent's peak over ``fork`` + ``exec``."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_data(folder: Path, n_corpus: int, n_queries: int, d: int, seed: int = 0) -> None:
    """Clustered unit vectors (1,000 Gaussian clusters) and queries near the first rows."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d), dtype=np.float32)
    corpus = np.lib.format.open_memmap(folder / "corpus.npy", "w+", np.float32, (n_corpus, d))
    step = 65536
    for c0 in range(0, n_corpus, step):
        n = min(step, n_corpus - c0)
        block = centres[rng.integers(0, len(centres), n)]
        block += 1.2 * rng.standard_normal((n, d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        corpus[c0 : c0 + n] = block
    noise = 0.05 * rng.standard_normal((n_queries, d), dtype=np.float32)
    queries = np.asarray(corpus[:n_queries]) + noise
    corpus.flush()
    del corpus
    np.save(folder / "queries.npy", queries.astype(np.float32))


def _torch_brute(queries, corpus_path, k, num_negatives, relative_margin, threads):
    """The plain baseline: whole corpus as a tensor, batched matmul + topk, the same rules."""
    import torch

    torch.set_num_threads(threads)
    corpus = torch.from_numpy(np.load(corpus_path))  # reads the whole file into memory
    corpus /= corpus.norm(dim=1, keepdim=True)  # in place: one copy of the corpus
    q = torch.nn.functional.normalize(torch.from_numpy(queries), dim=1)
    pos_scores = (q * corpus[: len(q)]).sum(1)
    negatives = []
    batch = 128  # 128 x C scores at a time (512 MiB at C = 1M)
    for q0 in range(0, len(q), batch):
        s, i = torch.topk(q[q0 : q0 + batch] @ corpus.T, k, dim=1)
        pos = torch.arange(q0, min(q0 + batch, len(q)))[:, None]
        ref = pos_scores[q0 : q0 + batch, None]
        ok = (i != pos) & (s <= ref - ref.abs() * relative_margin)
        for row_i, row_ok in zip(i, ok):
            negatives.append(row_i[row_ok][:num_negatives].tolist())
    width = num_negatives
    out = np.full((len(q), width), -1, np.int64)
    for r, row in enumerate(negatives):
        out[r, : len(row)] = row
    return out


def worker(args) -> None:
    import faiss
    import torch

    from contrastkit.mining import mine_hard_negatives

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    folder = Path(args.data)
    queries = np.load(folder / "queries.npy")
    corpus = np.load(folder / "corpus.npy", mmap_mode="r")
    positives = np.arange(len(queries))
    base = _status_mib("VmRSS")
    opts = dict(num_negatives=args.k, relative_margin=0.05, use_gpu=False)
    t0 = time.perf_counter()
    if args.worker == "torch-brute":
        k = 10 * args.k + 2  # the miner's window for these options: range_max + 1 positive
        idx = _torch_brute(queries, folder / "corpus.npy", k, args.k, 0.05, args.threads)
    else:
        extra = {}
        if args.worker == "mine-flat-stream":
            extra = dict(memory_budget=args.budget)
        elif args.worker == "mine-torch-stream":
            extra = dict(memory_budget=args.budget, index="torch")
        elif args.worker == "mine-ivf":
            extra = dict(index="ivf", nlist=args.nlist, nprobe=args.nprobe)
        idx = mine_hard_negatives(queries, corpus, positives, **opts, **extra).indices
    seconds = time.perf_counter() - t0
    np.save(folder / f"{args.worker}.npy", idx)
    result = dict(
        method=args.worker,
        seconds=seconds,
        queries_per_s=len(queries) / seconds,
        peak_rss_mib=_status_mib("VmHWM"),
        baseline_rss_mib=base,
    )
    print(json.dumps(result))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--k", type=int, default=5, help="negatives per query")
    p.add_argument("--budget", default="256MB", help="memory budget of mine-flat-stream")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default 4 sqrt(C))")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--data", help="folder for the synthetic data (default: a temporary one)")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"$ {shlex.join([sys.executable, *sys.argv])}", file=sys.stderr, flush=True)
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-mining-")
        args.data = tmp.name
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:  # reuse the files of an earlier run with the same shapes (--data)
        same = np.load(folder / "corpus.npy", mmap_mode="r").shape == (args.corpus, args.d)
        same = same and np.load(folder / "queries.npy").shape == (args.queries, args.d)
    except (OSError, ValueError):
        same = False
    if not same:
        make_data(folder, args.corpus, args.queries, args.d)
        print(f"  data written in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for method in [m for m in args.methods.split(",") if m]:
        cmd = [sys.executable, __file__, "--worker", method, "--data", str(folder)]
        for opt in ("queries", "d", "k", "budget", "nprobe", "threads"):
            cmd += [f"--{opt}", str(getattr(args, opt))]
        if args.nlist:
            cmd += ["--nlist", str(args.nlist)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(f"{method} failed")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  done {method}: {rows[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    exact = folder / "mine-flat.npy"
    ref = np.load(exact) if exact.exists() else None
    gib = args.corpus * args.d * 4 / 2**30
    print(
        f"\nCorpus {args.corpus:,} x {args.d} fp32 ({gib:.2f} GiB), {args.queries:,} queries, "
        f"{args.k} negatives, relative_margin=0.05, {args.threads} thread(s), "
        f"stream budget {args.budget}.\n"
    )
    print("| method | queries/s | seconds | peak RSS (MiB) | RSS after imports | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        agree = "-"
        if ref is not None:  # share of the exact negatives found (order ignored)
            got = np.load(folder / f"{r['method']}.npy")
            hits = [len(set(a[a >= 0]) & set(b[b >= 0])) for a, b in zip(got, ref)]
            agree = f"{sum(hits) / max(int((ref >= 0).sum()), 1) * 100:.1f} %"
        print(
            f"| {r['method']} | {r['queries_per_s']:.1f} | {r['seconds']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['baseline_rss_mib']:.0f} | {agree} |"
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
