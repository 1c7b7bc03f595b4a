"""Recipes and the accelerate training loop."""

from .recipe import DataArgs, ModelArgs, OutputArgs, Recipe, RecipeError, TaskArgs, TrainingArgs
from .trainer import TrainProgress, evaluate, train

__all__ = [
    "DataArgs",
    "ModelArgs",
    "OutputArgs",
    "Recipe",
    "RecipeError",
    "TaskArgs",
    "TrainProgress",
    "TrainingArgs",
    "evaluate",
    "train",
]
