"""Recipes, the recipe catalogue, and the accelerate training loop.

The recipe schema and the catalogue import no torch (``ecg-adapt train --help`` and ``ecg-adapt recipes ls`` read
them); the loop (``train``, ``evaluate``, ``TrainProgress``) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .catalogue import RecipeInfo, copy_recipe, find_recipe, list_recipes, recipes_dir
from .recipe import DataArgs, HubArgs, ModelArgs, OutputArgs, Recipe, RecipeError, TaskArgs, TrainingArgs, schema_help

_LAZY = {
    "TrainProgress": ".trainer",
    "evaluate": ".trainer",
    "train": ".trainer",
    "RESUME_SAFE_KEYS": ".checkpoints",
    "CheckpointError": ".checkpoints",
    "CheckpointManager": ".checkpoints",
    "TrainingDivergedError": ".checkpoints",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
