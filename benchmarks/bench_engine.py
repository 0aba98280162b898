"""The engine benchmark grid: N in {8192, 16384, 65536, 262144}, d=128, fp32, 2 threads.

Every method runs in a fresh process per N (see contrastkit.bench); dense baselines run only
where their logits fit the memory budget, the sentence-transformers / open_clip peers only up
to ``--max-peer-n``. Example: ``python benchmarks/bench_engine.py --out docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from contrastkit import bench

GRID = (8192, 16384, 65536, 262144)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=list(GRID), help="batch sizes N (= M)")
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", default=",".join(bench.METHODS), help="comma list")
    p.add_argument("--repeat", type=int, default=None, help="default: 3 for N <= 16384, else 1")
    p.add_argument("--max-peer-n", type=int, default=65536, help="largest N for peer libraries")
    p.add_argument("--dense-budget-gib", type=float, default=12.0)
    p.add_argument("--out", help="write the markdown table here")
    p.add_argument("--json", help="write the raw results here")
    args = p.parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv])
    print(f"$ {command}", file=sys.stderr, flush=True)
    report = bench.run(
        args.n,
        d=args.d,
        methods=[m for m in args.methods.split(",") if m],
        threads=args.threads,
        repeat=args.repeat,
        dense_budget_gib=args.dense_budget_gib,
        max_peer_n=args.max_peer_n,
        progress=lambda r: print(f"  done {r['method']} N={r['n']}", file=sys.stderr, flush=True),
    )
    report["meta"]["command"] = command
    print(bench.write(report, args.out, args.json), end="")


if __name__ == "__main__":
    main()
