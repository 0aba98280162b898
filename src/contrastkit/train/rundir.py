"""Run directories: safe names, the run marker, deletion only of real runs, and the lock that
keeps two trainings off one run.

* A run name is one path component: not empty, no ``/`` or ``\\``, not ``.``/``..``, no leading
  dot, no control characters, at most 128 characters. ``runs/<name>`` therefore always lies
  directly inside ``out_dir``.
* Every run directory holds a marker file, ``.contrastkit-run``. ``--overwrite`` removes a
  directory only if it holds that marker, is not a symbolic link and lies inside ``out_dir``.
* While a training runs it holds an exclusive ``flock`` on ``<out_dir>/.<name>.lock`` (which
  also records its pid). A second training of the same run fails at once naming that pid; a
  lock left by a killed process is released by the kernel, so stale locks never block.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

MARKER = ".contrastkit-run"
MAX_NAME = 128


def check_run_name(name: str, field: str = "name") -> str:
    """Return ``name`` if it is a safe single path component, else raise ``ValueError``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"config field {field!r}: a run name must be a non-empty string")
    bad = None
    if "/" in name or "\\" in name:
        bad = "contains a path separator"
    elif name in (".", ".."):
        bad = "is a relative directory"
    elif name.startswith("."):
        bad = "starts with a dot"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        bad = "contains a control character"
    elif len(name) > MAX_NAME:
        bad = f"is longer than {MAX_NAME} characters"
    if bad:
        raise ValueError(
            f"config field {field!r}: run name {name!r} {bad}; a run name is one path "
            "component (letters, digits, '-', '_', '.'; not starting with a dot)"
        )
    return name


def run_path(out_dir: str | os.PathLike, name: str) -> Path:
    """``out_dir/name`` after checking the name."""
    return Path(out_dir) / check_run_name(name)


def is_run(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def write_marker(path: Path) -> None:
    (path / MARKER).write_text(json.dumps({"contrastkit_run": 1}) + "\n")


def remove_run(path: Path, out_dir: str | os.PathLike) -> None:
    """Delete a run directory for ``--overwrite``; refuses anything that is not a contrastkit
    run directly inside ``out_dir``."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"refusing to delete {str(path)!r}: it is a symbolic link, not a run")
    try:
        inside = path.resolve().parent == Path(out_dir).resolve()
    except OSError:
        inside = False
    if not inside:
        raise ValueError(f"refusing to delete {str(path)!r}: it is not inside {str(out_dir)!r}")
    if not is_run(path):
        raise ValueError(
            f"refusing to delete {str(path)!r}: it is not a contrastkit run (no {MARKER} "
            "marker); remove it yourself or choose another --name"
        )
    shutil.rmtree(path)


class RunLock:
    """Exclusive lock of one run (``<out_dir>/.<name>.lock``), held for a training's lifetime."""

    def __init__(self, out_dir: str | os.PathLike, name: str):
        self.path = Path(out_dir) / f".{check_run_name(name)}.lock"
        self.fd = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            owner = self.path.read_text(errors="replace").strip() or "unknown"
            raise ValueError(
                f"run {self.path.name[1:-5]!r} is being trained by another process (pid "
                f"{owner}, lock file {str(self.path)!r}); wait for it or use another --name"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def check_no_links(run_dir: Path) -> None:
    """Refuse a run directory that holds a symbolic link anywhere inside it: writing its logs,
    metrics or report through a link could reach outside the run."""
    for root, dirs, files in os.walk(run_dir, followlinks=False):
        for entry in dirs + files:
            path = Path(root) / entry
            if path.is_symlink():
                raise ValueError(
                    f"run {str(run_dir)!r} holds a symbolic link ({str(path)!r}); contrastkit "
                    "does not write through links: remove it"
                )
