"""ECGFounder (Li et al., NEJM AI 2025): configuration, model, converter, processor defaults and family record.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from ...utils import lazy_exports
from .family import ECGFOUNDER_1LEAD_CONTRACT, ECGFOUNDER_CONTRACT, FAMILY, LORA_TARGET_MODULES, RELEASED_ARCHITECTURE, RELEASED_VARIANTS, contract_for_in_channels

# Submodule -> the names it defines, imported on first access; the first access also registers the family with
# the transformers Auto classes (resolving FAMILY.config_class does that).
_EXPORTS: dict[str, list[str]] = {
    "configuration": ["ECGFounderConfig", "default_processor_steps"],
    "convert": ["convert_ecgfounder", "infer_config_kwargs", "load_original", "read_checkpoint"],
    "modeling": ["ECGFounderModel", "ECGFounderModelOutput", "ECGFounderPreTrainedModel"],
    "processing": ["ButterworthBA", "MedianBaseline", "NotchIIR"],
}
__getattr__, __dir__, _ = lazy_exports(__name__, _EXPORTS, on_load=lambda name: FAMILY.config_class)

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
