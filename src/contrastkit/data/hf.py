"""Hugging Face ``datasets``: a directory saved with ``save_to_disk``, or a dataset object.

``datasets`` is optional (``pip install 'contrastkit[data]'``). Without it,
:func:`load_hf_dataset` raises :class:`~contrastkit.data.errors.MissingDependency` (both an
``ImportError`` and a ``ValueError``) naming the extra. Files (JSONL, CSV, TSV, Parquet) never
need it: :mod:`contrastkit.data.formats` reads them directly.

Example::

    from contrastkit.data import TextPairs, load_hf_dataset

    ds = load_hf_dataset("my_pairs/", split="train")   # datasets.load_from_disk
    pairs = TextPairs(ds)                              # or TextPairs("my_pairs/", split="train")

Rows are located by their 1-based row number (``my_pairs/ row 12``) in errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Optional

from .errors import DataError, Location, MissingDependency

__all__ = ["load_hf_dataset", "HFRows", "is_hf_dataset", "is_hf_directory"]

#: files ``save_to_disk`` writes at the top of a saved Dataset / DatasetDict
_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _datasets():
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependency(
            "reading a Hugging Face datasets directory needs the `datasets` package: "
            "pip install 'contrastkit[data]' (or pass JSONL, CSV, TSV or Parquet files, "
            "which need no extra package)"
        ) from exc
    return datasets


def is_hf_directory(path) -> bool:
    """True when ``path`` is a directory written by ``Dataset(Dict).save_to_disk``."""
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in _MARKERS)


def is_hf_dataset(obj) -> bool:
    """True for a ``datasets.Dataset`` / ``IterableDataset`` / ``DatasetDict`` (duck-typed)."""
    cls = type(obj)
    return cls.__module__.split(".")[0] == "datasets" and cls.__name__.endswith(
        ("Dataset", "DatasetDict")
    )


def load_hf_dataset(path, split: Optional[str] = None):
    """``datasets.load_from_disk(path)``, with ``split`` chosen from a ``DatasetDict``.

    Args:
        path: a directory written by ``save_to_disk``.
        split: the split of a ``DatasetDict`` (required when it has more than one).

    Raises ``MissingDependency`` without ``datasets``, ``DataError`` (naming the directory) when
    it is not a saved dataset or the split does not exist.
    """
    name = str(path)
    if not Path(path).is_dir():
        raise DataError(
            "not a directory (a Hugging Face dataset saved with save_to_disk)", file=name
        )
    if not is_hf_directory(path):
        raise DataError(
            f"not a Hugging Face dataset directory (none of {', '.join(_MARKERS)} in it)",
            file=name,
        )
    datasets = _datasets()
    try:
        ds = datasets.load_from_disk(os.fspath(path))
    except Exception as exc:  # datasets raises FileNotFoundError and its own errors
        raise DataError(
            f"cannot load the dataset ({type(exc).__name__}: {exc})", file=name
        ) from None
    return select_split(ds, split, name)


def select_split(ds, split: Optional[str], name: str):
    """The ``split`` of a ``DatasetDict`` (or the only one); a ``Dataset`` is returned as is."""
    if _is_dict(ds):
        splits = list(ds.keys())
        if split is None:
            if len(splits) != 1:
                raise DataError(f"has splits {splits}: pass split=", file=name)
            split = splits[0]
        if split not in splits:
            raise DataError(f"no split {split!r}; splits: {splits}", file=name)
        return ds[split]
    if split is not None:
        raise DataError(f"is a single dataset without splits; got split={split!r}", file=name)
    return ds


def _is_dict(ds) -> bool:
    return type(ds).__name__.endswith("DatasetDict")


class HFRows:
    """Rows of a Hugging Face dataset as ``(location, row)`` pairs, like
    :class:`~contrastkit.data.formats.RowReader` (``columns`` is the dataset's column names)."""

    format = "hf"

    def __init__(self, dataset, name: Optional[str] = None):
        self.dataset = dataset
        self.name = str(name) if name is not None else "<datasets.Dataset>"
        names = getattr(dataset, "column_names", None)
        self.columns: Optional[list[str]] = list(names) if names is not None else None

    def items(self, keep: Optional[Callable[[], bool]] = None):
        """The same pairs as iteration (rows of a dataset are never unreadable); rows ``keep``
        rejects come as ``(location, None)``, as in ``RowReader.items``."""
        for i, row in enumerate(self.dataset, 1):  # Dataset.__iter__ decodes row by row
            yield Location(self.name, row=i), (dict(row) if keep is None or keep() else None)

    def __iter__(self) -> Iterator[tuple[Location, dict]]:
        return self.items()

    def __repr__(self) -> str:
        return f"HFRows({self.name!r})"
