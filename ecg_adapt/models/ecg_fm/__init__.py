"""ECG-FM (McKeen et al. 2024; bowang-lab/ECG-FM on Jwoo5/fairseq-signals, MIT): configuration, model,
converter, preprocessing steps and the family record.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from ...utils import lazy_exports
from .family import ECG_FM_CONTRACT, FAMILY, LORA_TARGET_MODULES, RELEASED_ARCHITECTURE, RELEASED_VARIANTS

# Submodule -> the names it defines, imported on first access; the first access also registers the family with
# the transformers Auto classes (resolving FAMILY.config_class does that).
_EXPORTS: dict[str, list[str]] = {
    "configuration": ["ECGFMConfig", "default_processor_steps"],
    "convert": [
        "ECGFMConversionReport", "ECGFMOriginalClassifier", "config_from_checkpoint", "convert_ecg_fm",
        "load_original", "load_original_classifier", "read_fairseq_checkpoint"
    ],
    "modeling": ["ECGFMModel", "ECGFMPreTrainedModel"],
    "processing": ["EndpointLinearResample", "NonOverlappingSegments", "RecordLeadZScore"],
}
__getattr__, __dir__, _ = lazy_exports(__name__, _EXPORTS, on_load=lambda name: FAMILY.config_class)

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
