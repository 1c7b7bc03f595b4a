"""HuBERT-ECG (Coppola et al. 2024): configuration, model, converter and processor defaults.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from ...utils import lazy_exports
from .family import FAMILY, HUBERT_ECG_CONTRACT, RELEASED_SIZES, RELEASED_VARIANTS

# Submodule -> the names it defines, imported on first access; the first access also registers the family with
# the transformers Auto classes (resolving FAMILY.config_class does that).
_EXPORTS: dict[str, list[str]] = {
    "configuration": ["HubertECGConfig", "default_processor_steps"],
    "convert": ["convert_hubert_ecg", "load_original"],
    "modeling": ["HubertECGModel"],
}
__getattr__, __dir__, _ = lazy_exports(__name__, _EXPORTS, on_load=lambda name: FAMILY.config_class)

__all__ = [
    "FAMILY",
    "HUBERT_ECG_CONTRACT",
    "HubertECGConfig",
    "HubertECGModel",
    "RELEASED_SIZES",
    "RELEASED_VARIANTS",
    "convert_hubert_ecg",
    "default_processor_steps",
    "load_original",
]
