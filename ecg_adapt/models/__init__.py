"""Backbone families (one folder each), the family registry and the classification head."""

from . import hubert_ecg
from .classifier import ECGClassifier, ECGClassifierConfig, ECGClassifierOutput
from .conversion import CheckpointMismatchError, ConversionReport
from .sequence import ECGSequenceClassifier, ECGSequenceClassifierConfig, ECGSequenceClassifierOutput
from .registry import FAMILIES, BackboneFamily, get_family, load_backbone, load_processor, register_family, released_variants

register_family(
    BackboneFamily(
        model_type="hubert_ecg",
        config_class=hubert_ecg.HubertECGConfig,
        model_class=hubert_ecg.HubertECGModel,
        default_processor_steps=hubert_ecg.default_processor_steps,
        # Attention projections and both FFN layers of every encoder layer: the LoRA-paper default extended
        # to the FFN, which holds 2/3 of the encoder's weights. The conv feature extractor is left frozen
        # (the original fine-tuning also freezes it by default) and the grouped, weight-normed positional
        # conv cannot be merged by peft (groups > 1).
        lora_target_modules=("q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"),
        lora_rationale="attention q/k/v/out and FFN of every encoder layer; conv extractor frozen as in the original fine-tuning",
        convert=hubert_ecg.convert_hubert_ecg,
        description="HuBERT-ECG (Coppola et al. 2024), HuBERT on 12 concatenated leads at 100 Hz, 5 s",
        released_variants=tuple(hubert_ecg.RELEASED_VARIANTS),
    )
)

# Families written as self-contained folders expose their own BackboneFamily.
from . import ecg_fm, ecg_jepa, ecgfounder, merl, st_mem  # noqa: E402

for _family in (ecg_fm, ecgfounder, st_mem, merl, ecg_jepa):
    register_family(_family.FAMILY)

__all__ = [
    "FAMILIES",
    "BackboneFamily",
    "CheckpointMismatchError",
    "ConversionReport",
    "ECGClassifier",
    "ECGClassifierConfig",
    "ECGClassifierOutput",
    "ECGSequenceClassifier",
    "ECGSequenceClassifierConfig",
    "ECGSequenceClassifierOutput",
    "get_family",
    "ecg_fm",
    "ecg_jepa",
    "ecgfounder",
    "st_mem",
    "hubert_ecg",
    "merl",
    "load_backbone",
    "load_processor",
    "register_family",
    "released_variants",
]
