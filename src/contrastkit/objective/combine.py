"""Weighted sums of objectives: ``alignment + uniformity``, ``InfoNCE + 0.1 * FLOPS``.

:class:`WeightedSum` adds objective modules with weights; :func:`parse_weighted_sum` reads the
expression a config file or the command line gives (``"InfoNCE + 0.1 * FLOPS"``) into
``(weight, name)`` terms without evaluating anything (a small grammar: terms joined by ``+``,
each ``name`` or ``number * name``).
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Sequence

from torch import Tensor, nn

__all__ = ["WeightedSum", "parse_weighted_sum"]

_TERM = re.compile(
    r"^\s*(?:(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$"
)


def parse_weighted_sum(expression: str) -> list[tuple[float, str]]:
    """``"InfoNCE + 0.1 * FLOPS"`` -> ``[(1.0, "InfoNCE"), (0.1, "FLOPS")]``.

    Each term is an identifier, optionally preceded by a non-negative number and ``*``; terms
    are joined by ``+``. A name may appear once. Anything else is a ``ValueError`` that quotes
    the term."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"objective expression must be a non-empty string, got {expression!r}")
    terms: list[tuple[float, str]] = []
    for part in expression.split("+"):
        m = _TERM.match(part)
        if m is None:
            raise ValueError(
                f"objective expression {expression!r}: cannot read the term {part.strip()!r} "
                "(write 'Name' or 'number * Name', terms joined by '+')"
            )
        weight = float(m["w"]) if m["w"] is not None else 1.0
        if not math.isfinite(weight):
            raise ValueError(f"objective expression {expression!r}: weight {m['w']} is not finite")
        if any(name == m["name"] for _, name in terms):
            raise ValueError(f"objective expression {expression!r}: {m['name']} appears twice")
        terms.append((weight, m["name"]))
    return terms


def _takes_one_input(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes at most one positional input."""
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return False
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)) == 1


class WeightedSum(nn.Module):
    """A weighted sum of objectives applied to the same inputs.

    Every term receives the inputs of the call. A term whose forward takes only one input (a
    regulariser of one set of embeddings, such as FLOPS or a norm penalty) is applied to each
    input in turn and its values are added, so ``InfoNCE + 0.1 * FLOPS`` on ``(q, d)`` is
    ``InfoNCE(q, d) + 0.1 * (FLOPS(q) + FLOPS(d))``::

        loss = sum_k w_k * objective_k(*inputs)

    Args:
        terms (sequence of (float, nn.Module)): the weights and objective modules. The modules
            are registered as sub-modules ``term0``, ``term1``, ... (their learnable
            temperatures train and are checkpointed with the sum).

    Example::

        import torch
        import contrastkit as ck
        from contrastkit.objective import WeightedSum

        a, b = torch.randn(8, 16), torch.randn(8, 16)
        loss = WeightedSum([(1.0, ck.losses.Alignment()), (1.0, ck.losses.Uniformity())])(a, b)
    """

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]):
        super().__init__()
        terms = list(terms)
        if not terms:
            raise ValueError("terms must hold at least one (weight, objective) pair, got none")
        self.weights: list[float] = []
        for k, term in enumerate(terms):
            if not (isinstance(term, tuple) and len(term) == 2):
                raise TypeError(f"terms[{k}] must be a (weight, module) pair, got {term!r}")
            weight, module = term
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise TypeError(f"terms[{k}]: the weight must be a number, got {weight!r}")
            if not math.isfinite(weight):
                raise ValueError(f"terms[{k}]: the weight must be finite, got {weight}")
            if not isinstance(module, nn.Module):
                raise TypeError(f"terms[{k}]: the objective must be an nn.Module, got {module!r}")
            self.weights.append(float(weight))
            self.add_module(f"term{k}", module)
        self._unary = [_takes_one_input(m) for m in self.objectives()]

    def objectives(self) -> list[nn.Module]:
        return [getattr(self, f"term{k}") for k in range(len(self.weights))]

    def forward(self, *inputs: Tensor) -> Tensor:
        total: Tensor | None = None
        for weight, module, unary in zip(self.weights, self.objectives(), self._unary):
            if unary:
                value = sum(module(x) for x in inputs)
            else:
                value = module(*inputs)
            term = weight * value
            total = term if total is None else total + term
        assert total is not None
        return total

    def extra_repr(self) -> str:
        return " + ".join(
            f"{w:g} * {type(m).__name__}" for w, m in zip(self.weights, self.objectives())
        )
