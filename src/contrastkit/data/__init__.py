"""Training and evaluation data from your own files (JSONL, CSV, TSV, Parquet, Hugging Face
``datasets`` directories, images), streamed, with errors that name file, line and column.

=====================  ===========================================================
module                 what it reads
=====================  ===========================================================
``data.formats``       rows of JSONL / CSV / TSV / Parquet files (:class:`RowReader`)
``data.text``          text pairs, triplets, groups (:class:`TextPairs`)
``data.images``        image paths and captions (:class:`ImageTextPairs`)
``data.beir``          BEIR retrieval folders (:func:`load_beir`)
``data.sts``           STS pairs with scores (:func:`load_sts`)
``data.hf``            saved Hugging Face datasets (:func:`load_hf_dataset`)
``data.errors``        :class:`DataError`, ``skip_bad_rows`` bookkeeping
=====================  ===========================================================

See ``docs/data.md``.
"""

from .beir import BeirData, iter_corpus, load_beir
from .errors import BadRows, DataError, Location, MissingDependency
from .formats import FORMATS, RowReader, iter_rows
from .hf import load_hf_dataset
from .images import ImageTextPairs
from .sts import STSPairs, load_sts
from .text import COLUMN_NAMES, ColumnMapping, TextExample, TextPairs, resolve_columns

__all__ = [
    "BadRows",
    "BeirData",
    "COLUMN_NAMES",
    "ColumnMapping",
    "DataError",
    "FORMATS",
    "ImageTextPairs",
    "Location",
    "MissingDependency",
    "RowReader",
    "STSPairs",
    "TextExample",
    "TextPairs",
    "iter_corpus",
    "iter_rows",
    "load_beir",
    "load_hf_dataset",
    "load_sts",
    "resolve_columns",
]
