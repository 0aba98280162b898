"""The commands the docs show run as written: every ``bash`` block of docs/training.md and the
README (in an empty directory, ``contrastkit`` from this environment) and the README's Python
example. A block preceded by an HTML comment starting ``<!-- fragment`` is not run (the comment
says why)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/training.md"]
FENCE = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>[a-z]*)\n(?P<body>.*?)```", re.S)
#: the README's example at its stated sizes takes minutes; the same code runs at a smaller N
SMALLER = {"65_536": "512"}


def blocks(lang: str) -> list:
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for m in FENCE.finditer("\n" + text):
            if m.group("lang") != lang:
                continue
            if m.group("before").strip().startswith("<!-- fragment"):
                continue
            line = text[: max(m.start("body") - 1, 0)].count("\n") + 1
            found.append(pytest.param(m.group("body"), id=f"{doc}:{line}"))
    return found


def test_every_block_is_run_or_marked_as_a_fragment():
    fences = sum((ROOT / d).read_text().count("\n```") for d in DOCS) // 2
    run = len(blocks("bash")) + len(blocks("python"))
    marked = sum((ROOT / d).read_text().count("<!-- fragment") for d in DOCS)
    assert run + marked == fences and run >= 2


@pytest.mark.slow
@pytest.mark.parametrize("body", blocks("bash"))
def test_shell_block_runs(body, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("body", blocks("python"))
def test_python_block_runs(body):
    for big, small in SMALLER.items():
        body = body.replace(big, small)
    exec(compile(body, "doc-block", "exec"), {})
