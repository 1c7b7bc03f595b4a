"""ECGFounder (Li et al., NEJM AI 2025): configuration, model, converter, processor defaults and family record.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from .._lazy import lazy_exports
from .family import ECGFOUNDER_1LEAD_CONTRACT, ECGFOUNDER_CONTRACT, FAMILY, LORA_TARGET_MODULES, RELEASED_ARCHITECTURE, RELEASED_VARIANTS, contract_for_in_channels

_LAZY: dict[str, str] = {
    "ECGFounderConfig": ".configuration",
    "default_processor_steps": ".configuration",
    "convert_ecgfounder": ".convert",
    "infer_config_kwargs": ".convert",
    "load_original": ".convert",
    "read_checkpoint": ".convert",
    "ECGFounderModel": ".modeling",
    "ECGFounderModelOutput": ".modeling",
    "ECGFounderPreTrainedModel": ".modeling",
    "ButterworthBA": ".processing",
    "MedianBaseline": ".processing",
    "NotchIIR": ".processing",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, FAMILY)

__all__ = [
    "ButterworthBA",
    "ECGFOUNDER_1LEAD_CONTRACT",
    "ECGFOUNDER_CONTRACT",
    "ECGFounderConfig",
    "ECGFounderModel",
    "ECGFounderModelOutput",
    "ECGFounderPreTrainedModel",
    "FAMILY",
    "LORA_TARGET_MODULES",
    "MedianBaseline",
    "NotchIIR",
    "RELEASED_ARCHITECTURE",
    "RELEASED_VARIANTS",
    "contract_for_in_channels",
    "convert_ecgfounder",
    "default_processor_steps",
    "infer_config_kwargs",
    "load_original",
    "read_checkpoint",
]
