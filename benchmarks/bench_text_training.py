"""Fine-tuning MiniLM on the docstring retrieval task: contrastkit against sentence-transformers,
and the memory of a GradCache step against a plain step as the batch grows.

Two benchmarks, each trainer / batch size in a fresh process (its peak RSS is its own):

``compare``: the same data (``contrastkit.data.docstrings``, split seed 0), model (the offline
all-MiniLM-L6-v2), batch order, optimiser (AdamW, linear warmup then constant), steps and seed
for every trainer; the only difference is the loss and how the batch is embedded:

* ``contrastkit``: ``contrastkit.losses.MultipleNegativesRanking`` (scale 20, cosine) on the
  model's embeddings;
* ``contrastkit-gradcache``: the same loss on :func:`contrastkit.gradcache.cached_embed`
  embeddings (``--mini-batch`` rows per encoder chunk);
* ``st-mnrl`` / ``st-cached-mnrl``: sentence-transformers' ``MultipleNegativesRankingLoss`` /
  ``CachedMultipleNegativesRankingLoss(mini_batch_size=--mini-batch)`` on a
  ``SentenceTransformer`` of the same directory.

Each trained model is evaluated with :func:`contrastkit.evaluation.evaluate_retrieval` on the
held-out modules (nDCG@10, Recall@10), the pre-trained model too (``pretrained``).

``memory``: peak RSS of one training step (forward, loss, backward) at each batch size, plain
against GradCache, minus the RSS after loading the model (the step's own memory).

Examples::

    python benchmarks/bench_text_training.py compare --steps 30 --seeds 0 1 2
    python benchmarks/bench_text_training.py memory --batches 64 256 1024 4096
    python benchmarks/bench_text_training.py parallel --steps 8 --batch 32

``parallel``: samples per second of ``contrastkit train`` in one process against
``torchrun --nproc_per_node 2`` on the same machine and global batch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WORKER = r"""
import json, resource, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
sys.path.insert(0, args["here"])
import bench_text_training as B
print("RESULT " + json.dumps(B.WORKERS[args["mode"]](args)))
"""


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        import os

        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _task():
    from contrastkit.data.docstrings import docstring_task

    return docstring_task(seed=0)


def _contrastkit_model():
    from contrastkit.evaluation import load_text_model

    te = load_text_model(None)  # the offline MiniLM, its own pooling (mean) and normalisation
    return te


def _order(n: int, batch: int, steps: int, seed: int) -> list:
    import torch

    out: list = []
    epoch = 0
    while len(out) < steps:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        out += [perm[i : i + batch].tolist() for i in range(0, n - batch + 1, batch)]
        epoch += 1
    return out[:steps]


def _schedule(opt, warmup: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)))


def train_worker(args: dict) -> dict:
    import torch

    from contrastkit.evaluation import evaluate_retrieval

    task = _task()
    trainer = args["trainer"]
    torch.manual_seed(args["seed"])
    if trainer.startswith("st-"):
        from contrastkit._compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # sentence-transformers imports transformers' vision
        from sentence_transformers import SentenceTransformer
        from sentence_transformers import losses as st_losses

        from contrastkit.models.text import default_text_model

        model = SentenceTransformer(str(default_text_model()), device="cpu")
        model.max_seq_length = args["max_length"]
        if trainer == "st-mnrl":
            loss_fn = st_losses.MultipleNegativesRankingLoss(model)
        else:
            loss_fn = st_losses.CachedMultipleNegativesRankingLoss(
                model, mini_batch_size=args["mini_batch"]
            )
        params = list(model.parameters())
        model.train()

        def step_loss(anchors, positives):
            feats = [model.tokenize(anchors), model.tokenize(positives)]
            return loss_fn(feats, None)

        encoder = model
    else:
        import contrastkit as ck
        from contrastkit.gradcache import cached_embed

        te = _contrastkit_model()
        te.max_length = args["max_length"]
        loss_fn = ck.losses.MultipleNegativesRanking()
        params = list(te.parameters())
        te.train()

        def embed(texts):
            tokens = te.tokenize(texts)
            if trainer == "contrastkit-gradcache":
                return cached_embed(lambda **t: te.embed_tokens(t), tokens, args["mini_batch"])
            return te.embed_tokens(tokens)

        def step_loss(anchors, positives):
            return loss_fn(embed(anchors), embed(positives))

        encoder = te
    before = _current_rss_mib()
    steps = args["steps"]
    if steps:
        opt = torch.optim.AdamW(params, lr=args["lr"], weight_decay=0.01)
        sched = _schedule(opt, args["warmup"])
        order = _order(len(task.train), args["batch"], steps, args["seed"])
        t0 = time.perf_counter()
        for idx in order:
            rows = [task.train[i] for i in idx]
            loss = step_loss([p.query for p in rows], [p.document for p in rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        per_step = (time.perf_counter() - t0) / steps
        train_peak = _rss_mib()
    else:
        per_step, train_peak = 0.0, _rss_mib()
    encoder.eval()
    with torch.no_grad():
        metrics = evaluate_retrieval(_Encoder(encoder, trainer), task.test, ks=(10, 100))
    return {
        "trainer": trainer,
        "seed": args["seed"],
        "steps": steps,
        "s_per_step": per_step,
        "train_peak_mib": train_peak,
        "rss_before_training_mib": before,
        "ndcg@10": metrics["ndcg@10"],
        "recall@10": metrics["recall@10"],
        "queries": metrics["queries"],
        "documents": metrics["documents"],
    }


class _Encoder:
    def __init__(self, model, trainer: str):
        self.model, self.trainer = model, trainer

    def encode(self, texts, batch_size: int = 64):
        if self.trainer.startswith("st-"):
            return self.model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return self.model.encode(list(texts), batch_size=batch_size)


def memory_worker(args: dict) -> dict:
    import torch

    import contrastkit as ck
    from contrastkit.gradcache import cached_embed

    te = _contrastkit_model()
    te.max_length = args["max_length"]
    te.train()
    task = _task()
    n = args["batch"]
    rows = [task.train[i % len(task.train)] for i in range(n)]
    loss_fn = ck.losses.MultipleNegativesRanking()
    base = _current_rss_mib()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    a_tok = te.tokenize([p.query for p in rows])
    p_tok = te.tokenize([p.document for p in rows])
    if args["gradcache"]:
        a = cached_embed(lambda **t: te.embed_tokens(t), a_tok, args["mini_batch"])
        p = cached_embed(lambda **t: te.embed_tokens(t), p_tok, args["mini_batch"])
    else:
        a, p = te.embed_tokens(a_tok), te.embed_tokens(p_tok)
    loss_fn(a, p).backward()
    return {
        "batch": n,
        "gradcache": args["gradcache"],
        "seconds": time.perf_counter() - t0,
        "step_peak_mib": _rss_mib() - base,
        "peak_mib": _rss_mib(),
    }


WORKERS = {"train": train_worker, "memory": memory_worker}


def parallel_run(a) -> list[dict]:
    """Throughput of ``contrastkit train`` on the docstring task's pairs: one process with
    ``--threads`` threads against ``torchrun`` with 2 processes of ``threads / 2`` each (the
    same global batch; the median samples/s of the logged steps after the first)."""
    import csv
    import os
    import statistics
    import tempfile
    from pathlib import Path

    from contrastkit.data.docstrings import docstring_task

    tmp = Path(tempfile.mkdtemp(prefix="ck-parallel-"))
    paths = docstring_task(seed=0).write(tmp / "task")
    common = [
        "--recipe", "text-pairs", "--set", f"data='{paths['train']}'",
        "--set", f"out_dir='{tmp / 'runs'}'", "--set", f"batch_size={a.batch}",
        "--set", f"max_steps={a.steps}", "--set", f"max_length={a.max_length}",
        "--set", "holdout=8", "--set", "progress=false", "--set", "report=false",
        "--set", "tensorboard=false", "--set", f"checkpoint_every={a.steps}",
        "--set", f"snapshot_every={a.steps}",
    ]  # fmt: skip
    runs = {
        "1 process": (
            [sys.executable, "-m", "contrastkit", "train", "--name", "one",
             "--set", f"threads={a.threads}", *common],
            "one",
        ),
        "2 processes (torchrun)": (
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc_per_node", "2", "-m", "contrastkit", "train", "--name", "two",
             "--set", f"threads={max(1, a.threads // 2)}", *common],
            "two",
        ),
    }  # fmt: skip
    out = []
    for label, (cmd, name) in runs.items():
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, a.threads // 2))}
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            out.append({"run": label, "error": (p.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        with open(tmp / "runs" / name / "train_log.csv") as fh:
            rates = [float(r["samples_per_s"]) for r in csv.DictReader(fh)][1:]
        out.append(
            {
                "run": label,
                "samples_per_s": statistics.median(rates),
                "wall_s": wall,
                "steps": a.steps,
                "batch": a.batch,
            }  # fmt: skip
        )
    return out


def _run(args: dict, timeout: int) -> dict:
    from pathlib import Path

    args = {**args, "here": str(Path(__file__).resolve().parent)}
    try:
        p = subprocess.run(
            [sys.executable, "-c", WORKER, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--steps", type=int, default=30)
    c.add_argument("--batch", type=int, default=32)
    c.add_argument("--mini-batch", type=int, default=8)
    c.add_argument("--max-length", type=int, default=64)
    c.add_argument("--lr", type=float, default=5e-5)
    c.add_argument("--warmup", type=int, default=5)
    c.add_argument("--seeds", type=int, nargs="+", default=[0])
    c.add_argument(
        "--trainers",
        nargs="+",
        default=["contrastkit", "contrastkit-gradcache", "st-mnrl", "st-cached-mnrl"],
    )
    par = sub.add_parser("parallel")
    par.add_argument("--steps", type=int, default=8)
    par.add_argument("--batch", type=int, default=32)
    par.add_argument("--max-length", type=int, default=64)
    par.add_argument("--mini-batch", type=int, default=8)
    m = sub.add_parser("memory")
    m.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 4096])
    m.add_argument(
        "--plain-max", type=int, default=1024, help="largest batch run without GradCache"
    )
    m.add_argument("--mini-batch", type=int, default=32)
    m.add_argument("--max-length", type=int, default=32)
    for p in (c, m, par):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--timeout", type=int, default=3600)
        p.add_argument("--out", default=None, help="also write the results as JSON lines here")
    a = ap.parse_args(argv)
    results = []

    def emit(r: dict) -> None:
        results.append(r)
        print(json.dumps(r), flush=True)
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(json.dumps(r) + "\n")

    common = {"threads": a.threads, "max_length": a.max_length, "mini_batch": a.mini_batch}
    if a.cmd == "parallel":
        for r in parallel_run(a):
            emit(r)
        ok = [r for r in results if "samples_per_s" in r]
        if len(ok) == 2:
            print(
                f"\n2 processes / 1 process: {ok[1]['samples_per_s'] / ok[0]['samples_per_s']:.2f}x"
            )
        return
    if a.cmd == "compare":
        job = {**common, "mode": "train", "batch": a.batch, "lr": a.lr, "warmup": a.warmup}
        emit(_run({**job, "trainer": "pretrained", "seed": 0, "steps": 0}, a.timeout))
        for seed in a.seeds:
            for trainer in a.trainers:
                emit(_run({**job, "trainer": trainer, "seed": seed, "steps": a.steps}, a.timeout))
        base = results[0].get("ndcg@10")
        print("\n| trainer | seed | s/step | peak RSS MiB | nDCG@10 | R@10 | nDCG@10 gain |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            if "error" in r:
                print(f"| ? | | | | {r['error']} | | |")
                continue
            gain = r["ndcg@10"] - base if base is not None else float("nan")
            print(
                f"| {r['trainer']} | {r['seed']} | {r['s_per_step']:.2f} | "
                f"{r['train_peak_mib']:.0f} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | "
                f"{gain:+.4f} |"
            )
    else:
        for n in a.batches:
            for gc in (False, True):
                if not gc and n > a.plain_max:
                    continue
                t = time.perf_counter()
                r = _run({**common, "mode": "memory", "batch": n, "gradcache": gc}, a.timeout)
                r.setdefault("wall_s", time.perf_counter() - t)
                emit(r)
        print("\n| batch | plain step MiB | GradCache step MiB |")
        print("|---|---|---|")
        for n in a.batches:
            row = {r.get("gradcache"): r for r in results if r.get("batch") == n}
            cells = [
                f"{row[g]['step_peak_mib']:.0f}" if g in row and "step_peak_mib" in row[g] else "-"
                for g in (False, True)
            ]
            print(f"| {n} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
