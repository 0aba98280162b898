"""Preference optimisation objectives: DPO and its variants (IPO, conservative DPO), NPO, D2O,
SparsePO, S-VCO, SimPO, CPO, ORPO, SLiC-HF, on sequence or token log-probabilities of a policy
and a reference.

(``docs/objectives/preference.md``)

Every objective takes log-probabilities the caller computed (policy with gradients; reference
from a frozen copy under ``torch.no_grad()`` or precomputed, detached here) and returns a
per-pair mean: exact under a process group, not engine-backed (one scalar per pair, O(N); no
N x M score matrix). The helpers :func:`sequence_log_probs`, :func:`token_log_probs` and
:func:`token_kl` turn a causal LM's token logits and labels into those inputs; they are
importable from here but are not objectives (not in ``__all__``).
"""

from ...objective import register
from .d2o import D2O, d2o
from .dpo import DPO, IPO, dpo, ipo
from .log_probs import sequence_log_probs, token_kl, token_log_probs  # noqa: F401 (helpers)
from .npo import NPO, npo
from .sparse_po import SparsePO, sparse_po
from .svco import SVCO, svco
from .variants import CPO, ORPO, SimPO, SLiCHF, cpo, orpo, simpo, slic_hf

register(dpo, DPO, "preference")
register(ipo, IPO, "preference")
register(npo, NPO, "preference")
register(d2o, D2O, "preference")
register(sparse_po, SparsePO, "preference")
register(svco, SVCO, "preference")
register(simpo, SimPO, "preference")
register(cpo, CPO, "preference")
register(orpo, ORPO, "preference")
register(slic_hf, SLiCHF, "preference")

__all__ = [
    "CPO",
    "D2O",
    "DPO",
    "IPO",
    "NPO",
    "ORPO",
    "SLiCHF",
    "SVCO",
    "SimPO",
    "SparsePO",
    "cpo",
    "d2o",
    "dpo",
    "ipo",
    "npo",
    "orpo",
    "simpo",
    "slic_hf",
    "sparse_po",
    "svco",
]
