"""The ``contrastkit`` command line (a thin layer over :mod:`contrastkit.bench`)."""

from __future__ import annotations

from typing import List, Optional

import typer

import contrastkit
from contrastkit import bench as B

app = typer.Typer(help="Exact, tiled contrastive objectives for PyTorch.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"contrastkit {contrastkit.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Exact, tiled contrastive objectives for PyTorch."""


def _split(values) -> list:
    return [v.strip() for item in values or [] for v in str(item).split(",") if v.strip()]


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="N in {1024, 4096}, core methods (< 1 min)."),
    n: Optional[List[str]] = typer.Option(None, "--n", help="Batch sizes N (= M); repeat or comma list."),
    d: int = typer.Option(128, "--d", help="Embedding dimension."),
    methods: Optional[str] = typer.Option(
        None, "--methods", help=f"Comma list from: {', '.join(B.METHODS)}."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: all)."),
    repeat: Optional[int] = typer.Option(None, "--repeat", help="Timed runs (best is kept)."),
    out: Optional[str] = typer.Option(None, "--out", help="Write the markdown table here."),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write the raw results here."),
) -> None:
    """Time forward+backward and measure peak memory of the objectives (one process per row)."""
    try:
        ns = [int(v) for v in _split(n)] or (list(B.QUICK_NS) if quick else [])
    except ValueError as exc:
        raise typer.BadParameter(f"N must be integers: {exc}", param_hint="--n")
    if not ns:
        raise typer.BadParameter("give --n or --quick", param_hint="--n")
    chosen = _split([methods]) if methods else list(B.QUICK_METHODS if quick else B.METHODS)
    try:
        report = B.run(
            ns, d=d, methods=chosen, threads=threads, repeat=repeat,
            progress=lambda r: typer.echo(f"  done {r['method']} N={r['n']}", err=True),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--methods")
    typer.echo(B.write(report, out, json_path), nl=False)


def main() -> None:
    app()
