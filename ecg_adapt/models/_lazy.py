"""Lazy package faces for the family folders (the ``transformers`` ``_LazyModule`` idea, with PEP 562).

A family package exposes its cheap record (``FAMILY`` and the facts in ``family.py``) eagerly and everything that
needs torch/transformers (configuration, model, converter, processor steps) on first attribute access, so that
discovering families and listing released variants imports neither.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from .family import BackboneFamily


def lazy_exports(
    package: str, exports: Mapping[str, str], family: BackboneFamily | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose ``exports`` (name -> relative submodule, e.g.
    ``{"MERLModel": ".modeling"}``) are imported on first access.

    With ``family``, the first heavy access also registers the family with the transformers Auto classes (as
    importing the package used to), so ``from ecg_adapt.models.merl import MERLModel`` followed by
    ``AutoModel.from_pretrained(folder)`` keeps working.
    """
    module = importlib.import_module(package)

    def __getattr__(name: str) -> Any:
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(submodule, package), name)
        setattr(module, name, value)  # later lookups skip __getattr__
        if family is not None:
            family.config_class  # noqa: B018  (resolving it registers the family with AutoConfig/AutoModel)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(exports))

    return __getattr__, __dir__
