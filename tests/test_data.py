"""contrastkit.data: streamed readers for JSONL / CSV / TSV / Parquet / Hugging Face datasets,
text pairs with sentence-transformers' column names, BEIR, STS, image-text pairs, and errors
that name file, line and column."""

from __future__ import annotations

import csv
import json
import pickle
import sys
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from contrastkit.data import (
    BadRows,
    DataError,
    ImageTextPairs,
    MissingDependency,
    RowReader,
    TextExample,
    TextPairs,
    load_beir,
    load_hf_dataset,
    load_sts,
    resolve_columns,
)

ROWS = [
    {
        "anchor": "what is a cat?",
        "positive": "A cat is a small, furry animal.",
        "negative_1": 'a "quoted" dog',
        "negative_2": "tabs\tand\nnewlines",
        "label": 1,
        "score": 0.75,
        "teacher_scores": [0.9, 0.2, 0.1],
    },
    {
        "anchor": "héllo wörld ✓",
        "positive": "日本語のテキスト",
        "negative_1": "comma, separated",
        "negative_2": "-",
        "label": 0,
        "score": -2.5,
        "teacher_scores": [1.0, 0.0, -1.0],
    },
]
EXPECTED = [
    TextExample(
        r["anchor"],
        r["positive"],
        [r["negative_1"], r["negative_2"]],
        r["label"],
        r["score"],
        r["teacher_scores"],
    )
    for r in ROWS
]


def write(path, rows, fmt=None):
    """Write ``rows`` (dicts) as JSONL / CSV / TSV / Parquet (lists as JSON in CSV/TSV)."""
    fmt = fmt or path.suffix.lstrip(".")
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    elif fmt in ("csv", "tsv"):
        names = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, names, delimiter="\t" if fmt == "tsv" else ",")
            w.writeheader()
            for r in rows:
                w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    elif fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1)
    return path


# -- formats -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "parquet"])
def test_every_format_round_trips_the_same_examples(tmp_path, fmt):
    path = write(tmp_path / f"train.{fmt}", ROWS)
    got = list(TextPairs(path))
    assert got == EXPECTED
    assert [e.location.line or e.location.row for e in got][0] == (2 if fmt in "csvtsv" else 1)
    batch = TextPairs.collate(got)
    assert batch["negatives"][1] == ["comma, separated", "-"]
    assert torch.equal(batch["label"], torch.tensor([1, 0]))
    assert batch["teacher_scores"].shape == (2, 3)


def test_hf_directory_round_trips(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert list(TextPairs(tmp_path / "ds")) == EXPECTED
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    ).save_to_disk(str(tmp_path / "dd"))
    assert list(TextPairs(tmp_path / "dd", split="test")) == EXPECTED[:1]
    with pytest.raises(DataError, match="pass split="):
        TextPairs(tmp_path / "dd")
    assert list(TextPairs(load_hf_dataset(tmp_path / "ds"))) == EXPECTED


def test_missing_datasets_package_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset_info.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(MissingDependency, match=r"contrastkit\[data\]") as info:
        TextPairs(tmp_path / "ds")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ImportError)
    with pytest.raises(ValueError, match="datasets"):
        load_hf_dataset(tmp_path / "ds")


def test_reading_is_lazy():
    read = []

    def lines():  # a stream that fails past its second line
        for i, line in enumerate([b"anchor,positive\n", b"a,b\n"] + [b"c,d\n"] * 10):
            if i >= 3:
                raise AssertionError("read past the first row")
            read.append(i)
            yield line

    where, row = next(iter(RowReader(lines(), "csv", name="pipe")))
    assert (str(where), row) == ("pipe:2", {"anchor": "a", "positive": "b"})
    assert read == [0, 1]


def test_reads_from_a_pipe_while_it_is_written():
    import os
    import threading

    r, w = os.pipe()
    first_read = threading.Event()

    def writer():
        with os.fdopen(w, "wb") as f:
            f.write(b'{"anchor": "a", "positive": "b"}\n')
            f.flush()
            first_read.wait(10)  # the rest comes only once the first row has been read
            f.write(b'{"anchor": "c", "positive": "d"}\n')

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(r, "rb") as f:
        rows = iter(RowReader(f, "jsonl", name="pipe"))
        where, row = next(rows)
        still_writing = thread.is_alive()
        first_read.set()
        rest = [r["anchor"] for _, r in rows]
    thread.join()
    assert (str(where), row["anchor"], rest, still_writing) == ("pipe:1", "a", ["c"], True)


def test_first_example_of_a_big_file_without_reading_the_rest(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(20_000):
            f.write(json.dumps({"query": f"q{i}", "positive": f"p{i}"}) + "\n")
        f.write("{ not json\n")  # only a full read would reach this
    it = iter(TextPairs(path))
    assert next(it).anchor == "q0"
    with pytest.raises(DataError, match=r"big.jsonl:20001: not valid JSON"):
        list(it)


def test_parquet_streams_by_batches(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"anchor": f"a{i}", "positive": f"p{i}"} for i in range(50)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet", row_group_size=10)
    reader = RowReader(tmp_path / "x.parquet", batch_size=4)
    got = list(reader)
    assert reader.columns == ["anchor", "positive"]
    name = tmp_path / "x.parquet"
    assert [str(w) for w, _ in got[:2]] == [f"{name} row 1", f"{name} row 2"]
    assert [r["anchor"] for _, r in got] == [f"a{i}" for i in range(50)]


def test_workers_and_ranks_each_get_a_disjoint_share(tmp_path):
    path = write(tmp_path / "t.jsonl", [{"anchor": f"a{i}", "positive": "p"} for i in range(11)])
    loader = DataLoader(TextPairs(path), batch_size=3, num_workers=2, collate_fn=TextPairs.collate)
    seen = [a for batch in loader for a in batch["anchor"]]
    assert sorted(seen) == sorted(f"a{i}" for i in range(11))
    shares = [[e.anchor for e in TextPairs(path, rank=r, world_size=3)] for r in range(3)]
    assert sorted(sum(shares, [])) == sorted(f"a{i}" for i in range(11))
    assert shares[1] == ["a1", "a4", "a7", "a10"]
    with open(path, "a") as f:  # row 11 (0-based) is rank 2's: the others never parse it
        f.write("{ not json\n")
    assert [e.anchor for e in TextPairs(path, rank=0, world_size=3)] == shares[0]
    with pytest.raises(DataError, match=r"t.jsonl:12: not valid JSON"):
        list(TextPairs(path, rank=2, world_size=3))
    err = pickle.loads(pickle.dumps(DataError("bad", file="f.csv", line=3, column="score")))
    assert (str(err), err.file, err.line, err.column) == ("f.csv:3: column 'score': bad",) + (
        "f.csv",
        3,
        "score",
    )


# -- column mapping ----------------------------------------------------------------------------
def test_sentence_transformers_column_names():
    m = resolve_columns(["sentence1", "sentence2", "score"])
    assert (m.anchor, m.positive, m.score, m.label) == ("sentence1", "sentence2", "score", None)
    m = resolve_columns(["premise", "hypothesis", "label"])
    assert (m.anchor, m.positive, m.label) == ("premise", "hypothesis", "label")
    m = resolve_columns(["query", "answer", "negative_10", "negative_2", "negative"])
    assert m.negatives == ("negative", "negative_2", "negative_10")
    m = resolve_columns(["sent0", "sent1", "hard_neg"])
    assert (m.anchor, m.positive, m.negatives) == ("sent0", "sent1", ("hard_neg",))
    m = resolve_columns(["Sentence_A", "Sentence_B", "relatedness_score"])
    assert (m.anchor, m.positive, m.score) == ("Sentence_A", "Sentence_B", "relatedness_score")
    m = resolve_columns(["anchor", "positive", "negative", "positive_score", "negative_score"])
    assert m.teacher_score_columns == ("positive_score", "negative_score")
    m = resolve_columns(["q", "doc", "n1", "n2", "label"], {"anchor": "q", "positive": "doc",
                        "negatives": ["n1", "n2"], "label": None})  # fmt: skip
    assert (m.anchor, m.negatives, m.label) == ("q", ("n1", "n2"), None)
    assert resolve_columns(["text1"], require_positive=False).positive is None


def test_list_columns_in_csv_hold_json_arrays(tmp_path):
    rows = [{"q": "a", "p": "b", "negs": ["x", "y, z"], "teacher": [1, 0.5, 0]}]
    p = write(tmp_path / "l.csv", rows)
    cols = {"anchor": "q", "positive": "p", "negatives": "negs", "teacher_scores": "teacher"}
    (e,) = TextPairs(p, columns=cols)
    assert (e.negatives, e.teacher_scores) == (["x", "y, z"], [1.0, 0.5, 0.0])
    p.write_text("q,p,negs\na,b,not json\n")
    with pytest.raises(DataError, match=r"l.csv:2: column 'negs': expected a JSON array"):
        list(TextPairs(p, columns={"anchor": "q", "positive": "p", "negatives": "negs"}))


def test_column_mapping_errors():
    with pytest.raises(ValueError, match=r"could each be the anchor"):
        resolve_columns(["query", "question", "positive"])
    with pytest.raises(ValueError, match="no positive column"):
        resolve_columns(["anchor", "foo"])
    with pytest.raises(ValueError, match="no anchor column"):
        resolve_columns(["foo", "positive"])
    with pytest.raises(ValueError, match="unknown field"):
        resolve_columns(["anchor", "positive"], {"anchors": "anchor"})
    with pytest.raises(ValueError, match="cover only some candidates"):
        resolve_columns(["anchor", "positive", "negative", "positive_score"])


def test_mined_triplets_read_back_with_teacher_scores(tmp_path):
    from contrastkit.mining.io import write_table

    cols = {"anchor": ["a"], "positive": ["p"], "negative": ["n"]}
    write_table(tmp_path / "m.csv", {**cols, "positive_score": [0.8], "negative_score": [0.3]})
    (e,) = TextPairs(tmp_path / "m.csv")
    assert (e.texts, e.teacher_scores) == (["a", "p", "n"], [0.8, 0.3])


# -- bad data ----------------------------------------------------------------------------------
def fails(path, line, column, match, **kw):
    with pytest.raises(DataError, match=match) as info:
        list(TextPairs(path, **kw))
    err = info.value
    assert (err.file, err.line, err.column) == (str(path), line, column), str(err)
    assert str(path) in str(err)
    return err


def test_missing_column_empty_text_and_bad_score_name_file_line_and_column(tmp_path):
    good = {"anchor": "a", "positive": "p", "score": 1}
    p = write(tmp_path / "m.jsonl", [good, {"anchor": "a", "score": 1}])
    fails(p, 2, "positive", "missing column|no positive column")
    p = write(tmp_path / "e.jsonl", [good, good, {"anchor": "a", "positive": "  ", "score": 1}])
    fails(p, 3, "positive", "empty text")
    p = write(tmp_path / "n.jsonl", [good, {"anchor": "a", "positive": None, "score": 1}])
    fails(p, 2, "positive", r"missing value \(null\)")
    p = write(tmp_path / "s.csv", [good, {"anchor": "a", "positive": "p", "score": "high"}])
    fails(p, 3, "score", "bad score 'high'")
    p = write(tmp_path / "f.csv", [good, {"anchor": "a", "positive": "p", "score": "nan"}])
    fails(p, 3, "score", "not finite")
    p = write(tmp_path / "t.jsonl", [{**good, "teacher_scores": [1, 2, 3]}])
    fails(p, 1, "teacher_scores", "3 teacher scores for 1 candidates")
    p = write(tmp_path / "h.csv", [good])  # a column named in columns= but absent: the header
    fails(p, 1, "query", "missing column", columns={"anchor": "query"})
    p = write(tmp_path / "c.csv", [good])
    p.write_text(p.read_text() + "a,p,1,extra\n")
    fails(p, 3, None, "4 cells, but the header has 3")


def test_non_utf8_names_line_and_byte_column(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"anchor": "a", "positive": "b"}\n{"anchor": "caf\xe9", "positive": "b"}\n')
    err = fails(p, 2, 16, "not valid UTF-8")
    assert "0xe9" in str(err)
    p = tmp_path / "bad.csv"
    p.write_bytes(b"anchor,positive\na,b\nok,caf\xe9\n")
    fails(p, 3, 7, "not valid UTF-8")
    p = tmp_path / "bad.tsv"
    p.write_bytes(b"anchor\tpositive\n\xff\tb\n")
    fails(p, 2, 1, "not valid UTF-8")


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        TextPairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("a\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        list(TextPairs(tmp_path / "x.txt"))
    (tmp_path / "arr.json").write_text('[{"anchor": "a"}]\n')
    with pytest.raises(DataError, match="JSON array is not JSON Lines"):
        list(TextPairs(tmp_path / "arr.json"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="no rows"):
        list(TextPairs(tmp_path / "empty.csv"))


def test_skip_bad_rows_counts_and_reports(tmp_path):
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(
        b'{"anchor": "a", "positive": "b"}\n'
        b'{"anchor": "", "positive": "b"}\n'
        b"not json\n"
        b'{"anchor": "\xff", "positive": "b"}\n'
        b'{"anchor": "c", "positive": "d", "score": "x"}\n'
        b'{"anchor": "e", "positive": "f"}\n'
    )
    ds = TextPairs(p, skip_bad_rows=True)
    with pytest.warns(UserWarning, match=r"skipped 4 bad row\(s\)") as rec:
        got = [e.anchor for e in ds]
    assert got == ["a", "e"]
    assert ds.bad_rows.count == 4
    assert [e.line for e in ds.bad_rows.errors] == [2, 3, 4, 5]
    assert f"{p}:2: column 'anchor': empty text" in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(TextPairs(write(tmp_path / "ok.jsonl", ROWS), skip_bad_rows=True))) == 2
    rows = BadRows(skip=False)
    with pytest.raises(DataError):
        rows.handle(DataError("x", file="f", line=1))


# -- BEIR --------------------------------------------------------------------------------------
def beir(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t2\nq2\td2\t1\n"):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    write(root / "corpus.jsonl", [
        {"_id": "d1", "title": "Cats", "text": "Cats purr."},
        {"_id": "d2", "text": "Dogs bark."},
        {"_id": "d3", "title": "Birds", "text": ""},
    ])  # fmt: skip
    write(root / "queries.jsonl", [
        {"_id": "q1", "text": "pets that purr"},
        {"_id": "q2", "text": "barking"},
        {"_id": "q3", "text": "unjudged"},
    ])  # fmt: skip
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def test_beir_layout(tmp_path):
    data = load_beir(beir(tmp_path))
    assert list(data.queries) == ["q1", "q2"]  # q3 has no judgement in test
    assert data.corpus["d1"] == {"title": "Cats", "text": "Cats purr."}
    assert data.qrels == {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
    assert data.documents() == ["Cats Cats purr.", "Dogs bark.", "Birds"]
    assert torch.equal(data.relevance(), torch.tensor([[1.0, 0, 2], [0, 1, 0]]))
    assert len(load_beir(beir(tmp_path / "2"), only_judged=False).queries) == 3

    from contrastkit.metrics import ndcg_at_k

    assert ndcg_at_k(data.relevance(), data.relevance(), k=3) == pytest.approx(1.0)


def test_beir_errors(tmp_path):
    root = beir(tmp_path, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\n")
    with pytest.raises(DataError, match="unknown document id 'd9'") as info:
        load_beir(root)
    qrels = str(root / "qrels" / "test.tsv")
    assert (info.value.file, info.value.line, info.value.column) == (qrels, 3, "corpus-id")
    assert load_beir(root, check_ids=False).unknown_ids == 1
    root = beir(tmp_path / "b", "query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(DataError, match=r"test.tsv:2: column 'score': bad score 'yes'"):
        load_beir(root)
    with pytest.raises(DataError, match=r"missing BEIR file qrels \(qrels splits here: \['test"):
        load_beir(root, split="dev")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n{"_id": "q1", "text": "y"}\n')
    with pytest.raises(DataError, match=r"queries.jsonl:2: column '_id': duplicate query id"):
        load_beir(root)


# -- STS ---------------------------------------------------------------------------------------
def test_sts_pairs_and_normalisation(tmp_path):
    scores = [0, 2.5, 5]
    rows = [{"sentence1": f"s{i}", "sentence2": f"t{i}", "score": s} for i, s in enumerate(scores)]
    p = write(tmp_path / "sts.csv", rows)
    sts = load_sts(p)
    assert (sts.sentences1, sts.scores, len(sts)) == (["s0", "s1", "s2"], [0.0, 2.5, 5.0], 3)
    assert load_sts(p, score_range=(0, 5), normalize=True).scores == [0.0, 0.5, 1.0]
    assert load_sts(p, normalize=True).scores == [0.0, 0.5, 1.0]
    assert sts.gold.dtype == torch.float64
    with pytest.raises(DataError, match=r"sts.csv:4: column 'score': score 5.0 outside"):
        load_sts(p, score_range=(0, 4))
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(load_sts(p, score_range=(0, 4), skip_bad_rows=True)) == 2
    labelled = [{"sentence_A": "a", "sentence_B": "b", "label": "0.25"}]
    assert load_sts(write(tmp_path / "l.tsv", labelled)).scores == [0.25]
    with pytest.raises(DataError, match="no score column"):
        load_sts(write(tmp_path / "x.jsonl", [{"sentence1": "a", "sentence2": "b"}]))


# -- images ------------------------------------------------------------------------------------
@pytest.fixture
def images(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "img").mkdir()
    Image.new("RGB", (4, 3), (255, 0, 0)).save(tmp_path / "img" / "red.png")
    Image.new("L", (2, 2), 128).save(tmp_path / "img" / "grey.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (1, 1)).save(tmp_path / "outside.png")
    (tmp_path / "data").mkdir()
    return tmp_path


def test_image_text_pairs(images):
    p = write(images / "img" / "c.csv", [
        {"filepath": "red.png", "title": "a red square"},
        {"filepath": "grey.png", "title": "a grey square"},
    ])  # fmt: skip

    def to_tensor(im):
        pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        return pixels.view(im.height, im.width, 3)

    got = list(ImageTextPairs(p))
    assert [c for _, c in got] == ["a red square", "a grey square"]
    assert got[0][0].size == (4, 3) and got[1][0].mode == "RGB"
    pairs = ImageTextPairs(p, transform=to_tensor)
    assert pairs.__iter__().__next__()[0][0, 0].tolist() == [255, 0, 0]
    j = write(images / "data" / "c.jsonl", [{"image": "img/red.png", "caption": "up"}])
    ((image, caption),) = ImageTextPairs(j, root=images)  # paths relative to root=
    assert caption == "up"


def test_image_errors_name_file_line_and_column(images):
    p = write(images / "img" / "c.csv", [
        {"image": "red.png", "caption": "ok"},
        {"image": "broken.png", "caption": "bad"},
        {"image": "missing.png", "caption": "gone"},
        {"image": "../outside.png", "caption": "escape"},
        {"image": str(images / "outside.png"), "caption": "absolute"},
        {"image": "red.png", "caption": ""},
    ])  # fmt: skip
    expected = [
        (3, "image", "unreadable image 'broken.png'"),
        (4, "image", "unreadable image 'missing.png': file not found"),
        (5, "image", "leads outside"),
        (6, "image", "absolute image path"),
        (7, "caption", "empty text"),
    ]
    for line, column, match in expected:
        rows = list(csv.DictReader(open(p)))
        q = write(images / "img" / f"one{line}.csv", [rows[0], rows[line - 2]])
        with pytest.raises(DataError, match=match) as info:
            list(ImageTextPairs(q))
        assert (info.value.file, info.value.line, info.value.column) == (str(q), 3, column)
    ds = ImageTextPairs(p, skip_bad_rows=True)
    with pytest.warns(UserWarning, match=r"skipped 5 bad row"):
        assert [c for _, c in ds] == ["ok"]
    assert [e.line for e in ds.bad_rows.errors] == [3, 4, 5, 6, 7]
    loose = ImageTextPairs(p, allow_outside_root=True, skip_bad_rows=True)
    with pytest.warns(UserWarning, match=r"skipped 3 bad row"):
        assert [c for _, c in loose] == ["ok", "escape", "absolute"]


def test_docs_examples_run(tmp_path, monkeypatch):
    """The Python blocks of docs/data.md run as written (blocks marked as fragments excepted)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    blocks = [
        m.group(2)
        for m in re.finditer(r"([^\n]*)\n```python\n(.*?)```", text, re.S)
        if not m.group(1).startswith("<!-- fragment")
    ]
    assert blocks
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "docs/data.md", "exec"), {})


def test_image_bytes_in_parquet(images):
    pytest.importorskip("pyarrow")
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2, 1), (0, 0, 255)).save(buf, format="PNG")
    rows = [{"image": {"bytes": buf.getvalue(), "path": None}, "text": "blue"}]
    ((image, caption),) = ImageTextPairs(write(images / "b.parquet", rows))
    assert (image.size, image.getpixel((0, 0)), caption) == ((2, 1), (0, 0, 255), "blue")
