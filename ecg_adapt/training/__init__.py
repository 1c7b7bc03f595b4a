"""Recipes and the accelerate training loop."""

from .recipe import DataArgs, HubArgs, ModelArgs, OutputArgs, Recipe, RecipeError, TaskArgs, TrainingArgs
from .trainer import TrainProgress, evaluate, train

__all__ = [
    "DataArgs",
    "HubArgs",
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
