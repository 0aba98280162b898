"""``contrastkit bench``'s peers come from installed packages, never from a checkout's files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contrastkit import _peers, bench

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "pip install 'contrastkit[bench]'"


@pytest.mark.parametrize("module", [bench, _peers])
def test_no_file_is_executed_as_a_module(module):
    source = Path(module.__file__).read_text()
    for needle in ("exec_module", "spec_from_file_location", "module_from_spec", "peers.py"):
        assert needle not in source, f"{module.__name__} contains {needle!r}"


def test_bench_extra_lists_the_peers():
    text = (ROOT / "pyproject.toml").read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"{_peers.EXTRA} = "))
    for peer in _peers.PEERS.values():
        assert f'"{peer.package}>=' in line, line
    assert "torch" not in line.replace("open-clip-torch", "")  # no torch pin


@pytest.mark.parametrize("method", sorted(_peers.PEERS))
def test_missing_peer_skips_with_the_install_command(monkeypatch, method):
    peer = _peers.PEERS[method]
    real = _peers.installed
    monkeypatch.setattr(_peers, "installed", lambda m: m != peer.module and real(m))
    # the driver's check, before any process starts
    report = bench.run([64], d=8, methods=[method], repeat=1, threads=1)
    (row,) = report["results"]
    assert INSTALL in row["skipped"] and f"pip install {peer.package}" in row["skipped"]
    assert INSTALL in bench.to_markdown(report)
    # the worker's own check (a peer removed between the two)
    job = {"method": method, "n": 64, "d": 8, "threads": 1, "seed": 0, "warmup": 0, "repeat": 1}
    row = bench.run_worker(job)
    assert INSTALL in row["skipped"] and peer.package in row["skipped"], row


def test_broken_peer_import_names_the_package(monkeypatch):
    monkeypatch.setattr(_peers, "installed", lambda m: True)
    monkeypatch.setattr(_peers, "repair_torchvision", lambda: None)

    def broken(name):
        raise ImportError(f"No module named {name}.missing_part")

    monkeypatch.setattr(_peers, "_import_quietly", broken)
    with pytest.raises(_peers.PeerMissing, match="open-clip-torch is installed but `import "):
        _peers.open_clip_clip_loss()


WORKER = """
import importlib.util, json
from pathlib import Path
calls = []
original = importlib.util.spec_from_file_location
def recording(name, location=None, *args, **kwargs):
    calls.append(str(location))
    return original(name, location, *args, **kwargs)
importlib.util.spec_from_file_location = recording
from contrastkit import bench
job = {"method": "open-clip", "n": 64, "d": 8, "threads": 1, "seed": 0, "warmup": 0, "repeat": 1}
print(json.dumps({"row": bench.run_worker(job), "calls": calls}))
"""


@pytest.mark.slow
def test_peer_worker_loads_nothing_from_tests():
    """A peer row imports the installed open_clip (or skips naming it); no file of tests/ is
    loaded through ``spec_from_file_location``, in a worker process as the bench runs it."""
    out = subprocess.run(
        [sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    tests_dir = str(ROOT / "tests")
    assert not [c for c in result["calls"] if c.startswith(tests_dir) or "peers" in c]
    row = result["row"]
    if "skipped" in row:
        assert "open-clip-torch" in row["skipped"], row
    else:
        assert row["loss"] > 0 and row["method"] == "open-clip"
