"""Distributed cases of every objective family, collected for tests/test_distributed.py.

Each family module (``tests/distributed_cases/<family>.py``) defines ``CASES``: a dict from a
case name to ``(make, call)``:

* ``make(g, n, d) -> (rows, shared)``: the *global* inputs from a ``torch.Generator`` ``g``
  for ``n`` rows in total (``n = rows per rank * world``) and dimension ``d``, in float64;
  ``rows`` are tensors sharded by rank along dim 0 (embeddings, labels, per-row temperatures),
  ``shared`` 0-dim tensors every rank holds (a temperature, a scale, a bias);
* ``call(rows, shared) -> loss``: the objective on those inputs (a scalar, or per-row losses
  for ``reduction="none"``).

tests/test_distributed.py runs every case in one 2-process gloo run and compares each rank's
loss and the gathered gradients with one process on the global batch.
"""

from __future__ import annotations

import importlib

FAMILIES = (
    "infonce",
    "weighting",
    "multiview",
    "margin",
    "structured",
    "shaping",
    "distillation",
    "ranking",
    "compositional",
    "preference",
    "sparse",
    "dense",
)

CASES: dict = {}
for _family in FAMILIES:
    try:
        _mod = importlib.import_module(f"distributed_cases.{_family}")
    except ModuleNotFoundError as e:  # a family without exact objectives has no module
        if e.name != f"distributed_cases.{_family}":
            raise
        continue
    for _name, _case in _mod.CASES.items():
        if _name in CASES:
            raise ValueError(f"distributed case {_name!r} defined twice")
        CASES[_name] = _case
