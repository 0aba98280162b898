"""Run configuration: named recipes, config files (TOML/YAML) and command-line overrides.

Every field is checked before training starts; a bad value fails with a ``ValueError`` that
names the field.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TrainConfig:
    recipe: str = "simclr-digits"
    name: Optional[str] = None  # run directory runs/<name>; default: the recipe name
    out_dir: str = "runs"
    method: str = "two-view"  # two-view | moco | clip | simcse (see contrastkit.train.methods)
    loss: str = "NTXent"
    loss_params: dict = field(default_factory=lambda: {"temperature": 0.1})
    labels: bool = False  # pass class labels to the loss (SupCon)
    epochs: int = 200  # digits: 5 steps of 256 per epoch, 1,000 steps (about a minute)
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden_dim: int = 256
    embed_dim: int = 64
    proj_dim: int = 32
    momentum: float = 0.99  # moco: key encoder EMA
    queue_size: int = 1024  # moco: negatives kept (below the 1,347 training digits)
    dropout: float = 0.1  # simcse: MiniLM hidden and attention dropout (the augmentation)
    max_length: int = 32  # simcse: tokens per sentence
    seed: int = 0
    deterministic: bool = True  # torch.use_deterministic_algorithms during the run
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
    "clip-pairs": {"method": "clip", "loss": "CLIPLoss", "loss_params": {}},
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

METHOD_NAMES = ("two-view", "moco", "clip", "simcse")


def _check_types(cfg: TrainConfig) -> None:
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name in ("name", "threads", "max_steps"):
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


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every field; names the field in the error."""
    from .. import losses

    _check_types(cfg)
    if cfg.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {cfg.recipe!r}; choose one of {sorted(RECIPES)}")
    if not isinstance(getattr(losses, cfg.loss, None), type):
        raise ValueError(f"config field 'loss': unknown loss {cfg.loss!r} in contrastkit.losses")
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
    for name in ("lr", "weight_decay"):
        if getattr(cfg, name) < 0 or (name == "lr" and cfg.lr == 0):
            raise ValueError(f"config field {name!r} must be positive, got {getattr(cfg, name)}")
    try:
        getattr(losses, cfg.loss)(**cfg.loss_params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config field 'loss_params' for {cfg.loss}: {exc}") from None
    return cfg


def _read_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {path!r} does not exist")
    text = p.read_text()
    if p.suffix == ".toml":
        return tomllib.loads(text)
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path!r} must hold a mapping")
        return data
    raise ValueError(f"config file {path!r}: use .toml, .yaml or .yml")


def _parse_value(text: str) -> Any:
    """Command-line values: TOML syntax (numbers, booleans, inline tables), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(
    recipe: Optional[str] = None,
    config_file: Optional[str] = None,
    overrides: Optional[list[str]] = None,
) -> TrainConfig:
    """Defaults <- recipe <- config file <- ``key=value`` overrides; then :func:`validate`."""
    values: dict[str, Any] = {}
    if config_file:
        values.update(_read_file(config_file))
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like field=value")
        key, text = item.split("=", 1)
        values[key.strip()] = _parse_value(text.strip())
    name = recipe or values.get("recipe", "simclr-digits")
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    merged = {**RECIPES[name], **values, "recipe": name}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(known)}")
    return validate(TrainConfig(**merged))


def load_config_dict(values: dict) -> TrainConfig:
    """A saved run's ``config.json`` back into a validated :class:`TrainConfig`."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(known)}")
    return validate(TrainConfig(**values))
