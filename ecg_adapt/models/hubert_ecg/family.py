"""The torch-free facts of the hubert_ecg family: signal contract, released variants, block layout, default
adaptation targets, tiny test configs and the :class:`~ecg_adapt.models.family.BackboneFamily` record.

Nothing here imports torch or transformers, so ``ecg-adapt models`` and family discovery stay fast; the
configuration, model, converter and processor steps are named by dotted path and imported on first use.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...processing.contract import STANDARD_12_LEADS, SignalContract
from ..family import ArchitectureVariant, BackboneFamily, BlockLayout, DefaultTargets, PromptSpec

HUBERT_ECG_CONTRACT = SignalContract(
    leads=STANDARD_12_LEADS,
    sampling_rate=100.0,
    window_samples=500,
    layout="lead_major_flat",
    units="mV",
    filtering=(
        "FIR band-pass 0.05-47 Hz (Hamming, int(0.3*fs) taps made odd, zero-phase filtfilt) at the record rate; "
        "FFT resample to 500 Hz; after cropping, order-8 Chebyshev-I decimation by 5 on the concatenated leads"
    ),
    normalization="per-lead min-max to [-1, 1] over the whole record at 500 Hz, before cropping (eps 1e-8)",
    source="Edoar-do/HuBERT-ECG@affe1f9: code/utils.py ecg_preprocessing, code/dataset.py ECGDataset",
)


# The released sizes (code/finetune.py size table; HF config.json of Edoardo-BS/hubert-ecg-small).
# All three share the 5-layer conv stack and the conv positional embedding (128 taps, 16 groups).
RELEASED_SIZES: dict[str, dict[str, int]] = {
    "small": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "intermediate_size": 2048, "classifier_proj_size": 256},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "classifier_proj_size": 256},
    "large": {"hidden_size": 960, "num_hidden_layers": 16, "num_attention_heads": 12, "intermediate_size": 3840, "classifier_proj_size": 512},
}


_HUBERT_SOURCE = "https://github.com/Edoar-do/HuBERT-ECG"
# Parameter counts are of the backbone without the pretraining heads, computed from these configs
# (tests/test_hubert_ecg.py recomputes them).
RELEASED_VARIANTS: list[dict[str, Any]] = [
    {
        "name": f"hubert-ecg-{size}",
        "family": "hubert_ecg",
        "source": _HUBERT_SOURCE,
        "weights": f"https://huggingface.co/Edoardo-BS/hubert-ecg-{size}",
        # A Hugging Face folder: the converter reads config.json beside the weights (its remote code is not run).
        "release": {"repo_id": f"Edoardo-BS/hubert-ecg-{size}", "filename": "model.safetensors", "revision": None,
                    "also": ["config.json"]},
        "licence": "CC BY-NC 4.0 (code and weights; non-commercial use only)",
        "redistribution": "link and convert (ecg_adapt does not re-host the weights)",
        "parameters": params,
        "config": dict(RELEASED_SIZES[size]),
        "contract": HUBERT_ECG_CONTRACT.describe(),
    }
    for size, params in (("small", 30_209_152), ("base", 92_798_080), ("large", 187_643_776))
]


# ------------------------------------------------------------------------------------------------------------------
# What the adaptation methods need to know (read by ecg_adapt.adaptation.layout and peft_methods).

# Attention projections and both FFN layers of every encoder layer: the LoRA-paper default extended to the FFN, which
# holds 2/3 of the encoder's weights. The conv feature extractor is left frozen (the original fine-tuning also freezes
# it by default) and the grouped, weight-normed positional conv cannot be merged by peft (groups > 1).
_TARGETS = DefaultTargets(
    lora=("q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"),
    rationale="attention q/k/v/out and FFN of every encoder layer; conv extractor frozen as in the original fine-tuning",
    ia3=("k_proj", "v_proj", "output_dense"),
    ia3_feedforward=("output_dense",),
)
# HubertEncoder calls ``layer(hidden_states, attention_mask=attention_mask)`` with the 4-D mask it builds. The
# attention sublayer's output is its out_proj (``attention`` returns a tuple); ``feed_forward`` returns the FFN output
# after its dropout, before the residual add.
_LAYOUT = BlockLayout(
    kind="transformer",
    block_pattern=r"encoder\.layers\.\d+",
    attention_output="attention.out_proj",
    ffn_output="feed_forward",
    prompt=PromptSpec("attention_mask", 1, "hf_4d"),
)


def _variant_of(config: Any) -> str:
    # The pre-norm ("stable layer norm") variant runs encoder.layer_norm after the last layer.
    return "hubert_ecg/stable" if getattr(config, "do_stable_layer_norm", False) else "hubert_ecg"


_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, classifier_proj_size=16,
             conv_dim=[16] * 5, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

FAMILY = BackboneFamily(
    model_type="hubert_ecg",
    description="HuBERT-ECG (Coppola et al. 2024), HuBERT on 12 concatenated leads at 100 Hz, 5 s",
    package=__package__,
    config_path=".configuration:HubertECGConfig",
    model_path=".modeling:HubertECGModel",
    convert_path=".convert:convert_hubert_ecg",
    processor_steps_path=".configuration:default_processor_steps",
    variants={
        "hubert_ecg": ArchitectureVariant(_LAYOUT, _TARGETS),
        "hubert_ecg/stable": ArchitectureVariant(replace(_LAYOUT, post_blocks=("encoder.layer_norm",)), _TARGETS),
    },
    tiny_configs={"hubert_ecg": _TINY, "hubert_ecg_stable": dict(_TINY, do_stable_layer_norm=True)},
    released_variants=tuple(RELEASED_VARIANTS),
    variant_of=_variant_of,
)
