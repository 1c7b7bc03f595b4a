"""HuBERT-ECG (Coppola et al. 2024): configuration, model, converter and processor defaults.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from .._lazy import lazy_exports
from .family import FAMILY, HUBERT_ECG_CONTRACT, RELEASED_SIZES, RELEASED_VARIANTS

_LAZY: dict[str, str] = {
    "HubertECGConfig": ".configuration",
    "default_processor_steps": ".configuration",
    "convert_hubert_ecg": ".convert",
    "load_original": ".convert",
    "HubertECGModel": ".modeling",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, FAMILY)

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
