"""ST-MEM (Na et al., ICLR 2024): configuration, model, converter, preprocessing and family record.

Not registered with ecg_adapt here: ``ecg_adapt.models`` does that with :data:`FAMILY` (or call
``ecg_adapt.models.registry.register_family(st_mem.FAMILY)``; it is idempotent).
"""

from ..registry import BackboneFamily
from .configuration import RELEASED_SIZES, RELEASED_VARIANTS, ST_MEM_CONTRACT, STMEMConfig, default_processor_steps
from .convert import convert_st_mem, load_original
from .modeling import STMEMModel, STMEMPreTrainedModel
from .processing import STMEMCast, STMEMNCrop, STMEMStandardize

FAMILY = BackboneFamily(
    model_type="st_mem",
    config_class=STMEMConfig,
    model_class=STMEMModel,
    default_processor_steps=default_processor_steps,
    # Every nn.Linear of every block, by the original module names: the fused q/k/v projection, the attention
    # output and both MLP layers. peft matches these as name suffixes (block{i}.attn.fn.to_qkv, ...fn.to_out.0,
    # ...ff.fn.net.0, ...ff.fn.net.3); nothing else in the model (nor ECGClassifier's head) ends with them.
    lora_target_modules=("to_qkv", "to_out.0", "net.0", "net.3"),
    lora_rationale=(
        "all Linear layers of every transformer block (fused to_qkv, attention out to_out.0, MLP net.0/net.3): "
        "LoRA on the fused to_qkv adapts q, k and v through one shared rank-r update, which merges like any "
        "Linear; the MLP holds 2/3 of the block weights. The patch embedding (Linear 75->W between two "
        "LayerNorms), the positional/SEP/lead embeddings (bare Parameters, not peft targets) and the LayerNorms "
        "stay frozen, as the pretrained tokenisation is what transfers"
    ),
    convert=convert_st_mem,
    description="ST-MEM (Na et al. 2024), ViT-B/75 MAE with per-lead 1-D patches, SEP and lead embeddings; 12 leads, 250 Hz, 9 s",
    released_variants=tuple(RELEASED_VARIANTS),
)

__all__ = [
    "FAMILY",
    "RELEASED_SIZES",
    "RELEASED_VARIANTS",
    "ST_MEM_CONTRACT",
    "STMEMCast",
    "STMEMConfig",
    "STMEMModel",
    "STMEMNCrop",
    "STMEMPreTrainedModel",
    "STMEMStandardize",
    "convert_st_mem",
    "default_processor_steps",
    "load_original",
]
