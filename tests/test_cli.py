"""The ``contrastkit`` command line: version, help and a tiny benchmark run."""

import math
import re

import pytest
from typer.testing import CliRunner

import contrastkit
from contrastkit import bench
from contrastkit.cli import app

runner = CliRunner()


def _rows(table: str) -> dict:
    """method -> time column of a benchmark markdown table."""
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"\d+", cells[1]):
            out[cells[0]] = float(cells[3]) if cells[3] else None
    return out


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"contrastkit {contrastkit.__version__}"


def test_help_lists_bench():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "bench" in result.stdout


def test_bench_needs_sizes():
    assert runner.invoke(app, ["bench"]).exit_code != 0


def test_bench_rejects_unknown_method():
    result = runner.invoke(app, ["bench", "--n", "64", "--methods", "nope"])
    assert result.exit_code != 0


def test_bench_table(monkeypatch, tmp_path):
    # run the workers in this process: the spawn itself is covered by test_bench_subprocess
    monkeypatch.setattr(bench, "_spawn", bench.run_worker)
    out, js = tmp_path / "b.md", tmp_path / "b.json"
    args = ["bench", "--n", "256", "--methods", "floor,infonce,dense", "--repeat", "1"]
    result = runner.invoke(app, args + ["--out", str(out), "--json", str(js)])
    assert result.exit_code == 0, result.output
    times = _rows(result.stdout)
    assert set(times) == {"floor", "infonce", "dense"}
    assert all(t is not None and t > 0 for t in times.values())
    assert out.read_text() == result.stdout
    assert '"results"' in js.read_text()


@pytest.mark.slow
def test_bench_subprocess():
    report = bench.run([256], methods=["infonce"], repeat=1)
    (row,) = report["results"]
    assert row["time_s"] > 0 and row["peak_rss_mib"] >= row["baseline_rss_mib"] > 0
    assert math.isfinite(row["loss"]) and row["loss"] > 0


def test_bench_parses_sizes_and_methods(monkeypatch):
    seen = {}

    def fake_run(ns, **kw):
        seen.update(ns=ns, **kw)
        return {"meta": {}, "results": []}

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "to_markdown", lambda report: "table\n")
    args = ["bench", "--n", "128,256", "--n", "512", "--methods", "floor, dcl", "--d", "16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["ns"] == [128, 256, 512] and seen["methods"] == ["floor", "dcl"]
    assert seen["d"] == 16
    result = runner.invoke(app, ["bench", "--quick"])
    assert seen["ns"] == list(bench.QUICK_NS) and seen["methods"] == list(bench.QUICK_METHODS)
