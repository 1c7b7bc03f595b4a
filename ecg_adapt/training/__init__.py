"""Recipes and the accelerate training loop."""

from .checkpoints import RESUME_SAFE_KEYS, CheckpointError, CheckpointManager
from .recipe import DataArgs, HubArgs, ModelArgs, OutputArgs, Recipe, RecipeError, TaskArgs, TrainingArgs
from .trainer import TrainingDivergedError, TrainProgress, evaluate, train

__all__ = [
    "RESUME_SAFE_KEYS",
    "CheckpointError",
    "CheckpointManager",
    "TrainingDivergedError",
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
