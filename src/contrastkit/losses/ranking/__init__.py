"""Ranking and STS objectives (``docs/objectives/ranking.md``): CoSENT and AnglE's angle loss
on labelled sentence pairs, ListNet and Plackett-Luce on in-batch graded relevance.

CoSENT and AnglE are one log-sum-exp over the ordered pairs of labelled pairs of a batch,
computed in O(N log N) by sorting the labels; both are exact under a process group (every
rank's O(N) pair scores and labels are gathered). ListNet and Plackett-Luce score every query
against every candidate row (dense ``(N, M)``) and are rank-local. Matryoshka wraps any
objective and applies it to nested prefixes of the embeddings (exact when the objective is).

The helpers :func:`angle_similarity` (AnglE's pair score) and :func:`ranked_pairs_lse` (the
sorted CoSENT log-sum-exp on given scores) are importable from here; they are not objectives.
"""

from ...objective import register
from .angle import AnglE, angle, angle_similarity  # noqa: F401 (helper)
from .cosent import CoSENT, cosent, ranked_pairs_lse  # noqa: F401 (helper)
from .listwise import ListNet, PlackettLuce, list_net, plackett_luce
from .matryoshka import Matryoshka, matryoshka

register(cosent, CoSENT, "ranking")
register(angle, AnglE, "ranking")
register(list_net, ListNet, "ranking")
register(plackett_luce, PlackettLuce, "ranking")
register(matryoshka, Matryoshka, "ranking")

__all__ = [
    "AnglE",
    "CoSENT",
    "ListNet",
    "Matryoshka",
    "PlackettLuce",
    "angle",
    "cosent",
    "list_net",
    "matryoshka",
    "plackett_luce",
]
