"""ST-MEM (Na et al., ICLR 2024): configuration, model, converter, preprocessing and family record.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from .._lazy import lazy_exports
from .family import FAMILY, RELEASED_SIZES, RELEASED_VARIANTS, ST_MEM_CONTRACT

_LAZY: dict[str, str] = {
    "STMEMConfig": ".configuration",
    "default_processor_steps": ".configuration",
    "convert_st_mem": ".convert",
    "load_original": ".convert",
    "STMEMModel": ".modeling",
    "STMEMPreTrainedModel": ".modeling",
    "STMEMCast": ".processing",
    "STMEMNCrop": ".processing",
    "STMEMStandardize": ".processing",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, FAMILY)

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
