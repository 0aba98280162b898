"""Contrastive objectives, one package per family (``docs/objectives/<family>.md``).

Each objective is a functional and its module twin (:mod:`contrastkit.objective`).
"""

from ..objective import LogitScale  # noqa: F401  (published here as well)
from . import (
    compositional,
    dense,
    distillation,
    infonce,
    margin,
    multiview,
    preference,
    ranking,
    shaping,
    sparse,
    structured,
    weighting,
)
from .compositional import *  # noqa: F401,F403
from .dense import *  # noqa: F401,F403
from .distillation import *  # noqa: F401,F403
from .infonce import *  # noqa: F401,F403
from .margin import *  # noqa: F401,F403
from .multiview import *  # noqa: F401,F403
from .preference import *  # noqa: F401,F403
from .ranking import *  # noqa: F401,F403
from .shaping import *  # noqa: F401,F403
from .sparse import *  # noqa: F401,F403
from .structured import *  # noqa: F401,F403
from .weighting import *  # noqa: F401,F403

__all__ = sorted(
    [
        "LogitScale",
        *infonce.__all__,
        *weighting.__all__,
        *multiview.__all__,
        *margin.__all__,
        *structured.__all__,
        *shaping.__all__,
        *distillation.__all__,
        *ranking.__all__,
        *compositional.__all__,
        *preference.__all__,
        *sparse.__all__,
        *dense.__all__,
    ]
)
