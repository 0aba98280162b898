"""Run configuration: named recipes, config files (TOML/YAML) and command-line overrides.

Every field is checked before training starts; a bad value fails with a ``ValueError`` that
names the field.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import torch

from contrastkit._extras import require

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = require("tomli", "train", "reading TOML config files on Python 3.10")


@dataclass
class TrainConfig:
    recipe: str = "simclr-digits"
    name: Optional[str] = None  # run directory runs/<name>; default: the recipe name
    out_dir: str = "runs"
    method: str = "two-view"  # two-view | moco | clip | simcse | pairs (contrastkit.train.methods)
    loss: str = "NTXent"
    loss_params: dict = field(default_factory=lambda: {"temperature": 0.1})
    labels: bool = False  # pass class labels to the loss (SupCon)
    epochs: int = 200  # digits: 5 steps of 256 per epoch, 1,000 steps (about a minute)
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | linear | constant, after the warmup
    warmup_steps: int = 0  # linear warmup from lr / warmup_steps to lr
    grad_clip: Optional[float] = None  # max global gradient norm (None: no clipping)
    hidden_dim: int = 256
    embed_dim: int = 64
    proj_dim: int = 32
    momentum: float = 0.99  # moco: key encoder EMA
    queue_size: int = 1024  # moco: negatives kept (below the 1,347 training digits)
    dropout: float = 0.1  # simcse: MiniLM hidden and attention dropout (the augmentation)
    max_length: int = 32  # simcse, pairs: tokens per sentence
    data: str = ""  # pairs: JSONL / CSV / TSV / Parquet file of pairs (contrastkit.data.TextPairs)
    columns: dict = field(default_factory=dict)  # pairs: column overrides, e.g. {anchor="q"}
    model: str = ""  # pairs: local transformers / sentence-transformers dir ("": offline MiniLM)
    mini_batch: Optional[int] = None  # pairs: GradCache chunk (peak memory of mini_batch rows)
    holdout: int = 256  # pairs: held out for Recall@1 (at most a fifth, drawn with split_seed)
    pooling: str = ""  # pairs: mean | cls | last ("": the model's own, mean for a plain model)
    eval_data: str = ""  # pairs: BEIR folder or STS file evaluated before and after training
    task: str = ""  # pairs: "docstrings" builds the docstring retrieval task (data + eval_data)
    mine_negatives: int = 0  # pairs: hard negatives per anchor mined from the positives (FAISS)
    mine_every: int = 0  # pairs: re-mine with the model being trained every K steps (0: once)
    mine_options: dict = field(default_factory=dict)  # pairs: filters, e.g. {relative_margin=0.05}
    mine_corpus: str = ""  # pairs: more documents to mine from (JSONL/CSV/TSV/Parquet/TXT, 'text')
    stream: bool = False  # pairs: read the file every epoch through a shuffle buffer (any size)
    image_model: str = "resnet18"  # image-text: timm architecture of the image tower
    image_weights: str = ""  # image-text: local safetensors weights of the tower ("": random)
    image_size: int = 64  # image-text: images resized and centre-cropped to this side
    shuffle_buffer: int = 10_000  # pairs, stream: examples held to shuffle the streamed file
    seed: int = 0  # initialisation, augmentation and data order
    split_seed: int = 0  # train/test split and probe views: fixed, so seeds compare on one split
    deterministic: bool = True  # torch.use_deterministic_algorithms during the run
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (CUDA when available)
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + gradient scaling, CUDA)
    threads: Optional[int] = None
    checkpoint_every: int = 20  # optimiser steps between checkpoints
    snapshot_every: int = 10  # steps between similarity / alignment-uniformity snapshots
    max_steps: Optional[int] = None  # stop early (tests, smoke runs)
    progress: bool = True
    tensorboard: bool = True
    report: bool = True  # write report.md with plots at the end


#: recipe name -> field overrides on top of the defaults
RECIPES: dict[str, dict[str, Any]] = {
    "simclr-digits": {},
    "supcon-digits": {"loss": "SupCon", "loss_params": {"temperature": 0.1}, "labels": True},
    "moco-digits": {
        "method": "moco",
        "loss": "InfoNCE",
        # MoCo v2 uses tau 0.2; on digits 0.1 is better (docs/benchmarks.md, recipe sweep)
        "loss_params": {"temperature": 0.1, "in_batch_negatives": False},
        "momentum": 0.999,
        "queue_size": 1024,
    },
    "clip-pairs": {"method": "clip", "loss": "CLIP", "loss_params": {}},
    "text-pairs": {
        "method": "pairs",
        "loss": "MultipleNegativesRanking",
        "loss_params": {},
        "epochs": 1,
        "batch_size": 32,
        "lr": 2e-5,
        "weight_decay": 0.01,
        "warmup_steps": 10,
        "max_length": 128,
        "checkpoint_every": 100,
        "snapshot_every": 50,
    },
    # fine-tune MiniLM on the docstring retrieval task (contrastkit.data.docstrings): nDCG@10
    # on held-out modules before vs after
    "docstring-retrieval": {
        "method": "pairs",
        "task": "docstrings",
        "loss": "MultipleNegativesRanking",
        "loss_params": {},
        "epochs": 1,
        "batch_size": 32,
        "lr": 5e-5,
        "weight_decay": 0.01,
        "warmup_steps": 5,
        "max_length": 96,
        "holdout": 0,
        "checkpoint_every": 10,
        "snapshot_every": 10,
    },
    # a timm image tower and a text tower on the user's captioned images
    "image-text": {
        "method": "image-text",
        "loss": "CLIP",
        "loss_params": {},
        "epochs": 5,
        "batch_size": 64,
        "lr": 1e-4,
        "weight_decay": 0.1,
        "warmup_steps": 10,
        "max_length": 32,
        "holdout": 256,
        "embed_dim": 256,
        "checkpoint_every": 50,
        "snapshot_every": 25,
    },
    "simcse-text": {
        "method": "simcse",
        "loss": "InfoNCE",
        "loss_params": {"temperature": 0.05},
        "epochs": 1,
        "batch_size": 64,
        "lr": 3e-5,
        "weight_decay": 0.0,
        "checkpoint_every": 8,
        "snapshot_every": 4,
    },
}

#: the filters of :func:`contrastkit.mining.mine_hard_negatives` a run may set (``mine_options``)
MINE_OPTIONS = (
    "range_min",
    "range_max",
    "max_score",
    "min_score",
    "absolute_margin",
    "relative_margin",
    "sampling_strategy",
)

#: one line per recipe for ``contrastkit train --help``
RECIPE_HELP: dict[str, str] = {
    "simclr-digits": "SimCLR (NT-Xent) on scikit-learn's digits (the default; about a minute)",
    "supcon-digits": "supervised contrastive (SupCon) on the digits and their labels",
    "moco-digits": "MoCo v2: momentum encoder and a queue of keys, on the digits",
    "clip-pairs": "CLIP on two towers: digits and their sinograms",
    "text-pairs": "fine-tune a text model on your own pairs file (--set data=pairs.jsonl)",
    "docstring-retrieval": "fine-tune MiniLM on the docstring retrieval task, nDCG@10 before/after",
    "image-text": "a timm image tower and a text tower on your captioned images (CLIP)",
    "simcse-text": "unsupervised SimCSE on MiniLM (dropout views of judged sentences)",
}


def field_help() -> list[tuple[str, str, str]]:
    """``(field, default, comment)`` of every :class:`TrainConfig` field, from this module's
    source (the comment after each field)."""
    import inspect
    import re

    out = []
    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):  # no source (frozen install)
        source = ""
    comments = {}
    for m in re.finditer(r"^\s+(\w+): [^=\n]+=(.*?)(?:#\s*(.*))?$", source, re.M):
        comments[m.group(1)] = (m.group(3) or "").strip()
    for f in fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, repr(default), comments.get(f.name, "")))
    return out


METHOD_NAMES = ("two-view", "moco", "clip", "simcse", "pairs", "image-text")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, total: int, warmup: int = 0, schedule: str = "cosine") -> float:
    """Multiplier of ``lr`` at optimiser step ``step`` of ``total``: a linear warmup over the
    first ``warmup`` steps (``(step + 1) / warmup``), then ``schedule`` over the rest (cosine
    to 0, linear to 0, or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(step - warmup, total - warmup) / max(total - warmup, 1)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    return 1.0


def _check_types(cfg: TrainConfig) -> None:
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name in ("name", "threads", "max_steps", "grad_clip", "mini_batch"):
            if f.name == "grad_clip":
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float))
                ):
                    raise ValueError(f"config field 'grad_clip' must be a number, got {value!r}")
                continue
            if value is not None and not isinstance(value, (str if f.name == "name" else int)):
                raise ValueError(f"config field {f.name!r} has the wrong type: {value!r}")
            continue
        want = type(default)
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ValueError(
                f"config field {f.name!r} must be {want.__name__}, got {type(value).__name__} "
                f"{value!r}"
            )


def _check_ranges(cfg: TrainConfig) -> None:
    from .rundir import check_run_name

    if cfg.name is not None:
        check_run_name(cfg.name)
    if not cfg.out_dir:
        raise ValueError("config field 'out_dir' must not be empty")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"config field 'lr' must be positive and finite, got {cfg.lr}")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise ValueError(
            f"config field 'weight_decay' must be finite and >= 0, got {cfg.weight_decay}"
        )
    if cfg.schedule not in SCHEDULES:
        raise ValueError(
            f"config field 'schedule' must be one of {SCHEDULES}, got {cfg.schedule!r}"
        )
    if cfg.warmup_steps < 0:
        raise ValueError(f"config field 'warmup_steps' must be >= 0, got {cfg.warmup_steps}")
    if cfg.grad_clip is not None and not (math.isfinite(cfg.grad_clip) and cfg.grad_clip > 0):
        raise ValueError(
            f"config field 'grad_clip' must be positive and finite, got {cfg.grad_clip}"
        )
    for name in ("threads", "max_steps", "mini_batch"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"config field {name!r} must be >= 1 when given, got {value}")
    from .methods import resolve_device

    device = resolve_device(cfg.device)
    if cfg.precision not in PRECISIONS:
        raise ValueError(
            f"config field 'precision' must be one of {PRECISIONS}, got {cfg.precision!r}"
        )
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("config field 'precision': 'fp16' needs device 'cuda'; use 'bf16'")
    for name in ("seed", "split_seed"):
        value = getattr(cfg, name)
        if not 0 <= value <= 2**63 - 1:
            raise ValueError(f"config field {name!r} must be in 0 .. 2**63 - 1, got {value}")


def _loss_parameters(cls) -> Optional[set]:
    """Keyword parameters of a loss class's constructor (None if it takes ``**kwargs``)."""
    import inspect

    params = inspect.signature(cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is not p.VAR_POSITIONAL}


def loss_terms(cfg: TrainConfig) -> list[tuple[float, str, dict]]:
    """``(weight, class name, parameters)`` of each term of ``cfg.loss``: one loss name
    (``"InfoNCE"``, parameters ``loss_params``) or a weighted sum (``"Alignment + Uniformity"``,
    ``"InfoNCE + 0.1 * FLOPS"``; parameters ``loss_params.<name>`` per term)."""
    from .. import losses
    from ..objective import parse_weighted_sum

    try:
        terms = parse_weighted_sum(cfg.loss)
    except ValueError as exc:
        raise ValueError(f"config field 'loss': {exc}") from None
    for _, name in terms:
        if not isinstance(getattr(losses, name, None), type):
            raise ValueError(f"config field 'loss': unknown loss {name!r} in contrastkit.losses")
    if len(terms) == 1:
        return [(terms[0][0], terms[0][1], dict(cfg.loss_params))]
    names = [name for _, name in terms]
    extra = sorted(set(cfg.loss_params) - set(names))
    if extra:
        raise ValueError(
            f"config field 'loss_params': with a sum of losses, give each term's parameters "
            f"under its name (loss_params.{names[0]}.temperature = ...); {extra} is not a term "
            f"of {cfg.loss!r}"
        )
    out = []
    for weight, name in terms:
        params = cfg.loss_params.get(name, {})
        if not isinstance(params, dict):
            raise ValueError(f"config field 'loss_params.{name}' must be a table, got {params!r}")
        out.append((weight, name, dict(params)))
    return out


def build_loss(cfg: TrainConfig) -> torch.nn.Module:
    """The loss module of ``cfg``: one loss, or a :class:`~contrastkit.objective.WeightedSum`
    when ``cfg.loss`` is a sum or carries a weight."""
    from .. import losses
    from ..objective import WeightedSum

    terms = loss_terms(cfg)
    built = []
    for weight, name, params in terms:
        cls = getattr(losses, name)
        known = _loss_parameters(cls)
        where = "loss_params" if len(terms) == 1 else f"loss_params.{name}"
        if known is not None:
            extra = sorted(set(params) - known)
            if extra:
                raise ValueError(
                    f"config field {where!r}: {name} does not take {extra}; "
                    f"its parameters are {sorted(known)}"
                )
        try:
            built.append((weight, cls(**params)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config field {where!r} for {name}: {exc}") from None
    if len(built) == 1 and built[0][0] == 1.0:
        return built[0][1]
    return WeightedSum(built)


def _check_loss(cfg: TrainConfig) -> None:
    """The loss exists, takes the given parameters, and accepts the method's inputs."""
    from .methods import loss_inputs

    loss_fn = build_loss(cfg)
    inputs = loss_inputs(cfg)
    try:
        value = loss_fn(*inputs)
        if not (isinstance(value, torch.Tensor) and value.dim() == 0):
            raise TypeError("it does not return a scalar loss")
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        labels = " with labels" if cfg.labels else ""
        raise ValueError(
            f"config field 'loss': {cfg.loss} does not accept the inputs of method "
            f"{cfg.method!r}{labels} (tensors of shape {shapes}): {exc}"
        ) from None


def _check_pairs(cfg: TrainConfig) -> None:
    """The fields of method ``pairs`` (the data file itself is read, never executed, when the
    run starts: a bad row is a ``DataError`` naming file, line and column)."""
    image_fields = ("image_model", "image_weights", "image_size")
    if cfg.method != "image-text":
        for name in image_fields:
            if getattr(cfg, name) != getattr(TrainConfig(), name):
                raise ValueError(
                    f"config field {name!r} is only used by method 'image-text', not {cfg.method!r}"
                )
    if cfg.method == "image-text":
        for name in ("task", "stream", "mine_negatives", "mine_every", "mini_batch", "eval_data"):
            if getattr(cfg, name) != getattr(TrainConfig(), name):
                raise ValueError(f"config field {name!r} is not used by method 'image-text'")
        if not cfg.data:
            raise ValueError(
                "config field 'data' is required by method 'image-text': a CSV / TSV / JSONL / "
                "Parquet table of image paths and captions, e.g. --set data='captions.csv'"
            )
        if cfg.image_size < 8:
            raise ValueError(f"config field 'image_size' must be >= 8, got {cfg.image_size}")
        return
    if cfg.method != "pairs":
        for name in (
            "data",
            "model",
            "columns",
            "mini_batch",
            "pooling",
            "eval_data",
            "task",
            "mine_negatives",
            "mine_every",
            "mine_options",
            "mine_corpus",
            "stream",
            "shuffle_buffer",
        ):
            if getattr(cfg, name) != getattr(TrainConfig(), name):
                raise ValueError(
                    f"config field {name!r} is only used by method 'pairs', not {cfg.method!r}"
                )
        return
    if cfg.task not in ("", "docstrings"):
        raise ValueError(f"config field 'task' must be '' or 'docstrings', got {cfg.task!r}")
    if cfg.task and (cfg.data or cfg.eval_data):
        raise ValueError(
            f"config field 'task' ({cfg.task!r}) builds the training and evaluation data; "
            "leave 'data' and 'eval_data' empty"
        )
    if not cfg.data and not cfg.task:
        raise ValueError(
            "config field 'data' is required by method 'pairs': the path of a JSONL, CSV, TSV "
            "or Parquet file of (anchor, positive) pairs, e.g. --set data='pairs.jsonl'"
        )
    for name in ("mine_negatives", "mine_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"config field {name!r} must be >= 0, got {getattr(cfg, name)}")
    if cfg.shuffle_buffer < 1:
        raise ValueError(f"config field 'shuffle_buffer' must be >= 1, got {cfg.shuffle_buffer}")
    if cfg.stream and (cfg.task or cfg.mine_negatives):
        raise ValueError(
            "config field 'stream' reads a pairs file ('data') without holding it; "
            "'task' and 'mine_negatives' need the pairs in memory (stream = false)"
        )
    if cfg.mine_corpus and not cfg.mine_negatives:
        raise ValueError("config field 'mine_corpus' needs 'mine_negatives' >= 1")
    if cfg.mine_every and not cfg.mine_negatives:
        raise ValueError("config field 'mine_every' needs 'mine_negatives' >= 1")
    extra = sorted(set(cfg.mine_options) - set(MINE_OPTIONS))
    if extra:
        raise ValueError(
            f"config field 'mine_options': unknown {extra}; the options are {list(MINE_OPTIONS)}"
        )
    if cfg.pooling not in ("", "mean", "cls", "last"):
        raise ValueError(
            f"config field 'pooling' must be 'mean', 'cls', 'last' or '' (the model's own), "
            f"got {cfg.pooling!r}"
        )
    if cfg.holdout < 0:
        raise ValueError(f"config field 'holdout' must be >= 0, got {cfg.holdout}")
    from ..data.text import _check_overrides

    try:
        _check_overrides(cfg.columns)
    except ValueError as exc:
        raise ValueError(f"config field 'columns': {exc}") from None


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every field; names the field in the error."""
    _check_types(cfg)
    if cfg.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {cfg.recipe!r}; choose one of {sorted(RECIPES)}")
    loss_terms(cfg)  # the loss names exist (their parameters are checked below)
    if cfg.method not in METHOD_NAMES:
        raise ValueError(f"config field 'method' must be one of {METHOD_NAMES}, got {cfg.method!r}")
    if cfg.method == "moco" and cfg.loss not in ("InfoNCE", "MultipleNegativesRanking"):
        raise ValueError(
            f"config field 'loss': method 'moco' needs a loss taking (query, key, negatives) "
            f"(InfoNCE or MultipleNegativesRanking), got {cfg.loss!r}"
        )
    if cfg.labels and cfg.method != "two-view":
        raise ValueError(
            f"config field 'labels' is only used by method 'two-view', not {cfg.method!r}"
        )
    if not 0.0 <= cfg.momentum < 1.0:
        raise ValueError(f"config field 'momentum' must be in [0, 1), got {cfg.momentum}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"config field 'dropout' must be in [0, 1), got {cfg.dropout}")
    for name in (
        "epochs",
        "batch_size",
        "hidden_dim",
        "embed_dim",
        "proj_dim",
        "checkpoint_every",
        "snapshot_every",
        "queue_size",
        "max_length",
    ):
        if getattr(cfg, name) < 1:
            raise ValueError(f"config field {name!r} must be >= 1, got {getattr(cfg, name)}")
    if cfg.batch_size < 2:
        raise ValueError(f"config field 'batch_size' must be >= 2, got {cfg.batch_size}")
    _check_pairs(cfg)
    _check_ranges(cfg)
    _check_loss(cfg)
    return cfg


def _read_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {path!r} does not exist")
    if p.suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"config file {path!r}: use .toml, .yaml or .yml")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            yaml = require("yaml", "train", "reading YAML config files")
            data = yaml.safe_load(text) or {}
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path!r} is not UTF-8 text ({exc.reason})") from None
    except Exception as exc:  # TOMLDecodeError, yaml.YAMLError: report, never a traceback
        raise ValueError(f"config file {path!r}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"config file {path!r} must hold a mapping of field names")
    return data


def _parse_value(text: str) -> Any:
    """Command-line values: TOML syntax (numbers, booleans, inline tables), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(overrides: Optional[list[str]]) -> dict[str, Any]:
    """``field=value`` items (TOML values; ``table.key=value`` sets one key of a table) into
    one nested mapping, later items winning."""
    values: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like field=value")
        key, text = item.split("=", 1)
        parts = [k.strip() for k in key.split(".")]
        if not all(parts):
            raise ValueError(f"override {item!r}: empty field name")
        layer = {parts[-1]: _parse_value(text.strip())}
        for part in reversed(parts[:-1]):
            layer = {part: layer}
        values = merge(values, layer)
    return values


def merge(base: dict, layer: dict) -> dict:
    """``layer`` over ``base``: tables merge key by key. Setting ``loss`` to another loss
    without giving ``loss_params`` in the same layer drops the old loss's parameters, so each
    loss starts from its own defaults."""
    out = dict(base)
    if "loss" in layer and layer["loss"] != base.get("loss"):
        out["loss_params"] = {}
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value) if key != "loss_params" else {**out[key], **value}
        else:
            out[key] = value
    return out


def _build(values: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(known)}")
    return validate(TrainConfig(**values))


def _layers(recipe, config_file, overrides) -> tuple[str, list[dict]]:
    layers = []
    if config_file:
        layers.append(_read_file(config_file))
    layers.append(parse_overrides(overrides))
    name = recipe
    for layer in layers:
        name = name if recipe else layer.get("recipe", name)
    return name or "simclr-digits", layers


def load_config(
    recipe: Optional[str] = None,
    config_file: Optional[str] = None,
    overrides: Optional[list[str]] = None,
) -> TrainConfig:
    """Defaults <- recipe <- config file <- ``key=value`` overrides; then :func:`validate`.

    Tables merge (``--set loss_params.temperature=0.2`` or ``--set
    loss_params='{temperature=0.2}'`` keeps the recipe's other loss parameters); choosing
    another ``loss`` starts its parameters from that loss's defaults.
    """
    name, layers = _layers(recipe, config_file, overrides)
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    values = merge(asdict_defaults(), RECIPES[name])
    for layer in layers:
        values = merge(values, layer)
    values["recipe"] = name
    return _build(values)


def asdict_defaults() -> dict:
    return dataclasses.asdict(TrainConfig())


#: fields ``--resume`` may change (they do not alter what was trained so far)
RESUME_SAFE = frozenset(
    {
        "epochs",
        "max_steps",
        "threads",
        "progress",
        "tensorboard",
        "report",
        "checkpoint_every",
        "snapshot_every",
        "device",
    }
)


def resume_changes(saved: TrainConfig, cfg: TrainConfig) -> dict:
    """The fields in which ``cfg`` differs from a run's ``saved`` configuration; raises
    ``ValueError`` naming them if any is outside :data:`RESUME_SAFE`."""
    old, new = dataclasses.asdict(saved), dataclasses.asdict(cfg)
    # name and out_dir only locate the run (it may have been moved or renamed)
    changed = {k: new[k] for k in new if new[k] != old[k] and k not in ("name", "out_dir")}
    unsafe = sorted(set(changed) - RESUME_SAFE)
    if unsafe:
        detail = ", ".join(f"{k}: run has {old[k]!r}, given {new[k]!r}" for k in unsafe)
        raise ValueError(
            f"--resume keeps the run's own configuration; cannot change {unsafe} ({detail}). "
            f"Fields that may change on resume: {sorted(RESUME_SAFE)}"
        )
    return changed


def read_run_config(run_dir: Path) -> TrainConfig:
    """A run's ``config.json`` as a validated :class:`TrainConfig` (errors name the file)."""
    import json

    path = Path(run_dir) / "config.json"
    if not path.is_file() or path.is_symlink():
        raise ValueError(f"run {str(run_dir)!r} has no config.json")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise ValueError("not a mapping")
        return load_config_dict(values)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_resume_config(
    recipe: Optional[str] = None,
    config_file: Optional[str] = None,
    overrides: Optional[list[str]] = None,
) -> TrainConfig:
    """The configuration to resume a run with: the run's own ``config.json`` (the run is
    ``<out_dir>/<name>``, ``name`` defaulting to the recipe), with ``--set`` / config-file
    values applied only where :data:`RESUME_SAFE` allows (or where they equal the saved ones).
    """
    from .rundir import is_run, run_path

    name, layers = _layers(recipe, config_file, overrides)
    given: dict = {}
    for layer in layers:
        given = merge(given, layer)
    run_name = given.get("name") or name
    run_dir = run_path(given.get("out_dir", "runs"), run_name)
    if not is_run(run_dir):
        raise ValueError(f"--resume: no run {str(run_dir)!r} to resume (start it without --resume)")
    saved = read_run_config(run_dir)
    values = merge(dataclasses.asdict(saved), given)
    values["name"], values["out_dir"] = run_name, given.get("out_dir", "runs")
    if recipe is not None:
        values["recipe"] = recipe
    cfg = _build(values)
    resume_changes(saved, cfg)
    return cfg


def load_config_dict(values: dict) -> TrainConfig:
    """A saved run's ``config.json`` back into a validated :class:`TrainConfig`."""
    return _build(values)
