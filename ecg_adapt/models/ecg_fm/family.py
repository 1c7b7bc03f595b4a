"""The torch-free facts of the ecg_fm family: signal contract, released variants, block layout, default
adaptation targets, tiny test configs and the :class:`~ecg_adapt.models.family.BackboneFamily` record.

Nothing here imports torch or transformers, so ``ecg-adapt models`` and family discovery stay fast; the
configuration, model, converter and processor steps are named by dotted path and imported on first use.
"""

from __future__ import annotations

from typing import Any

from ...processing.contract import STANDARD_12_LEADS, SignalContract
from ..family import ArchitectureVariant, BackboneFamily, BlockLayout, DefaultTargets, PromptSpec

ECG_FM_CONTRACT = SignalContract(
    leads=STANDARD_12_LEADS,
    sampling_rate=500.0,
    window_samples=2500,
    layout="channels_first",
    units="mV",
    filtering=(
        "none (fairseq-signals task.filter=false); records not at 500 Hz are linearly interpolated onto "
        "n_new = int(N * 500 / fs) points of an endpoint-aligned grid (np.linspace(0, n_new - 1, N))"
    ),
    normalization=(
        "per-lead z-score over the WHOLE record before segmenting (float64: subtract the mean, divide by np.std "
        "with ddof=0 and no epsilon; constant leads become 0)"
    ),
    source=(
        "Jwoo5/fairseq-signals@6b9e137 scripts/preprocess/ecg/preprocess.py (resample, preprocess_mat, "
        "lead_std_divide, segment_mat) + FileECGDataset; bowang-lab/ECG-FM@9cc0d3f notebooks/infer_quickstart.ipynb"
    ),
    extra={
        "segmenting": "non-overlapping 5 s windows, remainder dropped; each window is one model input",
        "aggregation": "ECG-FM combines window predictions per label afterwards (max for e.g. PVC, VT, pacemaker; "
        "mean for the rest): ecg_adapt.tasks.aggregate_windows",
        "lead_matching": "the original matches header lead names exactly (case-sensitive); ecg_adapt's processor "
        "matches them case-insensitively and reports missing leads",
    },
)


# Architecture of the released model (HF wanglab/ecg-fm *.yaml = examples/w2v_cmsc/config/pretraining/
# w2v_cmsc_rlm.yaml + fairseq-signals dataclass defaults; meta.json released_variants), in this config's names.
RELEASED_ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "num_leads": 12,
    "conv_dim": [256, 256, 256, 256],
    "conv_kernel": [2, 2, 2, 2],
    "conv_stride": [2, 2, 2, 2],
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}

_FAIRSEQ_SIGNALS = "https://github.com/Jwoo5/fairseq-signals"
_ECG_FM = "https://github.com/bowang-lab/ECG-FM"
_INPUT_SUMMARY = (
    "(B, 12, 2500): leads I, II, III, aVR, aVL, aVF, V1-V6; 500 Hz (linear interpolation); per-lead z-score over "
    "the whole record; non-overlapping 5 s windows (remainder dropped); no filtering"
)

# ``parameters`` is the backbone as ecg_adapt builds it (no pretraining modules, no head); tests/test_ecg_fm.py
# recomputes it from ``config``. ``original_parameters`` is the count of the whole original model (meta.json,
# built with the original code): the pretrained model also holds mask_emb, the Gumbel quantizer (2 x 320 codes),
# project_q and final_proj (509,824 parameters); the fine-tuned one the 17-label head proj (13,073).
RELEASED_VARIANTS: list[dict[str, Any]] = [
    {
        "name": "ecg-fm-pretrained",
        "family": "ecg_fm",
        "source": f"{_ECG_FM} (model code: {_FAIRSEQ_SIGNALS}, class Wav2Vec2CMSCModel 'wav2vec2_cmsc')",
        "weights": "https://huggingface.co/wanglab/ecg-fm/blob/main/mimic_iv_ecg_physionet_pretrained.pt",
        "release": {"repo_id": "wanglab/ecg-fm", "filename": "mimic_iv_ecg_physionet_pretrained.pt", "revision": None},
        "licence": "MIT (code: fairseq-signals (c) 2023 Jungwoo Oh, ECG-FM (c) 2024 WangLab @ U of T; HF weights: MIT)",
        "redistribution": "allowed by the MIT licence (keep the copyright notice); ecg_adapt links to and converts the original",
        "parameters": 90_373_248,
        "original_parameters": 90_883_072,
        "pretraining": "wav2vec 2.0 + CMSC + random lead masking on MIMIC-IV-ECG v1.0 and PhysioNet 2021 v1.0.3",
        "container": "fairseq checkpoint (.pt, 1.09 GB with Adam state): cfg + model state dict; old weight-norm keys",
        "input": _INPUT_SUMMARY,
        "config": dict(RELEASED_ARCHITECTURE),
    },
    {
        "name": "ecg-fm-finetuned-mimic-iv",
        "family": "ecg_fm",
        "source": f"{_ECG_FM} (model code: {_FAIRSEQ_SIGNALS}, class ECGTransformerClassificationModel "
        "'ecg_transformer_classifier')",
        "weights": "https://huggingface.co/wanglab/ecg-fm/blob/main/mimic_iv_ecg_finetuned.pt",
        "release": {"repo_id": "wanglab/ecg-fm", "filename": "mimic_iv_ecg_finetuned.pt", "revision": None},
        "licence": "MIT (code: fairseq-signals (c) 2023 Jungwoo Oh, ECG-FM (c) 2024 WangLab @ U of T; HF weights: MIT)",
        "redistribution": "allowed by the MIT licence (keep the copyright notice); ecg_adapt links to and converts the original",
        "parameters": 90_373_248,
        "original_parameters": 90_386_321,
        "pretraining": "the pretrained model above, fine-tuned on 17 MIMIC-IV-ECG labels (ECG-FM data/mimic_iv_ecg/labels/label_def.csv)",
        "container": "fairseq checkpoint (.pt, 1.08 GB with Adam state): backbone under 'encoder.', head 'proj' "
        "(Linear(768, 17)); weight-norm key style not certain (both accepted)",
        "input": _INPUT_SUMMARY,
        "config": dict(RELEASED_ARCHITECTURE),
    },
]
for _variant in RELEASED_VARIANTS:
    _variant["contract"] = ECG_FM_CONTRACT.describe()


# ------------------------------------------------------------------------------------------------------------------
# What the adaptation methods need to know (read by ecg_adapt.adaptation.layout and peft_methods).

LORA_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

FAMILY = BackboneFamily(
    model_type="ecg_fm",
    description=(
        "ECG-FM (McKeen et al. 2024), wav2vec 2.0-style transformer (conv extractor over 12 leads, conv positional "
        "encoding, 12 post-LN layers, 768-d), 12 leads at 500 Hz, 5 s windows, per-lead z-score over the record"
    ),
    package=__package__,
    config_path=".configuration:ECGFMConfig",
    model_path=".modeling:ECGFMModel",
    convert_path=".convert:convert_ecg_fm",
    processor_steps_path=".configuration:default_processor_steps",
    variants={
        "ecg_fm": ArchitectureVariant(
            # Layers are called ``layer(x, padding_mask)``; ``self_attn`` and ``fc2`` output their sublayer before the
            # residual add. encoder.layer_norm runs after the last layer only when pre-LN (layer_norm_first); in the
            # released post-LN model it runs before the first.
            BlockLayout(
                kind="transformer",
                block_pattern=r"encoder\.layers\.\d+",
                post_blocks=("encoder.layer_norm",),
                post_blocks_when="layer_norm_first",
                attention_output="self_attn",
                ffn_output="fc2",
                prompt=PromptSpec("key_padding_mask", 1, "key_padding"),
            ),
            DefaultTargets(
                lora=LORA_TARGET_MODULES,
                rationale=(
                    "every nn.Linear of every transformer layer: attention q/k/v/out_proj (separate projections in the "
                    "original, so no fused qkv to split) and the FFN fc1/fc2, which hold 2/3 of the encoder weights. Left "
                    "frozen: the conv feature extractor (ECG-FM fine-tuning freezes it, feature_grad_mult=0), "
                    "post_extract_proj (one shared input projection), and the positional conv (grouped, 16 groups, and "
                    "weight-normed: peft cannot merge LoRA on grouped convs and r would have to be a multiple of the groups)"
                ),
                ia3=("k_proj", "v_proj", "fc2"),
                ia3_feedforward=("fc2",),
            ),
        ),
    },
    tiny_configs={
        "ecg_fm": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       conv_dim=[16] * 4, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    },
    released_variants=tuple(RELEASED_VARIANTS),
)
