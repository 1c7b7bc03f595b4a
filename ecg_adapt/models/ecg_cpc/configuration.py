"""ECG-CPC configuration and default preprocessing.

ECG-CPC (AI4HealthUOL/ecg-fm-benchmarking, ICLR 2026 benchmark; no licence stated) is ``clinical_ts``'s
``TimeSeriesEncoder``: a convolutional encoder (``RNNEncoder``: Conv1d without bias -> BatchNorm1d -> ReLU per
layer) followed by an S4 predictor (``S4Predictor`` -> ``S4Model``: residual S4 layers with post-LayerNorm),
pre-trained with contrastive predictive coding on HEEDB at 240 Hz. The feature vector is the time-mean of the
predictor output (the benchmark's ``CPCWrapper`` ``pooled_features``).
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...processing.contract import SignalContract
from ...processing.steps import Step, Window
from .family import ECG_CPC_CONTRACT, RELEASED_ARCHITECTURE, RELEASED_VARIANTS  # noqa: F401  (re-exported)
from .processing import SincResample


def default_processor_steps(window_mode: str = "all") -> list[Step]:
    """The benchmark's preprocessing as processor steps (``shared/golden/ecg_cpc/README.md``).

    1. records at another rate are first resampled to 500 Hz with resampy's ``kaiser_best`` sinc interpolator, as
       the benchmark's dataset preparation (``resample_data(..., target_fs=500)``) does;
    2. non-overlapping 2.5 s windows are cut at 500 Hz (1250 samples). The benchmark drops a last chunk shorter
       than 2.5 s; ``window_mode="all"`` instead adds one window aligned to the record's end, so every sample is
       seen (a 10 s record gives the benchmark's 4 windows exactly); ``"first"`` keeps the first window only;
    3. each window is resampled on its own to 240 Hz (600 samples), again with ``kaiser_best``, in float32 as the
       benchmark does on its float32 memmaps (bit-identical to its ``model_input``).

    No filtering, clipping or normalisation: the model reads millivolts in the canonical lead order (the
    processor places leads by name). NaN samples are interpolated by the processor before these steps (the
    original sets them to 0 after resampling; the model's forward does that too).
    """
    return [
        SincResample(target_hz=500.0),
        Window(seconds=2.5, mode=window_mode),  # type: ignore[arg-type]
        SincResample(target_hz=240.0, float32=True),
    ]


@strict
class ECGCPCConfig(PreTrainedConfig):
    r"""Configuration of an ECG-CPC backbone; defaults are the released model.

    The fields are the original Hydra keys ``ts.enc.*`` (``features``, ``kss``, ``strides``, ``dilations``) and
    ``ts.pred.*`` (``model_dim``, ``state_dim``, ``layers``, ``causal``, ``prenorm``, ``dropout``,
    ``tie_dropout``) under descriptive names.

    in_channels (`int`): input leads.
    encoder_features (`list[int]`): output channels of each conv encoder layer.
    encoder_kernel_sizes (`list[int]`): their kernels (padding ``(k - 1) // 2``).
    encoder_strides (`list[int]`): their strides; tokens = ``ceil(samples / prod(strides))``.
    encoder_dilations (`list[int]`): their dilations.
    model_dim (`int`): S4 width H. When it differs from ``encoder_features[-1]`` a Linear maps the encoder output
        to it (``S4Model.encoder``), otherwise there is none.
    state_dim (`int`): S4 state size N (N / 2 conjugate pairs are stored).
    num_layers (`int`): S4 blocks.
    causal (`bool`): causal S4 kernels (the release); ``False`` is the bidirectional S4 (two kernels per channel).
    prenorm (`bool`): LayerNorm before each S4 layer instead of after the residual add (the release: post-norm).
    dropout (`float`): dropout after the S4 activation and after each S4 layer (training only).
    tie_dropout (`bool`): one dropout mask per channel for the whole sequence (``DropoutNd``), as released.
    l_max (`int`): the length, in tokens, the S4 kernels were set up for (``2 * (len(omega) - 1)``): 1200 for
        the release (10 s pre-training windows at 240 Hz, halved by the stride-2 encoder). The kernel is always
        evaluated at this length and truncated to the input; longer inputs are refused.
    dt_min, dt_max (`float`): range of the random initial S4 step sizes (only used to initialise new models).
    hidden_size (`int`): feature width, always ``model_dim`` (filled in when omitted).
    signal_contract (`dict`): the input :class:`~ecg_adapt.processing.SignalContract` (default: 12 leads,
        240 Hz, 2.5 s windows).

    Example:
        >>> from ecg_adapt.models.ecg_cpc import ECGCPCConfig
        >>> cfg = ECGCPCConfig()
        >>> cfg.hidden_size, cfg.signal_contract["sampling_rate"], cfg.l_max
        (512, 240.0, 1200)
    """

    model_type = "ecg_cpc"

    in_channels: int = 12
    encoder_features: list[int] | tuple[int, ...] = (512, 512, 512, 512)
    encoder_kernel_sizes: list[int] | tuple[int, ...] = (3, 1, 1, 1)
    encoder_strides: list[int] | tuple[int, ...] = (2, 1, 1, 1)
    encoder_dilations: list[int] | tuple[int, ...] | None = None
    model_dim: int = 512
    state_dim: int = 8
    num_layers: int = 4
    causal: bool = True
    prenorm: bool = False
    dropout: float | int = 0.2
    tie_dropout: bool = True
    l_max: int = 1200
    dt_min: float = 0.001
    dt_max: float = 0.1
    hidden_size: int | None = None
    signal_contract: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.encoder_features = [int(f) for f in self.encoder_features]
        self.encoder_kernel_sizes = [int(k) for k in self.encoder_kernel_sizes]
        self.encoder_strides = [int(s) for s in self.encoder_strides]
        if self.encoder_dilations is None:
            self.encoder_dilations = [1] * len(self.encoder_features)
        self.encoder_dilations = [int(d) for d in self.encoder_dilations]
        lengths = {len(self.encoder_features), len(self.encoder_kernel_sizes), len(self.encoder_strides),
                   len(self.encoder_dilations)}
        if len(lengths) != 1 or not self.encoder_features:
            raise ValueError(
                "encoder_features, encoder_kernel_sizes, encoder_strides and encoder_dilations must be non-empty lists "
                f"of one length, got {self.encoder_features}, {self.encoder_kernel_sizes}, {self.encoder_strides}, "
                f"{self.encoder_dilations}"
            )
        if min(self.encoder_features + self.encoder_kernel_sizes + self.encoder_strides + self.encoder_dilations) < 1:
            raise ValueError("encoder widths, kernel sizes, strides and dilations must all be >= 1")
        if self.state_dim < 2 or self.state_dim % 2:
            raise ValueError(f"state_dim must be even and >= 2 (N/2 conjugate pairs are stored), got {self.state_dim}")
        if self.model_dim < 1 or self.num_layers < 1:
            raise ValueError(f"model_dim and num_layers must be >= 1, got {self.model_dim} and {self.num_layers}")
        if self.l_max < 2 or self.l_max % 2:
            raise ValueError(f"l_max must be even and >= 2 (the kernel's FFT grid has l_max/2 + 1 nodes), got {self.l_max}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.hidden_size is None:
            self.hidden_size = self.model_dim
        elif self.hidden_size != self.model_dim:
            raise ValueError(f"hidden_size must equal model_dim = {self.model_dim}, got {self.hidden_size}")
        contract = SignalContract.from_dict(self.signal_contract) if self.signal_contract else ECG_CPC_CONTRACT
        if contract.n_leads != self.in_channels:
            raise ValueError(f"signal_contract has {contract.n_leads} leads but in_channels is {self.in_channels}")
        self.signal_contract = contract.to_dict()
        super().__post_init__(**kwargs)

    @property
    def contract(self) -> SignalContract:
        return SignalContract.from_dict(self.signal_contract)

    @property
    def downsampling(self) -> int:
        """Input samples per token (the product of the encoder strides)."""
        out = 1
        for s in self.encoder_strides:
            out *= s
        return out
