"""Adaptation methods behind one entry point (``adapt``), saved as data next to the weights.

``registered_methods()`` lists the implemented methods; ``ecg-adapt methods`` prints which apply to which
backbone family, and why the others do not.
"""

import importlib

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

# Modules that register methods when imported (see config.register_method).
_METHOD_MODULES = ("native", "peft_methods", "selective", "modules")


def _load_methods() -> None:
    for name in _METHOD_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise


_load_methods()

from .selective import trainable_parameter_names  # noqa: E402  (after the method modules are registered)

__all__ = [
    "AdaptedModel",
    "ADAPTATION_CONFIG_NAME",
    "METHODS",
    "AdaptationConfig",
    "BackboneLayout",
    "MethodSpec",
    "ParameterCount",
    "UnsupportedAdaptationError",
    "adapt",
    "check_mergeable",
    "parameter_groups",
    "trainable_parameter_names",
    "support_matrix",
    "support_matrix_markdown",
    "backbone_layout",
    "check_adaptation",
    "count_parameters",
    "get_method",
    "load_adapted",
    "merge_for_deployment",
    "read_adaptation_config",
    "register_method",
    "registered_methods",
    "save_adapted",
    "trained_state_dict",
]
