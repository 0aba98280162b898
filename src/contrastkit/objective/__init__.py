"""The objective kit: everything needed to write an objective on the engine.

* :mod:`~contrastkit.objective.inputs`: dtype and normalisation (:func:`prepare`), stacked
  views (:func:`two_views`), positive logits (:func:`row_dot`, :func:`partner_logits`), engine
  options (:func:`engine_args`);
* :mod:`~contrastkit.objective.scale`: temperature / scale / logit-scale conversion, the logit
  multiplier :func:`kappa`, the learnable :class:`LogitScale`;
* :mod:`~contrastkit.objective.reduction`: the one reduction rule (:func:`row_weight` for engine
  rows, :func:`reduce` for rows computed without the engine);
* :mod:`~contrastkit.objective.group`: the single door to :mod:`contrastkit.distributed`
  (:func:`exact_objective`, :func:`rank_local_objective`, :func:`objective_group`,
  :func:`run` and the helpers that take the group explicitly);
* :mod:`~contrastkit.objective.module`: the module bases (:class:`Objective`,
  :class:`ScaledObjective`) that turn a functional into its module twin;
* :mod:`~contrastkit.objective.registry`: the catalogue the public namespaces are built from;
* :mod:`~contrastkit.objective.combine`: weighted sums of objectives (:class:`WeightedSum`,
  :func:`parse_weighted_sum`).

``docs/architecture.md`` ("Writing an objective") walks through a complete example.
"""

from .combine import WeightedSum, parse_weighted_sum
from .group import (
    ACTIVE,
    Context,
    check_has_negatives,
    exact_objective,
    gather_rows,
    global_rows,
    global_total,
    local_contrast,
    objective_group,
    rank_local_objective,
    replicated,
    resolve_group,
    row_offset,
    run,
    sum_across_ranks,
)
from .inputs import (
    EPS,
    HALF,
    engine_args,
    gpu_device,
    half_path,
    index_dot,
    partner_logits,
    prepare,
    row_dot,
    two_views,
    wide,
)
from .module import Objective, ScaledObjective, check_options
from .reduction import REDUCTIONS, reduce, row_weight
from .registry import REGISTRY, ObjectiveEntry, by_family, entries, register
from .scale import (
    LogitScale,
    kappa,
    logit_scale_from_temperature,
    scale_from_logit_scale,
    scale_from_temperature,
    temperature_from_logit_scale,
    temperature_from_scale,
)

__all__ = [
    "ACTIVE",
    "Context",
    "EPS",
    "HALF",
    "LogitScale",
    "WeightedSum",
    "Objective",
    "ObjectiveEntry",
    "REDUCTIONS",
    "REGISTRY",
    "ScaledObjective",
    "by_family",
    "check_has_negatives",
    "check_options",
    "engine_args",
    "index_dot",
    "entries",
    "exact_objective",
    "gather_rows",
    "global_rows",
    "global_total",
    "gpu_device",
    "half_path",
    "kappa",
    "local_contrast",
    "logit_scale_from_temperature",
    "objective_group",
    "parse_weighted_sum",
    "partner_logits",
    "prepare",
    "rank_local_objective",
    "reduce",
    "register",
    "replicated",
    "resolve_group",
    "row_dot",
    "row_offset",
    "row_weight",
    "run",
    "scale_from_logit_scale",
    "scale_from_temperature",
    "sum_across_ranks",
    "temperature_from_logit_scale",
    "temperature_from_scale",
    "two_views",
    "wide",
]
