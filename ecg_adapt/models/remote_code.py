"""Make a saved backbone folder loadable by plain ``transformers`` (no ``import ecg_adapt`` first), the way the
Hub's custom-code models are: an ``auto_map`` in ``config.json`` that points at a module in the folder.

What transformers 5 allows (measured with transformers 5 in this repository's environment):

* A folder whose ``model_type`` is not registered cannot be loaded by ``AutoConfig``/``AutoModel`` at all
  (``ValueError: ... Transformers does not recognize this architecture``): an unknown ``model_type`` is only
  resolved through ``auto_map`` and remote code. transformers has no plugin entry point that would register
  ``ecg_adapt``'s families on import of transformers itself.
* With ``auto_map`` and the module in the folder, ``AutoModel.from_pretrained(folder, trust_remote_code=True)``
  imports that module (transformers copies it into its modules cache) and uses the classes it names. The module
  written here is two import lines that re-export ecg_adapt's own classes, so the model is ecg_adapt's
  (``ecg_adapt`` must be installed; transformers checks the module's imports are importable).
  Without ``trust_remote_code=True`` transformers refuses (or asks, on a terminal): running code from a folder is
  the user's explicit decision, never ecg_adapt's.
* Once ecg_adapt's families are registered in the process (any model access through ``ecg_adapt.models``), the
  registered classes win and ``trust_remote_code`` is not needed; the ``auto_map`` is then ignored.

Converted folders do not get this by default (their layout stays ``config.json``, ``model.safetensors``,
``preprocessor_config.json``); :func:`add_auto_map` adds it to a folder on request.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils import atomic_write_text
from .registry import get_family

REMOTE_MODULE = "ecg_adapt_remote"


def _absolute(path: str, package: str | None) -> tuple[str, str]:
    module, _, attr = path.partition(":")
    if module.startswith("."):
        module = f"{package}{module}"
    return module, attr


def add_auto_map(folder: str | os.PathLike) -> Path:
    """Add ``auto_map`` (``AutoConfig``, ``AutoModel``) and the two-line module it names to a saved backbone folder,
    so that ``transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)`` loads ecg_adapt's model class
    without a prior ``import ecg_adapt``. Idempotent; each file is replaced atomically. Returns the module's path.

    Raises:
        FileNotFoundError: ``folder`` has no ``config.json``.
        ValueError: its ``model_type`` is not a registered family.

    Example:
        >>> add_auto_map("converted/merl-vit")                                          # doctest: +SKIP
        >>> AutoModel.from_pretrained("converted/merl-vit", trust_remote_code=True)    # doctest: +SKIP
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{folder} has no config.json: not a saved backbone folder")
    config = json.loads(config_path.read_text())
    family = get_family(config.get("model_type", ""))
    config_module, config_name = _absolute(family.config_path, family.package)
    model_module, model_name = _absolute(family.model_path, family.package)
    module_path = folder / f"{REMOTE_MODULE}.py"
    atomic_write_text(module_path, (
        '"""Written by ecg_adapt.models.remote_code.add_auto_map: re-exports ecg_adapt\'s own classes for\n'
        'transformers\' auto_map (needs ecg_adapt installed and trust_remote_code=True)."""\n\n'
        f"from {config_module} import {config_name}  # noqa: F401\n"
        f"from {model_module} import {model_name}  # noqa: F401\n"
    ))
    config["auto_map"] = {"AutoConfig": f"{REMOTE_MODULE}.{config_name}", "AutoModel": f"{REMOTE_MODULE}.{model_name}"}
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return module_path
