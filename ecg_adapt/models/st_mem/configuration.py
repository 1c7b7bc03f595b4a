"""ST-MEM configuration, signal contract, default preprocessing and released variants.

ST-MEM (Na et al., "Guiding Masked Representation Learning to Capture Spatio-Temporal Relationship of
Electrocardiogram", ICLR 2024; code github.com/vuno/ST-MEM = github.com/bakqui/ST-MEM, CC BY-NC 4.0 plus a
VUNO notice) is a ViT pretrained as a masked autoencoder on 12-lead ECG. Every lead is cut into 1-D patches
of 75 samples (30 per 9 s lead at 250 Hz), each lead gets a SEP token at both ends and a learned lead
embedding, and all 12 x 32 = 384 tokens attend to each other. The feature vector is the mean of the patch
tokens (SEP tokens left out) followed by a LayerNorm.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...processing.contract import SignalContract
from ...processing.steps import Butterworth, Resample, Step, Window
from .processing import STMEMCast, STMEMNCrop, STMEMStandardize
from .family import (  # noqa: F401  (re-exported: the torch-free facts live in family.py)
    RELEASED_SIZES,
    RELEASED_VARIANTS,
    ST_MEM_CONTRACT,
)


def default_processor_steps(window_mode: str = "all") -> list[Step]:
    """The original ST-MEM evaluation preprocessing, step by step (``../shared/golden/st_mem/README.md``).

    The record is cut into 10 s windows first (``window_mode="all"``: every 10 s of the record, the last one
    aligned to the end when the record is not a multiple of 10 s; ``"first"``: only the first 10 s), then
    each window goes through the original chain: float32 rounding, FFT resampling to 250 Hz, three 9 s crops
    (starts 0, 0.5 and 1 s), Butterworth high-pass 0.67 Hz and low-pass 40 Hz (order 5, zero phase) on each
    crop, and a z-score per crop over leads and time together. A 10 s record gives 3 model inputs, whose
    predictions the original averages (``engine_downstream.evaluate``); ``ecg_adapt`` does the same with
    :func:`~ecg_adapt.tasks.aggregate_windows`.

    Differences from the original, both outside its domain: records shorter than 10 s are padded and masked
    (the original skips them) and a record's tail that does not fill 10 s is covered by an end-aligned window
    (the original drops it).
    """
    if window_mode not in ("all", "first"):
        raise ValueError(f"window_mode must be 'all' or 'first', got {window_mode!r}")
    return [
        Window(seconds=10.0, mode=window_mode),  # type: ignore[arg-type]
        STMEMCast(dtype="float32"),
        Resample(target_hz=250.0, method="fft"),
        STMEMNCrop(crop_seconds=9.0, num_crops=3),
        Butterworth(low_hz=0.67, high_hz=None, order=5),
        Butterworth(low_hz=None, high_hz=40.0, order=5),
        STMEMStandardize(scope="global"),
    ]


@strict
class STMEMConfig(PreTrainedConfig):
    r"""Configuration of an ST-MEM ViT encoder (``models.encoder.st_mem_vit.ST_MEM_ViT`` of the original).

    The defaults are those of the released ViT-B/75 (``st_mem_vit_base``). Fields use the ``transformers`` names;
    the original constructor's names are accepted as aliases (``STMEMConfig(width=128, depth=2, heads=2,
    mlp_dim=256, dim_head=64)`` works, and ``config.width`` reads ``hidden_size``).

    seq_len (`int`, defaults to 2250): longest input per lead, in samples (9 s at 250 Hz). It sizes the
        positional table (``seq_len // patch_size + 2`` rows); shorter inputs (a multiple of ``patch_size``)
        use its first rows for patches and its last row for the right SEP token, as the original does.
    patch_size (`int`, defaults to 75): samples per patch. Every lead is patched on its own.
    num_leads (`int`, defaults to 12): number of leads, i.e. of learned lead embeddings. Inputs must have
        exactly this many leads (mask missing ones with ``attention_mask``).
    hidden_size (`int`, defaults to 768): token width (original ``width``); also the size of the feature
        vector (``pooler_output``) the classification head sees.
    num_hidden_layers (`int`, defaults to 12): transformer blocks (original ``depth``).
    num_attention_heads (`int`, defaults to 12): attention heads (original ``heads``).
    head_dim (`int`, defaults to 64): width of one head (original ``dim_head``). 64 in every original model:
        it is not ``hidden_size // num_attention_heads`` by construction, and the attention scale is
        ``head_dim ** -0.5``.
    intermediate_size (`int`, defaults to 3072): hidden width of the MLP (original ``mlp_dim``).
    qkv_bias (`bool`, defaults to True): bias of the fused ``to_qkv`` projection.
    hidden_dropout_prob (`float`, defaults to 0.0): dropout after the embeddings, the attention output and
        both MLP layers (original ``drop_out_rate``).
    attention_probs_dropout_prob (`float`, defaults to 0.0): dropout on the attention weights (original
        ``attn_drop_out_rate``).
    drop_path_rate (`float`, defaults to 0.0): stochastic depth, linearly increasing from 0 in the first block
        to this value in the last (timm's rule, as the original).
    layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm (the PyTorch default the original
        relies on).
    initializer_range (`float`, defaults to 0.02): std of the SEP and lead embeddings in ``_init_weights``
        (the MAE pretraining init; Linear layers get Xavier-uniform, the positional table the fixed sin-cos).
    signal_contract (`dict`): the :class:`~ecg_adapt.processing.SignalContract` of the input (12 standard
        leads, 250 Hz, 2250 samples, channels first); filled with :data:`ST_MEM_CONTRACT` when not given.

    Example:
        >>> from ecg_adapt.models.st_mem import STMEMConfig
        >>> cfg = STMEMConfig(width=128, depth=2, heads=2, mlp_dim=256)
        >>> cfg.hidden_size, cfg.num_hidden_layers, cfg.num_patches
        (128, 2, 30)
    """

    model_type = "st_mem"
    # The original constructor's argument names, so that its kwargs can be passed as they are.
    attribute_map = {
        "width": "hidden_size",
        "depth": "num_hidden_layers",
        "heads": "num_attention_heads",
        "dim_head": "head_dim",
        "mlp_dim": "intermediate_size",
        "drop_out_rate": "hidden_dropout_prob",
        "attn_drop_out_rate": "attention_probs_dropout_prob",
    }

    seq_len: int = 2250
    patch_size: int = 75
    num_leads: int = 12
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    head_dim: int = 64
    intermediate_size: int = 3072
    qkv_bias: bool = True
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    signal_contract: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        # The original's classifier size is not part of the backbone (ECGClassifier owns the head).
        kwargs.pop("num_classes", None)
        contract = SignalContract.from_dict(self.signal_contract) if self.signal_contract else ST_MEM_CONTRACT
        self.signal_contract = contract.to_dict()
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Checks the original asserts or relies on (called by ``@strict`` after ``__init__``)."""
        super().validate_architecture()
        if self.patch_size < 1 or self.seq_len % self.patch_size != 0:
            raise ValueError(f"seq_len ({self.seq_len}) must be a positive multiple of patch_size ({self.patch_size})")
        for name in ("num_leads", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def num_patches(self) -> int:
        """Patches per lead at full length (30 for the release)."""
        return self.seq_len // self.patch_size

    @property
    def contract(self) -> SignalContract:
        return SignalContract.from_dict(self.signal_contract)
