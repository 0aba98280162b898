"""The ``contrastkit`` command line (a thin layer over :mod:`contrastkit.bench`)."""

from __future__ import annotations

from typing import Annotated

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
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Exact, tiled contrastive objectives for PyTorch."""


def _split(values) -> list:
    return [v.strip() for item in values or [] for v in str(item).split(",") if v.strip()]


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="N in {1024, 4096}, core methods (< 1 min).")
    ] = False,
    n: Annotated[
        list[str] | None,
        typer.Option("--n", help="Batch sizes N (= M); repeat the option or give a comma list."),
    ] = None,
    d: Annotated[int, typer.Option("--d", help="Embedding dimension.")] = 128,
    methods: Annotated[
        str | None,
        typer.Option("--methods", help=f"Comma list from: {', '.join(B.METHODS)}."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="Torch threads (default: all)."),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(
            "--repeat", help="Timed runs; the best is kept (default: 3, 1 above N=16384)."
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", help="Write the markdown table here."),
    ] = None,
    json_path: Annotated[
        str | None,
        typer.Option("--json", help="Write the raw results (JSON) here."),
    ] = None,
) -> None:
    """Time forward+backward and measure peak memory of the objectives (one process per row)."""
    try:
        ns = [int(v) for v in _split(n)] or (list(B.QUICK_NS) if quick else [])
    except ValueError as exc:
        raise typer.BadParameter(f"N must be integers: {exc}", param_hint="--n") from None
    if not ns:
        raise typer.BadParameter("give --n or --quick", param_hint="--n")
    chosen = _split([methods]) if methods else list(B.QUICK_METHODS if quick else B.METHODS)
    try:
        report = B.run(
            ns,
            d=d,
            methods=chosen,
            threads=threads,
            repeat=repeat,
            progress=lambda r: typer.echo(f"  done {r['method']} N={r['n']}", err=True),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--methods") from None
    typer.echo(B.write(report, out, json_path), nl=False)


@app.command()
def train(
    recipe: Annotated[
        str | None, typer.Option("--recipe", help="Recipe name (default: simclr-digits).")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="Config file (.toml, .yaml).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any config field: --set epochs=5 (repeatable)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name: runs/<name>.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run from its last checkpoint.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete an existing run of that name first.")
    ] = False,
) -> None:
    """Train an encoder with a contrastive recipe (default: SimCLR on scikit-learn's digits)."""
    from contrastkit.train import load_config
    from contrastkit.train import train as run_training

    overrides = list(set_ or [])
    if name is not None:
        overrides.append(f"name={name}")
    try:
        cfg = load_config(recipe, config, overrides)
        summary = run_training(cfg, resume=resume, overwrite=overwrite)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"run written to {summary['run_dir']} (final loss {summary['final_loss']:.4f})")
    for name, scores in summary["eval"].items():
        typer.echo(
            f"  {name:12s} kNN top-1 {scores['knn_top1']:.1f} %   "
            f"linear probe {scores['linear_probe']:.1f} %"
        )


def main() -> None:
    """Entry point of the ``contrastkit`` console script."""
    app()
