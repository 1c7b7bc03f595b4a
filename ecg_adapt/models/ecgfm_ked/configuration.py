"""ECGFM-KED configuration, input contracts and default preprocessing.

ECGFM-KED ("knowledge-enhanced" ECG foundation model, Cell Reports Medicine 2024, doi 10.1016/j.xcrm.2024.101875;
code github.com/control-spiderman/ECGFM-KED, no licence stated) pairs an ECG encoder with Bio_ClinicalBERT and a
text-query decoder. ecg_adapt loads its ECG encoder, ``models/xresnet1d_101.py`` ``xresnet1d101``: a fastai-style
1-D XResNet (three-conv stem, max-pool, four stages of bottleneck residual blocks, no head), 7.9M parameters.
Its output is the last stage ``(B, 768, L)``; the features are the time-mean (``ecg_features.mean(-1)`` in KED,
the benchmark wrapper's ``pooled_features``).
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...processing.contract import SignalContract
from ...processing.steps import Resample, Step, Window
from .family import (  # noqa: F401  (re-exported: the torch-free facts live in family.py)
    INPUT_CONTRACTS,
    KED_BENCHMARK_CONTRACT,
    KED_ORIGINAL_CONTRACT,
    MIMIC_LEADS,
    RELEASED_ARCHITECTURE,
    RELEASED_VARIANTS,
    contract_for,
)

# Stage widths of KED's ``XResNet1d`` before ``widen`` (its own table, not fastai's (64, 128, 256, 512)); a fifth
# and later stage gets 32.
_BASE_WIDTHS: tuple[int, ...] = (64, 128, 128, 192)
_EXTRA_STAGE_WIDTH = 32


def default_processor_steps(window_mode: str = "all", input_contract: str = "original") -> list[Step]:
    """The preprocessing of one of the two input contracts, as processor steps.

    ``input_contract="original"`` is KED pre-training (``MimicivDataset.__getitem__``): the 10 s, 500 Hz record
    is FFT-resampled (``scipy.signal.resample``) to 1000 samples in float64, with no filter and no normalisation.
    Here each 10 s window is cut at the record's own rate first and then FFT-resampled to 100 Hz, so every window is
    resampled exactly as the original resamples a 10 s file, whatever the record's rate and length
    (``window_mode="all"``: consecutive windows plus one aligned to the end; ``"first"``: the first 10 s only).
    The lead order (MIMIC: aVF before aVL) is the processor's own work: it maps leads by name onto the contract.

    ``input_contract="benchmark"`` is the ICLR 2026 benchmark: the record at 500 Hz (polyphase here, resampy in the
    benchmark; a no-op at 500 Hz), then 10 s windows, standard lead order, no normalisation.

    NaN: the originals set NaN samples to 0; the processor interpolates short NaN runs instead (and reports them).
    """
    if input_contract == "original":
        return [
            Window(seconds=10.0, mode=window_mode),  # type: ignore[arg-type]
            Resample(target_hz=100.0, method="fft"),
        ]
    if input_contract == "benchmark":
        return [
            Resample(target_hz=500.0, method="polyphase"),
            Window(seconds=10.0, mode=window_mode),  # type: ignore[arg-type]
        ]
    raise ValueError(f"Unknown ECGFM-KED input_contract {input_contract!r}; use one of {list(INPUT_CONTRACTS)}")


def block_sizes(expansion: int, layers: list[int], widen: float) -> list[int]:
    """KED's ``block_szs``: ``[64 // expansion]`` then ``int(w * widen)`` for the stage widths (64, 128, 128, 192, 32...)."""
    widths = list(_BASE_WIDTHS) + [_EXTRA_STAGE_WIDTH] * max(0, len(layers) - len(_BASE_WIDTHS))
    return [64 // expansion] + [int(w * widen) for w in widths[: len(layers)]]


@strict
class ECGFMKEDConfig(PreTrainedConfig):
    r"""Configuration of an ECGFM-KED ECG encoder (``XResNet1d``); the defaults build the released ``xresnet1d101``.

    The field names are those of the original ``_xresnet1d(expansion, layers, **kwargs)`` call, so the kwargs of
    the original construction carry over. ``num_classes``, ``ps_head`` and the other head arguments are not
    fields: the released encoder is built without a head (``use_ecgNet_Diagnosis=''``).

    input_channels (`int`): input leads (12).
    expansion (`int`): 4 for bottleneck blocks (1x1, k, 1x1 convs; xresnet1d50/101/152), 1 for basic blocks
        (two k-tap convs; xresnet1d18/34). A block's output has ``nf * expansion`` channels.
    layers (`list[int]`): residual blocks per stage; ``[3, 4, 23, 3]`` is xresnet1d101. The first block of every
        stage but the first has stride 2 (on its k-tap conv, and an average pool on the identity path).
    stem_szs (`list[int]`): output channels of the three stem convs (the first has stride 2), followed by a
        ``MaxPool1d(3, 2, padding=1)``. The last must equal ``block_szs[0] * expansion``.
    kernel_size (`int`): kernel of the k-tap conv of every block (odd: the padding is ``(k - 1) // 2``).
    kernel_size_stem (`int`): kernel of the stem convs (odd).
    widen (`float`): width multiplier of the stage widths (64, 128, 128, 192); ignored when ``block_szs`` is given.
    block_szs (`list[int]`): the original ``block_szs`` (``[ni of stage 0] + [nf of each stage]``, before
        expansion), e.g. ``[16, 64, 128, 128, 192]`` for the release; derived from ``widen`` when omitted. The
        converter writes it, since tensors give the widths but not ``widen``.
    batch_norm_eps (`float`): BatchNorm1d eps (PyTorch default 1e-5, as in the original).
    zero_bn (`bool`): initialise the last BatchNorm of every conv path with weight 0 (fastai's ``BatchZero``, the
        original) or 1. Only the initialisation of new weights changes; loaded weights are unaffected.
    input_contract (`str`): ``"original"`` (100 Hz, 10 s, MIMIC lead order: KED pre-training) or ``"benchmark"``
        (500 Hz, 10 s, standard order: the ICLR 2026 benchmark). Picks the default ``signal_contract``.
    hidden_size (`int`): size of the feature vector, ``block_szs[-1] * expansion`` (filled in; another value is an
        error).
    signal_contract (`dict`): the input :class:`~ecg_adapt.processing.SignalContract`; by default the one
        ``input_contract`` names.

    Example:
        >>> from ecg_adapt.models.ecgfm_ked import ECGFMKEDConfig
        >>> cfg = ECGFMKEDConfig(input_contract="benchmark")
        >>> cfg.hidden_size, cfg.block_szs, cfg.signal_contract["sampling_rate"]
        (768, [16, 64, 128, 128, 192], 500.0)
    """

    model_type = "ecgfm_ked"

    input_channels: int = 12
    expansion: int = 4
    layers: list[int] | tuple[int, ...] = (3, 4, 23, 3)
    stem_szs: list[int] | tuple[int, ...] = (32, 32, 64)
    kernel_size: int = 5
    kernel_size_stem: int = 5
    widen: float | int = 1.0
    block_szs: list[int] | tuple[int, ...] | None = None
    batch_norm_eps: float = 1e-5
    zero_bn: bool = True
    input_contract: str = "original"
    hidden_size: int | None = None
    signal_contract: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.layers = [int(n) for n in self.layers]
        self.stem_szs = [int(s) for s in self.stem_szs]
        if not self.layers or any(n < 1 for n in self.layers):
            raise ValueError(f"layers must name at least one stage of at least one block, got {self.layers}")
        if len(self.stem_szs) != 3:
            raise ValueError(f"stem_szs must give the channels of the three stem convs, got {self.stem_szs}")
        if self.expansion < 1:
            raise ValueError(f"expansion must be a positive integer, got {self.expansion}")
        for name in ("kernel_size", "kernel_size_stem"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                # (k - 1) // 2 padding keeps ceil(L / 2) frames only for odd k; with even k the conv path and the
                # identity path of a strided block have different lengths and the original fails too.
                raise ValueError(f"{name} must be odd, got {k}")
        derived = block_sizes(self.expansion, self.layers, self.widen)
        self.block_szs = derived if self.block_szs is None else [int(b) for b in self.block_szs]
        if len(self.block_szs) != len(self.layers) + 1 or any(b < 1 for b in self.block_szs):
            raise ValueError(
                f"block_szs {self.block_szs} must hold len(layers) + 1 = {len(self.layers) + 1} positive widths "
                "(the first stage's input width, then each stage's width)"
            )
        if self.stem_szs[-1] != self.block_szs[0] * self.expansion:
            raise ValueError(
                f"the stem ends with {self.stem_szs[-1]} channels but the first block expects block_szs[0] * expansion "
                f"= {self.block_szs[0] * self.expansion}"
            )
        if self.input_contract not in INPUT_CONTRACTS:
            raise ValueError(f"input_contract must be one of {list(INPUT_CONTRACTS)}, got {self.input_contract!r}")
        features = self.block_szs[-1] * self.expansion
        if self.hidden_size is not None and self.hidden_size != features:
            raise ValueError(f"hidden_size={self.hidden_size} disagrees with the encoder's {features} output channels; "
                             "leave hidden_size unset")
        self.hidden_size = features
        contract = SignalContract.from_dict(self.signal_contract) if self.signal_contract else contract_for(self.input_contract)
        if contract.n_leads != self.input_channels:
            raise ValueError(f"the signal contract has {contract.n_leads} leads but input_channels={self.input_channels}")
        self.signal_contract = contract.to_dict()
        super().__post_init__(**kwargs)

    @property
    def contract(self) -> SignalContract:
        return SignalContract.from_dict(self.signal_contract)
