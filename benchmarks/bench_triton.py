"""GPU benchmark of the Triton backend: InfoNCE and CLIP forward+backward time and peak memory.

Compares, at equal N (= M), d and dtype in the same run:

* ``ck-infonce`` / ``ck-clip``: contrastkit's kernels (``contrastkit.engine.gpu``), bf16 inputs,
  fp32 accumulation, learnable logit scale, paired logits from the kernels (``diagonal=0``);
  CLIP computes row and column statistics in one forward pass;
* ``infcl-infonce`` / ``infcl-clip``: Inf-CL's ``cal_flash_loss`` (PyPI ``inf-cl``; CLIP = its
  two directions averaged, as its README does);
* ``dense-infonce`` / ``dense-clip``: the plain PyTorch loss on the materialised logits (bf16
  GEMM, fp32 cross-entropy as under autocast), only up to ``--dense-max-n``.

Every (method, N) runs in a fresh process (an out-of-memory error or a crashed kernel in one
does not affect the others); time is the median of ``--repeat`` CUDA-event timings after one
warm-up (which also compiles the kernels); memory is ``torch.cuda.max_memory_allocated`` over
the timed iterations, reported against the floor ``4 N d`` elements (embeddings + gradients).

Needs a CUDA GPU and Triton; without a GPU it says so and exits with status 2. Example (the
H100 figures of issue 7)::

    python benchmarks/bench_triton.py --out bench_triton.md --json bench_triton.json
    python benchmarks/bench_triton.py --sweep --n 65536     # tile configurations first
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys

GRID = (32768, 65536, 131072, 262144, 524288, 1048576)
METHODS = ("ck-infonce", "ck-clip", "infcl-infonce", "infcl-clip", "dense-infonce", "dense-clip")
#: candidate tile configurations for --sweep (fwd rows x cols x k, bwd rows x cols x k, d slice,
#: warps fwd/bwd, pipeline stages)
SWEEP = (
    "fwd=128x64x64,bwd=64x64x64,ds=256,fw=8,bw=8,st=3",  # the default (no spills on sm_90)
    "fwd=128x64x64,bwd=64x64x64,ds=512,fw=8,bw=8,st=3",  # 10 N M d, spills
    "fwd=128x64x64,bwd=64x64x64,ds=512,fw=8,bw=16,st=2",
    "fwd=128x128x32,bwd=64x32x64,ds=512,fw=8,bw=8,st=2",
    "fwd=128x128x64,bwd=64x64x64,ds=256,fw=16,bw=8,st=2",
    "fwd=128x64x64,bwd=64x64x64,ds=256,fw=8,bw=8,st=4",
)


def no_gpu_message() -> str | None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return (
            "bench_triton.py needs a CUDA GPU: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}). Nothing was measured; run it on the GPU machine."
        )
    if importlib.util.find_spec("triton") is None:
        return "bench_triton.py needs Triton (pip install triton); nothing was measured."
    return None


def parse_config(text: str | None):
    from contrastkit.engine.gpu.backend import Config

    if not text:
        return None
    kv = dict(part.split("=", 1) for part in text.split(",") if part)

    def tile(v):
        return tuple(int(x) for x in v.split("x"))

    return Config(
        fwd=tile(kv.get("fwd", "128x64x64")),
        bwd=tile(kv.get("bwd", "64x64x64")),
        ds=int(kv["ds"]) if "ds" in kv else None,
        fwd_warps=int(kv.get("fw", 8)),
        bwd_warps=int(kv.get("bw", 8)),
        stages=int(kv.get("st", 3)),
    )


def _embeddings(n: int, d: int, dtype, seed: int):
    """Unit-norm rows made chunk by chunk (no (n, d) fp32 temporary)."""
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    out = torch.empty(n, d, device="cuda", dtype=dtype)
    for r0 in range(0, n, 1 << 16):
        x = torch.randn(min(1 << 16, n - r0), d, device="cuda", generator=g)
        out[r0 : r0 + x.shape[0]] = torch.nn.functional.normalize(x, dim=1).to(dtype)
    return out.requires_grad_()


def _loss_fn(method: str, q, k, t, config):
    import torch
    import torch.nn.functional as F

    n, dev = q.shape[0], q.device
    if method.startswith("ck-"):
        from contrastkit.engine import RowSpec
        from contrastkit.engine.gpu.backend import contrast_triton

        clip = method == "ck-clip"
        w = 1.0 / (2 * n) if clip else 1.0 / n
        spec = RowSpec(
            row_fn=lambda st, sd: w * (st.lse[0] - st.diag),
            columns=clip,
            col_fn=(lambda st, sd: w * (st.lse - st.diag)) if clip else None,
        )
        return lambda: contrast_triton(q, k, spec, t.exp(), diagonal=0, config=config)
    if method.startswith("infcl-"):
        from inf_cl import cal_flash_loss

        labels = torch.arange(n, device=dev)
        if method == "infcl-infonce":
            return lambda: cal_flash_loss(q, k, labels, t.exp()).mean()

        def clip_loss():
            s = t.exp()
            return (
                cal_flash_loss(q, k, labels, s).mean() + cal_flash_loss(k, q, labels, s).mean()
            ) / 2

        return clip_loss
    labels = torch.arange(n, device=dev)

    def dense():
        logits = (t.exp() * (q @ k.t())).float()  # bf16 GEMM, fp32 loss (autocast's choice)
        loss = F.cross_entropy(logits, labels)
        if method == "dense-clip":
            loss = (loss + F.cross_entropy(logits.t(), labels)) / 2
        return loss

    return dense


def worker(method: str, n: int, d: int, dtype_name: str, repeat: int, config_text: str | None):
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    config = parse_config(config_text)
    q, k = _embeddings(n, d, dtype, 0), _embeddings(n, d, dtype, 1)
    t = torch.tensor(math.log(1 / 0.07), device="cuda", requires_grad=True)
    out = {"method": method, "n": n, "d": d, "dtype": dtype_name, "config": config_text}
    try:
        fn = _loss_fn(method, q, k, t, config)  # ImportError when inf-cl is not installed
        loss = fn()  # warm-up: compiles the kernels
        loss.backward()
        torch.cuda.synchronize()
        q.grad = k.grad = t.grad = None
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeat):
            q.grad = k.grad = t.grad = None
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = fn()
            loss.backward()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        peak = torch.cuda.max_memory_allocated()
        floor = 4 * n * d * q.element_size()
        out.update(
            status="ok",
            seconds=statistics.median(times),
            times=times,
            loss=float(loss),
            peak_gib=peak / 2**30,
            floor_gib=floor / 2**30,
            peak_over_floor=peak / floor,
        )
    except torch.cuda.OutOfMemoryError as e:
        out.update(status="OOM", error=str(e).splitlines()[0])
    except Exception as e:  # a peer failing at a size it does not support
        out.update(status="error", error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    print(json.dumps(out), flush=True)


def run_one(args, method: str, n: int, config_text: str | None) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", method, "--n", str(n), "--d", str(args.d),
        "--dtype", args.dtype, "--repeat", str(args.repeat),
    ]  # fmt: skip
    if config_text:
        cmd += ["--config", config_text]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"method": method, "n": n, "status": f"crashed (rc {proc.returncode})", "error": tail[0]}


def table(results: list[dict]) -> str:
    lines = [
        "| method | N | time fwd+bwd (s) | peak (GiB) | peak / floor | loss | status |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.get("status") == "ok":
            lines.append(
                f"| {r['method']} | {r['n']:,} | {r['seconds']:.3f} | {r['peak_gib']:.2f} | "
                f"{r['peak_over_floor']:.2f} | {r['loss']:.5f} | ok |"
            )
        else:
            status = f"{r.get('status')}: {r.get('error', '')}"[:120].replace("|", "/")
            lines.append(f"| {r['method']} | {r['n']:,} | - | - | - | - | {status} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=list(GRID), help="batch sizes N (= M)")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list")
    p.add_argument("--dense-max-n", type=int, default=65536)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per (method, N)")
    p.add_argument("--config", help="tile configuration, e.g. " + SWEEP[0])
    p.add_argument("--sweep", action="store_true", help="time the SWEEP configurations instead")
    p.add_argument("--out", help="write the markdown table here")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    message = no_gpu_message()
    if message:
        print(message, file=sys.stderr)
        return 2
    if args.worker:
        worker(args.worker, args.n[0], args.d, args.dtype, args.repeat, args.config)
        return 0
    command = shlex.join([sys.executable, *sys.argv])
    print(f"$ {command}", file=sys.stderr, flush=True)
    results = []
    if args.sweep:
        for n in args.n:
            for method in ("ck-infonce", "ck-clip"):
                for cfg in SWEEP:
                    r = run_one(args, method, n, cfg)
                    results.append(r)
                    print(f"  {method} N={n} {cfg}: {r.get('seconds', r.get('status'))}",
                          file=sys.stderr, flush=True)  # fmt: skip
    else:
        methods = [m for m in args.methods.split(",") if m]
        for n in args.n:
            for method in methods:
                if method.startswith("dense") and n > args.dense_max_n:
                    continue
                r = run_one(args, method, n, args.config)
                results.append(r)
                print(f"  {method} N={n}: {r.get('seconds', r.get('status'))}",
                      file=sys.stderr, flush=True)  # fmt: skip
    import torch

    meta = {
        "command": command,
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "dtype": args.dtype,
        "d": args.d,
    }
    text = f"GPU: {meta['gpu']}, torch {meta['torch']}, triton {meta['triton']}\n\n"
    text += table(results)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    print(text, end="")
    return 0


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels only
    sys.exit(main())
