"""The torch-free facts of the st_mem family: signal contract, released variants, block layout, default
adaptation targets, tiny test configs and the :class:`~ecg_adapt.models.family.BackboneFamily` record.

Nothing here imports torch or transformers, so ``ecg-adapt models`` and family discovery stay fast; the
configuration, model, converter and processor steps are named by dotted path and imported on first use.
"""

from __future__ import annotations

from typing import Any

from ...processing.contract import STANDARD_12_LEADS, SignalContract
from ..family import ArchitectureVariant, BackboneFamily, BlockLayout, DefaultTargets, PromptSpec

_SOURCE_REPO = "https://github.com/vuno/ST-MEM"
_SOURCE_COMMIT = "311c6446894dee4126db8d2520024e9f62cf1616"  # = bakqui/ST-MEM@69ec702 + a licence-header commit

ST_MEM_CONTRACT = SignalContract(
    leads=STANDARD_12_LEADS,
    sampling_rate=250.0,
    window_samples=2250,
    layout="channels_first",
    units="mV",
    filtering=(
        "10 s windows (float32) resampled to 250 Hz with scipy.signal.resample (FFT); three 9 s crops per window "
        "(starts 0, 0.5, 1 s); on each crop a zero-phase Butterworth high-pass 0.67 Hz then low-pass 40 Hz "
        "(order 5, sosfiltfilt)"
    ),
    normalization="z-score of each 9 s crop over all leads and time together (one mean and std per crop)",
    source=(
        f"vuno/ST-MEM@{_SOURCE_COMMIT[:7]} (= bakqui/ST-MEM@69ec702): data/process_ecg.py, util/transforms.py "
        "(Resample, NCrop, HighpassFilter, LowpassFilter, Standardize), configs/downstream/st_mem.yaml eval_transforms"
    ),
)


# Architecture of the released / defined sizes, in the original constructor's names
# (models/encoder/st_mem_vit.py: st_mem_vit_base, st_mem_vit_small). dim_head is 64 in every one of them:
# the MAE wrapper never passes it and the constructor default is 64.
RELEASED_SIZES: dict[str, dict[str, int]] = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "head_dim": 64},
    "small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536, "head_dim": 64},
}

_LICENCE = (
    "CC BY-NC 4.0 (non-commercial) plus a VUNO notice: 'Do not distribute, modify, or use this code outside the "
    "scope permitted by the license without explicit permission from VUNO'. The weights carry no licence of their "
    "own; treat them as CC BY-NC 4.0 + VUNO notice"
)
_NO_REDISTRIBUTION = (
    "not allowed: link and convert only (download from the authors' Google Drive, run "
    "ecg_adapt.models.st_mem.convert_st_mem locally; ecg_adapt neither hosts nor re-uploads the weights)"
)

# Parameter counts are those of STMEMModel built from "config" (no head), recomputed by tests/test_st_mem.py;
# they equal the tensor counts of the original encoder state dicts (meta.json: 85,150,614 and 21,341,718).
RELEASED_VARIANTS: list[dict[str, Any]] = [
    {
        "name": "st-mem-vit-b75-encoder",
        "family": "st_mem",
        "source": _SOURCE_REPO,
        "source_also": "https://github.com/bakqui/ST-MEM",
        "weights": "https://drive.google.com/file/d/1E7J-A1HqWa2f08T6Sfk5uWk-_CFJhOYQ/view (README 'Encoder')",
        # The README links the file without naming it; the name is the one the Drive link downloads as (unverified).
        "release": {"url": "https://drive.google.com/file/d/1E7J-A1HqWa2f08T6Sfk5uWk-_CFJhOYQ/view",
                    "host": "Google Drive", "filename": "st_mem_vit_base_encoder.pth"},
        "checkpoint": "torch.save {'epoch', 'model': ST_MEM_ViT state dict (no prefix, no head), 'optimizer': None, 'scaler': None, 'config'}",
        "licence": _LICENCE,
        "redistribution": _NO_REDISTRIBUTION,
        "parameters": 85_150_614,
        "config": dict(RELEASED_SIZES["base"]),
        "contract": ST_MEM_CONTRACT.describe(),
    },
    {
        "name": "st-mem-vit-b75-full",
        "family": "st_mem",
        "source": _SOURCE_REPO,
        "source_also": "https://github.com/bakqui/ST-MEM",
        "weights": "https://drive.google.com/file/d/14nScwPk35sFi8wc-cuLJLqudVwynKS0n/view (README 'Full (encoder + decoder)')",
        "release": {"url": "https://drive.google.com/file/d/14nScwPk35sFi8wc-cuLJLqudVwynKS0n/view",
                    "host": "Google Drive", "filename": "st_mem_vit_base_full.pth"},
        "checkpoint": (
            "torch.save {'model': ST_MEM (MAE) state dict: encoder.* + decoder (dropped by the converter), "
            "'optimizer': AdamW state, 'scaler', ...}; 88,594,807 stored values, 85,150,614 kept"
        ),
        "licence": _LICENCE,
        "redistribution": _NO_REDISTRIBUTION,
        "parameters": 85_150_614,
        "config": dict(RELEASED_SIZES["base"]),
        "contract": ST_MEM_CONTRACT.describe(),
    },
    {
        "name": "st-mem-vit-s75",
        "family": "st_mem",
        "source": _SOURCE_REPO,
        "source_also": "https://github.com/bakqui/ST-MEM",
        "weights": "none released (architecture defined in the original code only)",
        "release": None,  # no weights released
        "checkpoint": "none: st_mem_vit_small is defined in the code but no weights were released",
        "licence": _LICENCE,
        "redistribution": "no weights released",
        "parameters": 21_341_718,
        "config": dict(RELEASED_SIZES["small"]),
        "contract": ST_MEM_CONTRACT.describe(),
    },
]


# ------------------------------------------------------------------------------------------------------------------
# What the adaptation methods need to know (read by ecg_adapt.adaptation.layout and peft_methods).

FAMILY = BackboneFamily(
    model_type="st_mem",
    description="ST-MEM (Na et al. 2024), ViT-B/75 MAE with per-lead 1-D patches, SEP and lead embeddings; 12 leads, 250 Hz, 9 s",
    package=__package__,
    config_path=".configuration:STMEMConfig",
    model_path=".modeling:STMEMModel",
    convert_path=".convert:convert_st_mem",
    processor_steps_path=".configuration:default_processor_steps",
    variants={
        "st_mem": ArchitectureVariant(
            # block(x, key_mask=...); ``attn`` and ``ff`` (PreNorm wrappers) output their sublayer before the residual.
            BlockLayout(
                kind="transformer",
                block_pattern=r"block\d+",
                post_blocks=("norm",),
                attention_output="attn",
                ffn_output="ff",
                prompt=PromptSpec("key_mask", 1, "key_keep"),
            ),
            DefaultTargets(
                # Every nn.Linear of every block, by the original module names: the fused q/k/v projection, the
                # attention output and both MLP layers. peft matches these as name suffixes (block{i}.attn.fn.to_qkv,
                # ...fn.to_out.0, ...ff.fn.net.0, ...ff.fn.net.3); nothing else in the model (nor ECGClassifier's head)
                # ends with them.
                lora=("to_qkv", "to_out.0", "net.0", "net.3"),
                rationale=(
                    "all Linear layers of every transformer block (fused to_qkv, attention out to_out.0, MLP net.0/net.3): "
                    "LoRA on the fused to_qkv adapts q, k and v through one shared rank-r update, which merges like any "
                    "Linear; the MLP holds 2/3 of the block weights. The patch embedding (Linear 75->W between two "
                    "LayerNorms), the positional/SEP/lead embeddings (bare Parameters, not peft targets) and the LayerNorms "
                    "stay frozen, as the pretrained tokenisation is what transfers"
                ),
                ia3=("to_qkv", "net.3"),
                ia3_feedforward=("net.3",),
            ),
        ),
    },
    tiny_configs={"st_mem": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, intermediate_size=64)},
    released_variants=tuple(RELEASED_VARIANTS),
)
