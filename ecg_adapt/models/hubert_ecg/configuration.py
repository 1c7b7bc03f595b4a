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

from ...processing.contract import SignalContract
from ...processing.steps import BandpassFIR, Decimate, FillNaN, Flatten, Normalize, Resample, Step, Window
from .family import (  # noqa: F401  (re-exported: the torch-free facts live in family.py)
    HUBERT_ECG_CONTRACT,
    RELEASED_SIZES,
    RELEASED_VARIANTS,
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
