"""The catalogue of objectives: one entry per functional and its module twin.

Each family package of :mod:`contrastkit.losses` registers its objectives here; the public
namespaces are generated from this one table: :mod:`contrastkit.functional` (every functional
and its published aliases) and the objective names of :mod:`contrastkit.losses` and
:mod:`contrastkit`. The naming rule is checked at registration: the functional's name is the
module's name in snake case, i.e. ``functional.__name__.replace("_", "") ==
module.__name__.lower()`` (``info_nce``/``InfoNCE``, ``mv_dhel``/``MVDHEL``), without a
``Loss``/``_loss`` suffix; names published before the rule stay importable as aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["ObjectiveEntry", "REGISTRY", "entries", "register", "by_family", "names"]


@dataclass(frozen=True)
class ObjectiveEntry:
    """One objective: its functional, its module twin (``None`` for a helper without one),
    its family (the ``losses/<family>/`` package, ``docs/objectives/<family>.md`` page and
    ``tests/test_objectives_<family>.py`` file) and the aliases under which earlier releases
    published the functional and the module."""

    functional: Callable
    module: Optional[type]
    family: str
    functional_aliases: tuple[str, ...] = ()
    module_aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.functional.__name__


#: functional name -> entry, in registration order
REGISTRY: dict[str, ObjectiveEntry] = {}


def register(
    functional: Callable,
    module: Optional[type],
    family: str,
    *,
    functional_aliases: tuple[str, ...] = (),
    module_aliases: tuple[str, ...] = (),
) -> ObjectiveEntry:
    """Add an objective to the catalogue (checks the naming rule; a name is registered once)."""
    name = functional.__name__
    if module is not None and name.replace("_", "") != module.__name__.lower():
        raise ValueError(
            f"naming rule: the functional of {module.__name__} must be named "
            f"{module.__name__.lower()!r} up to underscores, got {name!r}"
        )
    for n in (name, *(() if module is None else (module.__name__,))):
        if n.endswith(("Loss", "_loss")):
            raise ValueError(f"naming rule: {n!r} carries a Loss suffix")
    if name in REGISTRY and REGISTRY[name].functional is not functional:
        raise ValueError(f"objective {name!r} is registered twice")
    taken = {n: o for n, o in names([e for k, e in REGISTRY.items() if k != name]).items()}
    mine = names([ObjectiveEntry(functional, module, family, functional_aliases, module_aliases)])
    clash = sorted(n for n, o in mine.items() if n in taken and taken[n] is not o)
    if clash:
        raise ValueError(f"{name}: the names {clash} are already published by other objectives")
    entry = ObjectiveEntry(functional, module, family, functional_aliases, module_aliases)
    REGISTRY[name] = entry
    return entry


def entries(family: Optional[str] = None) -> list[ObjectiveEntry]:
    """Registered objectives, in registration order (of one family if given)."""
    return [e for e in REGISTRY.values() if family is None or e.family == family]


def by_family() -> dict[str, list[ObjectiveEntry]]:
    out: dict[str, list[ObjectiveEntry]] = {}
    for e in REGISTRY.values():
        out.setdefault(e.family, []).append(e)
    return out


def names(entries_: list[ObjectiveEntry]) -> dict[str, object]:
    """Every public name of ``entries_`` (functionals, modules, aliases) -> object."""
    out: dict[str, object] = {}
    for e in entries_:
        out[e.name] = e.functional
        for a in e.functional_aliases:
            out[a] = e.functional
        if e.module is not None:
            out[e.module.__name__] = e.module
            for a in e.module_aliases:
                out[a] = e.module
    return out
