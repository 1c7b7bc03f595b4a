"""Adaptation methods behind one entry point (``adapt``), saved as data next to the weights."""

from .core import (
    ADAPTATION_CONFIG_NAME,
    METHODS,
    AdaptationConfig,
    ParameterCount,
    adapt,
    count_parameters,
    load_adapted,
    save_adapted,
)

__all__ = [
    "ADAPTATION_CONFIG_NAME",
    "METHODS",
    "AdaptationConfig",
    "ParameterCount",
    "adapt",
    "count_parameters",
    "load_adapted",
    "save_adapted",
]
