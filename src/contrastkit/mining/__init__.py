"""Corpus-scale hard-negative mining: FAISS / torch search streamed from disk, text triplets.

* :func:`mine_hard_negatives` (embeddings -> per-query negatives, sentence-transformers' rules),
* :func:`search_topk` (blocked exact or approximate top-k under a memory budget),
* :func:`mine_triplets` (text pairs + corpus -> triplets, embeddings streamed to ``.npy`` memmaps),
* encoders ``HashingEncoder`` / ``MiniLMEncoder`` and table I/O for ``contrastkit mine``,
* data curation: :func:`positive_consistency` (CoRNStack's rank filter of training pairs) and
  :func:`neighbour_credibility` (label-noise detection by neighbour agreement).
"""

from contrastkit.mining.consistency import PositiveConsistency, positive_consistency
from contrastkit.mining.encoders import HashingEncoder, MiniLMEncoder, get_encoder
from contrastkit.mining.io import read_table, write_table
from contrastkit.mining.label_noise import (
    LabelNoiseReport,
    kde_soft_labels,
    neighbour_credibility,
)
from contrastkit.mining.miner import MinedNegatives, mine_hard_negatives
from contrastkit.mining.search import BlockPlan, merge_topk, parse_memory, search_topk
from contrastkit.mining.store import embed_to_memmap
from contrastkit.mining.triplets import mine_triplets, summary

__all__ = [
    "BlockPlan",
    "HashingEncoder",
    "LabelNoiseReport",
    "MinedNegatives",
    "MiniLMEncoder",
    "PositiveConsistency",
    "embed_to_memmap",
    "get_encoder",
    "kde_soft_labels",
    "merge_topk",
    "mine_hard_negatives",
    "mine_triplets",
    "neighbour_credibility",
    "parse_memory",
    "positive_consistency",
    "read_table",
    "search_topk",
    "summary",
    "write_table",
]
