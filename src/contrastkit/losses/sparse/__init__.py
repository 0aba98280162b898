"""Learned sparse retrieval: the FLOPS and IDF-aware FLOPS regularisers, composable with any
contrastive objective, and the SPLADE activation (``docs/objectives/sparse.md``).

The regularisers are batch quantities (squared column means of the term weights, O(N V), no
pairwise reduction, exact under a process group); :func:`splade` is a plain function (not an
objective) that turns MLM logits into the non-negative term weights they regularise.
"""

from ...objective import register
from .activation import splade  # noqa: F401  (public, not an objective)
from .flops import FLOPS, IDFFLOPS, flops, idf_flops

register(flops, FLOPS, "sparse")
register(idf_flops, IDFFLOPS, "sparse")

# ``splade`` is public here (``from contrastkit.losses.sparse import splade``) but not in
# ``__all__``: the family namespaces re-exported by ``contrastkit.losses`` hold objectives only.
__all__ = ["FLOPS", "IDFFLOPS", "flops", "idf_flops"]
