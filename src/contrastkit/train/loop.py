"""The training loop: deterministic data order and views, CSV and TensorBoard logs, similarity
snapshots, atomic checkpoints, resume, and the end-of-run evaluation and report.

The data position is derived from the global step (epoch permutation seeded by ``seed`` and the
epoch); the augmentation generator, the global torch RNG (dropout), optimiser, scheduler and
every stateful module (momentum encoder, queue) are checkpointed, so a run resumed from any
checkpoint produces the same weights as an uninterrupted run with the same seed. Logs written
after the last checkpoint by a killed run are dropped on resume (TensorBoard: ``purge_step``).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, validate
from .evaluate import evaluate
from .methods import Method, build_method, pair_similarities, similarity_snapshot

LOG_FIELDS = ["step", "epoch", "loss", "lr", "samples_per_s"]


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def _truncate_log(path: Path, step: int) -> None:
    """Drop rows a killed run logged after its last checkpoint."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) < step]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _truncate_snapshots(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def run_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / (cfg.name or cfg.recipe)


class _Board:
    """TensorBoard scalars and histograms (``runs/<name>/tensorboard``); a no-op when off."""

    def __init__(self, run_dir: Path, enabled: bool, start: int):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(run_dir / "tensorboard"), purge_step=start if start > 0 else None
            )

    def scalars(self, step: int, **values) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def snapshot(self, step: int, snap: dict, pos: torch.Tensor, neg: torch.Tensor) -> None:
        if self.writer is not None:
            self.scalars(step, **{f"probe/{k}": snap[k] for k in ("alignment", "uniformity")})
            self.writer.add_histogram("probe/positive_cosine", pos, step)
            self.writer.add_histogram("probe/negative_cosine", neg, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _snapshot(method: Method, step: int, path: Path, board: _Board) -> None:
    a, b = method.probe_pairs()
    pos, neg = pair_similarities(a, b)
    snap = {"step": step, **similarity_snapshot(a, b, pairs=(pos, neg))}
    with open(path, "a") as fh:
        fh.write(json.dumps(snap) + "\n")
    board.snapshot(step, snap, pos, neg)


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Run (or resume) a training job; returns a summary and writes ``runs/<name>/``.

    With ``deterministic`` (default) the run uses ``torch.use_deterministic_algorithms`` (and,
    on CUDA, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and deterministic cuDNN); the previous global
    setting is restored afterwards.
    """
    validate(cfg)
    previous = torch.are_deterministic_algorithms_enabled()
    if cfg.deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    try:
        return _train(cfg, resume, overwrite)
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(cfg: TrainConfig, resume: bool, overwrite: bool) -> dict:
    run_dir = run_dir_of(cfg)
    ckpt = latest_checkpoint(run_dir)
    if run_dir.exists() and not resume:
        if not overwrite:
            raise ValueError(
                f"run directory {str(run_dir)!r} exists: pass --resume to continue it, "
                "--overwrite to start again, or --name for a new run"
            )
        shutil.rmtree(run_dir)
        ckpt = None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    torch.manual_seed(cfg.seed)
    method = build_method(cfg)
    n = method.n_train
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"config field 'batch_size' ({cfg.batch_size}) exceeds the {n} samples")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    opt = torch.optim.AdamW(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(total, 1)))
    )
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = 0
    log_path = run_dir / "train_log.csv"
    snap_path = run_dir / "snapshots.jsonl"
    if ckpt is not None:
        weights, state = load_checkpoint(ckpt)
        method.load_state_dict(weights)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        aug_gen.set_state(state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
        _truncate_log(log_path, start)
        _truncate_snapshots(snap_path, start)
    if not log_path.exists():
        with open(log_path, "w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=LOG_FIELDS).writeheader()
    board = _Board(run_dir, cfg.tensorboard, start)
    if start == 0:
        snap_path.unlink(missing_ok=True)
        _snapshot(method, 0, snap_path, board)

    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=cfg.name or cfg.recipe, unit="step")
    last_loss = float("nan")
    t_train = time.perf_counter()
    with open(log_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        for step in range(start, total):
            t0 = time.perf_counter()
            epoch, k = divmod(step, steps_per_epoch)
            idx = _epoch_order(n, cfg.seed, epoch)[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            loss = method.batch_loss(idx, aug_gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {float(loss)} at step {step}; lower 'lr' or raise the temperature"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            method.after_step(step)
            last_loss = float(loss.detach())
            rate = idx.shape[0] / (time.perf_counter() - t0)
            lr = sched.get_last_lr()[0]
            writer.writerow(
                {
                    "step": step,
                    "epoch": epoch,
                    "loss": f"{last_loss:.6f}",
                    "lr": f"{lr:.6g}",
                    "samples_per_s": f"{rate:.1f}",
                }
            )
            board.scalars(
                step, **{"train/loss": last_loss, "train/lr": lr, "train/samples_per_s": rate}
            )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", samples_s=f"{rate:.0f}")
            if (step + 1) % cfg.snapshot_every == 0 or step + 1 == total:
                _snapshot(method, step + 1, snap_path, board)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
                fh.flush()
                state = {
                    "step": step + 1,
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "aug_rng": aug_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                }
                save_checkpoint(run_dir, step + 1, method.state_dict(), state)
    train_seconds = time.perf_counter() - t_train
    if bar is not None:
        bar.close()
    board.close()
    return finish(
        method,
        run_dir,
        {
            "steps": total,
            "final_loss": last_loss,
            "train_seconds": train_seconds,
            "samples_per_s": (total - start) * cfg.batch_size / max(train_seconds, 1e-9),
        },
    )


def finish(method: Method, run_dir: Path, info: dict) -> dict:
    """Evaluate, write ``metrics.json`` and (if configured) the report; returns the summary."""
    summary = {"run_dir": str(run_dir), "recipe": method.cfg.recipe, **info}
    t0 = time.perf_counter()
    summary["eval"] = evaluate(method)
    summary["eval_seconds"] = time.perf_counter() - t0
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if method.cfg.report:
        from .report import write_report

        summary["report"] = str(write_report(method, run_dir, summary))
    return summary


def load_run(run: str | Path) -> tuple[Method, Path, dict]:
    """Rebuild a saved run's method from ``config.json`` and its newest checkpoint (or the
    checkpoint directory given)."""
    from .config import load_config_dict

    path = Path(run)
    if (path / "model.safetensors").is_file():
        ckpt, run_dir = path, path.parent.parent
    else:
        run_dir, ckpt = path, latest_checkpoint(path)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"checkpoint {str(run)!r}: no run directory with config.json found")
    if ckpt is None:
        raise ValueError(f"checkpoint {str(run)!r}: the run has no complete checkpoint")
    cfg = load_config_dict(json.loads(cfg_path.read_text()))
    torch.manual_seed(cfg.seed)
    method = build_method(cfg)
    weights, state = load_checkpoint(ckpt)
    method.load_state_dict(weights)
    return method, run_dir, state
