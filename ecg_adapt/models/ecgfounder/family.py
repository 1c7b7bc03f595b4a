"""The torch-free facts of the ecgfounder family: signal contract, released variants, block layout, default
adaptation targets, tiny test configs and the :class:`~ecg_adapt.models.family.BackboneFamily` record.

Nothing here imports torch or transformers, so ``ecg-adapt models`` and family discovery stay fast; the
configuration, model, converter and processor steps are named by dotted path and imported on first use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...processing.contract import STANDARD_12_LEADS, SignalContract
from ..family import ArchitectureVariant, BackboneFamily, BlockLayout, DefaultTargets

_SOURCE = "PKUDigitalHealth/ECGFounder@04edac7: dataset.py (LVEF_*_Dataset), util.py filter_bandpass, net1d.py"
_FILTERING = (
    "IIR notch 50 Hz (Q=30) with filtfilt; Butterworth order-4 band-pass 0.67-40 Hz in ba form with filtfilt; "
    "baseline removal x - medfilt(x, 0.4 s + 1 sample) with zero-padded edges; all per lead in float64 "
    "on each 10 s window"
)
_NORMALIZATION = "one z-score over the whole (leads, 5000) window: (x - mean) / (std + 1e-8), not per lead"

ECGFOUNDER_CONTRACT = SignalContract(
    leads=STANDARD_12_LEADS,
    sampling_rate=500.0,
    window_samples=5000,
    layout="channels_first",
    units="mV",
    filtering=_FILTERING,
    normalization=_NORMALIZATION,
    source=_SOURCE,
)

# The 1-lead release reads lead I only (dataset.py LVEF_1lead_*: new_leads = ['I']); its z-score is over that lead.
ECGFOUNDER_1LEAD_CONTRACT = dataclasses.replace(ECGFOUNDER_CONTRACT, leads=("I",))


def contract_for_in_channels(in_channels: int) -> SignalContract:
    """The released contract for a model with ``in_channels`` inputs (12 leads or lead I)."""
    if in_channels == 12:
        return ECGFOUNDER_CONTRACT
    if in_channels == 1:
        return ECGFOUNDER_1LEAD_CONTRACT
    raise ValueError(
        f"ECGFounder was released with 12 or 1 input leads, not {in_channels}; pass signal_contract= naming "
        "the leads this model reads"
    )


# The architecture of both releases (finetune_model.py ft_12lead_ECGFounder / ft_1lead_ECGFounder,
# ptbxl_eval.py); only in_channels differs.
RELEASED_ARCHITECTURE: dict[str, Any] = {
    "base_filters": 64,
    "ratio": 1,
    "filter_list": [64, 160, 160, 400, 400, 1024, 1024],
    "m_blocks_list": [2, 2, 2, 3, 3, 4, 4],
    "kernel_size": 16,
    "stride": 2,
    "groups_width": 16,
    "n_classes": 150,
    "use_bn": False,
    "use_do": False,
}

_REPO_ID = "PKUDigitalHealth/ECGFounder"
_WEIGHTS = f"https://huggingface.co/{_REPO_ID}"
# Parameter counts include the 150-label head ``dense`` and the BatchNorm affine parameters, which are stored
# but never applied (use_bn=False), i.e. they count what the released state_dict holds. ``parameters_backbone``
# leaves the head out. tests/test_ecgfounder.py recomputes both from the config.
RELEASED_VARIANTS: list[dict[str, Any]] = [
    {
        "name": name,
        "family": "ecgfounder",
        "source": "https://github.com/PKUDigitalHealth/ECGFounder",
        "weights": f"{_WEIGHTS} ({filename}; torch.save dict, weights under 'state_dict')",
        "release": {"repo_id": _REPO_ID, "filename": filename, "revision": None},
        "licence": "MIT (code); the licence of the Hugging Face weight files was not verified",
        "redistribution": "link and convert (ecg_adapt does not re-host the weights; their licence is unverified)",
        "parameters": params,
        "parameters_backbone": backbone,
        "config": {"in_channels": in_channels, **RELEASED_ARCHITECTURE},
        "contract": contract.describe(),
    }
    for name, filename, in_channels, params, backbone, contract in (
        ("ecgfounder-12lead", "12_lead_ECGFounder.pth", 12, 30_819_014, 30_665_264, ECGFOUNDER_CONTRACT),
        ("ecgfounder-1lead", "1_lead_ECGFounder.pth", 1, 30_807_750, 30_654_000, ECGFOUNDER_1LEAD_CONTRACT),
    )
]


# ------------------------------------------------------------------------------------------------------------------
# What the adaptation methods need to know (read by ecg_adapt.adaptation.layout and peft_methods).

# LoRA on the two pointwise (1x1, groups=1) convs of every block. They are the channel-mixing matrices of the
# network (the CNN counterpart of a transformer's projections/MLP, ~2/3 of each block's weights), peft wraps
# nn.Conv1d, any rank works, and the adapters merge. Left out: the grouped k=16 conv2 (peft needs r divisible
# by its groups, 4..64 in the release, and cannot merge it), the stem conv (low-level filtering, kept frozen
# like HuBERT-ECG's conv extractor) and the small squeeze-excitation gates (add "se_fc1", "se_fc2" if wanted).
LORA_TARGET_MODULES: tuple[str, ...] = ("conv1.conv", "conv3.conv")

FAMILY = BackboneFamily(
    model_type="ecgfounder",
    description="ECGFounder (Li et al. 2025), Net1D RegNet-style 1-D CNN with SE, 12 leads or lead I, 500 Hz, 10 s",
    package=__package__,
    config_path=".configuration:ECGFounderConfig",
    model_path=".modeling:ECGFounderModel",
    convert_path=".convert:convert_ecgfounder",
    processor_steps_path=".configuration:default_processor_steps",
    variants={
        "ecgfounder": ArchitectureVariant(
            BlockLayout(kind="cnn", block_pattern=r"stage_list\.\d+\.block_list\.\d+", channels=("out_channels",)),
            DefaultTargets(
                lora=LORA_TARGET_MODULES,
                rationale=(
                    "pointwise 1x1 convs (conv1.conv, conv3.conv) of every block: the channel-mixing weights, mergeable and "
                    "rank-agnostic; grouped conv2 (r must divide by groups, not mergeable), stem and SE gates left frozen"
                ),
                # Its only nn.Linear layers are the squeeze-excitation gates: VeRA/OFT/BOFT adapt them (re-weighting
                # each block's channels); IA³ rescales the SE hidden activation (se_fc2 as a feed-forward module).
                linear=("se_fc1", "se_fc2"),
                ia3=("se_fc2",),
                ia3_feedforward=("se_fc2",),
            ),
        ),
    },
    tiny_configs={
        "ecgfounder": dict(base_filters=8, filter_list=[8, 16, 24], m_blocks_list=[1, 2, 1], groups_width=8, n_classes=5),
    },
    released_variants=tuple(RELEASED_VARIANTS),
)
