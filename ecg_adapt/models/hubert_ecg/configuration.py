"""HuBERT-ECG configuration, signal contract and default preprocessing.

HuBERT-ECG (Coppola et al., medRxiv 10.1101/2024.11.14.24317328; code github.com/Edoar-do/HuBERT-ECG,
CC BY-NC 4.0) is a ``transformers`` HuBERT whose conv feature extractor is shortened for 100 Hz ECG:
five conv layers, kernels (10, 3, 3, 2, 2), strides (4, 2, 2, 2, 2), i.e. one frame per 64 input samples.
Its input is the 12 leads concatenated lead-major into one 1-D sequence of 12 x 500 = 6000 samples.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import HubertConfig

from ...processing.contract import STANDARD_12_LEADS, SignalContract
from ...processing.steps import BandpassFIR, Decimate, FillNaN, Flatten, Normalize, Resample, Step, Window

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


def default_processor_steps(window_mode: str = "all") -> list[Step]:
    """The original HuBERT-ECG preprocessing, step by step (see ``../shared/golden/hubert_ecg/README.md``).

    ``window_mode="first"`` keeps only the first 5 s (what the original ``test.py`` does);
    ``"all"`` cuts the record into consecutive 5 s windows.
    """
    return [
        BandpassFIR(low_hz=0.05, high_hz=47.0, order_seconds=0.3),
        Resample(target_hz=500.0, method="fft"),
        Normalize(method="minmax", scope="lead", low=-1.0, high=1.0, eps=1e-8),
        Window(seconds=5.0, mode=window_mode),  # type: ignore[arg-type]
        FillNaN(),
        Flatten(),
        Decimate(q=5),
    ]


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
        "licence": "CC BY-NC 4.0 (code and weights; non-commercial use only)",
        "redistribution": "link and convert (ecg_adapt does not re-host the weights)",
        "parameters": params,
        "config": dict(RELEASED_SIZES[size]),
        "contract": HUBERT_ECG_CONTRACT.describe(),
    }
    for size, params in (("small", 30_209_152), ("base", 92_798_080), ("large", 187_643_776))
]


@strict
class HubertECGConfig(HubertConfig):
    r"""Configuration of a HuBERT-ECG backbone.

    Every field of :class:`transformers.HubertConfig` applies; the defaults here are those of the released
    ``hubert-ecg-base`` (768 hidden, 12 layers, 12 heads) with the ECG feature extractor. Two fields come from
    the original ``HuBERTECGConfig`` and only describe the pretraining heads (which ecg_adapt does not load):

    ensemble_length (`int`): number of k-means codebooks used as pretraining targets.
    vocab_sizes (`list[int]`): codebook sizes of those targets.

    and one field is ecg_adapt's own:

    signal_contract (`dict`): the :class:`~ecg_adapt.processing.SignalContract` of the input (12 leads,
        100 Hz, 5 s, lead-major flat layout).

    Note: the released configs keep the pretraining SpecAugment settings (``mask_time_prob=0.33``,
    ``apply_spec_augment=True``). :class:`~ecg_adapt.ECGClassifier` switches masking off for fine-tuning, as
    the original ``HuBERTForECGClassification`` does; a bare backbone in ``train()`` mode would mask frames.

    Example:
        >>> from ecg_adapt.models.hubert_ecg import HubertECGConfig
        >>> cfg = HubertECGConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
        >>> cfg.model_type, cfg.conv_stride
        ('hubert_ecg', (4, 2, 2, 2, 2))
    """

    model_type = "hubert_ecg"

    conv_dim: list[int] | tuple[int, ...] = (512, 512, 512, 512, 512)
    conv_stride: list[int] | tuple[int, ...] = (4, 2, 2, 2, 2)
    conv_kernel: list[int] | tuple[int, ...] = (10, 3, 3, 2, 2)
    mask_time_prob: float | int = 0.33
    mask_time_length: int = 1
    ensemble_length: int = 1
    vocab_sizes: list[int] | tuple[int, ...] = (100,)
    signal_contract: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        contract = SignalContract.from_dict(self.signal_contract) if self.signal_contract else HUBERT_ECG_CONTRACT
        self.signal_contract = contract.to_dict()
        super().__post_init__(**kwargs)

    @property
    def contract(self) -> SignalContract:
        return SignalContract.from_dict(self.signal_contract)
