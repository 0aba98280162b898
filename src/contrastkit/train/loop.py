"""The training loop: deterministic data order and views, CSV log, atomic checkpoints, resume.

The data position is derived from the global step (epoch permutation seeded by ``seed`` and the
epoch), and the augmentation generator's state is checkpointed, so a run resumed from any
checkpoint produces the same weights as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .. import losses
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, validate
from .data import augment, load_digits_split
from .evaluate import evaluate
from .model import MLPEncoder, ProjectionHead

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


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Run (or resume) a training job; returns a summary and writes ``runs/<name>/``."""
    validate(cfg)
    run_dir = Path(cfg.out_dir) / (cfg.name or cfg.recipe)
    ckpt = latest_checkpoint(run_dir)
    if run_dir.exists() and not resume:
        if not overwrite:
            raise ValueError(
                f"run directory {str(run_dir)!r} exists: pass --resume to continue it, "
                "--overwrite to start again, or --name for a new run"
            )
        shutil.rmtree(run_dir)
        ckpt = None
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    torch.manual_seed(cfg.seed)
    data = load_digits_split(seed=cfg.seed)
    encoder = MLPEncoder(64, cfg.hidden_dim, cfg.embed_dim)
    random_init = copy.deepcopy(encoder)  # baseline: the same encoder before training
    head = ProjectionHead(cfg.embed_dim, cfg.hidden_dim, cfg.proj_dim)
    model = torch.nn.ModuleDict({"encoder": encoder, "head": head})
    loss_fn = getattr(losses, cfg.loss)(**cfg.loss_params)
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = data.x_train.shape[0]
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"config field 'batch_size' ({cfg.batch_size}) exceeds the {n} samples")
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(total, 1)))
    )
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = 0
    log_path = run_dir / "train_log.csv"
    if ckpt is not None:
        weights, state = load_checkpoint(ckpt)
        model.load_state_dict({k: v for k, v in weights.items() if not k.startswith("loss.")})
        loss_fn.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("loss.")})
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        aug_gen.set_state(state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
        _truncate_log(log_path, start)
    if not log_path.exists():
        with open(log_path, "w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=LOG_FIELDS).writeheader()

    def weights_now() -> dict:
        out = dict(model.state_dict())
        out.update({f"loss.{k}": v for k, v in loss_fn.state_dict().items()})
        return out

    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=cfg.name or cfg.recipe, unit="step")
    last_loss = float("nan")
    with open(log_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        for step in range(start, total):
            t0 = time.perf_counter()
            epoch, k = divmod(step, steps_per_epoch)
            idx = _epoch_order(n, cfg.seed, epoch)[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            x = data.x_train[idx]
            v1, v2 = augment(x, aug_gen), augment(x, aug_gen)
            z1, z2 = head(encoder(v1)), head(encoder(v2))
            if cfg.labels:
                loss = loss_fn(torch.stack([z1, z2], 1), data.y_train[idx])
            else:
                loss = loss_fn(z1, z2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            last_loss = float(loss.detach())
            rate = x.shape[0] / (time.perf_counter() - t0)
            row = {
                "step": step,
                "epoch": epoch,
                "loss": f"{last_loss:.6f}",
                "lr": f"{sched.get_last_lr()[0]:.6g}",
                "samples_per_s": f"{rate:.1f}",
            }
            writer.writerow(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", samples_s=f"{rate:.0f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
                fh.flush()
                state = {
                    "step": step + 1,
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "aug_rng": aug_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                }
                save_checkpoint(run_dir, step + 1, weights_now(), state)
    if bar is not None:
        bar.close()
    summary = {
        "run_dir": str(run_dir),
        "steps": total,
        "final_loss": last_loss,
        "eval": evaluate({"trained": encoder, "random_init": random_init}, data),
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary
