"""Peak memory and time of the catalogue's row-wise objectives, as ratios to InfoNCE and to the
GEMM floor measured in the same run, and against the dense reference at the largest N it fits.

Cases come from the per-family hooks (``FAMILIES``: ``objectives_adaptive``,
``objectives_multiview``, ``objectives_structured``, ``objectives_core``, ...:
``CASES[name](n, d, gen)`` -> closure returning the scalar loss, ``name + "-dense"`` its dense
reference). Every (case, N) runs in a fresh process so that its
peak RSS (``ru_maxrss``, whole process incl. the inputs) is its own; time is the best of
``--repeat`` forward + backward calls after imports (the first call included when 1).
Two reference rows come first: ``info_nce`` (``ck.info_nce`` on ``N x N``, temperature 0.07,
``backend="tiled"``) and ``floor`` (the bare row-block GEMMs of 6 N M d FLOPs, as
``contrastkit.bench``). ``x InfoNCE`` divides a case's time by InfoNCE's times the number of
``N x N`` contrasts the case does (``SWEEPS``: K-view / K-modality sums are measured per
contrasted pair), ``x floor`` likewise by the floor. Example::

    python benchmarks/bench_objectives.py --n 65536 --dense-n 16384 --out /tmp/obj.md
    python benchmarks/bench_objectives.py --n 16384 --dense-n 0 --cases cacr,conr --repeat 3
    python benchmarks/bench_objectives.py --in-process --n 8192 --threads 1 --repeat 3 \
        --cases cacr,conr,supremix
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAMILIES = (
    "objectives_adaptive",
    "objectives_multiview",
    "objectives_structured",
    "objectives_compositional",
    "objectives_distillation3",
    "objectives_dense",
    "objectives_infonce3",
    "objectives_core",
)
#: N x N contrasts per call (shapes in the hooks' docstrings); 1 when not listed
SWEEPS = {
    "sogclr_bimodal": 2,  # image rows and text rows, n x n each
    "isogclr_bimodal": 2,  # likewise
    "one_to_k": 0.5,  # n/2 images x n texts
    "mv_dhel": 4,  # 4 views of n: one n x n sweep per view
    "symile": 3,  # 3 modalities of n: one n x n sweep per anchor modality
    "whitened_cse": 2,  # two n x n InfoNCE sweeps
    "momentum_distillation": 2,  # ALBEF: image-to-text and text-to-image rows, n x n each
    "info_nce_i2t_t2i": 2,  # its one-hot twin: two InfoNCE calls
    "neg_clip": 2,  # n images x (n captions + n hard captions); caption columns from the same tiles
    "multiple_negatives_ranking": 2,  # n anchors x (n positives + n hard negatives)
    "clip_align_uniform": 3,  # CLIP's n x n plus one n x n uniformity per modality
    "matryoshka": 4,  # InfoNCE n x n at widths d, d/2, d/4, d/8 (GEMMs: 1.875 sweeps at d)
}
REFERENCES = ("info_nce", "floor")

WORKER = r"""
import json, resource, sys, time
import torch
sys.path.insert(0, {here!r})
torch.set_num_threads({threads})
gen = torch.Generator().manual_seed(0)
case = {case!r}
if case in ("info_nce", "floor"):
    import contrastkit as ck
    from contrastkit.bench import _floor
    from contrastkit.engine.dispatch import fused_block_rows
    A = torch.randn({n}, {d}, generator=gen).requires_grad_(case == "info_nce")
    B = torch.randn({n}, {d}, generator=gen).requires_grad_(case == "info_nce")
    if case == "floor":
        def fn():
            _floor(A, B, fused_block_rows({n}, None))
            return torch.zeros((), requires_grad=True)
    else:
        fn = lambda: ck.info_nce(A, B, temperature=0.07, backend="tiled")
else:
    fn = __import__({family!r}).CASES[case]({n}, {d}, gen)
best = float("inf")
for _ in range({repeat}):
    t0 = time.perf_counter()
    loss = fn()
    loss.backward()
    best = min(best, time.perf_counter() - t0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": best, "peak_mib": peak, "loss": float(loss)}}))
"""


def cases() -> list[tuple[str, str]]:
    sys.path.insert(0, str(HERE))
    out = []
    for fam in FAMILIES:
        mod = __import__(fam)
        out += [(fam, c) for c in mod.CASES if not c.endswith("-dense")]
    return out


def run_one(
    family: str, case: str, n: int, d: int, threads: int, timeout: int, repeat: int = 1
) -> dict:
    code = WORKER.format(
        here=str(HERE), threads=threads, family=family, case=case, n=n, d=d, repeat=repeat
    )
    try:
        p = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def in_process(cases_: list[tuple[str, str]], n: int, d: int, threads: int, repeat: int) -> str:
    """Ratios on a loaded machine: every case alternates with InfoNCE in this one process (best
    of ``repeat`` rounds per case; peak memory is not measured)."""
    import time

    import torch

    import contrastkit as ck

    sys.path.insert(0, str(HERE))
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, d, generator=g).requires_grad_()
    k = torch.randn(n, d, generator=g).requires_grad_()
    calls = {"info_nce": lambda: ck.info_nce(q, k, temperature=0.07, backend="tiled")}
    for fam, case in cases_:
        calls[case] = __import__(fam).CASES[case](n, d, torch.Generator().manual_seed(0))
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeat):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn().backward()
            best[name] = min(best[name], time.perf_counter() - t0)
    lines = [
        f"| objective | N x N sweeps | N={n:,}, {threads} thread(s): s | x InfoNCE per sweep |",
        "|---|---:|---:|---:|",
    ]
    for name, t in best.items():
        sweeps = SWEEPS.get(name, 1)
        ratio = t / (best["info_nce"] * sweeps)
        lines.append(f"| {name} | {sweeps:g} | {t:.3f} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=65536, help="engine N (= M)")
    p.add_argument("--dense-n", type=int, default=16384, help="N for the dense reference")
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", default="", help="comma list (default: all)")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--repeat", type=int, default=1, help="timed calls per process (best)")
    p.add_argument("--out", help="write the markdown table here")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="time every case alternating with InfoNCE in one process (ratios on a loaded "
        "machine; no memory, no dense reference)",
    )
    args = p.parse_args(argv)
    chosen = [c for c in args.cases.split(",") if c]
    if args.in_process:
        picked = [(f, c) for f, c in cases() if not chosen or c in chosen]
        text = in_process(picked, args.n, args.d, args.threads, args.repeat)
        if args.out:
            Path(args.out).write_text(text)
        print(text, end="")
        return
    refs = {
        c: run_one("", c, args.n, args.d, args.threads, args.timeout, args.repeat)
        for c in REFERENCES
    }
    rows = []
    for fam, case in cases():
        if chosen and case not in chosen:
            continue
        eng = run_one(fam, case, args.n, args.d, args.threads, args.timeout, args.repeat)
        small = dense = {"error": "not run"}
        if args.dense_n:
            small = run_one(fam, case, args.dense_n, args.d, args.threads, args.timeout)
            dense = run_one(fam, case + "-dense", args.dense_n, args.d, args.threads, args.timeout)
        rows.append((case, eng, small, dense))
        print(f"  done {case}", file=sys.stderr, flush=True)

    def fmt(r, key, spec):
        return r["error"] if "error" in r else format(r[key], spec)

    def ratio(r, ref, sweeps):
        if "error" in r or "error" in ref:
            return "-"
        return format(r["seconds"] / (ref["seconds"] * sweeps), ".2f")

    lines = [
        f"| objective | N x N sweeps | engine N={args.n:,}: s | x InfoNCE | x floor | MiB "
        f"| engine N={args.dense_n:,}: s | MiB | dense N={args.dense_n:,}: s | MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in REFERENCES:
        r = refs[case]
        lines.append(
            f"| {case} (reference) | 1 | {fmt(r, 'seconds', '.2f')} | "
            f"{ratio(r, refs['info_nce'], 1)} | {ratio(r, refs['floor'], 1)} | "
            f"{fmt(r, 'peak_mib', '.0f')} | | | | |"
        )
    for case, eng, small, dense in rows:
        k = SWEEPS.get(case, 1)
        lines.append(
            f"| {case} | {k:g} | {fmt(eng, 'seconds', '.2f')} | {ratio(eng, refs['info_nce'], k)} "
            f"| {ratio(eng, refs['floor'], k)} | {fmt(eng, 'peak_mib', '.0f')} | "
            f"{fmt(small, 'seconds', '.2f')} | {fmt(small, 'peak_mib', '.0f')} | "
            f"{fmt(dense, 'seconds', '.2f')} | {fmt(dense, 'peak_mib', '.0f')} |"
        )
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
