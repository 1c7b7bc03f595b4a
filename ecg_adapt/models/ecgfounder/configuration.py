"""ECGFounder configuration, signal contracts and default preprocessing.

ECGFounder (Li et al., NEJM AI 2025, AIoa2401033, arXiv 2410.04133; code github.com/PKUDigitalHealth/ECGFounder,
MIT) is ``net1d.Net1D``: a RegNet-style 1-D CNN of pre-activation bottleneck blocks (1x1 conv, grouped k=16
conv, 1x1 conv, squeeze-excitation, max-pool shortcut), trained supervised on 150 labels of HEEDB (>10M ECGs).
Input: 10 s at 500 Hz, ``(batch, 12, 5000)`` in the standard lead order, or ``(batch, 1, 5000)`` lead I for
the 1-lead release. The feature vector is the time-mean of the last stage (1024-d for the releases).
"""

from __future__ import annotations

from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...processing.contract import SignalContract
from ...processing.steps import Normalize, Resample, Step, Window
from .processing import ButterworthBA, MedianBaseline, NotchIIR
from .family import (  # noqa: F401  (re-exported: the torch-free facts live in family.py)
    ECGFOUNDER_1LEAD_CONTRACT,
    ECGFOUNDER_CONTRACT,
    RELEASED_ARCHITECTURE,
    RELEASED_VARIANTS,
    contract_for_in_channels,
)


Pipeline = Literal["dataset", "ptbxl_eval"]


def default_processor_steps(window_mode: str = "all", pipeline: Pipeline = "dataset") -> list[Step]:
    """ECGFounder's preprocessing as processor steps (see ``../shared/golden/ecgfounder/README.md``).

    ``pipeline="dataset"`` (default) is ``dataset.py``, the pipeline the ECGFounder README says to follow
    "strictly" for fine-tuning: 50 Hz notch, Butterworth(4) 0.67-40 Hz, median-filter baseline removal, then
    one global z-score over the whole window. ``pipeline="ptbxl_eval"`` is the one in ``ptbxl_eval.py`` (the
    150-label out-of-the-box evaluation): the global z-score only, no filtering.

    The original reads one 10 s, 500 Hz record as one input and resamples nothing. Here records at another
    rate are first resampled to 500 Hz (polyphase; ``ptbxl_eval.py`` interpolates linearly, so that pipeline
    uses linear interpolation), then cut into 10 s windows (``window_mode="all"``: consecutive windows plus
    one aligned to the end; ``"first"``: the first 10 s only), and the filters and the z-score run on each
    window separately, so every window is processed exactly as the original processes a 10 s file. For a 10 s
    record at 500 Hz both modes give the one window the original sees.
    """
    if pipeline == "dataset":
        return [
            Resample(target_hz=500.0, method="polyphase"),
            Window(seconds=10.0, mode=window_mode),  # type: ignore[arg-type]
            NotchIIR(freq_hz=50.0, quality=30.0),
            ButterworthBA(low_hz=0.67, high_hz=40.0, order=4),
            MedianBaseline(window_seconds=0.4),
            Normalize(method="zscore", scope="global", eps=1e-8),
        ]
    if pipeline == "ptbxl_eval":
        return [
            Resample(target_hz=500.0, method="linear"),
            Window(seconds=10.0, mode=window_mode),  # type: ignore[arg-type]
            Normalize(method="zscore", scope="global", eps=1e-8),
        ]
    raise ValueError(f"Unknown ECGFounder pipeline {pipeline!r}; use 'dataset' or 'ptbxl_eval'")


@strict
class ECGFounderConfig(PreTrainedConfig):
    r"""Configuration of an ECGFounder (``Net1D``) backbone; defaults are the released 12-lead model.

    The field names are the original ``Net1D`` constructor arguments, so ``ECGFounderConfig(**kwargs)`` takes
    the kwargs of ``finetune_model.py``. ``verbose`` and ``return_features`` are not fields: they change no
    weights (this model always returns the features), and like any unknown kwarg they are only stored.

    in_channels (`int`): input leads (12, or 1 for the lead-I release).
    base_filters (`int`): channels of the first conv (stride 2, kernel ``kernel_size``).
    ratio (`float`): bottleneck width of every block, ``middle = int(out_channels * ratio)``.
    filter_list (`list[int]`): output channels of each stage.
    m_blocks_list (`list[int]`): blocks per stage; the first block of a stage downsamples by ``stride``.
    kernel_size (`int`): kernel of the first conv and of every grouped conv.
    stride (`int`): downsampling of the first block of each stage (the first conv always uses 2).
    groups_width (`int`): channels per group of the grouped conv, ``groups = out_channels // groups_width``.
    use_bn (`bool`): apply the BatchNorm layers. ``False`` in the releases: their tensors are saved but unused.
    use_do (`bool`): apply dropout (p=0.5) before each conv in training. ``False`` in the releases.
    n_classes (`int`): outputs of the original head ``dense`` (150 labels of ``tasks.txt`` for the
        releases); 0 builds no head. The head never feeds ``pooler_output``.
    hidden_size (`int`): size of the feature vector, always ``filter_list[-1]`` (filled in when omitted).
    signal_contract (`dict`): the input :class:`~ecg_adapt.processing.SignalContract`; by default the 12-lead or
        lead-I contract, chosen from ``in_channels``.

    Example:
        >>> from ecg_adapt.models.ecgfounder import ECGFounderConfig
        >>> cfg = ECGFounderConfig(in_channels=1)
        >>> cfg.hidden_size, cfg.signal_contract["leads"]
        (1024, ['I'])
    """

    model_type = "ecgfounder"

    in_channels: int = 12
    base_filters: int = 64
    ratio: float | int = 1
    filter_list: list[int] | tuple[int, ...] = (64, 160, 160, 400, 400, 1024, 1024)
    m_blocks_list: list[int] | tuple[int, ...] = (2, 2, 2, 3, 3, 4, 4)
    kernel_size: int = 16
    stride: int = 2
    groups_width: int = 16
    use_bn: bool = False
    use_do: bool = False
    n_classes: int = 150
    hidden_size: int | None = None
    signal_contract: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.filter_list = [int(f) for f in self.filter_list]
        self.m_blocks_list = [int(m) for m in self.m_blocks_list]
        if not self.filter_list or len(self.filter_list) != len(self.m_blocks_list):
            raise ValueError(
                f"filter_list {self.filter_list} and m_blocks_list {self.m_blocks_list} must be non-empty and of equal length"
            )
        if any(m < 1 for m in self.m_blocks_list):
            raise ValueError(f"every stage needs at least one block, got m_blocks_list={self.m_blocks_list}")
        for out in self.filter_list:
            groups = out // self.groups_width
            middle = int(out * self.ratio)
            if groups < 1 or middle % groups:
                raise ValueError(
                    f"stage width {out} with groups_width {self.groups_width} and ratio {self.ratio} gives "
                    f"{groups} groups for {middle} channels: the grouped conv needs a positive divisor"
                )
        if self.hidden_size is None:
            self.hidden_size = self.filter_list[-1]
        elif self.hidden_size != self.filter_list[-1]:
            raise ValueError(f"hidden_size must equal filter_list[-1] = {self.filter_list[-1]}, got {self.hidden_size}")
        if self.signal_contract:
            contract = SignalContract.from_dict(self.signal_contract)
        else:
            contract = contract_for_in_channels(self.in_channels)
        if contract.n_leads != self.in_channels:
            raise ValueError(f"signal_contract has {contract.n_leads} leads but in_channels is {self.in_channels}")
        self.signal_contract = contract.to_dict()
        super().__post_init__(**kwargs)

    @property
    def contract(self) -> SignalContract:
        return SignalContract.from_dict(self.signal_contract)
