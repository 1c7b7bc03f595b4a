"""ECG-JEPA configuration, signal contract and default preprocessing.

ECG-JEPA (Kim, "Learning General Representation of 12-Lead Electrocardiogram with a Joint-Embedding
Predictive Architecture", arXiv 2410.08559; code github.com/sehunfromdaegu/ECG_JEPA, MIT) is a ViT over
per-lead patches. The released encoder (``ecg_jepa.MaskTransformer``, built by ``models.load_encoder``) reads
8 leads (I, II, V1-V6) of 10 s at 250 Hz in millivolts, cuts every lead into 50 patches of 50 samples, embeds
each patch with one ``Linear(50, D)``, adds a fixed 2-D sin-cos table (time patch, lead) before *every* block,
restricts attention with a lead-wise mask (a token sees its own lead and the same time patch of the other
leads), and mean-pools the final-LayerNorm tokens into the representation the probes use.

Field names follow transformers (``hidden_size``, ``num_hidden_layers``, ...); the original constructor names
(``embed_dim``, ``depth``, ``num_heads``, ``c``, ``p``, ``t``) are accepted as aliases via ``attribute_map``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...processing.contract import SignalContract
from ...processing.steps import Resample, Step, Window
from .processing import SOSButterworth
from .family import (  # noqa: F401  (re-exported: the torch-free facts live in family.py)
    ECG_JEPA_CONTRACT,
    PRETRAINING_LEADS,
    RELEASED_SIZES,
    RELEASED_VARIANTS,
    _contract,
)


PIPELINES = ("linear_eval", "finetune")


def default_processor_steps(window_mode: str = "all", pipeline: str = "linear_eval") -> list[Step]:
    """The original ECG-JEPA preprocessing, step by step (see ``../shared/golden/ecg_jepa/README.md``).

    Lead selection (I, II, V1-V6, by name) and the mV scale are handled by the processor and the contract;
    the steps are:

    1. ``Window(10 s)`` at the record's own rate. ``window_mode="first"`` keeps the first 10 s (what
       ``ecg_data.get_ecg_data`` does: ``x[:5000]`` at 500 Hz; PTB-XL records are exactly 10 s, so both modes
       give the one window of ``waves_ptbxl``); ``"all"`` cuts consecutive 10 s windows (plus one aligned to
       the end). Cropping *before* resampling follows ``get_ecg_data`` (crop at 500 Hz, then resample the crop).
    2. ``Resample(250 Hz, "fft")``: ``scipy.signal.resample(x, 2500, axis=1)``. The FFT resampler matters:
       ``resample_poly`` differs by 0.15 mV on HR06000.
    3. ``pipeline="finetune"`` only: order-5 Butterworth high-pass at 0.67 Hz on the float32-rounded signal,
       then order-5 low-pass at 40 Hz, each zero-phase (``augmentation.HighpassFilter``/``LowpassFilter`` as
       listed in ``finetuning.py``'s ``eval_transforms``). ``"linear_eval"`` (the default) has no filter:
       that is the input of ``linear_eval.py`` and of the linear-probe numbers.

    No amplitude normalisation in either pipeline. Records that are not exactly 10 s are an extension: the
    original drops records shorter than 10 s; here they are zero-padded and the padding is masked.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    steps: list[Step] = [
        Window(seconds=10.0, mode=window_mode),  # type: ignore[arg-type]
        Resample(target_hz=250.0, method="fft"),
    ]
    if pipeline == "finetune":
        steps += [
            SOSButterworth(btype="highpass", cutoff_hz=0.67, order=5, input_dtype="float32"),
            SOSButterworth(btype="lowpass", cutoff_hz=40.0, order=5),
        ]
    return steps


@strict
class ECGJEPAConfig(PreTrainedConfig):
    r"""Configuration of an ECG-JEPA encoder (``ecg_jepa.MaskTransformer``). Defaults: the released ViT-B.

    hidden_size (`int`): token width ``D`` (original ``embed_dim``); also the size of the pooled feature vector.
    num_hidden_layers (`int`): number of transformer blocks (original ``depth``).
    num_attention_heads (`int`): attention heads (original ``num_heads``; head_dim = D // heads = 48 released).
    mlp_ratio (`float`): MLP hidden width as a multiple of D (``fc1`` has ``int(D * mlp_ratio)`` outputs).
    qkv_bias (`bool`): whether the fused ``qkv`` projection has a bias (``False`` in the release).
    qk_scale (`float` or `None`): attention scale; ``None`` means ``head_dim ** -0.5`` as in the original.
    num_leads (`int`): lead slots of the positional table and of the lead-wise mask (original ``c`` = 8).
    num_patches (`int`): patches per lead (original ``p`` = 50).
    patch_size (`int`): samples per patch (original ``t`` = 50); ``num_patches * patch_size`` = 2500 samples.
    leads (`list[int]`): which of the ``num_leads`` slots the input carries, in order (original ``leads``); a
        subset restricts the positional table and the mask as ``MaskTransformer.restrict_leads`` does.
    lead_names (`list[str]`): the name of every lead slot (I, II, V1-V6), used to build the signal contract.
    pos_type (`str`): ``"sincos"`` (fixed 2-D table, stored but never trained) or ``"learnable"``.
    layer_norm_eps (`float`): LayerNorm epsilon (torch's default 1e-5, as the original's ``nn.LayerNorm``).
    hidden_dropout_prob (`float`): dropout after the attention output and in the MLP (original ``drop_rate``).
    attention_probs_dropout_prob (`float`): dropout on attention weights (original ``attn_drop_rate``).
    drop_path_rate (`float`): stochastic depth, linearly increasing to this rate over the blocks (0 in
        ``load_encoder``; pretraining used 0.1).
    init_std (`float`): std of the truncated-normal init of the linear layers (random init only).
    signal_contract (`dict`): the :class:`~ecg_adapt.processing.SignalContract` of the input; filled from
        ``leads`` and ``lead_names`` when not given.

    Example:
        >>> from ecg_adapt.models.ecg_jepa import ECGJEPAConfig
        >>> cfg = ECGJEPAConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
        >>> cfg.model_type, cfg.embed_dim, cfg.contract.input_shape
        ('ecg_jepa', 64, (8, 2500))
    """

    model_type = "ecg_jepa"
    attribute_map: ClassVar[dict[str, str]] = {
        "embed_dim": "hidden_size",
        "depth": "num_hidden_layers",
        "num_heads": "num_attention_heads",
        "c": "num_leads",
        "p": "num_patches",
        "t": "patch_size",
    }

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 16
    mlp_ratio: float | int = 4.0
    qkv_bias: bool = False
    qk_scale: float | None = None
    num_leads: int = 8
    num_patches: int = 50
    patch_size: int = 50
    leads: list[int] | tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    lead_names: list[str] | tuple[str, ...] = PRETRAINING_LEADS
    pos_type: str = "sincos"
    layer_norm_eps: float = 1e-5
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.0
    init_std: float = 0.02
    signal_contract: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.leads = [int(i) for i in self.leads]
        self.lead_names = [str(n) for n in self.lead_names]
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of 4 (2-D sin-cos table: 2 axes x sin/cos)")
        if self.pos_type not in ("sincos", "learnable"):
            raise ValueError(f"pos_type must be 'sincos' or 'learnable', got {self.pos_type!r}")
        if len(self.lead_names) != self.num_leads:
            raise ValueError(f"lead_names has {len(self.lead_names)} names but num_leads is {self.num_leads}")
        if not self.leads or len(set(self.leads)) != len(self.leads) or not all(0 <= i < self.num_leads for i in self.leads):
            raise ValueError(f"leads must be distinct indices in [0, {self.num_leads}), got {self.leads}")
        if self.signal_contract:
            contract = SignalContract.from_dict(self.signal_contract)
        else:
            names = tuple(self.lead_names[i] for i in self.leads)
            contract = ECG_JEPA_CONTRACT if names == PRETRAINING_LEADS else _contract(names)
        if contract.n_leads != len(self.leads) or contract.window_samples != self.num_patches * self.patch_size:
            raise ValueError(
                f"signal_contract expects {contract.input_shape} but the model reads "
                f"({len(self.leads)}, {self.num_patches * self.patch_size})"
            )
        self.signal_contract = contract.to_dict()
        super().__post_init__(**kwargs)

    @property
    def contract(self) -> SignalContract:
        return SignalContract.from_dict(self.signal_contract)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def intermediate_size(self) -> int:
        """Width of ``mlp.fc1`` (``int(D * mlp_ratio)``, as the original computes it)."""
        return int(self.hidden_size * self.mlp_ratio)
