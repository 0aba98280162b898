"""Peak memory and time of the catalogue's row-wise objectives: engine at large N against the
dense reference at the largest N it fits.

Cases come from the per-family hooks (``objectives_adaptive``, ``objectives_multiview``,
``objectives_structured``: ``CASES[name](n, d, gen)`` -> closure returning the scalar loss,
``name + "-dense"`` its dense reference). Every (case, N) runs in a fresh process so that its
peak RSS (``ru_maxrss``, whole process incl. the inputs) is its own; time is one forward +
backward after imports. Example::

    python benchmarks/bench_objectives.py --n 65536 --dense-n 16384 --out /tmp/obj.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAMILIES = ("objectives_adaptive", "objectives_multiview", "objectives_structured")

WORKER = r"""
import json, resource, sys, time
import torch
sys.path.insert(0, {here!r})
torch.set_num_threads({threads})
mod = __import__({family!r})
gen = torch.Generator().manual_seed(0)
fn = mod.CASES[{case!r}]({n}, {d}, gen)
t0 = time.perf_counter()
loss = fn()
loss.backward()
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": dt, "peak_mib": peak, "loss": float(loss)}}))
"""


def cases() -> list[tuple[str, str]]:
    sys.path.insert(0, str(HERE))
    out = []
    for fam in FAMILIES:
        mod = __import__(fam)
        out += [(fam, c) for c in mod.CASES if not c.endswith("-dense")]
    return out


def run_one(family: str, case: str, n: int, d: int, threads: int, timeout: int) -> dict:
    code = WORKER.format(here=str(HERE), threads=threads, family=family, case=case, n=n, d=d)
    try:
        p = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=65536, help="engine N (= M)")
    p.add_argument("--dense-n", type=int, default=16384, help="N for the dense reference")
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", default="", help="comma list (default: all)")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out", help="write the markdown table here")
    args = p.parse_args(argv)
    chosen = [c for c in args.cases.split(",") if c]
    rows = []
    for fam, case in cases():
        if chosen and case not in chosen:
            continue
        eng = run_one(fam, case, args.n, args.d, args.threads, args.timeout)
        eng_small = run_one(fam, case, args.dense_n, args.d, args.threads, args.timeout)
        dense = run_one(fam, case + "-dense", args.dense_n, args.d, args.threads, args.timeout)
        rows.append((case, eng, eng_small, dense))
        print(f"  done {case}", file=sys.stderr, flush=True)

    def fmt(r, key, spec):
        return r["error"] if "error" in r else format(r[key], spec)

    lines = [
        f"| objective | engine N={args.n:,}: s | MiB | engine N={args.dense_n:,}: s | MiB "
        f"| dense N={args.dense_n:,}: s | MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, eng, small, dense in rows:
        lines.append(
            f"| {case} | {fmt(eng, 'seconds', '.1f')} | {fmt(eng, 'peak_mib', '.0f')} | "
            f"{fmt(small, 'seconds', '.2f')} | {fmt(small, 'peak_mib', '.0f')} | "
            f"{fmt(dense, 'seconds', '.2f')} | {fmt(dense, 'peak_mib', '.0f')} |"
        )
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
