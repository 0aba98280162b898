"""A retrieval task built at run time, offline, from the docstrings installed on the machine.

Every Python installation carries thousands of documented functions that nobody on this project
wrote: the standard library and the installed scientific packages. :func:`docstring_pairs` turns
each public, documented function or class of a fixed list of modules into a (query, document)
pair:

* **query**: the docstring's one-line summary (its first paragraph),
* **document**: the rest of the docstring, with the function's name removed (so that the
  task cannot be solved by matching the name).

:func:`build_docstring_task` splits the pairs *by module* (a seeded shuffle of the modules) into
a training file of pairs and a held-out BEIR folder (``corpus.jsonl``, ``queries.jsonl``,
``qrels/test.tsv``) whose corpus also holds distractor documents from a third set of modules, so
that no function (and no module) appears in both training and evaluation. The modules that are
not installed are skipped; ``manifest.json`` records the modules, package versions and counts,
so two machines with the same packages build the same task.

Example::

    from contrastkit.data.docstrings import build_docstring_task

    paths = build_docstring_task("/tmp/docstring-task", seed=0)
    paths["train"], paths["test"]   # train.jsonl (anchor, positive) and the BEIR folder
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .beir import BeirData

__all__ = [
    "DEFAULT_MODULES",
    "DocPair",
    "DocstringTask",
    "build_docstring_task",
    "docstring_pairs",
    "docstring_task",
]

#: modules whose public functions and classes are read (missing ones are skipped); the standard
#: library first, then numpy, scipy, scikit-learn and torch. Modules with import side effects
#: (``this``, ``antigravity``, GUI toolkits) are not listed.
DEFAULT_MODULES: tuple[str, ...] = (
    # standard library
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "bz2", "calendar",
    "cmath", "codecs", "collections", "colorsys", "concurrent.futures", "configparser",
    "contextlib", "copy", "csv", "ctypes", "dataclasses", "datetime", "decimal", "difflib",
    "dis", "email", "email.utils", "enum", "filecmp", "fileinput", "fnmatch", "fractions",
    "ftplib", "functools", "gc", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq",
    "hmac", "html", "html.parser", "http.client", "http.cookies", "imaplib", "importlib",
    "inspect", "io", "ipaddress", "itertools", "json", "keyword", "linecache", "locale",
    "logging", "logging.handlers", "lzma", "mailbox", "math", "mimetypes", "multiprocessing",
    "netrc", "numbers", "operator", "optparse", "os", "os.path", "pathlib", "pickle",
    "pickletools", "pkgutil", "platform", "plistlib", "poplib", "pprint", "profile", "pstats",
    "queue", "quopri", "random", "re", "reprlib", "sched", "secrets", "select", "selectors",
    "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3",
    "ssl", "stat", "statistics", "string", "struct", "subprocess", "symtable", "sys",
    "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "token", "tokenize", "trace", "traceback", "tracemalloc", "types", "typing", "unicodedata",
    "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zlib",
    # scientific packages
    "numpy", "numpy.fft", "numpy.linalg", "numpy.ma", "numpy.polynomial", "numpy.random",
    "scipy.cluster.hierarchy", "scipy.fft", "scipy.integrate", "scipy.interpolate",
    "scipy.linalg", "scipy.ndimage", "scipy.optimize", "scipy.signal", "scipy.sparse",
    "scipy.sparse.linalg", "scipy.spatial", "scipy.special", "scipy.stats",
    "sklearn.cluster", "sklearn.datasets", "sklearn.decomposition", "sklearn.ensemble",
    "sklearn.feature_extraction.text", "sklearn.linear_model", "sklearn.metrics",
    "sklearn.model_selection", "sklearn.neighbors", "sklearn.preprocessing", "sklearn.svm",
    "sklearn.tree", "sklearn.utils",
    "torch", "torch.linalg", "torch.nn.functional", "torch.fft", "torch.special",
)  # fmt: skip

_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class DocPair:
    """One documented function or class: ``module`` is the one it is listed under."""

    module: str
    name: str
    query: str
    document: str


def _summary_and_body(doc: str, name: str) -> Optional[tuple[str, str]]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc.strip()) if p.strip()]
    # a first line that is a signature ("add(x1, x2, /, ...)") is not a summary
    while paragraphs and re.match(rf"^{re.escape(name)}\s*\(", paragraphs[0]):
        paragraphs.pop(0)
    if len(paragraphs) < 2:
        return None
    summary = " ".join(paragraphs[0].split())
    body = "\n\n".join(paragraphs[1:])
    return summary, body


def _without_name(text: str, name: str) -> str:
    """``text`` with every whole-word occurrence of ``name`` (and of its snake_case parts
    joined, e.g. ``np.name``) replaced by ``it``."""
    pattern = rf"(?<![\w.])(?:[\w.]+\.)?{re.escape(name)}(?!\w)"
    return re.sub(pattern, "it", text)


def _public_objects(module) -> Iterable[tuple[str, object]]:
    names = getattr(module, "__all__", None)
    if not isinstance(names, (list, tuple)):
        names = [n for n in vars(module) if not n.startswith("_")]
    for name in sorted(set(names)):
        if not isinstance(name, str) or name.startswith("_"):
            continue
        try:
            obj = getattr(module, name)
        except Exception:  # noqa: BLE001  (lazy attributes of third-party modules)
            continue
        if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj):
            yield name, obj
        elif callable(obj) and type(obj).__name__ == "ufunc":  # numpy ufuncs
            yield name, obj


def docstring_pairs(
    modules: Sequence[str] = DEFAULT_MODULES,
    *,
    min_query_words: int = 4,
    max_query_words: int = 40,
    min_document_chars: int = 80,
    max_document_chars: int = 1200,
) -> list[DocPair]:
    """The (summary, rest of the docstring) pairs of the public functions and classes of
    ``modules`` (see the module docstring). An object re-exported by several modules is kept
    once (under the first module listing it), and a repeated query or document (aliases,
    generated docstrings) is dropped everywhere it occurs, so that no text has two answers."""
    for n, name in (
        (min_query_words, "min_query_words"),
        (max_query_words, "max_query_words"),
        (min_document_chars, "min_document_chars"),
        (max_document_chars, "max_document_chars"),
    ):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    seen: set[int] = set()
    found: list[DocPair] = []
    for mod_name in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(mod_name)
        except Exception:  # noqa: BLE001  (not installed, or broken on this machine)
            continue
        for name, obj in _public_objects(module):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            doc = inspect.getdoc(obj)
            if not doc:
                continue
            parts = _summary_and_body(doc, name)
            if parts is None:
                continue
            summary, body = parts
            words = len(_WORDS.findall(summary))
            if not min_query_words <= words <= max_query_words:
                continue
            document = _without_name(body, name)[:max_document_chars].strip()
            if len(document) < min_document_chars:
                continue
            found.append(DocPair(mod_name, name, _without_name(summary, name), document))
    queries = _counts(p.query for p in found)
    documents = _counts(p.document for p in found)
    return [p for p in found if queries[p.query] == 1 and documents[p.document] == 1]


def _counts(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _split_modules(
    pairs: Sequence[DocPair], seed: int, test_fraction: float, distractor_fraction: float
) -> dict[str, set[str]]:
    """Modules shuffled with ``seed`` and dealt into test, distractor and train sets, each test
    and distractor set taking modules until it holds its fraction of the pairs."""
    per_module = _counts(p.module for p in pairs)
    order = sorted(per_module)
    random.Random(seed).shuffle(order)
    total = len(pairs)
    sets: dict[str, set[str]] = {"test": set(), "distractor": set(), "train": set()}
    filled = {"test": 0, "distractor": 0}
    goal = {"test": test_fraction * total, "distractor": distractor_fraction * total}
    for m in order:
        target = next((s for s in ("test", "distractor") if filled[s] < goal[s]), "train")
        sets[target].add(m)
        if target != "train":
            filled[target] += per_module[m]
    return sets


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "sklearn", "torch"):
        try:
            out[pkg] = importlib.import_module(pkg).__version__
        except Exception:  # noqa: BLE001
            continue
    return out


@dataclass
class DocstringTask:
    """The task in memory: ``train`` pairs, the held-out ``test`` retrieval data
    (:class:`~contrastkit.data.BeirData`: the test modules' queries, a corpus of their documents
    plus the distractor modules' documents, one relevant document per query), ``manifest``
    (seed, package versions, counts, modules of each split)."""

    train: list[DocPair]
    test: BeirData
    manifest: dict

    def write(self, out_dir) -> dict:
        """Write ``train.jsonl`` (``anchor``, ``positive``), the BEIR folder ``test/``
        (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``) and ``manifest.json`` under
        ``out_dir``; returns their paths."""
        out = Path(out_dir)
        (out / "test" / "qrels").mkdir(parents=True, exist_ok=True)
        rows = ({"anchor": p.query, "positive": p.document} for p in self.train)
        _write_jsonl(out / "train.jsonl", rows)
        corpus = self.test.corpus.items()
        _write_jsonl(out / "test" / "corpus.jsonl", ({"_id": d, **doc} for d, doc in corpus))
        queries = self.test.queries.items()
        _write_jsonl(out / "test" / "queries.jsonl", ({"_id": q, "text": t} for q, t in queries))
        lines = ["query-id\tcorpus-id\tscore\n"] + [
            f"{q}\t{d}\t{r}\n" for q, docs in self.test.qrels.items() for d, r in docs.items()
        ]
        _atomic_text(out / "test" / "qrels" / "test.tsv", "".join(lines))
        _atomic_text(out / "manifest.json", json.dumps(self.manifest, indent=2))
        return {"train": out / "train.jsonl", "test": out / "test"}


def docstring_task(
    *,
    seed: int = 0,
    modules: Optional[Sequence[str]] = None,
    test_fraction: float = 0.2,
    distractor_fraction: float = 0.2,
    max_train: Optional[int] = None,
    max_test_queries: Optional[int] = None,
) -> DocstringTask:
    """The docstring retrieval task (see the module docstring) over ``modules`` (default
    :data:`DEFAULT_MODULES`): modules dealt into test,
    distractor and training sets with ``seed``; training pairs shuffled with ``seed``.
    ``max_train`` / ``max_test_queries`` cap the pairs kept (a seeded sample; the test corpus
    keeps every document of the test and distractor modules, so capping queries does not make
    retrieval easier)."""
    fractions = (("test_fraction", test_fraction), ("distractor_fraction", distractor_fraction))
    for name, value in fractions:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 0.5:
            raise ValueError(f"{name} must be a number in (0, 0.5), got {value!r}")
    for name, cap in (("max_train", max_train), ("max_test_queries", max_test_queries)):
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"{name} must be None or an integer >= 1, got {cap!r}")
    pairs = docstring_pairs(DEFAULT_MODULES if modules is None else modules)
    sets = _split_modules(pairs, seed, test_fraction, distractor_fraction)
    by_set: dict[str, list[DocPair]] = {k: [] for k in sets}
    for p in pairs:
        by_set[next(k for k, v in sets.items() if p.module in v)].append(p)
    if not by_set["train"] or not by_set["test"]:
        raise ValueError(
            f"the docstring task needs documented functions in at least 3 modules; found "
            f"{len(pairs)} pairs in {len({p.module for p in pairs})} modules"
        )
    rng = random.Random(seed)
    train = by_set["train"][:]
    rng.shuffle(train)
    if max_train is not None:
        train = train[:max_train]
    test = by_set["test"]
    queries = rng.sample(test, min(len(test), max_test_queries)) if max_test_queries else test
    docs = test + by_set["distractor"]
    doc_id = {id(p): f"d{i}" for i, p in enumerate(docs)}
    beir = BeirData(
        corpus={doc_id[id(p)]: {"title": "", "text": p.document} for p in docs},
        queries={f"q{i}": p.query for i, p in enumerate(queries)},
        qrels={f"q{i}": {doc_id[id(p)]: 1} for i, p in enumerate(queries)},
    )
    manifest = {
        "seed": seed,
        "versions": _versions(),
        "counts": {
            "pairs": len(pairs),
            "train_pairs": len(train),
            "test_queries": len(queries),
            "corpus": len(docs),
            "distractors": len(by_set["distractor"]),
        },
        "modules": {k: sorted(v) for k, v in sets.items()},
    }
    return DocstringTask(train, beir, manifest)


def build_docstring_task(out_dir, **options) -> dict:
    """:func:`docstring_task` written under ``out_dir`` (:meth:`DocstringTask.write`); returns
    the paths (``train``, ``test``) and the counts."""
    task = docstring_task(**options)
    return {**task.write(out_dir), **task.manifest["counts"]}
