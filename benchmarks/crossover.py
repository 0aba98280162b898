"""Dense vs tiled forward+backward at small N: where ``backend="auto"`` switches paths.

Prints best-of-k milliseconds for InfoNCE, CLIP and NT-Xent (2N views) on both backends and what
``auto`` picks. Run: ``python benchmarks/crossover.py`` (2 threads, d = 128, fp32).
"""

from __future__ import annotations

import time

import torch

import contrastkit as ck
from contrastkit.engine import RowSpec, choose_path

OBJECTIVES = {"info_nce": ck.info_nce, "clip": ck.clip, "nt_xent": ck.nt_xent}


def best_ms(fn, q, k, backend: str, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(q, k, backend=backend).backward()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print("| N | objective | dense ms | tiled ms | auto picks |")
    print("|---:|---|---:|---:|---|")
    for n in (128, 256, 512, 1024, 2048, 4096):
        q = torch.randn(n, 128, requires_grad=True)
        k = torch.randn(n, 128, requires_grad=True)
        reps = max(3, int(1e8 / (n * n)))
        for name, fn in OBJECTIVES.items():
            dense = best_ms(fn, q, k, "dense", reps)
            tiled = best_ms(fn, q, k, "tiled", reps)
            rows = 2 * n if name == "nt_xent" else n
            spec = RowSpec(columns=name == "clip")
            pick = choose_path(rows, rows, spec, True, "auto", None)
            print(f"| {n} | {name} | {dense:.2f} | {tiled:.2f} | {pick} |", flush=True)


if __name__ == "__main__":
    main()
