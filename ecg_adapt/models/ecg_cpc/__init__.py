"""ECG-CPC (AI4HealthUOL ECG foundation-model benchmark, ICLR 2026): conv encoder + causal S4 pre-trained with CPC
on HEEDB. Configuration, model, converter of the Lightning checkpoint, processor defaults and family record.

The family record and its torch-free facts (``FAMILY``, contract, released variant) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from ...utils import lazy_exports
from .family import ECG_CPC_CONTRACT, FAMILY, LORA_TARGET_MODULES, RELEASED_ARCHITECTURE, RELEASED_VARIANTS

# Submodule -> the names it defines, imported on first access; the first access also registers the family with
# the transformers Auto classes (resolving FAMILY.config_class does that).
_EXPORTS: dict[str, list[str]] = {
    "configuration": ["ECGCPCConfig", "default_processor_steps"],
    "convert": ["convert_ecg_cpc", "load_original", "read_lightning_checkpoint", "RestrictedUnpickler"],
    "modeling": ["ECGCPCModel", "ECGCPCModelOutput", "ECGCPCPreTrainedModel"],
    "processing": ["SincResample", "sinc_resample"],
}
__getattr__, __dir__, _ = lazy_exports(__name__, _EXPORTS, on_load=lambda name: FAMILY.config_class)

__all__ = [
    "ECGCPCConfig",
    "ECGCPCModel",
    "ECGCPCModelOutput",
    "ECGCPCPreTrainedModel",
    "ECG_CPC_CONTRACT",
    "FAMILY",
    "LORA_TARGET_MODULES",
    "RELEASED_ARCHITECTURE",
    "RELEASED_VARIANTS",
    "RestrictedUnpickler",
    "SincResample",
    "convert_ecg_cpc",
    "default_processor_steps",
    "load_original",
    "read_lightning_checkpoint",
    "sinc_resample",
]
