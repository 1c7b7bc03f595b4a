"""ECG-JEPA (Kim et al. 2024, sehunfromdaegu/ECG_JEPA): configuration, model, converter, processor defaults.

Register the family with ``ecg_adapt.models.registry.register_family(ecg_jepa.FAMILY)`` (idempotent) so that
``AutoModel``/``load_backbone`` and :func:`ecg_adapt.adapt` find it.
"""

from ..registry import BackboneFamily
from .configuration import (
    ECG_JEPA_CONTRACT,
    PIPELINES,
    PRETRAINING_LEADS,
    RELEASED_SIZES,
    RELEASED_VARIANTS,
    ECGJEPAConfig,
    default_processor_steps,
)
from .convert import convert_ecg_jepa, load_original
from .modeling import (
    ECGJEPAModel,
    ECGJEPAPreTrainedModel,
    lead_wise_attention_mask,
    sincos_2d_lead_patch,
)
from .processing import SOSButterworth

LORA_TARGET_MODULES: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2")

FAMILY = BackboneFamily(
    model_type="ecg_jepa",
    config_class=ECGJEPAConfig,
    model_class=ECGJEPAModel,
    default_processor_steps=default_processor_steps,
    # peft matches suffixes: "proj" hits only attn.proj (never W_P), "qkv" the fused attention input.
    lora_target_modules=LORA_TARGET_MODULES,
    lora_rationale=(
        "every nn.Linear inside the transformer blocks: the fused attention input qkv (Q, K and V adapted "
        "together, as in the original module), the attention output proj and both MLP layers fc1/fc2, which "
        "hold 2/3 of the weights. The patch embedding W_P (Linear(50, D), 0.05% of the weights) and the "
        "LayerNorms stay frozen, and the fixed sin-cos pos_embed is a buffer that is never trained; there are "
        "no convolutions. All targets are plain nn.Linear, so the adapters merge back into the weights."
    ),
    convert=convert_ecg_jepa,
    description=(
        "ECG-JEPA (Kim et al. 2024), ViT-B over per-lead 50-sample patches with a lead-wise attention mask; "
        "8 leads (I, II, V1-V6), 250 Hz, 10 s, millivolts"
    ),
    released_variants=tuple(RELEASED_VARIANTS),
)

__all__ = [
    "ECG_JEPA_CONTRACT",
    "FAMILY",
    "LORA_TARGET_MODULES",
    "PIPELINES",
    "PRETRAINING_LEADS",
    "RELEASED_SIZES",
    "RELEASED_VARIANTS",
    "ECGJEPAConfig",
    "ECGJEPAModel",
    "ECGJEPAPreTrainedModel",
    "SOSButterworth",
    "convert_ecg_jepa",
    "default_processor_steps",
    "lead_wise_attention_mask",
    "load_original",
    "sincos_2d_lead_patch",
]
