"""ECG-JEPA (Kim et al. 2024, sehunfromdaegu/ECG_JEPA): configuration, model, converter, processor defaults.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from .._lazy import lazy_exports
from .family import ECG_JEPA_CONTRACT, FAMILY, LORA_TARGET_MODULES, PRETRAINING_LEADS, RELEASED_SIZES, RELEASED_VARIANTS

_LAZY: dict[str, str] = {
    "PIPELINES": ".configuration",
    "ECGJEPAConfig": ".configuration",
    "default_processor_steps": ".configuration",
    "convert_ecg_jepa": ".convert",
    "load_original": ".convert",
    "ECGJEPAModel": ".modeling",
    "ECGJEPAPreTrainedModel": ".modeling",
    "lead_wise_attention_mask": ".modeling",
    "sincos_2d_lead_patch": ".modeling",
    "SOSButterworth": ".processing",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, FAMILY)

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
