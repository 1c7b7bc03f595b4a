"""ECG-JEPA (Kim et al. 2024, sehunfromdaegu/ECG_JEPA): configuration, model, converter, processor defaults.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from ...utils import lazy_exports
from .family import ECG_JEPA_CONTRACT, FAMILY, LORA_TARGET_MODULES, PRETRAINING_LEADS, RELEASED_SIZES, RELEASED_VARIANTS

# Submodule -> the names it defines, imported on first access; the first access also registers the family with
# the transformers Auto classes (resolving FAMILY.config_class does that).
_EXPORTS: dict[str, list[str]] = {
    "configuration": ["PIPELINES", "ECGJEPAConfig", "default_processor_steps"],
    "convert": ["convert_ecg_jepa", "load_original"],
    "modeling": ["ECGJEPAModel", "ECGJEPAPreTrainedModel", "lead_wise_attention_mask", "sincos_2d_lead_patch"],
    "processing": ["SOSButterworth"],
}
__getattr__, __dir__, _ = lazy_exports(__name__, _EXPORTS, on_load=lambda name: FAMILY.config_class)

__all__ = [
    "ECGJEPAConfig",
    "ECGJEPAModel",
    "ECGJEPAPreTrainedModel",
    "ECG_JEPA_CONTRACT",
    "FAMILY",
    "LORA_TARGET_MODULES",
    "PIPELINES",
    "PRETRAINING_LEADS",
    "RELEASED_SIZES",
    "RELEASED_VARIANTS",
    "SOSButterworth",
    "convert_ecg_jepa",
    "default_processor_steps",
    "lead_wise_attention_mask",
    "load_original",
    "sincos_2d_lead_patch",
]
