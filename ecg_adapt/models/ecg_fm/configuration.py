"""ECG-FM configuration, signal contract, default preprocessing and released variants.

ECG-FM (McKeen et al., arXiv 2408.05178; project github.com/bowang-lab/ECG-FM, model code
github.com/Jwoo5/fairseq-signals, both MIT) is a wav2vec 2.0-style encoder for 12-lead ECG:

* a convolutional feature extractor over the 12 leads as channels, ``[(256, 2, 2)] * 4`` (four
  ``Conv1d(kernel 2, stride 2, no bias)`` blocks, GroupNorm in the first one, GELU), i.e. one frame per 16 samples;
* ``LayerNorm`` over the conv channels, ``post_extract_proj`` (Linear 256 -> 768);
* a convolutional positional encoding (``Conv1d`` 768 -> 768, 128 taps, 16 groups, weight norm over dim 2),
  added to the frames;
* a 12-layer **post-LN** transformer (768 / 3072 / 12 heads) with a LayerNorm *before* the first layer.

The config uses transformers' names where ``Wav2Vec2Config`` has the same concept (``hidden_size``,
``conv_dim``, ...); the fairseq-signals name of every field is given in the docstring, and the converter maps
them explicitly (:data:`ecg_adapt.models.ecg_fm.convert.FAIRSEQ_CONFIG_NAMES`).
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...processing.contract import SignalContract
from ...processing.steps import Step
from .processing import EndpointLinearResample, NonOverlappingSegments, RecordLeadZScore
from .family import (  # noqa: F401  (re-exported: the torch-free facts live in family.py)
    ECG_FM_CONTRACT,
    RELEASED_ARCHITECTURE,
    RELEASED_VARIANTS,
)


def default_processor_steps(window_mode: str = "all") -> list[Step]:
    """The original ECG-FM preprocessing, step by step (``../shared/golden/ecg_fm/README.md``).

    1. linear interpolation to 500 Hz on the original's endpoint-aligned grid (a no-op at 500 Hz);
    2. per-lead z-score over the whole record (no epsilon, constant leads -> 0);
    3. non-overlapping 5 s windows.

    ``window_mode="all"`` keeps every complete 5 s window and drops the remainder, as the original
    ``segment_mat`` does (a 10 s record gives two inputs); ``"first"`` keeps only the first window. A record
    shorter than 5 s, which the original cannot use, gives one zero-padded window with ``attention_mask=0``
    over the padding.

    Example:
        >>> [s.name for s in default_processor_steps()]
        ['ecg_fm_endpoint_linear_resample', 'ecg_fm_record_lead_zscore', 'ecg_fm_nonoverlapping_segments']
    """
    if window_mode not in ("all", "first"):
        raise ValueError(f"window_mode must be 'all' or 'first', got {window_mode!r}")
    return [
        EndpointLinearResample(target_hz=500.0),
        RecordLeadZScore(),
        NonOverlappingSegments(seconds=5.0, mode=window_mode),  # type: ignore[arg-type]
    ]


@strict
class ECGFMConfig(PreTrainedConfig):
    r"""Configuration of an ECG-FM backbone (:class:`~ecg_adapt.models.ecg_fm.ECGFMModel`).

    Defaults are the released ECG-FM (90.4 M backbone parameters). In brackets: the fairseq-signals name.

    Architecture:
        num_leads (`int`): input channels of the first conv (`in_d`), 12 for the released model.
        conv_dim (`list[int]`): output channels of each conv block (`conv_feature_layers`, 1st entries).
        conv_kernel (`list[int]`): kernel size of each conv block (`conv_feature_layers`, 2nd entries).
        conv_stride (`list[int]`): stride of each conv block (`conv_feature_layers`, 3rd entries).
        conv_bias (`bool`): bias in the conv blocks (`conv_bias`).
        feat_extract_norm (`str`): `"group"`: a per-channel GroupNorm in the first block only
            (`extractor_mode="default"`, released); `"layer"`: a LayerNorm in every block (`"layer_norm"`).
        hidden_size (`int`): transformer width (`encoder_embed_dim`), also the size of the pooled feature vector.
        num_hidden_layers (`int`): transformer layers (`encoder_layers`).
        num_attention_heads (`int`): attention heads (`encoder_attention_heads`).
        intermediate_size (`int`): feed-forward width (`encoder_ffn_embed_dim`).
        num_conv_pos_embeddings (`int`): taps of the positional conv (`conv_pos`).
        num_conv_pos_embedding_groups (`int`): groups of the positional conv (`conv_pos_groups`).
        layer_norm_first (`bool`): pre-LN layers and a final LayerNorm (`layer_norm_first`); the released model
            is post-LN (`False`), where `encoder.layer_norm` is applied before the first layer.
        layer_norm_eps (`float`): epsilon of every LayerNorm and of the GroupNorm (fairseq default 1e-5).

    Training-time settings (no effect in eval mode; defaults are ECG-FM's fine-tuning recipe, ``diagnosis.yaml``):
        hidden_dropout (`float`): dropout after attention, after the FFN and on the encoder input (`dropout`).
        attention_dropout (`float`): dropout on the attention weights (`attention_dropout`).
        activation_dropout (`float`): dropout after the FFN activation (`activation_dropout`).
        feat_proj_dropout (`float`): dropout after `post_extract_proj` (`dropout_input`).
        layerdrop (`float`): probability of skipping a whole layer while training (`encoder_layerdrop`).
        feature_grad_mult (`float`): gradient scale of the conv feature extractor (`feature_grad_mult`). 1.0 trains
            it normally; 0.0 runs it under ``torch.no_grad`` (ECG-FM fine-tuning freezes it this way); values in
            between scale its gradients (pretraining used 0.1).
        initializer_range (`float`): std of the normal init of the transformer's Linear layers (BERT init).

    ecg_adapt's own:
        signal_contract (`dict`): the :class:`~ecg_adapt.processing.SignalContract` of the input (12 leads,
            500 Hz, 5 s, channels first); defaults to :data:`ECG_FM_CONTRACT`.

    Not modelled: the pretraining-only parts of the original (time masking with ``mask_emb``, the quantizer,
    ``project_q``, ``final_proj``), which do not take part in feature extraction.

    Example:
        >>> from ecg_adapt.models.ecg_fm import ECGFMConfig
        >>> cfg = ECGFMConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        ...                   conv_dim=[32] * 4, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
        >>> cfg.model_type, cfg.frames_per_window
        ('ecg_fm', 156)
    """

    model_type = "ecg_fm"

    num_leads: int = 12
    conv_dim: list[int] | tuple[int, ...] = (256, 256, 256, 256)
    conv_kernel: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    conv_stride: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_first: bool = False
    layer_norm_eps: float = 1e-5
    hidden_dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    activation_dropout: float | int = 0.1
    feat_proj_dropout: float | int = 0.0
    layerdrop: float | int = 0.0
    feature_grad_mult: float | int = 1.0
    initializer_range: float = 0.02
    signal_contract: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        # JSON gives lists back; keep one type so that configs compare equal after a save/load round trip.
        self.conv_dim = [int(v) for v in self.conv_dim]
        self.conv_kernel = [int(v) for v in self.conv_kernel]
        self.conv_stride = [int(v) for v in self.conv_stride]
        contract = SignalContract.from_dict(self.signal_contract) if self.signal_contract else ECG_FM_CONTRACT
        self.signal_contract = contract.to_dict()
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Part of ``@strict`` validation: sizes that the modules cannot be built with fail here, by name."""
        if not (len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride)) or not self.conv_dim:
            raise ValueError(
                f"conv_dim, conv_kernel and conv_stride must be non-empty and of equal length, got "
                f"{self.conv_dim}, {self.conv_kernel}, {self.conv_stride}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_conv_pos_embedding_groups "
                f"{self.num_conv_pos_embedding_groups}"
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        n_leads = len(self.signal_contract["leads"]) if self.signal_contract else len(ECG_FM_CONTRACT.leads)
        if n_leads != self.num_leads:
            raise ValueError(
                f"num_leads={self.num_leads} but the signal contract names {n_leads} leads; pass a signal_contract "
                "whose leads are the model's input channels"
            )

    @property
    def contract(self) -> SignalContract:
        return SignalContract.from_dict(self.signal_contract)

    @property
    def frames_per_window(self) -> int:
        """Frames the conv stack makes of one contract window (156 for 2500 samples)."""
        n = self.contract.window_samples
        for kernel, stride in zip(self.conv_kernel, self.conv_stride):
            n = (n - kernel) // stride + 1
        return n
