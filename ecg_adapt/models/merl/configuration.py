"""MERL configuration, signal contract, released variants and default preprocessing.

MERL (Liu et al., "Zero-Shot ECG Classification with Multimodal Learning and Test-time Clinical Knowledge
Enhancement", ICML 2024; code github.com/cheliu-computation/MERL-ICML2024, MIT) is an ECG-report CLIP model.
ecg_adapt loads its *ECG encoder*, which exists in two released types that share one preprocessing:

* ``encoder_type="resnet"``: a 1-D ResNet (``utils/resnet1d.py``, released as ``ResNet18()``): a stride-2
  7-tap stem without max-pool and four stages of basic blocks; the features are the time-average of the last
  stage (``(B, 512)``);
* ``encoder_type="vit"``: a 1-D ViT (``utils/vit1d.py``, released as ``vit_tiny``): a 12-lead Conv1d patch
  embedding (50 samples per token), learned positions, pre-norm blocks with a fused ``to_qkv``; the features
  are ``LayerNorm(mean over tokens)`` (``(B, 192)``).

Both take ``(B, 12, 5000)``: 10 s at 500 Hz, leads in **MIMIC-IV-ECG order (aVF before aVL)**, one global
min-max to [0, 1] per record, no filtering.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...processing.contract import SignalContract
from ...processing.steps import Normalize, Resample, Step, Window
from .family import (  # noqa: F401  (re-exported: the torch-free facts live in family.py)
    ENCODER_TYPES,
    MERL_CONTRACT,
    MERL_LEADS,
    ORIGINAL_VIT_DIM_HEAD,
    RELEASED_CONFIGS,
    RELEASED_VARIANTS,
    RESNET_BLOCKS,
    RESNET_EXPANSION,
)


def default_processor_steps(window_mode: str = "all") -> list[Step]:
    """The original MERL downstream preprocessing (``finetune_dataset.py``, PTB-XL branch), step by step.

    The original reads the record, keeps ``[:, :5000]`` (the first 10 s at 500 Hz), applies one global min-max
    ``(x - min) / (max - min + 1e-8)`` in float64, casts to float32 and swaps rows 4/5 into MIMIC order. Here:

    * the lead reordering is done by the processor itself, by lead *name* onto :data:`MERL_CONTRACT` (the
      original takes rows by position and assumes the standard order);
    * ``Resample`` is ecg_adapt's addition so that records at other rates can be used; it is a no-op at 500 Hz,
      the only rate the original handles;
    * the window is cut **before** the min-max, because the original normalises the 10 s crop, not the whole
      record. ``window_mode="first"`` keeps the first 10 s (the original crop); ``"all"`` cuts the record into
      consecutive 10 s windows (the last one aligned to the record end) and normalises each window on its own.
      A record shorter than 10 s is zero-padded at the end (masked); the zeros take part in the min-max, as in
      the original CPSC2018 branch, which zero-pads 5 s records to 10 s before normalising.
    """
    return [
        Resample(target_hz=500.0, method="polyphase"),
        Window(seconds=10.0, mode=window_mode),  # type: ignore[arg-type]
        Normalize(method="minmax", scope="global", low=0.0, high=1.0, eps=1e-8),
    ]


@strict
class MERLConfig(PreTrainedConfig):
    r"""Configuration of a MERL ECG encoder (ResNet-1D or ViT-1D).

    The defaults build the released ``ResNet18()`` encoder. ``RELEASED_CONFIGS["vit_tiny"]`` gives the released
    ViT. Fields prefixed ``resnet_`` only matter when ``encoder_type="resnet"``, and fields prefixed ``vit_``
    only when ``encoder_type="vit"``.

    encoder_type (`str`): ``"resnet"`` (``utils/resnet1d.py`` ``ResNet``) or ``"vit"`` (``utils/vit1d.py``
        ``ViT``).
    num_leads (`int`): input channels of the first layer (12 for every release).
    resnet_block (`str`): ``"basic"`` (two 3-tap convs, ResNet18/34) or ``"bottleneck"`` (1-3-1 convs with 4x
        expansion; ResNet50/101 of the original code, no released weights).
    resnet_num_blocks (`list[int]`): residual blocks per stage; ``[2, 2, 2, 2]`` is ResNet18.
    resnet_widths (`list[int]`): stage widths. The original hard-codes ``(64, 128, 256, 512)``; the stem has
        ``resnet_widths[0]`` channels. The first block of stages 2-4 has stride 2.
    batch_norm_eps (`float`): BatchNorm1d eps (PyTorch default 1e-5, as in the original).
    vit_seq_len (`int`): input samples per lead; fixes the number of learned positions
        (``vit_seq_len // vit_patch_size``).
    vit_patch_size (`int`): samples per token (kernel and stride of the Conv1d patch embedding).
    vit_width (`int`): token dimension.
    vit_depth (`int`): number of transformer blocks (attributes ``block0 ... block{depth-1}``).
    vit_heads (`int`): attention heads.
    vit_dim_head (`int`): dimension per head; the attention scale is ``vit_dim_head ** -0.5`` (64 in every
        original factory, independent of the width).
    vit_mlp_dim (`int`): hidden size of the feed-forward network.
    vit_qkv_bias (`bool`): bias of the fused ``to_qkv`` projection.
    vit_dropout (`float`): dropout after the position embedding, after ``to_out`` and in the MLP
        (original ``drop_out_rate``, 0 in every release).
    vit_attention_dropout (`float`): dropout on the attention weights (original ``attn_drop_out_rate``).
    vit_drop_path_rate (`float`): stochastic-depth rate of the last block, linearly increasing from 0 over
        the blocks (original ``drop_path_rate``).
    layer_norm_eps (`float`): LayerNorm eps (PyTorch default 1e-5, as in the original).
    hidden_size (`int`): dimension of the feature vector the head sees (``pooler_output``): the last stage's
        channels for the ResNet, ``vit_width`` for the ViT. Derived from the fields above; giving a
        different value is an error.
    signal_contract (`dict`): the :class:`~ecg_adapt.processing.SignalContract` of the input
        (:data:`MERL_CONTRACT` by default).

    Example:
        >>> from ecg_adapt.models.merl import MERLConfig
        >>> MERLConfig().hidden_size, MERLConfig(encoder_type="vit").hidden_size
        (512, 192)
    """

    model_type = "merl"

    encoder_type: str = "resnet"
    num_leads: int = 12
    # ResNet-1D
    resnet_block: str = "basic"
    resnet_num_blocks: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    resnet_widths: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    batch_norm_eps: float = 1e-5
    # ViT-1D
    vit_seq_len: int = 5000
    vit_patch_size: int = 50
    vit_width: int = 192
    vit_depth: int = 12
    vit_heads: int = 3
    vit_dim_head: int = 64
    vit_mlp_dim: int = 768
    vit_qkv_bias: bool = True
    vit_dropout: float | int = 0.0
    vit_attention_dropout: float | int = 0.0
    vit_drop_path_rate: float | int = 0.0
    layer_norm_eps: float = 1e-5
    # ecg_adapt
    hidden_size: int | None = None
    signal_contract: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if self.encoder_type not in ENCODER_TYPES:
            raise ValueError(f"MERLConfig.encoder_type must be one of {ENCODER_TYPES}, got {self.encoder_type!r}")
        if self.resnet_block not in RESNET_BLOCKS:
            raise ValueError(f"MERLConfig.resnet_block must be one of {RESNET_BLOCKS}, got {self.resnet_block!r}")
        self.resnet_num_blocks = [int(n) for n in self.resnet_num_blocks]
        self.resnet_widths = [int(w) for w in self.resnet_widths]
        if len(self.resnet_num_blocks) != len(self.resnet_widths) or not self.resnet_widths:
            raise ValueError(
                f"resnet_num_blocks {self.resnet_num_blocks} and resnet_widths {self.resnet_widths} must have one "
                "entry per stage"
            )
        if any(n < 1 for n in self.resnet_num_blocks):
            raise ValueError(f"every stage needs at least one block, got resnet_num_blocks={self.resnet_num_blocks}")
        if self.vit_seq_len % self.vit_patch_size != 0:
            raise ValueError(
                f"vit_seq_len ({self.vit_seq_len}) must be divisible by vit_patch_size ({self.vit_patch_size})"
            )
        derived = self.feature_size()
        if self.hidden_size is not None and self.hidden_size != derived:
            raise ValueError(
                f"hidden_size={self.hidden_size} disagrees with the {self.encoder_type} encoder, whose features "
                f"have {derived} dimensions; leave hidden_size unset"
            )
        self.hidden_size = derived
        contract = SignalContract.from_dict(self.signal_contract) if self.signal_contract else MERL_CONTRACT
        self.signal_contract = contract.to_dict()
        super().__post_init__(**kwargs)

    def feature_size(self) -> int:
        """Dimension of the encoder's feature vector (what ``hidden_size`` must equal)."""
        if self.encoder_type == "resnet":
            return int(self.resnet_widths[-1]) * RESNET_EXPANSION[self.resnet_block]
        return int(self.vit_width)

    @property
    def num_patches(self) -> int:
        """Tokens of the ViT (learned positions): ``vit_seq_len // vit_patch_size``."""
        return self.vit_seq_len // self.vit_patch_size

    @property
    def contract(self) -> SignalContract:
        return SignalContract.from_dict(self.signal_contract)
