"""Module twins of functional objectives (the ``torch.nn.functional`` pairing).

A stateless objective is written once, as a functional whose inputs are positional and whose
options are keyword-only; its module twin is declared, not written::

    @exact_objective
    def my_loss(a, b, *, temperature=0.1, reduction="mean"):
        ...

    class MyLoss(Objective, functional=my_loss):
        '''The manual (formula, Args, Inputs, Example, References).'''

:class:`Objective` reads the functional's signature: the keyword-only parameters become the
constructor's options (same names and defaults, validated at construction, stored as
attributes: an ``nn.Parameter`` temperature is a parameter of the module, a plain tensor a
non-persistent buffer that follows ``.to()``), and
``forward(*inputs, **overrides)`` calls the functional with the current values. No option is
forwarded by hand, so a twin cannot drift from its functional.

:class:`ScaledObjective` is the twin of an objective with a learnable logit scale (CLIP, CWCL,
SigLIP): it owns a :class:`~contrastkit.objective.scale.LogitScale` instead of a fixed
temperature.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar

from torch import Tensor, nn

from .._validation import check_positive, check_reduction
from .inputs import engine_args
from .scale import LogitScale

__all__ = ["Objective", "ScaledObjective", "check_options"]

#: options of the learnable scale that replace ``temperature`` / ``scale`` in a scaled twin
_SCALE_OPTIONS = ("temperature", "scale")


def check_options(options: dict) -> None:
    """The construction-time checks every twin shares: temperature/scale, reduction, engine."""
    for name in ("temperature", "scale", "init_temperature"):
        value = options.get(name)
        if value is not None and not isinstance(value, Tensor):
            check_positive(name, value)
    if "reduction" in options:
        check_reduction(options["reduction"])
    if "chunk_size" in options or "backend" in options:
        engine_args(options.get("chunk_size"), options.get("backend", "auto"))


def _split(functional: Callable) -> tuple[tuple, dict]:
    inputs, options = [], {}
    for p in inspect.signature(functional).parameters.values():
        if p.kind is p.KEYWORD_ONLY:
            options[p.name] = p
        else:
            inputs.append(p)
    return tuple(inputs), options


def _make_forward(functional: Callable, inputs: tuple) -> Callable:
    def forward(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    params = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        *inputs,
        inspect.Parameter("overrides", inspect.Parameter.VAR_KEYWORD),
    ]
    forward.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    forward.generated_from = functional  # type: ignore[attr-defined]
    forward.__doc__ = (
        f"Compute :func:`{functional.__module__}.{functional.__name__}` on the inputs with this "
        "module's options (keyword arguments override them for this call)."
    )
    return forward


class Objective(nn.Module):
    """Base of every stateless module twin; see the module docstring.

    Subclass with ``class Name(Objective, functional=fn)``. ``Name.functional`` is ``fn``,
    ``Name.options`` the names of its options (its keyword-only parameters, in order).
    """

    functional: ClassVar[Callable[..., Any]]
    options: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict] = {}

    def __init_subclass__(cls, functional: Callable | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if functional is None:
            return
        inputs, params = _split(functional)
        cls.functional = staticmethod(functional)
        cls._configure(inputs, params)

    @classmethod
    def _configure(cls, inputs: tuple, params: dict) -> None:
        cls.options = tuple(params)
        cls._defaults = {n: p.default for n, p in params.items()}
        cls.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params.values()]
        )
        cls.forward = _make_forward(cls.functional, inputs)

    def __init__(self, *args, **options):
        if args:
            raise TypeError(
                f"{type(self).__name__}() takes its options by keyword only "
                f"({', '.join(self.options)}); got {len(args)} positional argument(s)"
            )
        super().__init__()
        values = self._bind(options)
        check_options(values)
        for name, value in values.items():
            if isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
                # follows .to() / .cuda() with the module; not saved (a Parameter is)
                self.register_buffer(name, value, persistent=False)
            else:
                setattr(self, name, value)

    def _bind(self, options: dict) -> dict:
        name = type(self).__name__
        unknown = [k for k in options if k not in self._defaults]
        if unknown:
            raise TypeError(
                f"{name}() got unknown option(s) {unknown}; its options are {list(self.options)}"
            )
        values = {**self._defaults, **options}
        missing = [k for k, v in values.items() if v is inspect.Parameter.empty]
        if missing:
            raise TypeError(f"{name}() is missing required option(s) {missing}")
        return values

    def current_options(self) -> dict:
        """The keyword arguments this module passes to its functional."""
        return {n: getattr(self, n) for n in self.options}

    def _call(self, *inputs, **overrides):
        return type(self).functional(*inputs, **{**self.current_options(), **overrides})

    def extra_repr(self) -> str:
        parts = []
        for n in self.options:
            v = getattr(self, n)
            if not isinstance(v, Tensor):
                parts.append(f"{n}={v!r}")
        return ", ".join(parts)


class ScaledObjective(Objective):
    """Base of the twins that learn their logit scale ``t = exp(t')`` (open_clip's
    ``logit_scale``), clamped at ``max_logit_scale``.

    The functional's ``temperature`` / ``scale`` option is replaced by three constructor
    options: ``init_temperature`` (the initial tau; default from the subclass declaration,
    ``class CLIP(ScaledObjective, functional=clip, init_temperature=0.07)``), ``learnable``
    (a parameter, or a buffer when ``False``) and ``max_logit_scale`` (100, as CLIP). Each call
    passes ``scale=t`` (or ``temperature=1/t`` to a functional without ``scale``).
    """

    _scale_defaults: ClassVar[dict] = {}
    _passes: ClassVar[str] = "scale"

    def __init_subclass__(
        cls,
        functional: Callable | None = None,
        init_temperature: float = 0.07,
        learnable: bool = True,
        **kwargs,
    ):
        super().__init_subclass__(functional=None, **kwargs)
        if functional is None:
            return
        inputs, params = _split(functional)
        if "scale" not in params and "temperature" not in params:
            raise TypeError(f"{functional.__name__} takes neither temperature nor scale")
        cls._passes = "scale" if "scale" in params else "temperature"
        for name in _SCALE_OPTIONS:
            params.pop(name, None)
        cls._scale_defaults = {
            "init_temperature": init_temperature,
            "learnable": learnable,
            "max_logit_scale": 100.0,
        }
        scale_params = {
            n: inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d)
            for n, d in cls._scale_defaults.items()
        }
        cls.functional = staticmethod(functional)
        cls._configure(inputs, {**scale_params, **params})
        cls.options = tuple(params)  # what reaches the functional
        cls._defaults = {n: p.default for n, p in params.items()}

    def __init__(self, *args, **options):
        scale_opts = {n: options.pop(n, d) for n, d in self._scale_defaults.items()}
        super().__init__(*args, **options)
        self.scale = LogitScale(**scale_opts)

    @property
    def logit_scale(self):
        """The learned parameter ``t'`` (open_clip's ``logit_scale``)."""
        return self.scale.logit_scale

    def current_options(self) -> dict:
        t = self.scale()
        opts = super().current_options()
        opts[self._passes] = t if self._passes == "scale" else 1.0 / t
        return opts

    def _call(self, *inputs, **overrides):
        ref = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
        opts = self.current_options()
        if ref is not None:
            opts[self._passes] = opts[self._passes].to(ref.device)
        return type(self).functional(*inputs, **{**opts, **overrides})

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return f"{self.scale.extra_repr()}, {base}" if base else self.scale.extra_repr()
