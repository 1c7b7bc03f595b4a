"""MERL (Liu et al., ICML 2024) ECG encoders: configuration, model, converter and processor defaults.

One family, two released encoder types selected by ``MERLConfig.encoder_type``: ``"resnet"`` (ResNet18-1D)
and ``"vit"`` (ViT-tiny-1D); each has its own block layout and default targets (``FAMILY.variants``).

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from ...utils import lazy_exports
from .family import FAMILY, MERL_CONTRACT, MERL_LEADS, RELEASED_CONFIGS, RELEASED_VARIANTS

# Submodule -> the names it defines, imported on first access; the first access also registers the family with
# the transformers Auto classes (resolving FAMILY.config_class does that).
_EXPORTS: dict[str, list[str]] = {
    "configuration": ["MERLConfig", "default_processor_steps"],
    "convert": ["convert_merl", "load_original", "read_checkpoint"],
    "modeling": ["MERLModel"],
}
__getattr__, __dir__, _ = lazy_exports(__name__, _EXPORTS, on_load=lambda name: FAMILY.config_class)

__all__ = [
    "FAMILY",
    "MERLConfig",
    "MERLModel",
    "MERL_CONTRACT",
    "MERL_LEADS",
    "RELEASED_CONFIGS",
    "RELEASED_VARIANTS",
    "convert_merl",
    "default_processor_steps",
    "load_original",
    "read_checkpoint",
]
