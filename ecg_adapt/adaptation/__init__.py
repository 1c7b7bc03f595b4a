"""Adaptation methods behind one entry point (``adapt``), saved as data next to the weights.

``registered_methods()`` lists the implemented methods; ``ecg-adapt methods`` prints which apply to which
backbone family, and why the others do not.

The names below are imported from their submodules on first use (as the package face does), so that
``ecg_adapt.adaptation.config`` (the :class:`AdaptationConfig` schema a recipe validates against) loads without
torch, transformers or peft. The method modules register themselves when imported; :func:`get_method` and
:func:`registered_methods` import them all first (:func:`_load_methods`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..utils import lazy_exports

# Submodule -> the public names it defines, each imported on first access (lazy_exports).
_EXPORTS: dict[str, list[str]] = {
    "config": [
        "METHODS", "AdaptationConfig", "MethodSpec", "UnsupportedAdaptationError", "get_method", "register_method",
        "registered_methods",
    ],
    "core": [
        "ADAPTATION_CONFIG_NAME", "ParameterCount", "adapt", "check_adaptation", "count_parameters", "load_adapted",
        "merge_for_deployment", "read_adaptation_config", "save_adapted", "trained_state_dict",
    ],
    "layout": ["BackboneLayout", "backbone_layout"],
    "modules": ["AdaptedModel"],
    "optim": ["parameter_groups"],
    "peft_methods": ["check_mergeable", "support_matrix", "support_matrix_markdown"],
    "selective": ["trainable_parameter_names"],
}

if TYPE_CHECKING:
    from .config import (
        METHODS,
        AdaptationConfig,
        MethodSpec,
        UnsupportedAdaptationError,
        get_method,
        register_method,
        registered_methods,
    )
    from .core import (
        ADAPTATION_CONFIG_NAME,
        ParameterCount,
        adapt,
        check_adaptation,
        count_parameters,
        load_adapted,
        merge_for_deployment,
        read_adaptation_config,
        save_adapted,
        trained_state_dict,
    )
    from .layout import BackboneLayout, backbone_layout
    from .modules import AdaptedModel
    from .optim import parameter_groups
    from .peft_methods import check_mergeable, support_matrix, support_matrix_markdown
    from .selective import trainable_parameter_names

# Modules that register methods when imported (see config.register_method).
_METHOD_MODULES = ("native", "peft_methods", "selective", "modules")


def _load_methods() -> None:
    """Import every method module (each registers its methods); cheap once they are imported."""
    for name in _METHOD_MODULES:
        importlib.import_module(f"{__name__}.{name}")


__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
