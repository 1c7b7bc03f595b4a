"""Recipes, the recipe catalogue, and the accelerate training loop.

The recipe schema and the catalogue import no torch (``ecg-adapt train --help`` and ``ecg-adapt recipes ls`` read
them); the loop (``train``, ``evaluate``, ``TrainProgress``) is imported on first use.
"""

from __future__ import annotations

from ..utils import lazy_exports
from .catalogue import RecipeInfo, copy_recipe, find_recipe, list_recipes, recipes_dir
from .recipe import DataArgs, HubArgs, ModelArgs, OutputArgs, Recipe, RecipeError, TaskArgs, TrainingArgs, schema_help

__getattr__, __dir__, _ = lazy_exports(__name__, {
    "trainer": ["TrainProgress", "evaluate", "train"],
    "checkpoints": ["RESUME_SAFE_KEYS", "CheckpointError", "CheckpointManager", "TrainingDivergedError"],
})


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
    "RecipeInfo",
    "TaskArgs",
    "TrainProgress",
    "TrainingArgs",
    "copy_recipe",
    "evaluate",
    "find_recipe",
    "list_recipes",
    "recipes_dir",
    "schema_help",
    "train",
]
