"""ST-MEM (Na et al., ICLR 2024): configuration, model, converter, preprocessing and family record.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from ...utils import lazy_exports
from .family import FAMILY, RELEASED_SIZES, RELEASED_VARIANTS, ST_MEM_CONTRACT

# Submodule -> the names it defines, imported on first access; the first access also registers the family with
# the transformers Auto classes (resolving FAMILY.config_class does that).
_EXPORTS: dict[str, list[str]] = {
    "configuration": ["STMEMConfig", "default_processor_steps"],
    "convert": ["convert_st_mem", "load_original"],
    "modeling": ["STMEMModel", "STMEMPreTrainedModel"],
    "processing": ["STMEMCast", "STMEMNCrop", "STMEMStandardize"],
}
__getattr__, __dir__, _ = lazy_exports(__name__, _EXPORTS, on_load=lambda name: FAMILY.config_class)

__all__ = [
    "FAMILY",
    "RELEASED_SIZES",
    "RELEASED_VARIANTS",
    "STMEMCast",
    "STMEMConfig",
    "STMEMModel",
    "STMEMNCrop",
    "STMEMPreTrainedModel",
    "STMEMStandardize",
    "ST_MEM_CONTRACT",
    "convert_st_mem",
    "default_processor_steps",
    "load_original",
]
