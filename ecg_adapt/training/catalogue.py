"""The recipe catalogue shipped with ecg_adapt (``ecg-adapt recipes ls`` / ``cp``, as torchtune's ``tune ls/cp``).

Recipes live in the package (``ecg_adapt/recipes/*.yaml``; the repository's top-level ``recipes/`` is a symlink to
it), so an installed ecg_adapt finds them as well as a checkout does. A recipe is named
``<family>_<method>_<source>_<task>.yaml``; ``family`` is read from the name, the other three from the recipe
itself (``adaptation.method``, ``data.source``, ``task.name``), so the table cannot disagree with what a recipe
trains. Nothing here imports torch.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..utils import atomic_write, did_you_mean
from .recipe import RecipeError

RECIPE_SUFFIX = ".yaml"


@dataclass(frozen=True)
class RecipeInfo:
    """One shipped recipe: its name (file name without ``.yaml``), what it trains, and where it is."""

    name: str
    family: str
    method: str
    dataset: str
    task: str
    title: str
    path: Path


def recipes_dir() -> Path:
    """The folder of the shipped recipes (inside the installed package: ``ecg_adapt/recipes``).

    Found next to this module's own file: setuptools installs package data unzipped beside the modules (regular
    and editable installs alike), and a plain path is what ``recipes cp`` and ``Recipe.from_yaml`` need."""
    return Path(__file__).resolve().parent.parent / "recipes"


def _title(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#") and line.strip("# ").strip():
            return line.lstrip("#").strip()
        if line.strip() and not line.startswith("#"):
            break
    return ""


def read_info(path: Path) -> RecipeInfo:
    """What a recipe file trains, from its name and content (raises :class:`RecipeError` if they disagree)."""
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    method = str((data.get("adaptation") or {}).get("method", "lora"))
    dataset = str((data.get("data") or {}).get("source", "ptbxl"))
    task = str((data.get("task") or {}).get("name", "superdiagnostic"))
    name = path.name.removesuffix(RECIPE_SUFFIX)
    tail = f"_{method}_{dataset}_{task}"
    if not name.endswith(tail) or name == tail.lstrip("_"):
        raise RecipeError(f"Recipe {path.name} must be named <family>{tail}{RECIPE_SUFFIX} "
                          f"(adaptation.method={method}, data.source={dataset}, task.name={task})")
    return RecipeInfo(name=name, family=name[: -len(tail)], method=method, dataset=dataset, task=task,
                      title=_title(text), path=path)


def list_recipes() -> list[RecipeInfo]:
    """Every shipped recipe, sorted by name."""
    folder = recipes_dir()
    return [read_info(p) for p in sorted(folder.glob(f"*{RECIPE_SUFFIX}"))] if folder.is_dir() else []


def find_recipe(name: str) -> Path:
    """The shipped recipe called ``name`` (with or without ``.yaml``); an unknown name suggests the closest."""
    stem = name.removesuffix(RECIPE_SUFFIX)
    path = recipes_dir() / f"{stem}{RECIPE_SUFFIX}"
    if path.is_file():
        return path
    known = [r.name for r in list_recipes()]
    raise RecipeError(f"No shipped recipe {stem!r}{did_you_mean(stem, known, cutoff=0.5)}; `ecg-adapt recipes ls` lists them")


def copy_recipe(name: str, dest: str | os.PathLike, force: bool = False) -> Path:
    """Copy a shipped recipe (comments included) to ``dest``: a file, or a folder to put ``<name>.yaml`` in.

    Raises:
        FileExistsError: ``dest`` exists and ``force`` is false.
        RecipeError: no shipped recipe is called ``name``.
    """
    src = find_recipe(name)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not force:
        raise FileExistsError(f"{dest} exists; pass --force to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))  # never a half-written recipe


__all__ = ["RecipeInfo", "copy_recipe", "find_recipe", "list_recipes", "read_info", "recipes_dir"]
