"""ECG-FM (McKeen et al. 2024; bowang-lab/ECG-FM on Jwoo5/fairseq-signals, MIT): configuration, model,
converter, preprocessing steps and the family record.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from .._lazy import lazy_exports
from .family import ECG_FM_CONTRACT, FAMILY, LORA_TARGET_MODULES, RELEASED_ARCHITECTURE, RELEASED_VARIANTS

_LAZY: dict[str, str] = {
    "ECGFMConfig": ".configuration",
    "default_processor_steps": ".configuration",
    "ECGFMConversionReport": ".convert",
    "ECGFMOriginalClassifier": ".convert",
    "config_from_checkpoint": ".convert",
    "convert_ecg_fm": ".convert",
    "load_original": ".convert",
    "load_original_classifier": ".convert",
    "read_fairseq_checkpoint": ".convert",
    "ECGFMModel": ".modeling",
    "ECGFMPreTrainedModel": ".modeling",
    "EndpointLinearResample": ".processing",
    "NonOverlappingSegments": ".processing",
    "RecordLeadZScore": ".processing",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, FAMILY)

__all__ = [
    "ECGFMConfig",
    "ECGFMConversionReport",
    "ECGFMModel",
    "ECGFMOriginalClassifier",
    "ECGFMPreTrainedModel",
    "ECG_FM_CONTRACT",
    "EndpointLinearResample",
    "FAMILY",
    "LORA_TARGET_MODULES",
    "NonOverlappingSegments",
    "RELEASED_ARCHITECTURE",
    "RELEASED_VARIANTS",
    "RecordLeadZScore",
    "config_from_checkpoint",
    "convert_ecg_fm",
    "default_processor_steps",
    "load_original",
    "load_original_classifier",
    "read_fairseq_checkpoint",
]
