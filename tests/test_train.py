"""Training system: config validation, config files, and resume after SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from contrastkit.train import load_config, train
from contrastkit.train.checkpoint import latest_checkpoint, load_checkpoint

SMALL = ["epochs=3", "batch_size=128", "checkpoint_every=4", "threads=1", "progress=false"]


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["bogus=1"], "unknown config field(s) ['bogus']"),
        (["epochs=0"], "'epochs' must be >= 1"),
        (["epochs='x'"], "'epochs' must be int"),
        (["lr=-1.0"], "'lr' must be positive"),
        (["loss='NoSuchLoss'"], "unknown loss 'NoSuchLoss'"),
        (["loss_params={temperature=-1.0}"], "'loss_params' for NTXent"),
        (["loss_params={tau=0.1}"], "'loss_params' for NTXent"),
        (["batch_size=1"], "'batch_size' must be >= 2"),
        (["epochs"], "must look like field=value"),
    ],
)
def test_bad_config_names_the_field(overrides, needle):
    with pytest.raises(ValueError) as err:
        load_config(overrides=overrides)
    assert needle in str(err.value)


def test_unknown_recipe_and_missing_file():
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        load_config("nope")
    with pytest.raises(ValueError, match="does not exist"):
        load_config(config_file="/no/such/file.toml")


def test_config_files_and_precedence(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('recipe = "supcon-digits"\nepochs = 7\n[loss_params]\ntemperature = 0.2\n')
    cfg = load_config(config_file=str(toml), overrides=["epochs=9"])
    assert (cfg.recipe, cfg.loss, cfg.epochs, cfg.labels) == ("supcon-digits", "SupCon", 9, True)
    assert cfg.loss_params == {"temperature": 0.2}
    yml = tmp_path / "c.yaml"
    yml.write_text("lr: 0.01\nseed: 3\n")
    cfg = load_config(config_file=str(yml))
    assert (cfg.recipe, cfg.lr, cfg.seed) == ("simclr-digits", 0.01, 3)


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    cfg = load_config(overrides=SMALL + ["max_steps=2", f"out_dir='{tmp_path}'"])
    train(cfg)
    with pytest.raises(ValueError, match="--resume"):
        train(cfg)


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import contrastkit.train.checkpoint as C
    from contrastkit.train import load_config, train

    real_save, calls = C.torch.save, []

    def dying_save(obj, path):
        calls.append(path)
        if len(calls) == 3:  # SIGKILL in the middle of writing the third checkpoint
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(obj, path)

    C.torch.save = dying_save
    train(load_config(overrides=sys.argv[1:]))
    """
)


def _weights(run_dir):
    return load_checkpoint(latest_checkpoint(run_dir))[0]


@pytest.mark.parametrize("recipe", ["simclr-digits", "supcon-digits"])
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, recipe):
    args = SMALL + [f"recipe='{recipe}'", f"out_dir='{tmp_path}'"]
    killed = subprocess.run([sys.executable, "-c", CHILD, *args, "name='killed'"])
    assert killed.returncode == -9
    ckpt = latest_checkpoint(tmp_path / "killed")
    assert ckpt is not None and ckpt.name == "step-00000008"  # the torn third one is ignored
    train(load_config(overrides=args + ["name='killed'"]), resume=True)
    train(load_config(overrides=args + ["name='clean'"]))
    a, b = _weights(tmp_path / "killed"), _weights(tmp_path / "clean")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = (tmp_path / "killed" / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 30 and log[-1].startswith("29,")


def test_run_writes_config_log_and_baseline_evaluation(tmp_path):
    import json

    summary = train(load_config(overrides=SMALL + ["max_steps=3", f"out_dir='{tmp_path}'"]))
    run = tmp_path / "simclr-digits"
    assert json.loads((run / "config.json").read_text())["max_steps"] == 3
    assert len((run / "train_log.csv").read_text().splitlines()) == 1 + 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["eval"]) == {"pixels", "trained", "random_init"}
    for scores in metrics["eval"].values():
        assert 10.0 < scores["knn_top1"] <= 100.0 and 10.0 < scores["linear_probe"] <= 100.0
    assert metrics["eval"] == summary["eval"]
