"""Forward+backward wall time and peak memory of contrastkit objectives against a GEMM floor.

Every (method, N) pair runs in a fresh ``python -m contrastkit.bench --worker`` process, so the
reported peak resident set (``ru_maxrss``) belongs to that method alone; the baseline (after
importing torch and allocating the inputs) is reported next to it. Inputs are fp32 ``(N, d)``
standard normals; M = N. Time is the best of ``repeat`` runs, after one warm-up run for
N <= 16384 (none above, to save time).

The peer methods (``st-cached-mnrl``, ``open-clip``) import sentence-transformers and open_clip
as installed packages (:mod:`contrastkit._peers`; ``pip install 'contrastkit[bench]'``); a
missing one gives a ``skipped`` row that names the pip command.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

TAU = 0.07
SMALL_N = 16384  # up to here: one warm-up run and 3 timed runs by default
QUICK_NS = (1024, 4096)
QUICK_METHODS = ("floor", "infonce", "infonce-auto", "clip", "supcon", "dense")
ENGINE_METHODS = ("infonce", "infonce-auto", "clip", "supcon", "dcl")
PEER_METHODS = ("st-cached-mnrl", "open-clip")
METHODS = ("floor", *ENGINE_METHODS, "dense", *PEER_METHODS)
#: bytes per logit held at the peak of the dense baselines (fp32 logits, softmax, gradient).
DENSE_BYTES_PER_PAIR = {"dense": 3 * 4, "open-clip": 5 * 4}
NOTES = {
    "floor": "bare GEMMs, 6NMd FLOPs",
    "infonce": "tiled (single sweep)",
    "infonce-auto": "backend=auto",
    "clip": "symmetric, tiled (two sweeps, 8NMd)",
    "supcon": "single view, ~N/4 classes",
    "dcl": "z1, z2: N/2 rows each (2N-stack = N)",
    "dense": "plain PyTorch",
    "st-cached-mnrl": "sentence-transformers CachedMNRL loss on embeddings",
    "open-clip": "open_clip ClipLoss (dense)",
}


def default_repeat(n: int) -> int:
    """Timed runs per (method, N) unless given: 3 up to SMALL_N, 1 above."""
    return 3 if n <= SMALL_N else 1


# --------------------------------------------------------------------------- worker side


class _Skip(Exception):
    """A method that cannot run here (its peer library is missing)."""


def _peer(method: str, accessor: str, **kwargs):
    """The peer of ``method`` from the installed packages (:mod:`contrastkit._peers`); a missing
    one skips the row with the pip command that installs it."""
    from contrastkit import _peers

    try:
        return getattr(_peers, accessor)(**kwargs)
    except _peers.PeerMissing as exc:
        raise _Skip(str(exc)) from None


def _setup(method: str, n: int, d: int, seed: int, block: int):
    """Return (leaves, step): ``step()`` runs forward and backward, returns the loss or None."""
    import torch
    import torch.nn.functional as F

    import contrastkit as ck

    g = torch.Generator().manual_seed(seed)

    def leaf(rows):
        return torch.randn(rows, d, generator=g).requires_grad_(method != "floor")

    if method == "dcl":
        z1, z2 = leaf(n // 2), leaf(n - n // 2)
        return [z1, z2], lambda: _backward(ck.dcl(z1, z2, temperature=TAU, backend="tiled"))
    A, B = leaf(n), leaf(n)
    target = torch.arange(n)
    if method == "floor":
        return [], lambda: _floor(A, B, block)
    if method in ("infonce", "infonce-auto"):
        backend = "tiled" if method == "infonce" else "auto"
        return [A, B], lambda: _backward(ck.info_nce(A, B, temperature=TAU, backend=backend))
    if method == "clip":
        return [A, B], lambda: _backward(ck.clip(A, B, temperature=TAU, backend="tiled"))
    if method == "supcon":
        labels = torch.randint(0, max(1, n // 4), (n,), generator=g)
        return [A], lambda: _backward(ck.supcon(A, labels, temperature=TAU, backend="tiled"))
    if method == "dense":
        return [A, B], lambda: _backward(
            F.cross_entropy(F.normalize(A, dim=-1) @ F.normalize(B, dim=-1).t() / TAU, target)
        )
    if method == "st-cached-mnrl":
        # the loss half of CachedMNRL: row chunks as large as the engine's blocks (its
        # mini_batch_size), backward per chunk into the embeddings, as in its training step
        inst = _peer(method, "st_cached_mnrl", scale=1.0 / TAU, mini_batch_size=block)
        return [A, B], lambda: inst.calculate_loss([[A], [B]], None, with_backward=True)
    if method == "open-clip":
        loss_fn = _peer(method, "open_clip_clip_loss")()
        scale = torch.tensor(1.0 / TAU)
        return [A, B], lambda: _backward(
            loss_fn(F.normalize(A, dim=-1), F.normalize(B, dim=-1), scale)
        )
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def _backward(loss):
    loss.backward()
    return loss


def _floor(A, B, block: int):
    """S = A_blk B^T, dA_blk = S B, dB += S^T A_blk per row block: 6 N M d FLOPs, no exp."""
    import torch

    N, M = A.shape[0], B.shape[0]
    buf = torch.empty(min(block, N), M)
    dA, dB = torch.empty_like(A), torch.zeros_like(B)
    for r0 in range(0, N, block):
        a = A[r0 : r0 + block]
        s = buf[: a.shape[0]]
        torch.mm(a, B.t(), out=s)
        torch.mm(s, B, out=dA[r0 : r0 + block])
        dB.addmm_(s.t(), a)


def _maxrss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / (1024 * 1024 if sys.platform == "darwin" else 1024)


def run_worker(job: dict) -> dict:
    """Measure one (method, N) in this process; meant to run in a fresh process."""
    import torch

    from contrastkit.engine.dispatch import fused_block_rows

    torch.set_num_threads(job["threads"])
    block = fused_block_rows(job["n"], None)  # the engine's row block at M = N
    out = {"method": job["method"], "n": job["n"], "d": job["d"], "block": block}
    try:
        leaves, step = _setup(job["method"], job["n"], job["d"], job["seed"], block)
    except _Skip as exc:
        return {**out, "skipped": str(exc)}
    base = _maxrss_mib()
    times, loss = [], None
    for i in range(job["warmup"] + job["repeat"]):
        for t in leaves:
            t.grad = None
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        if i >= job["warmup"]:
            times.append(dt)
    peak = _maxrss_mib()
    return {
        **out,
        "time_s": min(times),
        "times_s": times,
        "warmup": job["warmup"],
        "loss": None if loss is None else float(loss.detach()),
        "baseline_rss_mib": base,
        "peak_rss_mib": peak,
        "incremental_mib": peak - base,
    }


# --------------------------------------------------------------------------- driver side


def _skip_reason(method: str, n: int, dense_budget_gib: float, max_peer_n: int | None):
    if method in PEER_METHODS:
        if max_peer_n is not None and n > max_peer_n:
            return f"N > max peer N ({max_peer_n})"
        from contrastkit._peers import missing_reason

        missing = missing_reason(method)
        if missing:
            return missing
    if method in DENSE_BYTES_PER_PAIR:
        need = DENSE_BYTES_PER_PAIR[method] * n * n / 2**30
        if need >= dense_budget_gib:
            return f"needs ~{need:.0f} GiB > {dense_budget_gib:g} GiB budget"
    return None


def _spawn(job: dict) -> dict:
    threads = str(job["threads"])
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    cmd = [sys.executable, "-m", "contrastkit.bench", "--worker", json.dumps(job)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = (proc.stderr.strip().splitlines() or [""])[-1]
    if proc.returncode < 0:
        err = f"killed by signal {-proc.returncode} (out of memory?)"
    return {"method": job["method"], "n": job["n"], "d": job["d"], "error": err[:200]}


def run(
    ns: Iterable[int] = QUICK_NS,
    d: int = 128,
    methods: Iterable[str] = QUICK_METHODS,
    threads: int | None = None,
    repeat: int | None = None,
    dense_budget_gib: float = 12.0,
    max_peer_n: int | None = None,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Benchmark every method at every N; returns ``{"meta": ..., "results": [row, ...]}``."""
    import torch

    import contrastkit

    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    threads = threads or torch.get_num_threads()
    rows = []
    for n in ns:
        warmup, rep = int(n <= SMALL_N), repeat or default_repeat(n)
        for method in methods:
            reason = _skip_reason(method, n, dense_budget_gib, max_peer_n)
            if reason:
                row = {"method": method, "n": n, "d": d, "skipped": reason}
            else:
                job = {"method": method, "n": n, "d": d, "threads": threads, "seed": seed}
                row = _spawn({**job, "warmup": warmup, "repeat": rep})
            rows.append(row)
            if progress:
                progress(row)
    _add_ratios(rows)
    meta = {
        "contrastkit": contrastkit.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "threads": threads,
        "dtype": "float32",
        "repeat": repeat or f"3 (N <= {SMALL_N}) / 1 (above)",
        "warmup": f"1 run for N <= {SMALL_N}, none above",
        "dense_budget_gib": dense_budget_gib,
        "max_peer_n": max_peer_n,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return {"meta": meta, "results": rows}


def _add_ratios(rows: list) -> None:
    ref = {(r["method"], r["n"]): r.get("time_s") for r in rows}
    for r in rows:
        if "time_s" in r:
            for name in ("floor", "dense"):
                base = ref.get((name, r["n"]))
                r[f"x_{name}"] = r["time_s"] / base if base else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def to_markdown(report: dict) -> str:
    """The report as markdown: a header of conditions and one table row per (method, N)."""
    m = report["meta"]
    conditions = (
        f"contrastkit {m['contrastkit']}, torch {m['torch']}, {m['cpu']}, {m['threads']} threads, "
        f"fp32, M = N. Time: forward+backward, best of {m['repeat']} runs; warm-up: {m['warmup']}. "
        "Peak RSS: whole process (fresh process per row); incremental = peak - RSS after "
        "importing torch and allocating the inputs."
    )
    head = [
        conditions,
        "",
        "| method | N | d | time s | x floor | x dense | peak RSS MiB | incr. MiB | loss | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    if m.get("command"):
        head.insert(0, f"`{m['command']}`\n")
    lines = []
    for r in report["results"]:
        note = NOTES.get(r["method"], "")
        if r["method"] in ("floor", "st-cached-mnrl") and "block" in r:
            note += f", {r['block']}-row blocks"
        if "skipped" in r or "error" in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r['error']}"
            lines.append(f"| {r['method']} | {r['n']} | {r['d']} | | | | | | | {why} |")
            continue
        ratios = f"{_fmt(r.get('x_floor'), '.2f')} | {_fmt(r.get('x_dense'), '.2f')}"
        lines.append(
            f"| {r['method']} | {r['n']} | {r['d']} | {r['time_s']:.4g} | {ratios} "
            f"| {r['peak_rss_mib']:.0f} | {r['incremental_mib']:.0f} | {_fmt(r['loss'], '.4f')} "
            f"| {note} |"
        )
    return "\n".join(head + lines) + "\n"


def write(report: dict, out: str | None = None, json_path: str | None = None) -> str:
    """Render the markdown table; also write it to ``out`` and the raw report to ``json_path``."""
    text = to_markdown(report)
    if out:
        Path(out).write_text(text)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    return text


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m contrastkit.bench --worker JOB_JSON (use `contrastkit bench`)")
    print(json.dumps(run_worker(json.loads(sys.argv[2]))))
