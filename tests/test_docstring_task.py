"""The docstring retrieval task (contrastkit.data.docstrings): pairs, module split, BEIR files."""

from __future__ import annotations

import json
import re

import pytest

from contrastkit.data import load_beir
from contrastkit.data.docstrings import (
    build_docstring_task,
    docstring_pairs,
    docstring_task,
)

MODULES = ("json", "textwrap", "shutil", "fnmatch", "heapq", "bisect", "difflib", "tarfile",
           "zipfile", "statistics", "string", "base64", "csv", "copy", "functools")  # fmt: skip


@pytest.fixture(scope="module")
def pairs():
    return docstring_pairs(MODULES)


def test_pairs_are_summaries_and_bodies_without_the_name(pairs):
    assert len(pairs) > 40
    import importlib
    import inspect

    for p in pairs:
        assert 4 <= len(re.findall(r"\w+", p.query)) <= 40
        assert len(p.document) >= 80
        # the document is the docstring after its summary, with the name taken out
        assert not re.search(rf"(?<![\w.]){re.escape(p.name)}(?!\w)", p.document), p
        doc = inspect.getdoc(getattr(importlib.import_module(p.module), p.name))
        first_paragraph = " ".join(doc.split("\n\n")[0].split())
        assert p.query.split()[0] in first_paragraph or p.query.startswith("it")
    # no query or document has two answers
    assert len({p.query for p in pairs}) == len(pairs) == len({p.document for p in pairs})


def test_split_by_module_and_beir_layout(tmp_path):
    task = docstring_task(seed=3, modules=MODULES)
    sets = {k: set(v) for k, v in task.manifest["modules"].items()}
    assert not (sets["train"] & sets["test"]) and not (sets["test"] & sets["distractor"])
    assert sets["train"] and sets["test"] and sets["distractor"]
    train_docs = {p.document for p in task.train}
    test = task.test
    assert not train_docs & {d["text"] for d in test.corpus.values()}  # no leak into the test
    # every query's one relevant document is in the corpus, distractors too
    assert all(len(r) == 1 and next(iter(r)) in test.corpus for r in test.qrels.values())
    assert len(test.corpus) == len(test.queries) + task.manifest["counts"]["distractors"]
    out = build_docstring_task(tmp_path / "task", seed=3, modules=MODULES)
    again = load_beir(out["test"])
    assert again.corpus == test.corpus and again.queries == test.queries
    assert again.qrels == test.qrels
    rows = [json.loads(line) for line in out["train"].read_text().splitlines()]
    assert [(r["anchor"], r["positive"]) for r in rows] == [
        (p.query, p.document) for p in task.train
    ]
    assert json.loads((tmp_path / "task" / "manifest.json").read_text())["seed"] == 3


def test_seed_decides_the_split_and_is_reproducible():
    a = docstring_task(seed=0, modules=MODULES)
    b = docstring_task(seed=0, modules=MODULES)
    c = docstring_task(seed=1, modules=MODULES)
    assert a.manifest["modules"] == b.manifest["modules"] and a.train == b.train
    assert a.manifest["modules"] != c.manifest["modules"]


def test_caps_and_bad_options():
    task = docstring_task(seed=0, modules=MODULES, max_train=5, max_test_queries=3)
    assert len(task.train) == 5 and len(task.test.queries) == 3
    with pytest.raises(ValueError, match="test_fraction"):
        docstring_task(modules=MODULES, test_fraction=0.7)
    with pytest.raises(ValueError, match="max_train"):
        docstring_task(modules=MODULES, max_train=0)
    with pytest.raises(ValueError, match="at least 3 modules"):
        docstring_task(modules=("json",))
