"""Largest global batch a 2-process CPU (gloo) step completes within a memory budget.

For each method and global batch ``B`` (doubling from ``--start``), two fresh processes each
embed ``B / 2`` random rows (d = 128, fp32), compute the loss over the global batch and run
backward once; a size "fits" when the two ranks' peak resident memory together stays within
``--budget-gib`` and the step succeeds. Methods:

* ``ck_info_nce``: contrastkit InfoNCE under the world group (one-sided);
* ``ck_info_nce_ring``: the same with ``strategy="ring"`` (shards passed around, Inf-CL);
* ``ck_clip``: contrastkit symmetric CLIP loss under the world group (one sweep per rank, the
  column statistics combined across ranks: one side gathered, 8 N M d FLOPs over the group);
* ``ck_clip_two_pass``: the same loss on the former route (the columns as rows of the
  transposed problem: both sides gathered, 2 x 6 N M d FLOPs), for comparison;
* ``open_clip``: open_clip's ``ClipLoss(local_loss=True, gather_with_grad=True)``: gather every
  feature, then dense ``(B / 2) x B`` logits per direction on each rank.

The bytes column counts contrastkit's collectives only (open_clip's are not counted).
Sizes whose *estimated* peak (dense logits for open_clip) exceeds twice the budget are not run.
Quick check (minutes): ``python benchmarks/bench_distributed.py --budget-gib 2 --max 16384``.
The figure for docs/benchmarks.md (24 GiB, hours on 2 cores for the largest contrastkit sizes):
``python benchmarks/bench_distributed.py --budget-gib 24 --start 8192 --max 4194304``.
Step time of the two CLIP routes (``--steps 3``: the fastest of 3 steps per process):
``python benchmarks/bench_distributed.py --start 8192 --max 8192 --steps 3 --methods
ck_clip,ck_clip_two_pass``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
D = 128
GIB = 1 << 30
METHODS = ("ck_info_nce", "ck_info_nce_ring", "ck_clip", "ck_clip_two_pass", "open_clip")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _worker(rank, world, rdzv, out, method, batch, threads, steps=1):
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rdzv}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=3600),
    )
    import torch.nn.functional as F

    import contrastkit as ck
    from contrastkit import distributed as ckd

    n = batch // world
    g = torch.Generator().manual_seed(rank)
    q = torch.randn(n, D, generator=g).requires_grad_()
    k = torch.randn(n, D, generator=g).requires_grad_()
    scale = torch.tensor(1 / 0.07, requires_grad=True)
    if method == "open_clip":
        sys.path.insert(0, str(ROOT / "tests"))
        import peers

        oc = peers.open_clip_losses()
        if oc is None:
            raise RuntimeError(peers.SKIP_REASONS["open_clip_losses"])
        loss_fn = oc.ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)
    if method == "ck_clip_two_pass":
        from contrastkit.distributed import _run

        _run.SYMMETRIC_ROUTE = "two-pass"
    base = _peak_rss_bytes()
    seconds = float("inf")
    for _ in range(steps):
        dist.barrier()
        t0 = time.perf_counter()
        with ckd.CommCounter() as counter:
            if method == "ck_info_nce":
                loss = ck.info_nce(q, k, scale=scale)
            elif method == "ck_info_nce_ring":
                with ckd.group("world", strategy="ring"):
                    loss = ck.info_nce(q, k, scale=scale)
            elif method in ("ck_clip", "ck_clip_two_pass"):
                loss = ck.clip(q, k, scale=scale)
            else:
                loss = loss_fn(F.normalize(q, dim=-1), F.normalize(k, dim=-1), scale)
            loss.backward()
        dist.barrier()
        seconds = min(seconds, time.perf_counter() - t0)
    res = {
        "rank": rank,
        "peak_rss": _peak_rss_bytes(),
        "base_rss": base,
        "seconds": seconds,
        "bytes_sent": counter.total,
        "loss": float(loss.detach()),
    }
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(res, f)
    dist.destroy_process_group()


def run_once(method: str, batch: int, threads: int, timeout: float, steps: int = 1):
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(
            _worker,
            args=(2, os.path.join(tmp, "rdzv"), tmp, method, batch, threads, steps),
            nprocs=2,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=1.0):
                if time.monotonic() > deadline:
                    for p in ctx.processes:
                        p.kill()
                    return None, "timeout"
        except Exception as exc:  # noqa: BLE001 (a rank died: out of memory or an error)
            for p in ctx.processes:
                p.kill()
            return None, type(exc).__name__ + ": " + str(exc).splitlines()[-1][:120]
        return [json.load(open(os.path.join(tmp, f"rank{r}.json"))) for r in range(2)], None


def estimate_bytes(method: str, batch: int) -> float:
    """A rough per-step peak for both ranks together (to avoid starting hopeless runs)."""
    feats = 4 * batch * D * 6  # gathered features, their gradients, inputs (fp32)
    if method == "open_clip":
        return feats + 2 * 4 * (batch // 2) * batch * 2 * 3  # 2 ranks x 2 directions x ~3 copies
    return feats + 2 * 600e6  # engine tiles, per rank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-gib", type=float, default=24.0)
    ap.add_argument("--start", type=int, default=1024)
    ap.add_argument("--max", type=int, default=1 << 22)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=1, help="threads per rank")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    ap.add_argument("--steps", type=int, default=1, help="steps per run (step s: the fastest)")
    args = ap.parse_args()
    budget = args.budget_gib * GIB
    print(f"2 ranks, gloo, CPU, d = {D}, fp32, budget {args.budget_gib:g} GiB (sum of peak RSS)")
    print(
        "| method | global batch | peak RSS (both ranks) | above import baseline | step s | "
        "bytes sent / rank | fits |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    largest = {}
    for method in args.methods.split(","):
        batch = args.start
        while batch <= args.max:
            if estimate_bytes(method, batch) > 2 * budget:
                print(f"| {method} | {batch} | (estimate > 2x budget, not run) | | | | no |")
                break
            res, err = run_once(method, batch, args.threads, args.timeout, args.steps)
            if res is None:
                print(f"| {method} | {batch} | failed: {err} | | | | no |")
                break
            peak = sum(r["peak_rss"] for r in res)
            above = sum(r["peak_rss"] - r["base_rss"] for r in res)
            secs = max(r["seconds"] for r in res)
            fits = peak <= budget
            print(
                f"| {method} | {batch} | {peak / GIB:.2f} GiB | {above / GIB:.2f} GiB | "
                f"{secs:.2f} | "
                f"{res[0]['bytes_sent'] / 2**20:.1f} MiB | {'yes' if fits else 'no'} |",
                flush=True,
            )
            if not fits:
                break
            largest[method] = batch
            batch *= 2
    print()
    for method in args.methods.split(","):
        print(f"largest global batch within budget, {method}: {largest.get(method, 'none')}")


if __name__ == "__main__":
    main()
