"""ECG-FM (McKeen et al. 2024; bowang-lab/ECG-FM on Jwoo5/fairseq-signals, MIT): configuration, model,
converter, preprocessing steps and the family record for the registry.

Register the family (``AutoModel``, ``adapt()``, ``load_backbone`` then know ``model_type="ecg_fm"``)::

    from ecg_adapt.models.registry import register_family
    from ecg_adapt.models import ecg_fm
    register_family(ecg_fm.FAMILY)
"""

from ..registry import BackboneFamily
from .configuration import ECG_FM_CONTRACT, RELEASED_ARCHITECTURE, RELEASED_VARIANTS, ECGFMConfig, default_processor_steps
from .convert import (
    ECGFMConversionReport,
    ECGFMOriginalClassifier,
    config_from_checkpoint,
    convert_ecg_fm,
    load_original,
    load_original_classifier,
    read_fairseq_checkpoint,
)
from .modeling import ECGFMModel, ECGFMPreTrainedModel
from .processing import EndpointLinearResample, NonOverlappingSegments, RecordLeadZScore

LORA_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

FAMILY = BackboneFamily(
    model_type="ecg_fm",
    config_class=ECGFMConfig,
    model_class=ECGFMModel,
    default_processor_steps=default_processor_steps,
    lora_target_modules=LORA_TARGET_MODULES,
    lora_rationale=(
        "every nn.Linear of every transformer layer: attention q/k/v/out_proj (separate projections in the "
        "original, so no fused qkv to split) and the FFN fc1/fc2, which hold 2/3 of the encoder weights. Left "
        "frozen: the conv feature extractor (ECG-FM fine-tuning freezes it, feature_grad_mult=0), "
        "post_extract_proj (one shared input projection), and the positional conv (grouped, 16 groups, and "
        "weight-normed: peft cannot merge LoRA on grouped convs and r would have to be a multiple of the groups)"
    ),
    convert=convert_ecg_fm,
    description=(
        "ECG-FM (McKeen et al. 2024), wav2vec 2.0-style transformer (conv extractor over 12 leads, conv positional "
        "encoding, 12 post-LN layers, 768-d), 12 leads at 500 Hz, 5 s windows, per-lead z-score over the record"
    ),
    released_variants=tuple(RELEASED_VARIANTS),
)

__all__ = [
    "ECG_FM_CONTRACT",
    "FAMILY",
    "LORA_TARGET_MODULES",
    "RELEASED_ARCHITECTURE",
    "RELEASED_VARIANTS",
    "ECGFMConfig",
    "ECGFMConversionReport",
    "ECGFMModel",
    "ECGFMOriginalClassifier",
    "ECGFMPreTrainedModel",
    "EndpointLinearResample",
    "NonOverlappingSegments",
    "RecordLeadZScore",
    "config_from_checkpoint",
    "convert_ecg_fm",
    "default_processor_steps",
    "load_original",
    "load_original_classifier",
    "read_fairseq_checkpoint",
]
