"""Atomic checkpoints: weights in safetensors, trainer state (optimiser, scheduler, RNG, data
position) in a torch file, written to a temporary directory, fsynced and renamed; a ``latest``
pointer is replaced atomically last. A run killed at any instant (SIGKILL included) leaves the
previous complete checkpoint in place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

KEEP = 2


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_checkpoint(run_dir: Path, step: int, weights: dict, state: dict) -> Path:
    """Write ``checkpoints/step-XXXXXXXX`` atomically and point ``checkpoints/latest`` to it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(
        {k: v.detach().contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors")
    )
    torch.save(state, tmp / "state.pt")
    for f in tmp.iterdir():
        _fsync_file(f)
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer_tmp = root / f".latest-{os.getpid()}"
    pointer_tmp.write_text(final.name)
    _fsync_file(pointer_tmp)
    os.replace(pointer_tmp, root / "latest")
    _fsync_dir(root)
    for old in sorted(root.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path):
    """Path of the newest complete checkpoint, or None."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return (
        path if (path / "model.safetensors").is_file() and (path / "state.pt").is_file() else None
    )


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    return load_file(str(Path(path) / "model.safetensors")), torch.load(
        Path(path) / "state.pt", weights_only=False
    )
