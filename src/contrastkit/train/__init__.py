"""Training system: recipes and configs, data and augmentations, the loop, checkpoints."""

from .config import RECIPES, TrainConfig, load_config
from .loop import train

__all__ = ["RECIPES", "TrainConfig", "load_config", "train"]
