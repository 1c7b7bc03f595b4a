"""MERL (Liu et al., ICML 2024) ECG encoders: configuration, model, converter and processor defaults.

One family, two released encoder types selected by ``MERLConfig.encoder_type``: ``"resnet"`` (ResNet18-1D)
and ``"vit"`` (ViT-tiny-1D). The family is not registered on import; call
``ecg_adapt.models.registry.register_family(merl.FAMILY)`` (idempotent) to make ``AutoModel`` and
``adapt()`` find it.
"""

from __future__ import annotations

from ..registry import BackboneFamily
from .configuration import (
    MERL_CONTRACT,
    MERL_LEADS,
    RELEASED_CONFIGS,
    RELEASED_VARIANTS,
    MERLConfig,
    default_processor_steps,
)
from .convert import convert_merl, load_original, read_checkpoint
from .modeling import MERLModel

# LoRA targets per encoder type. The family default is their union: peft wraps the names that exist in the
# model at hand, and the two sets never match a module of the other encoder.
VIT_LORA_TARGETS: tuple[str, ...] = ("to_qkv", "to_out.0", "net.0", "net.3")
RESNET_LORA_TARGETS: tuple[str, ...] = ("conv1", "conv2", "conv3")
LORA_TARGET_MODULES: tuple[str, ...] = VIT_LORA_TARGETS + RESNET_LORA_TARGETS


def lora_target_modules(config: MERLConfig) -> tuple[str, ...]:
    """The default LoRA targets of one encoder type (``conv3`` exists only in bottleneck ResNets)."""
    if config.encoder_type == "vit":
        return VIT_LORA_TARGETS
    return RESNET_LORA_TARGETS if config.resnet_block == "bottleneck" else RESNET_LORA_TARGETS[:2]


LORA_RATIONALE = (
    "ViT: the fused to_qkv projection (LoRA on the whole [q;k;v] output, since q/k/v are not separate modules), "
    "the attention output to_out.0 and both MLP linears net.0/net.3 of every block: every weight matrix of the "
    "transformer, as for ST-MEM; the patch-embedding conv and the learned positions stay frozen. "
    "ResNet: its only weight layers are convolutions, so LoRA goes on the Conv1d layers of the residual path "
    "(conv1/conv2, and conv3 in bottleneck blocks; 'conv1' also matches the 7-tap stem), which peft supports and can "
    "merge because none is grouped (groups=1), so any r works. The three 1x1 projection shortcuts (shortcut.0) are "
    "left out: they hold few weights and only rescale the skip path. BatchNorm stays frozen, running statistics "
    "included (MERLModel keeps a BatchNorm with frozen parameters in eval mode), so that an adapter-only save "
    "reproduces the trained model and small fine-tuning batches do not overwrite MIMIC statistics. The unused "
    "pretraining 'linear' is not part of the backbone."
)

FAMILY = BackboneFamily(
    model_type="merl",
    config_class=MERLConfig,
    model_class=MERLModel,
    default_processor_steps=default_processor_steps,
    lora_target_modules=LORA_TARGET_MODULES,
    lora_rationale=LORA_RATIONALE,
    convert=convert_merl,
    description=(
        "MERL (Liu et al., ICML 2024), ECG encoder of an ECG-report CLIP model pretrained on MIMIC-IV-ECG: "
        "ResNet18-1D or ViT-tiny-1D on 12 leads (MIMIC order, aVF before aVL), 500 Hz, 10 s, global min-max [0, 1]"
    ),
    released_variants=tuple(RELEASED_VARIANTS),
)

__all__ = [
    "FAMILY",
    "LORA_RATIONALE",
    "LORA_TARGET_MODULES",
    "MERL_CONTRACT",
    "MERL_LEADS",
    "RELEASED_CONFIGS",
    "RELEASED_VARIANTS",
    "RESNET_LORA_TARGETS",
    "VIT_LORA_TARGETS",
    "MERLConfig",
    "MERLModel",
    "convert_merl",
    "default_processor_steps",
    "load_original",
    "lora_target_modules",
    "read_checkpoint",
]
