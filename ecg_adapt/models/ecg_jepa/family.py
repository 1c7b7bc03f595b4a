"""The torch-free facts of the ecg_jepa family: signal contract, released variants, block layout, default
adaptation targets, tiny test configs and the :class:`~ecg_adapt.models.family.BackboneFamily` record.

Nothing here imports torch or transformers, so ``ecg-adapt models`` and family discovery stay fast; the
configuration, model, converter and processor steps are named by dotted path and imported on first use.
"""

from __future__ import annotations

from typing import Any

from ...processing.contract import SignalContract
from ..family import ArchitectureVariant, BackboneFamily, BlockLayout, DefaultTargets, PromptSpec

_SOURCE = "https://github.com/sehunfromdaegu/ECG_JEPA"
_COMMIT = "d937ad2c2c8a1e22856ce7e4a23a30f84a71217c"

# The c = 8 lead slots of the pretrained model, in the order of its input rows and of its positional table:
# ecg_data.py keeps rows [0, 1, 6..11] of the standard 12-lead order.
PRETRAINING_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")

_FILTERING_LINEAR = (
    "none for linear evaluation (ecg_data.waves_ptbxl): FFT resample (scipy.signal.resample) of the 10 s crop "
    "to 2500 samples; the fine-tuning pipeline (finetuning.py) adds zero-phase order-5 Butterworth 0.67 Hz "
    "high-pass then 40 Hz low-pass (sosfiltfilt), see default_processor_steps(pipeline='finetune')"
)


def _contract(leads: tuple[str, ...] = PRETRAINING_LEADS) -> SignalContract:
    return SignalContract(
        leads=leads,
        sampling_rate=250.0,
        window_samples=2500,
        layout="channels_first",
        units="mV",
        filtering=_FILTERING_LINEAR,
        normalization="none: the encoder sees millivolts (no z-score, no min-max, no baseline removal)",
        source=f"sehunfromdaegu/ECG_JEPA@{_COMMIT[:7]}: ecg_data.py waves_ptbxl/get_ecg_data, augmentation.py, finetuning.py",
    )


ECG_JEPA_CONTRACT = _contract()


# The released ViT-B encoder (models.load_encoder). Shapes a converter cannot read from tensors: the head count.
RELEASED_SIZES: dict[str, dict[str, Any]] = {
    "vit-b": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 16, "mlp_ratio": 4.0, "qkv_bias": False},
}

_WEIGHTS = {
    "multiblock": "https://drive.google.com/file/d/1gMOT4xjQQg0GZkY1iE6NuDzua4ALw00l/view (multiblock_epoch100.pth)",
    "random": "https://drive.google.com/file/d/1mh-XL0XOvvhFbhvuZ9c2KnTHa9B4F3Wx/view (random_epoch100.pth)",
}
# Parameters of ECGJEPAModel built from RELEASED_SIZES (tests recompute it): the trainable weights. The
# checkpoint also stores the fixed sin-cos table pos_embed (400 x 768 = 307,200 values, a buffer here),
# 85,374,720 values in all.
_RELEASED_PARAMETERS = 85_067_520
_RELEASED_STATE_DICT_VALUES = 85_374_720

RELEASED_VARIANTS: list[dict[str, Any]] = [
    {
        "name": f"ecg-jepa-{masking}",
        "family": "ecg_jepa",
        "source": f"{_SOURCE} (commit {_COMMIT[:7]}; paper arXiv 2410.08559)",
        "weights": _WEIGHTS[masking],
        "release": {"url": _WEIGHTS[masking].split(" ")[0], "host": "Google Drive", "filename": f"{masking}_epoch100.pth"},
        "licence": "MIT (code); the checkpoints carry no licence statement of their own",
        "redistribution": "unclear for the weights (no licence on the Google Drive files): link and convert, do not re-host",
        "parameters": _RELEASED_PARAMETERS,
        "state_dict_values": _RELEASED_STATE_DICT_VALUES,
        "pretraining": (
            f"{'multi-block masking, mask_scale (0.175, 0.225)' if masking == 'multiblock' else 'random masking, mask_scale (0.6, 0.7)'}; "
            "Chapman-Shaoxing-Ningbo + CODE-15, 100 epochs; the file holds the context encoder only"
        ),
        "config": dict(RELEASED_SIZES["vit-b"]),
        "contract": ECG_JEPA_CONTRACT.describe(),
    }
    for masking in ("multiblock", "random")
]


# ------------------------------------------------------------------------------------------------------------------
# What the adaptation methods need to know (read by ecg_adapt.adaptation.layout and peft_methods).

LORA_TARGET_MODULES: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2")

FAMILY = BackboneFamily(
    model_type="ecg_jepa",
    description=(
        "ECG-JEPA (Kim et al. 2024), ViT-B over per-lead 50-sample patches with a lead-wise attention mask; "
        "8 leads (I, II, V1-V6), 250 Hz, 10 s, millivolts"
    ),
    package=__package__,
    config_path=".configuration:ECGJEPAConfig",
    model_path=".modeling:ECGJEPAModel",
    convert_path=".convert:convert_ecg_jepa",
    processor_steps_path=".configuration:default_processor_steps",
    variants={
        "ecg_jepa": ArchitectureVariant(
            # encoder_blocks(x, pos, attn_mask) runs ``block(x + pos, attn_mask)`` for every block, so prompts enter
            # through encoder_blocks (the positional addition is padded for them).
            BlockLayout(
                kind="transformer",
                block_pattern=r"encoder_blocks\.blocks\.\d+",
                post_blocks=("norm",),
                attention_output="attn",
                ffn_output="mlp",
                prompt=PromptSpec("attention_mask", 1, "pairwise", entry="encoder_blocks"),
            ),
            DefaultTargets(
                # peft matches suffixes: "proj" hits only attn.proj (never W_P), "qkv" the fused attention input.
                lora=LORA_TARGET_MODULES,
                rationale=(
                    "every nn.Linear inside the transformer blocks: the fused attention input qkv (Q, K and V adapted "
                    "together, as in the original module), the attention output proj and both MLP layers fc1/fc2, which "
                    "hold 2/3 of the weights. The patch embedding W_P (Linear(50, D), 0.05% of the weights) and the "
                    "LayerNorms stay frozen, and the fixed sin-cos pos_embed is a buffer that is never trained; there are "
                    "no convolutions. All targets are plain nn.Linear, so the adapters merge back into the weights."
                ),
                ia3=("qkv", "fc2"),
                ia3_feedforward=("fc2",),
            ),
        ),
    },
    tiny_configs={"ecg_jepa": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)},
    released_variants=tuple(RELEASED_VARIANTS),
)
