"""The ``contrastkit`` command line (a thin layer over :mod:`contrastkit.bench`)."""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated

import contrastkit
from contrastkit import bench as B
from contrastkit._extras import require

typer = require("typer", "train", "the contrastkit command line (contrastkit.cli)")

app = typer.Typer(
    help="Exact, tiled contrastive objectives for PyTorch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

#: show tracebacks instead of one ``error:`` line (``--debug`` or CONTRASTKIT_DEBUG=1)
_DEBUG = {"on": False}


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _guarded(fn):
    """Every failure of a command ends in one ``error:`` line and exit code 2 (a traceback only
    with ``--debug``); Ctrl-C ends with exit code 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            if _is_click_error(exc):  # a usage error: main() reports it
                raise
            if _DEBUG["on"] or os.environ.get("CONTRASTKIT_DEBUG") == "1":
                raise
            text = " ".join(str(exc).split()) or type(exc).__name__
            if not isinstance(exc, ValueError):
                text = f"{type(exc).__name__}: {text}"
            _fail(text)

    return wrapper


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
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one error line.")
    ] = False,
) -> None:
    """Exact, tiled contrastive objectives for PyTorch."""
    _DEBUG["on"] = debug


def _split(values) -> list:
    return [v.strip() for item in values or [] for v in str(item).split(",") if v.strip()]


@app.command()
@_guarded
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
        _fail(f"--n: batch sizes must be integers ({exc})")
    if not ns:
        _fail("--n: give batch sizes with --n, or --quick")
    chosen = _split([methods]) if methods else list(B.QUICK_METHODS if quick else B.METHODS)
    report = B.run(
        ns,
        d=d,
        methods=chosen,
        threads=threads,
        repeat=repeat,
        progress=lambda r: typer.echo(f"  done {r['method']} N={r['n']}", err=True),
    )
    typer.echo(B.write(report, out, json_path), nl=False)


def _train_epilog() -> str:
    """The recipes and config fields, listed under ``contrastkit train --help``."""
    from contrastkit.train.config import RECIPE_HELP, RECIPES, field_help

    recipes = [f"{name}: {RECIPE_HELP.get(name, '')}" for name in RECIPES]
    fields = [f"{n} = {d}" + (f" ({c})" if c else "") for n, d, c in field_help()]
    body = ["Recipes (--recipe NAME):", *recipes, "", "Config fields (--set FIELD=VALUE):", *fields]
    return "\n".join(line.replace("[", "\\[") for line in body)


@app.command(epilog=_train_epilog())
@_guarded
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
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:N or auto (= --set device=...).")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="fp32, bf16 or fp16 autocast (= --set precision=...)."),
    ] = None,
) -> None:
    """Train an encoder with a contrastive recipe (default: SimCLR on scikit-learn's digits).

    --resume continues runs/<name> with the run's own config.json; only epochs, max_steps,
    threads, progress, tensorboard, report, checkpoint_every, snapshot_every and device may be
    changed with --set.
    """
    from contrastkit.train import load_config
    from contrastkit.train import train as run_training
    from contrastkit.train.config import load_resume_config

    overrides = list(set_ or [])
    for field, value in (("name", name), ("device", device), ("precision", precision)):
        if value is not None:
            overrides.append(f"{field}={_toml_string(value)}")
    if resume and overwrite:
        _fail("--resume and --overwrite exclude each other")
    if resume:
        cfg = load_resume_config(recipe, config, overrides)
    else:
        cfg = load_config(recipe, config, overrides)
    summary = run_training(cfg, resume=resume, overwrite=overwrite)
    if summary["run_dir"] is None:  # a torchrun process other than the lead: it wrote nothing
        return
    typer.echo(f"run written to {summary['run_dir']} (final loss {summary['final_loss']:.4f})")
    _print_eval(summary)


def _toml_string(text: str) -> str:
    """A TOML basic string holding ``text`` exactly (so --name is never parsed as a value)."""
    import json

    return json.dumps(text)


def _print_eval(summary: dict) -> None:
    from contrastkit.train.evaluate import summary_rows

    for who, knn, probe in summary_rows(summary["eval"]):
        typer.echo(f"  {who:12s} kNN top-1 {knn:.1f} %   linear probe {probe:.1f} %")
    if summary["eval"].get("held_out") is not None:  # method pairs
        for who, r in summary["eval"]["retrieval"].items():
            typer.echo(f"  {who:12s} Recall@1 {100 * r['recall@1']:.1f} % ({r['pairs']} pairs)")
    if "report" in summary:
        typer.echo(f"report: {summary['report']}")


def _json_number(value):
    """NaN / inf (an undefined correlation) as JSON null."""
    import math

    return None if isinstance(value, float) and not math.isfinite(value) else value


@app.command("eval")
@_guarded
def eval_(
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint", help="Run directory (runs/<name>) or one of its checkpoint folders."
        ),
    ] = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Rewrite report.md and its plots.")
    ] = True,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Model directory (transformers or sentence-transformers), or hashing[:DIM]; "
            "repeat to compare models side by side (default: the offline MiniLM).",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="BEIR folder (retrieval) or STS pairs file (STS)."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="BEIR qrels split.")] = "test",
    k: Annotated[
        list[str] | None,
        typer.Option("--k", help="Cut-offs for the retrieval metrics (comma list or repeated)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per encoder call.")] = 64,
    memory_budget: Annotated[
        str | None,
        typer.Option("--memory-budget", help="Search working memory, e.g. 512MB (streams blocks)."),
    ] = None,
    pooling: Annotated[
        str | None,
        typer.Option("--pooling", help="mean, cls or last (default: the model directory's)."),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Token limit (default: the model's).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N.")] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bars (stderr).")
    ] = True,
    out: Annotated[
        str | None, typer.Option("--out", help="Write the metrics (JSON) to this file.")
    ] = None,
) -> None:
    """Evaluate models on your data (--model PATH --data DIR: retrieval on a BEIR folder, or STS),
    or recompute every metric of a saved run (--checkpoint RUN)."""
    import json

    if checkpoint is not None and (model or data is not None):
        raise ValueError("--checkpoint excludes --model and --data (give one or the other)")
    if checkpoint is None and data is None:
        raise ValueError(
            "give --checkpoint RUN, or --data DIR (with --model PATH; default: the MiniLM)"
        )
    if data is not None:
        from contrastkit import evaluation as E
        from contrastkit.data import load_beir, load_sts

        try:
            ks = [int(v) for v in _split(k)] or list(E.DEFAULT_KS)
        except ValueError as exc:
            raise ValueError(f"--k: cut-offs must be integers ({exc})") from None
        task = E.detect_task(data)
        loaded = load_beir(data, split=split) if task == "retrieval" else load_sts(data)
        results = [
            E.evaluate(
                m,
                data,
                split=split,
                ks=ks,
                batch_size=batch_size,
                memory_budget=memory_budget,
                pooling=pooling,
                max_length=max_length,
                progress=progress,
                device=device,
                loaded=loaded,
            )
            for m in (model or [None])
        ]
        typer.echo(f"{task} evaluation on {data}" + (f" ({split})" if task == "retrieval" else ""))
        typer.echo(E.format_table(results), nl=False)
        if out is not None:
            from pathlib import Path

            Path(out).parent.mkdir(parents=True, exist_ok=True)
            clean = [
                {**r, "metrics": {n: _json_number(v) for n, v in r["metrics"].items()}}
                for r in results
            ]
            Path(out).write_text(json.dumps({"results": clean}, indent=2) + "\n")
            typer.echo(f"metrics written to {out}")
        return

    from contrastkit.train.loop import finish, load_run

    method, run_dir, state = load_run(checkpoint)
    method.cfg.report = report
    previous = {}
    if (run_dir / "metrics.json").is_file():
        previous = json.loads((run_dir / "metrics.json").read_text())
    info = {
        k: previous[k] for k in ("final_loss", "train_seconds", "samples_per_s") if k in previous
    }
    summary = finish(method, run_dir, {"steps": state["step"], **info})
    typer.echo(f"evaluated {run_dir} at step {state['step']}")
    _print_eval(summary)


@app.command()
@_guarded
def export(
    run: Annotated[str, typer.Argument(help="Run directory (runs/<name>) or a checkpoint of it.")],
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Target directory (default: RUN/export).")
    ] = None,
) -> None:
    """Export a run's trained encoder: a sentence-transformers model directory for text runs,
    encoder.safetensors + encoder.json for the digit recipes."""
    from contrastkit.train.export import export_run

    path = export_run(run, out)
    typer.echo(f"exported to {path}")


@app.command()
@_guarded
def mine(
    pairs: Annotated[
        str, typer.Argument(help="(query, positive) pairs: .jsonl, .csv, .tsv, .parquet")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Triplets file (format by extension).")],
    corpus: Annotated[
        str | None,
        typer.Option("--corpus", help="Extra candidate texts (table or .txt); default: positives."),
    ] = None,
    query_column: Annotated[
        str | None, typer.Option("--query-column", help="Default: the first column.")
    ] = None,
    positive_column: Annotated[
        str | None, typer.Option("--positive-column", help="Default: the second column.")
    ] = None,
    corpus_column: Annotated[
        str, typer.Option("--corpus-column", help="Text column of --corpus.")
    ] = "text",
    encoder: Annotated[str, typer.Option("--encoder", help="minilm or hashing.")] = "minilm",
    dim: Annotated[int, typer.Option("--dim", help="Width of the hashing encoder.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per encoder call.")] = 64,
    num_negatives: Annotated[int, typer.Option("--num-negatives", "-k")] = 3,
    range_min: Annotated[int, typer.Option("--range-min")] = 0,
    range_max: Annotated[int | None, typer.Option("--range-max")] = None,
    max_score: Annotated[float | None, typer.Option("--max-score")] = None,
    min_score: Annotated[float | None, typer.Option("--min-score")] = None,
    absolute_margin: Annotated[float | None, typer.Option("--absolute-margin", "--margin")] = None,
    relative_margin: Annotated[float | None, typer.Option("--relative-margin")] = None,
    sampling: Annotated[str, typer.Option("--sampling", help="top or random.")] = "top",
    index: Annotated[
        str,
        typer.Option("--index", help="flat (exact FAISS), torch, ivf, or a FAISS factory string."),
    ] = "flat",
    nprobe: Annotated[int, typer.Option("--nprobe", help="IVF lists visited per query.")] = 16,
    memory_budget: Annotated[
        str | None,
        typer.Option("--memory-budget", help="Search working memory, e.g. 512MB (streams blocks)."),
    ] = None,
    work_dir: Annotated[
        str | None, typer.Option("--work-dir", help="Keep the .npy embeddings here.")
    ] = None,
    scores: Annotated[bool, typer.Option("--scores", help="Add score columns.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str | None, typer.Option("--device", help="Encoder/torch device.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Mine hard negatives for (query, positive) pairs from a corpus and write triplets."""
    from contrastkit import mining

    try:
        table = mining.read_table(pairs)
        names = list(table)
        qcol = query_column or (names[0] if names else "query")
        pcol = positive_column or (names[1] if len(names) > 1 else "positive")
        anchors = mining.io.text_column(table, qcol, pairs)
        positives = mining.io.text_column(table, pcol, pairs)
        extra = None
        if corpus is not None:
            ctable = mining.read_table(corpus)
            extra = mining.io.text_column(ctable, corpus_column, corpus)
        mining.io.table_format(out)
        enc = mining.get_encoder(encoder, dim=dim, device=device)
        cols, mined = mining.mine_triplets(
            anchors,
            positives,
            enc,
            extra,
            batch_size=batch_size,
            work_dir=work_dir,
            output_scores=scores,
            anchor_column=qcol,
            positive_column=pcol,
            progress=progress,
            num_negatives=num_negatives,
            range_min=range_min,
            range_max=range_max,
            max_score=max_score,
            min_score=min_score,
            absolute_margin=absolute_margin,
            relative_margin=relative_margin,
            sampling_strategy=sampling,
            index=index,
            nprobe=nprobe,
            memory_budget=memory_budget,
            seed=seed,
            device=device,
        )
        mining.write_table(out, cols)
    except (ValueError, ImportError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(mining.summary(mined), err=True)
    typer.echo(f"wrote {len(cols['negative'])} triplets to {out}")


def _is_click_error(exc: BaseException) -> bool:
    """A click (or typer's vendored click) exception: it knows its message and exit code."""
    return callable(getattr(exc, "format_message", None)) and isinstance(
        getattr(exc, "exit_code", None), int
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``contrastkit`` console script. Usage errors (an unknown option or
    command, a value of the wrong type) end, like every other failure, in one ``error:`` line
    and exit code 2."""
    try:
        code = app(args=argv, prog_name="contrastkit", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if not _is_click_error(exc):
            raise
        ctx = getattr(exc, "ctx", None)
        message = " ".join(exc.format_message().split())
        if not message:  # no command given: the help was printed
            message = "missing command (the commands are listed above)"
        elif ctx is not None:
            typer.echo(f"Try '{ctx.command_path} --help' for help.", err=True)
        typer.echo(f"error: {message}", err=True)
        sys.exit(2 if exc.exit_code in (0, 1, 2) else exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
