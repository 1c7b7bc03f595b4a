"""Backbone families (one folder each, discovered), the family registry and the classification heads.

Importing this package is cheap: it imports neither torch nor transformers. ``FAMILIES``, ``get_family`` and
``released_variants`` read the torch-free family records; the classifiers, the loaders and the family packages'
model classes are imported on first access, and the first such access registers every family with the
transformers Auto classes (so ``AutoModel.from_pretrained(converted_folder)`` works after it).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (submodule, needs the Auto registration of every family)
_LAZY: dict[str, tuple[str, bool]] = {
    "FAMILIES": (".registry", False),
    "BackboneFamily": (".family", False),
    "ECGBackbone": (".family", False),
    "get_family": (".registry", False),
    "register_family": (".registry", False),
    "released_variants": (".registry", False),
    "load_backbone": (".registry", True),
    "load_processor": (".registry", True),
    "ECGClassifier": (".classifier", True),
    "ECGClassifierConfig": (".classifier", True),
    "ECGClassifierOutput": (".classifier", True),
    "CheckpointMismatchError": (".conversion", False),
    "ConversionReport": (".conversion", False),
    "ECGSequenceClassifier": (".sequence", True),
    "ECGSequenceClassifierConfig": (".sequence", True),
    "ECGSequenceClassifierOutput": (".sequence", True),
}


def __getattr__(name: str) -> Any:
    entry = _LAZY.get(name)
    if entry is None:
        # A family package (``ecg_adapt.models.merl``): import it as a submodule.
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    submodule, register = entry
    value = getattr(importlib.import_module(submodule, __name__), name)
    if register:
        from .registry import register_all_with_transformers

        register_all_with_transformers()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
