"""The torch-free facts of the merl family: signal contract, released variants, block layout, default
adaptation targets, tiny test configs and the :class:`~ecg_adapt.models.family.BackboneFamily` record.

Nothing here imports torch or transformers, so ``ecg-adapt models`` and family discovery stay fast; the
configuration, model, converter and processor steps are named by dotted path and imported on first use.
"""

from __future__ import annotations

from typing import Any

from ...processing.contract import SignalContract
from ..family import ArchitectureVariant, BackboneFamily, BlockLayout, DefaultTargets, PromptSpec

ENCODER_TYPES: tuple[str, ...] = ("resnet", "vit")
RESNET_BLOCKS: tuple[str, ...] = ("basic", "bottleneck")
# Output channels of a residual block per unit of stage width (the original ``block.expansion``).
RESNET_EXPANSION: dict[str, int] = {"basic": 1, "bottleneck": 4}

# MIMIC-IV-ECG stores the limb leads as I, II, III, aVR, aVF, aVL: MERL was pretrained in that order, and its
# downstream code swaps rows 4 and 5 of standard-order data (``ecg[[4, 5]] = ecg[[5, 4]]``). The processor maps
# leads by *name* onto this order, so a standard-order record gets exactly that swap.
MERL_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")

_SOURCE_REPO = "https://github.com/cheliu-computation/MERL-ICML2024"
_SOURCE_COMMIT = "38799b7deb1c9958f41badcfacc6a95192787cc4"
_WEIGHTS_URL = "https://drive.google.com/drive/folders/13wb4DppUciMn-Y_qC2JRWTbZdz3xX0w2"

MERL_CONTRACT = SignalContract(
    leads=MERL_LEADS,
    sampling_rate=500.0,
    window_samples=5000,
    layout="channels_first",
    units="mV",
    filtering="none (the original applies no filter of any kind)",
    normalization=(
        "one global min-max over all 12 leads and all samples of the 10 s window, to [0, 1]: "
        "(x - min) / (max - min + 1e-8), in float64, then cast to float32"
    ),
    source=f"cheliu-computation/MERL-ICML2024@{_SOURCE_COMMIT[:7]}: finetune/finetune_dataset.py (ptbxl branch)",
    extra={
        "lead_order": "MIMIC-IV-ECG order: aVF BEFORE aVL (rows 4 and 5 swapped relative to the standard order)",
        "crop": "first 5000 samples of the record (10 s at 500 Hz); no resampling in the original",
    },
)


# Architectures of the released encoders (``ResNet18()`` and ``vit_tiny(num_leads=12)``), as MERLConfig kwargs.
RELEASED_CONFIGS: dict[str, dict[str, Any]] = {
    "resnet18": {
        "encoder_type": "resnet",
        "resnet_block": "basic",
        "resnet_num_blocks": [2, 2, 2, 2],
        "resnet_widths": [64, 128, 256, 512],
    },
    "vit_tiny": {
        "encoder_type": "vit",
        "vit_width": 192,
        "vit_depth": 12,
        "vit_heads": 3,
        "vit_dim_head": 64,
        "vit_mlp_dim": 768,
        "vit_patch_size": 50,
        "vit_seq_len": 5000,
    },
}

# Every ViT factory of the original (vit_tiny/small/middle/base) leaves ``dim_head`` at its default of 64.
# The tensors give only heads * dim_head, so the converter divides by this to get the number of heads.
ORIGINAL_VIT_DIM_HEAD = 64

_COMMON_VARIANT_FIELDS: dict[str, Any] = {
    "family": "merl",
    "source": f"{_SOURCE_REPO} (commit {_SOURCE_COMMIT[:7]})",
    "weights": f"{_WEIGHTS_URL} (Google Drive folder linked from the README; *_encoder.pth = ECG encoder only)",
    "licence": (
        "MIT (code, Copyright (c) 2024 Che Liu). The released weights carry no licence statement of their own "
        "and were pretrained on MIMIC-IV-ECG: check that dataset's terms as well"
    ),
    "redistribution": "not stated for the weights: link and convert (ecg_adapt does not re-host them)",
    "contract": MERL_CONTRACT.describe(),
}

# ``parameters`` is ecg_adapt's backbone (without the unused pretraining ``linear`` of the ResNet file);
# tests/test_merl.py recomputes it from ``config``.
RELEASED_VARIANTS: list[dict[str, Any]] = [
    {
        "name": "merl-resnet18",
        **_COMMON_VARIANT_FIELDS,
        "file": "res18_best_encoder.pth (bare state_dict; the whole CLIP model is res18_best_ckpt.pth)",
        "release": {"url": _WEIGHTS_URL, "host": "Google Drive", "filename": "res18_best_encoder.pth"},
        "parameters": 3_848_832,
        "parameters_in_file": 3_853_962,  # + the untrained linear (10, 512) + (10,) that the converter drops
        "features": 512,
        "config": dict(RELEASED_CONFIGS["resnet18"]),
    },
    {
        "name": "merl-vit-tiny",
        **_COMMON_VARIANT_FIELDS,
        "file": "vit_tiny_best_encoder.pth (bare state_dict; the whole CLIP model is vit_tiny_best_ckpt.pth)",
        "release": {"url": _WEIGHTS_URL, "host": "Google Drive", "filename": "vit_tiny_best_encoder.pth"},
        "parameters": 5_473_152,
        "parameters_in_file": 5_473_152,
        "features": 192,
        "config": dict(RELEASED_CONFIGS["vit_tiny"]),
    },
]


# ------------------------------------------------------------------------------------------------------------------
# What the adaptation methods need to know (read by ecg_adapt.adaptation.layout and peft_methods).


def _variant_of(config: Any) -> str:
    return f"merl/{getattr(config, 'encoder_type', None) or 'resnet'}"


FAMILY = BackboneFamily(
    model_type="merl",
    description=(
        "MERL (Liu et al., ICML 2024), ECG encoder of an ECG-report CLIP model pretrained on MIMIC-IV-ECG: "
        "ResNet18-1D or ViT-tiny-1D on 12 leads (MIMIC order, aVF before aVL), 500 Hz, 10 s, global min-max [0, 1]"
    ),
    package=__package__,
    config_path=".configuration:MERLConfig",
    model_path=".modeling:MERLModel",
    convert_path=".convert:convert_merl",
    processor_steps_path=".configuration:default_processor_steps",
    variants={
        "merl/resnet": ArchitectureVariant(
            # Residual blocks layer{stage}.{i}; their last conv gives the output channels (conv3 in bottlenecks).
            BlockLayout(kind="cnn", block_pattern=r"layer\d\.\d+", channels=("conv3.out_channels", "conv2.out_channels")),
            DefaultTargets(
                lora=("conv1", "conv2", "conv3"),
                rationale=(
                    "its only weight layers are convolutions, so LoRA goes on the Conv1d layers of the residual path "
                    "(conv1/conv2, and conv3 in bottleneck blocks; 'conv1' also matches the 7-tap stem), which peft "
                    "supports and can merge because none is grouped (groups=1), so any r works. The three 1x1 projection "
                    "shortcuts (shortcut.0) are left out: they hold few weights and only rescale the skip path. BatchNorm "
                    "stays frozen, running statistics included (MERLModel keeps a BatchNorm with frozen parameters in eval "
                    "mode), so that an adapter-only save reproduces the trained model and small fine-tuning batches do not "
                    "overwrite MIMIC statistics. The unused pretraining 'linear' is not part of the backbone."
                ),
                linear=(),
                ia3=(),
                no_linear_reason=(
                    "its only weight layers are convolutions (nn.Conv1d stem, residual and shortcut convs): there is "
                    "no nn.Linear layer to adapt"
                ),
            ),
        ),
        "merl/vit": ArchitectureVariant(
            # block(h, key_mask=...); ``attn`` and ``ff`` output their sublayer before the residual add.
            BlockLayout(
                kind="transformer",
                block_pattern=r"block\d+",
                post_blocks=("norm",),
                attention_output="attn",
                ffn_output="ff",
                prompt=PromptSpec("key_mask", 1, "key_keep"),
            ),
            DefaultTargets(
                lora=("to_qkv", "to_out.0", "net.0", "net.3"),
                rationale=(
                    "the fused to_qkv projection (LoRA on the whole [q;k;v] output, since q/k/v are not separate "
                    "modules), the attention output to_out.0 and both MLP linears net.0/net.3 of every block: every weight "
                    "matrix of the transformer, as for ST-MEM; the patch-embedding conv and the learned positions stay frozen."
                ),
                ia3=("to_qkv", "net.3"),
                ia3_feedforward=("net.3",),
            ),
        ),
    },
    tiny_configs={
        "merl_resnet": dict(resnet_widths=[8, 8, 16, 16], resnet_num_blocks=[1, 1, 1, 1]),
        "merl_vit": dict(encoder_type="vit", vit_width=32, vit_depth=2, vit_heads=2, vit_dim_head=16, vit_mlp_dim=64),
    },
    released_variants=tuple(RELEASED_VARIANTS),
    variant_of=_variant_of,
)
