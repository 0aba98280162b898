"""The training loop: deterministic data order and views, CSV and TensorBoard logs, similarity
snapshots, atomic checkpoints, resume, and the end-of-run evaluation and report.

The data position is derived from the global step (epoch permutation seeded by ``seed`` and the
epoch); the augmentation generator, the global torch RNG (dropout), optimiser, scheduler and
every stateful module (momentum encoder, queue) are checkpointed, so a run resumed from any
checkpoint produces the same weights as an uninterrupted run with the same seed. Logs written
after the last checkpoint by a killed run are dropped on resume (TensorBoard: ``purge_step``).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import torch

from .._extras import require
from .checkpoint import (
    CheckpointError,
    checkpoint_dirs,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig, lr_factor, read_run_config, resume_changes, validate
from .evaluate import evaluate
from .methods import Method, build_method, pair_similarities, similarity_snapshot
from .parallel import DataParallel
from .rundir import RunLock, check_no_links, is_run, remove_run, run_path, write_marker

LOG_FIELDS = ["step", "epoch", "loss", "lr", "samples_per_s"]


def _read_lines(path: Path) -> list[str]:
    """Lines of a log; a last line without its newline (torn by a kill) is dropped."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    return lines[:-1]  # "" after the last newline, or the torn tail


def _truncate_log(path: Path, step: int) -> None:
    """Keep the header and the rows a run logged before ``step`` (its resume point): drops
    rows a killed run wrote after its last checkpoint, and a torn last line."""
    if not path.exists():
        return
    lines = _read_lines(path)
    rows = []
    for lineno, row in enumerate(csv.DictReader(lines), start=2):
        try:
            s = int(row["step"])
            if None in row.values() or None in row:
                raise ValueError
        except (TypeError, ValueError, KeyError):
            raise ValueError(
                f"{path}: line {lineno} is not a log row: {lines[lineno - 1]!r}"
            ) from None
        if s < step:
            rows.append(row)
    _atomic_write(path, lambda fh: _write_rows(fh, rows))


def _write_rows(fh, rows) -> None:
    writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)


def _truncate_snapshots(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        try:
            snap_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}: line {lineno} is not a snapshot: {line[:80]!r}") from None
        if snap_step <= step:
            keep.append(line)
    _atomic_write(path, lambda fh: fh.write("".join(line + "\n" for line in keep)))


def _last_logged_loss(path: Path) -> float:
    lines = _read_lines(path) if path.exists() else []
    try:
        return float(lines[-1].split(",")[2]) if len(lines) > 1 else float("nan")
    except (IndexError, ValueError):
        return float("nan")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_dir_of(cfg: TrainConfig) -> Path:
    return run_path(cfg.out_dir, cfg.name or cfg.recipe)


class _Board:
    """TensorBoard scalars and histograms (``runs/<name>/tensorboard``); a no-op when off."""

    def __init__(self, run_dir: Path, enabled: bool, start: int):
        self.writer = None
        if enabled:
            require("tensorboard", "train", "TensorBoard logging")
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

    def final(self, step: int, cfg: TrainConfig, summary: dict) -> None:
        """The evaluation as scalars (``eval/...``) and, with the run's hyperparameters, in
        TensorBoard's HPARAMS tab."""
        if self.writer is None:
            return
        metrics = dict(_numbers("eval", summary.get("eval", {})))
        metrics["final_loss"] = float(summary.get("final_loss", float("nan")))
        self.scalars(step, **metrics)
        hparams = {k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))}
        hparams["loss_params"] = json.dumps(cfg.loss_params, sort_keys=True)
        self.writer.add_hparams(
            hparams, {f"hparam/{k}": v for k, v in metrics.items()}, run_name="."
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _numbers(prefix: str, tree) -> list[tuple[str, float]]:
    """``(path, value)`` of every number in a nested dict of results."""
    if isinstance(tree, bool):
        return []
    if isinstance(tree, (int, float)):
        return [(prefix, float(tree))]
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _numbers(f"{prefix}/{k}", v)]
    return []


def _snapshot(method: Method, step: int, path: Path, board: _Board) -> None:
    a, b = method.probe_pairs()
    pos, neg = pair_similarities(a, b)
    snap = {"step": step, **similarity_snapshot(a, b, pairs=(pos, neg))}
    with open(path, "a") as fh:
        fh.write(json.dumps(snap) + "\n")
    board.snapshot(step, snap, pos, neg)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class RunError(ValueError):
    """A run that cannot go on (full disk, unreadable files); names the run directory."""


def train(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    warn: Optional[Callable[[str], None]] = None,
) -> dict:
    """Run (or resume) a training job; returns a summary and writes ``runs/<name>/``.

    * A new run refuses an existing directory unless ``overwrite`` (which deletes only a
      contrastkit run inside ``out_dir``: see :mod:`contrastkit.train.rundir`).
    * ``resume`` needs an existing run; ``cfg`` must equal the run's ``config.json`` except in
      :data:`~contrastkit.train.config.RESUME_SAFE` fields. It continues from the newest
      checkpoint that verifies against its manifest (damaged ones are skipped with a line
      through ``warn``, default stderr); a run killed before its first checkpoint restarts
      from step 0, saying so.
    * One training per run at a time (a lock next to the run directory).

    With ``deterministic`` (default) the run uses ``torch.use_deterministic_algorithms`` (and,
    on CUDA, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and deterministic cuDNN); the previous global
    setting is restored afterwards.
    """
    validate(cfg)
    warn = warn or _stderr
    run_dir = run_dir_of(cfg)
    previous = torch.are_deterministic_algorithms_enabled()
    parallel = DataParallel.from_environment(cfg)
    try:
        lock = RunLock(cfg.out_dir, cfg.name or cfg.recipe) if parallel.rank == 0 else None
        with lock if lock is not None else contextlib.nullcontext():
            if cfg.deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
                torch.use_deterministic_algorithms(True)
            return _train(cfg, run_dir, resume, overwrite, warn, parallel)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RunError(
                f"no space left on the device while writing run {str(run_dir)!r} "
                f"({exc.filename or 'a file'}); free space and --resume"
            ) from None
        raise RunError(f"run {str(run_dir)!r}: {exc}") from None
    finally:
        torch.use_deterministic_algorithms(previous)
        parallel.close()


def _prepare_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool, warn):
    """Create, replace or reopen the run directory; returns the checkpoint to resume from."""
    if resume:
        if overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if not is_run(run_dir):
            raise ValueError(
                f"--resume: no run {str(run_dir)!r} to resume (start it without --resume)"
            )
        check_no_links(run_dir)
        resume_changes(read_run_config(run_dir), cfg)
        ckpt = resume_checkpoint(run_dir, warn)
        if ckpt is None:
            warn(f"note: run {str(run_dir)!r} has no checkpoint yet; starting from step 0")
        return ckpt
    if run_dir.exists() or run_dir.is_symlink():
        if not overwrite:
            raise ValueError(
                f"run directory {str(run_dir)!r} exists: pass --resume to continue it, "
                "--overwrite to start again, or --name for a new run"
            )
        remove_run(run_dir, cfg.out_dir)
    run_dir.mkdir(parents=True)
    write_marker(run_dir)
    return None


def _grad_norm(params, clip: Optional[float]) -> float:
    """Global L2 norm of the gradients; with ``clip`` they are scaled to at most that norm."""
    params = [p for p in params if p.grad is not None]
    if clip:
        return float(torch.nn.utils.clip_grad_norm_(params, clip))
    if not params:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params])
    return float(torch.linalg.vector_norm(norms))


def _temperature(loss_fn) -> dict:
    """``{"train/temperature": tau}`` for a loss with a (learnable) temperature, else ``{}``."""
    for owner in (loss_fn, getattr(loss_fn, "scale", None)):
        value = getattr(owner, "temperature", None) if owner is not None else None
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return {"train/temperature": float(value.detach())}
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"train/temperature": float(value)}
    return {}


def _precision(cfg: TrainConfig, device: torch.device):
    """``(autocast context, gradient scaler)`` for ``cfg.precision``: bf16/fp16 run the forward
    under ``torch.autocast`` (weights, optimiser and gradients stay fp32); fp16 scales the loss
    (``torch.amp.GradScaler``); fp32 uses neither (the scaler is then a pass-through)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    return autocast, scaler


def _write_config(run_dir: Path, cfg: TrainConfig) -> None:
    _atomic_write(run_dir / "config.json", lambda fh: fh.write(json.dumps(asdict(cfg), indent=2)))


def _train(
    cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool, warn, parallel: DataParallel
) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    method = build_method(cfg, device=parallel.device)
    n = method.n_train
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"config field 'batch_size' ({cfg.batch_size}) exceeds the {n} samples")
    lead = parallel.rank == 0  # the process that writes the run directory
    if lead:
        ckpt = _prepare_run_dir(cfg, run_dir, resume, overwrite, warn)
        _write_config(run_dir, cfg)  # a resume changes only RESUME_SAFE fields
        method.on_run_dir(run_dir)
    parallel.barrier()
    if not lead:  # the run directory is ready: the same checkpoint as the lead's
        ckpt = resume_checkpoint(run_dir, lambda _: None) if resume else None
    opt = torch.optim.AdamW(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, cfg.warmup_steps, cfg.schedule)
    )
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    autocast, scaler = _precision(cfg, method.device)
    start = 0
    log_path = run_dir / "train_log.csv"
    snap_path = run_dir / "snapshots.jsonl"
    if ckpt is not None:
        weights, state = load_checkpoint(ckpt)
        try:
            method.load_state_dict(weights)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            aug_gen.set_state(state["aug_rng"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("grad_scaler"):
                scaler.load_state_dict(state["grad_scaler"])
            if method.device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], method.device)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{ckpt}: does not match this run's model ({exc})") from None
        start = state["step"]
        if start != int(ckpt.name.split("-")[1]):
            raise CheckpointError(f"{ckpt}: holds step {start}, not the step its name says")
    if not lead:
        return _follow(method, cfg, parallel, opt, sched, aug_gen, autocast, scaler, start, total)
    # drop what a killed run logged after its resume point (all of it before a first checkpoint)
    _truncate_log(log_path, start)
    _truncate_snapshots(snap_path, start)
    if not log_path.exists():
        with open(log_path, "w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=LOG_FIELDS).writeheader()
    board = _Board(run_dir, cfg.tensorboard, start)
    if board.writer is not None and start == 0:  # the hyperparameters, once per run
        board.writer.add_text("config", "```json\n" + json.dumps(asdict(cfg), indent=2) + "\n```")
    if start == 0:
        snap_path.unlink(missing_ok=True)
        _snapshot(method, 0, snap_path, board)

    bar = None
    if cfg.progress:
        require("tqdm", "train", "the progress bar")
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=cfg.name or cfg.recipe, unit="step")
    last_loss = _last_logged_loss(log_path)  # a resumed, already complete run trains no step
    if start >= total:
        warn(f"note: run {str(run_dir)!r} is complete at step {start} of {total}; evaluating it")
    t_train = time.perf_counter()
    with open(log_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        for step in range(start, total):
            t0 = time.perf_counter()
            epoch = step // steps_per_epoch
            loss, grad_norm = _step(
                method, cfg, parallel, opt, sched, aug_gen, autocast, scaler, step, steps_per_epoch
            )
            last_loss = float(loss.detach())
            rate = cfg.batch_size / (time.perf_counter() - t0)
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
                step,
                **{
                    "train/loss": last_loss,
                    "train/lr": lr,
                    "train/samples_per_s": rate,
                    "train/grad_norm": float(grad_norm),
                    **_temperature(method.loss_fn),
                },
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
                    "grad_scaler": scaler.state_dict(),
                }
                if method.device.type == "cuda":
                    state["cuda_rng"] = torch.cuda.get_rng_state(method.device)
                save_checkpoint(run_dir, step + 1, method.state_dict(), state)
    train_seconds = time.perf_counter() - t_train
    if bar is not None:
        bar.close()
    summary = finish(
        method,
        run_dir,
        {
            "steps": total,
            "final_loss": last_loss,
            "train_seconds": train_seconds,
            "samples_per_s": (total - start) * cfg.batch_size / max(train_seconds, 1e-9),
        },
    )
    board.final(total, cfg, summary)
    board.close()
    return summary


def _step(method, cfg, parallel, opt, sched, aug_gen, autocast, scaler, step, steps_per_epoch):
    """One optimiser step on the global batch of ``step`` (this process's share of it when
    several processes train); returns ``(loss, gradient norm)``."""
    idx = method.batch_indices(step, steps_per_epoch)
    with autocast:
        loss = method.batch_loss(parallel.shard(idx), aug_gen)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"loss is {float(loss)} at step {step}; lower 'lr' or raise the temperature"
        )
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    parallel.average_gradients(method.parameters())
    scaler.unscale_(opt)  # true gradients for the norm and the clipping
    grad_norm = _grad_norm(method.parameters(), cfg.grad_clip)
    scaler.step(opt)
    scaler.update()
    sched.step()
    method.after_step(step)
    return loss, grad_norm


def _follow(method, cfg, parallel, opt, sched, aug_gen, autocast, scaler, start, total) -> dict:
    """A process other than the lead: the same steps on its share of each batch, writing
    nothing (the lead logs, checkpoints, evaluates and reports)."""
    steps_per_epoch = method.n_train // cfg.batch_size
    loss = torch.tensor(float("nan"))
    for step in range(start, total):
        loss, _ = _step(
            method, cfg, parallel, opt, sched, aug_gen, autocast, scaler, step, steps_per_epoch
        )
    final = float(loss.detach())
    return {"run_dir": None, "rank": parallel.rank, "steps": total, "final_loss": final}


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


def load_run(
    run: str | Path, warn: Optional[Callable[[str], None]] = None
) -> tuple[Method, Path, dict]:
    """Rebuild a saved run's method from ``config.json`` and a checkpoint: the one given
    (``runs/<name>/checkpoints/step-XXXXXXXX``), or for a run directory the newest that
    verifies against its manifest. Nothing outside the run directory is followed and nothing
    is unpickled; errors name the file."""
    from .checkpoint import STEP_DIR, verify_checkpoint

    path = Path(run)
    if not path.is_dir():
        raise ValueError(f"checkpoint {str(run)!r}: no such run or checkpoint directory")
    if STEP_DIR.fullmatch(path.name) and path.parent.name == "checkpoints":
        run_dir = path.parent.parent
        if path.is_symlink() or path.resolve() not in [
            p.resolve() for p in checkpoint_dirs(run_dir)
        ]:
            raise ValueError(f"checkpoint {str(run)!r} is not a checkpoint inside its run")
        verify_checkpoint(path)
        ckpt = path
    else:
        run_dir = path
        if not (run_dir / "config.json").is_file():
            raise ValueError(f"checkpoint {str(run)!r}: no run directory with config.json found")
        ckpt = resume_checkpoint(run_dir, warn or _stderr)
        if ckpt is None:
            raise ValueError(f"checkpoint {str(run)!r}: the run has no checkpoint")
    check_no_links(run_dir)
    cfg = read_run_config(run_dir)
    torch.manual_seed(cfg.seed)
    method = build_method(cfg)
    weights, state = load_checkpoint(ckpt)
    try:
        method.load_state_dict(weights)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{ckpt}: does not match the run's model ({exc})") from None
    return method, run_dir, state
