"""ECGFounder (Li et al., NEJM AI 2025): configuration, model, converter, processor defaults and family entry.

Register it with ``ecg_adapt.models.registry.register_family(ecgfounder.FAMILY)`` (idempotent) to make
``AutoModel``/``load_backbone``/``adapt`` know ``model_type="ecgfounder"``.
"""

from ..registry import BackboneFamily
from .configuration import (
    ECGFOUNDER_1LEAD_CONTRACT,
    ECGFOUNDER_CONTRACT,
    RELEASED_ARCHITECTURE,
    RELEASED_VARIANTS,
    ECGFounderConfig,
    contract_for_in_channels,
    default_processor_steps,
)
from .convert import convert_ecgfounder, infer_config_kwargs, load_original, read_checkpoint
from .modeling import ECGFounderModel, ECGFounderModelOutput, ECGFounderPreTrainedModel
from .processing import ButterworthBA, MedianBaseline, NotchIIR

# LoRA on the two pointwise (1x1, groups=1) convs of every block. They are the channel-mixing matrices of the
# network (the CNN counterpart of a transformer's projections/MLP, ~2/3 of each block's weights), peft wraps
# nn.Conv1d, any rank works, and the adapters merge. Left out: the grouped k=16 conv2 (peft needs r divisible
# by its groups, 4..64 in the release, and cannot merge it), the stem conv (low-level filtering, kept frozen
# like HuBERT-ECG's conv extractor) and the small squeeze-excitation gates (add "se_fc1", "se_fc2" if wanted).
LORA_TARGET_MODULES: tuple[str, ...] = ("conv1.conv", "conv3.conv")

FAMILY = BackboneFamily(
    model_type="ecgfounder",
    config_class=ECGFounderConfig,
    model_class=ECGFounderModel,
    default_processor_steps=default_processor_steps,
    lora_target_modules=LORA_TARGET_MODULES,
    lora_rationale=(
        "pointwise 1x1 convs (conv1.conv, conv3.conv) of every block: the channel-mixing weights, mergeable and "
        "rank-agnostic; grouped conv2 (r must divide by groups, not mergeable), stem and SE gates left frozen"
    ),
    convert=convert_ecgfounder,
    description="ECGFounder (Li et al. 2025), Net1D RegNet-style 1-D CNN with SE, 12 leads or lead I, 500 Hz, 10 s",
    released_variants=tuple(RELEASED_VARIANTS),
)

__all__ = [
    "ECGFOUNDER_1LEAD_CONTRACT",
    "ECGFOUNDER_CONTRACT",
    "FAMILY",
    "LORA_TARGET_MODULES",
    "RELEASED_ARCHITECTURE",
    "RELEASED_VARIANTS",
    "ButterworthBA",
    "ECGFounderConfig",
    "ECGFounderModel",
    "ECGFounderModelOutput",
    "ECGFounderPreTrainedModel",
    "MedianBaseline",
    "NotchIIR",
    "contract_for_in_channels",
    "convert_ecgfounder",
    "default_processor_steps",
    "infer_config_kwargs",
    "load_original",
    "read_checkpoint",
]
