"""Atomic, verifiable checkpoints that load without running code.

A checkpoint is a directory ``checkpoints/step-XXXXXXXX`` holding

* ``model.safetensors``: every module's weights and buffers;
* ``state.safetensors`` + ``state.json``: the trainer state (optimiser, scheduler, RNG, step).
  The JSON holds the structure and plain values, the safetensors file every tensor; nothing is
  pickled, so reading a checkpoint from someone else cannot execute code;
* ``manifest.json``: the sha256 and size of each of those files.

It is written to a temporary directory, fsynced and renamed; the ``latest`` pointer is replaced
atomically last, so a run killed at any instant (SIGKILL included) leaves the previous complete
checkpoint in place. Two are kept. On resume, :func:`resume_checkpoint` verifies the newest
against its manifest and falls back to the previous good one, saying so.

Checkpoints written by contrastkit 0.x before this format (``state.pt``) are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Callable, Optional

import torch

from contrastkit._extras import require

_st = require("safetensors.torch", "train", "contrastkit.train (checkpoints)")
load_file, save_file = _st.load_file, _st.save_file
SafetensorError = require("safetensors", "train", "contrastkit.train").SafetensorError

KEEP = 2
FORMAT = 1
STEP_DIR = re.compile(r"step-\d{8}")
FILES = ("model.safetensors", "state.safetensors", "state.json")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or unsafe to load (names the file)."""


# -- state <-> (JSON skeleton, tensors) --------------------------------------------------------


def _encode(obj, tensors: dict, where: str):
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else {"__tuple__": items}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        pairs = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"trainer state {where}: key {k!r} is not a str or int")
            pairs.append([k, _encode(v, tensors, f"{where}.{k}")])
        return {"__items__": pairs}
    raise TypeError(f"trainer state {where}: cannot store a {type(obj).__name__}")


def _decode(obj, tensors: dict, name: str):
    if isinstance(obj, list):
        return [_decode(v, tensors, name) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        key = obj["__tensor__"]
        if key not in tensors:
            raise CheckpointError(f"{name}: refers to tensor {key!r}, missing from the file")
        return tensors[key]
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors, name) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _decode(v, tensors, name) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors, name) for k, v in obj.items()}


# -- writing -----------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_state(folder: Path, state: dict) -> None:
    tensors: dict = {}
    skeleton = _encode(state, tensors, "state")
    save_file(tensors, str(folder / "state.safetensors"))
    (folder / "state.json").write_text(json.dumps(skeleton))


def save_checkpoint(run_dir: Path, step: int, weights: dict, state: dict) -> Path:
    """Write ``checkpoints/step-XXXXXXXX`` atomically and point ``checkpoints/latest`` to it.

    On any failure (a full disk included) the temporary directory is removed and the error
    re-raised; the previous checkpoint stays the newest.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-{step:08d}-{os.getpid()}"
    pointer_tmp = root / f".latest-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in weights.items()},
            str(tmp / "model.safetensors"),
        )
        _write_state(tmp, state)
        manifest = {
            "format": FORMAT,
            "step": step,
            "files": {
                f: {"sha256": _sha256(tmp / f), "bytes": (tmp / f).stat().st_size} for f in FILES
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer_tmp.write_text(final.name)
        _fsync_file(pointer_tmp)
        os.replace(pointer_tmp, root / "latest")
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        pointer_tmp.unlink(missing_ok=True)
        raise
    for old in sorted(p for p in root.iterdir() if STEP_DIR.fullmatch(p.name))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


# -- finding and verifying ---------------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The run's ``step-*`` checkpoint directories, newest first (only real directories inside
    the run: a symlink pointing elsewhere is ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if STEP_DIR.fullmatch(p.name) and not p.is_symlink() and p.is_dir() and _inside(p, root)
    ]
    return sorted(found, reverse=True)


def verify_checkpoint(path: Path) -> None:
    """Raise :class:`CheckpointError` naming the file unless every file of the checkpoint is
    present and matches the manifest's sha256 (pre-manifest checkpoints: files present)."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        if (path / "state.pt").is_file() and (path / "model.safetensors").is_file():
            return  # written before manifests existed
        raise CheckpointError(f"{manifest_path}: missing")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or set(files) != set(FILES):
            raise KeyError("files")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{manifest_path}: not a contrastkit manifest") from None
    for name in FILES:
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        size = f.stat().st_size
        want = files[name]
        if size != want.get("bytes"):
            raise CheckpointError(f"{f}: {size} bytes, the manifest says {want.get('bytes')}")
        if _sha256(f) != want.get("sha256"):
            raise CheckpointError(f"{f}: sha256 does not match the manifest (damaged)")


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The checkpoint named by ``checkpoints/latest`` if it is a checkpoint directory of this
    run with its files present, else the newest such directory, else None. The pointer is
    never followed out of the run's ``checkpoints/`` directory."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    dirs = checkpoint_dirs(run_dir)
    if pointer.is_file() and not pointer.is_symlink():
        name = pointer.read_text(errors="replace").strip()
        if STEP_DIR.fullmatch(name) and (root / name) in dirs:
            return root / name
    return dirs[0] if dirs else None


def resume_checkpoint(run_dir: Path, warn: Callable[[str], None]) -> Optional[Path]:
    """The newest checkpoint of ``run_dir`` that verifies, or None if the run has none.

    Each damaged one skipped is reported through ``warn`` in one line naming the file; if
    checkpoints exist but none verifies, :class:`CheckpointError` is raised.
    """
    dirs = checkpoint_dirs(run_dir)
    problems = []
    for path in dirs:
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            warn(f"warning: skipping damaged checkpoint {path.name}: {exc}")
            continue
        return path
    if problems:
        raise CheckpointError(
            f"run {str(run_dir)!r} has no intact checkpoint ({'; '.join(problems)}); "
            "use --overwrite to start again from step 0"
        )
    return None


# -- loading -----------------------------------------------------------------------------------


def _load_weights(path: Path) -> dict:
    f = path / "model.safetensors"
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{f}: not a readable safetensors file ({exc})") from None


def _load_state(path: Path) -> dict:
    if (path / "state.json").is_file() or not (path / "state.pt").is_file():
        for name in ("state.json", "state.safetensors"):
            if not (path / name).is_file():
                raise CheckpointError(f"{path / name}: missing")
        try:
            skeleton = json.loads((path / "state.json").read_text())
        except (ValueError, UnicodeDecodeError):
            raise CheckpointError(
                f"{path / 'state.json'}: not JSON (trainer state must be JSON + safetensors; "
                "nothing else is loaded)"
            ) from None
        try:
            tensors = load_file(str(path / "state.safetensors"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path / 'state.safetensors'}: unreadable ({exc})") from None
        state = _decode(skeleton, tensors, str(path / "state.json"))
    else:
        f = path / "state.pt"
        try:
            state = torch.load(f, weights_only=True, map_location="cpu")
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{f}: refused: it holds more than tensors and plain containers, or is damaged "
                f"({first})"
            ) from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path}: trainer state has no integer 'step'")
    return state


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """``(weights, trainer state)`` of a checkpoint directory; never unpickles arbitrary
    objects. Raises :class:`CheckpointError` naming the file when it cannot be read."""
    path = Path(path)
    return _load_weights(path), _load_state(path)
