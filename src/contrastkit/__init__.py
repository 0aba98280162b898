"""contrastkit: exact, tiled contrastive objectives for PyTorch."""

__version__ = "0.1.0"

from . import engine, functional, losses  # noqa: E402
from .losses import *  # noqa: E402,F401,F403

__all__ = ["engine", "functional", "losses", "__version__", *losses.__all__]
