"""The torch-free facts of the ecg_cpc family: signal contract, released variant, block layout, default
adaptation targets, tiny test configs and the :class:`~ecg_adapt.models.family.BackboneFamily` record.

Nothing here imports torch or transformers, so ``ecg-adapt models`` and family discovery stay fast; the
configuration, model, converter and processor steps are named by dotted path and imported on first use.
"""

from __future__ import annotations

from typing import Any

from ...processing.contract import STANDARD_12_LEADS, SignalContract
from ..family import ArchitectureVariant, BackboneFamily, BlockLayout, DefaultTargets

SOURCE_REPO = "https://github.com/AI4HealthUOL/ecg-fm-benchmarking"
SOURCE_COMMIT = "6367295666569d63d6642594bbe3ae9ac56a1644"
FIGSHARE_URL = "https://figshare.com/articles/dataset/ECG-CPC_Checkpoint_zip/30192604"

# The downstream contract of the benchmark (run.sh: --architecture cpc --input-size 2.5 --fs-model 240): 2.5 s
# windows cut at 500 Hz, each resampled alone to 240 Hz, raw millivolts in the canonical lead order.
ECG_CPC_CONTRACT = SignalContract(
    leads=STANDARD_12_LEADS,
    sampling_rate=240.0,
    window_samples=600,
    layout="channels_first",
    units="mV",
    filtering="none",
    normalization="none (raw millivolts; pre-training data were clipped to +-3 mV, downstream data are not)",
    source=(
        f"AI4HealthUOL/ecg-fm-benchmarking@{SOURCE_COMMIT[:7]}: run.sh, code/main_lite_base.py (TimeSeriesDataset "
        "windows), code/clinical_ts/data/time_series_dataset_transforms.py (Resample: resampy kaiser_best)"
    ),
    extra={
        "windowing": "non-overlapping 2.5 s windows cut at 500 Hz (1250 samples), then each resampled to 600 samples",
        "pretraining": "HEEDB, CPC, 10 s windows at 240 Hz (2400 samples = 1200 S4 tokens = the kernel length l_max)",
    },
)

# The released model (config_cpc_ecg_s4_heedb.yaml without size overrides), as ECGCPCConfig kwargs.
RELEASED_ARCHITECTURE: dict[str, Any] = {
    "in_channels": 12,
    "encoder_features": [512, 512, 512, 512],
    "encoder_kernel_sizes": [3, 1, 1, 1],
    "encoder_strides": [2, 1, 1, 1],
    "encoder_dilations": [1, 1, 1, 1],
    "model_dim": 512,
    "state_dim": 8,
    "num_layers": 4,
    "causal": True,
    "prenorm": False,
    "dropout": 0.2,
    "tie_dropout": True,
    "l_max": 1200,
}

RELEASED_VARIANTS: list[dict[str, Any]] = [
    {
        "name": "ecg-cpc",
        "family": "ecg_cpc",
        "source": f"{SOURCE_REPO} (commit {SOURCE_COMMIT[:7]}; S4 encoder pre-trained with CPC on HEEDB)",
        "weights": (
            f"{FIGSHARE_URL} (figshare article 30192604, file 58173919: a zip holding 'ECG-CPC Checkpoint/"
            "last_11597276.ckpt', a PyTorch Lightning checkpoint)"
        ),
        # Where load_backbone fetches the release from (hub-hosted families give repo_id/filename/revision).
        "release": {"url": FIGSHARE_URL, "host": "figshare", "filename": "last_11597276.ckpt"},
        "licence": (
            "none stated: the repository has no LICENSE file and its README states none (so no licence is granted). "
            "A third-party loader lists the figshare item 'ECG-CPC_Checkpoint_zip' as CC BY 4.0; not verified"
        ),
        "redistribution": "not stated: link and convert (ecg_adapt does not re-host the weights)",
        # Encoder + S4 predictor, as held by ECGCPCModel (S4 buffers not counted); the file also holds the CPC
        # head 'head_ssl' (262,144 parameters, 3,194,880 in all), which the converter drops.
        "parameters": 2_932_736,
        "parameters_in_file": 3_194_880,
        "features": 512,
        "config": dict(RELEASED_ARCHITECTURE),
        "contract": ECG_CPC_CONTRACT.describe(),
    },
]


# ------------------------------------------------------------------------------------------------------------------
# What the adaptation methods need to know (read by ecg_adapt.adaptation.layout and peft_methods).

# LoRA on output_linear of every S4 block: the position-wise Linear(H -> 2H) before the GLU, the only channel-mixing
# matrix of the predictor and 2.10M of its 2.12M weights in the release (the S4 kernel itself is per channel: C, D). The conv
# encoder (Conv1d stem k=3 and three 1x1 convs) stays frozen, like HuBERT-ECG's conv feature extractor; add
# "conv" to target it too. The S4 state-space buffers (w, P, B, Q, log_dt) were never trained and are not adapted.
LORA_TARGET_MODULES: tuple[str, ...] = ("output_linear",)

FAMILY = BackboneFamily(
    model_type="ecg_cpc",
    description=(
        "ECG-CPC (Al-Masud, Lopez Alcaraz & Strodthoff, ICLR 2026 ECG FM benchmark), conv encoder + causal S4, "
        "CPC pre-trained on HEEDB; 12 leads, 240 Hz, 2.5 s windows, raw mV"
    ),
    package=__package__,
    config_path=".configuration:ECGCPCConfig",
    model_path=".modeling:ECGCPCModel",
    convert_path=".convert:convert_ecg_cpc",
    processor_steps_path=".configuration:default_processor_steps",
    variants={
        "ecg_cpc": ArchitectureVariant(
            # A block is one residual S4 layer with its LayerNorm: x = LN(x + S4(x)), channels first (B, H, L) like
            # a conv block (S4 is a long convolution), so conv adapters and partial fine-tuning work on it.
            BlockLayout(kind="cnn", block_pattern=r"blocks\.\d+", channels=("out_channels",),
                        description="an S4 state-space model (residual S4 blocks on channels-first features, "
                                    "adapted like a CNN's blocks)"),
            DefaultTargets(
                lora=LORA_TARGET_MODULES,
                rationale=(
                    "output_linear of every S4 block, the Linear(H -> 2H) before the GLU: the predictor's only "
                    "channel-mixing weights (the S4 kernel is per channel); the conv encoder and the S4 state-space "
                    "buffers stay frozen"
                ),
                ia3=("output_linear",),
                # IA3 rescales the input of output_linear: the S4 output after its GELU, per channel.
                ia3_feedforward=("output_linear",),
            ),
        ),
    },
    tiny_configs={
        "ecg_cpc": dict(encoder_features=[16, 16], encoder_kernel_sizes=[3, 1], encoder_strides=[2, 1],
                        encoder_dilations=[1, 1], model_dim=16, state_dim=4, num_layers=2),
    },
    released_variants=tuple(RELEASED_VARIANTS),
)
