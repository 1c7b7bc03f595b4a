"""The torch-free facts of the ecgfm_ked family: its two input contracts, released variants, block layout, default
adaptation targets, tiny test configs and the :class:`~ecg_adapt.models.family.BackboneFamily` record.

Nothing here imports torch or transformers, so ``ecg-adapt models`` and family discovery stay fast; the
configuration, model, converter and processor steps are named by dotted path and imported on first use.

One set of weights, two input contracts
---------------------------------------
The released ECG encoder was pretrained on MIMIC-IV-ECG at **100 Hz** (``scipy.signal.resample`` of the 500 Hz
file to 1000 samples), leads in the **file order of MIMIC-IV-ECG (aVF before aVL)**, in mV with no filter and no
normalisation (``dataset/ecgDataset.py`` ``MimicivDataset``). The ICLR 2026 ECG FM benchmark
(AI4HealthUOL/ecg-fm-benchmarking, ``run.sh``: ``--fs-model 500 --input-size 10``) feeds the same weights
**500 Hz, 10 s** in the standard lead order. Both are released variants of the family, with the same weights and
architecture; ``ECGFMKEDConfig.input_contract`` (``"original"`` or ``"benchmark"``) names which one a model
folder follows and picks its signal contract and processor.
"""

from __future__ import annotations

from typing import Any

from ...processing.contract import STANDARD_12_LEADS, SignalContract
from ..family import ArchitectureVariant, BackboneFamily, BlockLayout, DefaultTargets

INPUT_CONTRACTS: tuple[str, ...] = ("original", "benchmark")

# MIMIC-IV-ECG stores the limb leads as I, II, III, aVR, aVF, aVL; KED's MimicivDataset reads the file as it is.
MIMIC_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")

_SOURCE_REPO = "https://github.com/control-spiderman/ECGFM-KED"
_SOURCE_COMMIT = "e42f1de911feff08af0197f5413ba54380e51ce9"
_BENCHMARK_REPO = "https://github.com/AI4HealthUOL/ecg-fm-benchmarking"
_BENCHMARK_COMMIT = "6367295666569d63d6642594bbe3ae9ac56a1644"

KED_ORIGINAL_CONTRACT = SignalContract(
    leads=MIMIC_LEADS,
    sampling_rate=100.0,
    window_samples=1000,
    layout="channels_first",
    units="mV",
    filtering="none (FFT resampling 500 -> 100 Hz with scipy.signal.resample of each 10 s record, in float64)",
    normalization="none (mV as read; NaN -> 0)",
    source=f"control-spiderman/ECGFM-KED@{_SOURCE_COMMIT[:7]}: dataset/ecgDataset.py (MimicivDataset.__getitem__)",
    extra={
        "lead_order": "MIMIC-IV-ECG file order: aVF BEFORE aVL (rows 4 and 5 swapped relative to the standard order)",
        "resampling": "scipy.signal.resample (FFT) of each 10 s window to 1000 samples; other resamplers differ "
                      "by 0.18-0.24 mV",
    },
)

KED_BENCHMARK_CONTRACT = SignalContract(
    leads=STANDARD_12_LEADS,
    sampling_rate=500.0,
    window_samples=5000,
    layout="channels_first",
    units="mV",
    filtering="none",
    normalization="none (mV as read; NaN -> 0)",
    source=(
        f"AI4HealthUOL/ecg-fm-benchmarking@{_BENCHMARK_COMMIT[:7]}: run.sh (--architecture ecgfm_ked --input-size 10 "
        "--fs-model 500), code/clinical_ts/models/fm_ecg.py (EcgFmKEDWrapper)"
    ),
    extra={
        "windows": "consecutive 10 s windows (chunk_length = stride = 5000 samples at 500 Hz)",
        "resampling": "the benchmark resamples other rates with resampy; ecg_adapt uses polyphase (identical at 500 Hz)",
    },
)

CONTRACTS: dict[str, SignalContract] = {"original": KED_ORIGINAL_CONTRACT, "benchmark": KED_BENCHMARK_CONTRACT}


def contract_for(input_contract: str) -> SignalContract:
    """The signal contract named by ``ECGFMKEDConfig.input_contract``, with the known names in the error."""
    try:
        return CONTRACTS[input_contract]
    except KeyError:
        raise ValueError(f"input_contract must be one of {list(CONTRACTS)}, got {input_contract!r}") from None


# ``xresnet1d101(num_classes=105, input_channels=12, kernel_size=5, ps_head=0.5)`` = ``_xresnet1d(4, [3, 4, 23, 3])``
# with widen 1, stem (32, 32, 64), stem kernel 5 and no head (use_ecgNet_Diagnosis='' builds none).
RELEASED_ARCHITECTURE: dict[str, Any] = {
    "input_channels": 12,
    "expansion": 4,
    "layers": [3, 4, 23, 3],
    "stem_szs": [32, 32, 64],
    "kernel_size": 5,
    "kernel_size_stem": 5,
    "widen": 1.0,
}

RELEASE_FILE = "best_valid_all_increase_with_augment_epoch_3.pt"
# Where the released weights live (Zenodo record 14881564, "trained on mimic-iv-ecg", 2025-02-24), in the structured
# form load_backbone reads. Not on a hub: the user downloads the file and converts it.
RELEASE: dict[str, str] = {"url": "https://zenodo.org/records/14881564", "host": "Zenodo", "filename": RELEASE_FILE}

_COMMON_VARIANT_FIELDS: dict[str, Any] = {
    "family": "ecgfm_ked",
    "source": f"{_SOURCE_REPO} (commit {_SOURCE_COMMIT[:7]}; models/xresnet1d_101.py, main_mimiciv.py)",
    "weights": (
        f"{RELEASE['url']} ({RELEASE_FILE}; torch.save dict whose ECG encoder is checkpoint['ecg_model'], next to "
        "the TQN decoder, the Bio_ClinicalBERT text encoder and the optimiser state)"
    ),
    "release": dict(RELEASE),
    "licence": "not stated",
    "licence_note": (
        "no LICENSE file and no licence statement in control-spiderman/ECGFM-KED or in ecg-fm-benchmarking; the "
        "licence of the Zenodo record was not checked; the weights were pretrained on MIMIC-IV-ECG (check its terms)"
    ),
    "redistribution": "not stated: link and convert (ecg_adapt does not re-host the weights)",
    # xresnet1d101 as released; tests/test_ecgfm_ked.py recomputes it from ``config`` (README: 7,865,984).
    "parameters": 7_865_984,
    "features": 768,
}

RELEASED_VARIANTS: list[dict[str, Any]] = [
    {
        "name": "ecgfm-ked",
        **_COMMON_VARIANT_FIELDS,
        "config": {**RELEASED_ARCHITECTURE, "input_contract": "original"},
        "convert_kwargs": {"input_contract": "original"},
        "contract": KED_ORIGINAL_CONTRACT.describe(),
    },
    {
        "name": "ecgfm-ked-benchmark",
        **_COMMON_VARIANT_FIELDS,
        "config": {**RELEASED_ARCHITECTURE, "input_contract": "benchmark"},
        "convert_kwargs": {"input_contract": "benchmark"},
        "contract": KED_BENCHMARK_CONTRACT.describe() + " Same weights as ecgfm-ked, fed as the ICLR 2026 ECG FM "
                    "benchmark does.",
    },
]


# ------------------------------------------------------------------------------------------------------------------
# What the adaptation methods need to know (read by ecg_adapt.adaptation.layout and peft_methods).

# LoRA on the three convolutions of every residual block's conv path (1x1 reduce, k-tap, 1x1 expand in the
# bottleneck; both k-tap convs in a basic block): the channel-mixing weights of the network (the CNN counterpart
# of a transformer's projections and MLP). None is grouped, so any r works and the adapters merge.
LORA_TARGET_MODULES: tuple[str, ...] = ("convs.0.conv", "convs.1.conv", "convs.2.conv")

FAMILY = BackboneFamily(
    model_type="ecgfm_ked",
    description=(
        "ECGFM-KED (Cell Reports Medicine 2024, doi 10.1016/j.xcrm.2024.101875), xresnet1d101 ECG encoder of a knowledge-enhanced "
        "ECG-text model pretrained on MIMIC-IV-ECG: 12 leads, 10 s; 100 Hz in MIMIC order (original) or 500 Hz "
        "in standard order (ICLR 2026 benchmark), mV, no normalisation"
    ),
    package=__package__,
    config_path=".configuration:ECGFMKEDConfig",
    model_path=".modeling:ECGFMKEDModel",
    convert_path=".convert:convert_ecgfm_ked",
    processor_steps_path=".configuration:default_processor_steps",
    variants={
        "ecgfm_ked": ArchitectureVariant(
            # stages.{stage}.{block}: residual blocks; ``out_channels`` is set on every block.
            BlockLayout(kind="cnn", block_pattern=r"stages\.\d+\.\d+", channels=("out_channels",),
                        description="a CNN (xresnet1d residual conv blocks)"),
            DefaultTargets(
                lora=LORA_TARGET_MODULES,
                rationale=(
                    "its only weight layers are convolutions, so LoRA goes on the Conv1d layers of every residual "
                    "block's conv path (convs.0/1/2.conv: 1x1 reduce, 5-tap, 1x1 expand): the channel-mixing weights, "
                    "ungrouped, so any r works and the adapters merge. The stem convs (low-level filtering) and the 1x1 "
                    "identity-path projections (idconv) stay frozen. BatchNorm stays frozen, running statistics "
                    "included (a BatchNorm with frozen parameters stays in eval mode), so an adapter-only save "
                    "reproduces the trained model."
                ),
                linear=(),
                ia3=(),
                no_linear_reason=(
                    "its only weight layers are convolutions (nn.Conv1d stem, residual and identity-path convs): "
                    "there is no nn.Linear layer to adapt"
                ),
            ),
        ),
    },
    tiny_configs={
        # stage 0 widens (an idpath.0 projection without pool), stage 1 widens with a pool (idpath.1), stages 2-3
        # keep the width (pool only); zero_bn off so that every conv path carries gradient from the start.
        "ecgfm_ked": dict(layers=[1, 2, 1, 1], stem_szs=[8, 8, 16], block_szs=[4, 6, 8, 8, 12], zero_bn=False),
    },
    released_variants=tuple(RELEASED_VARIANTS),
)
