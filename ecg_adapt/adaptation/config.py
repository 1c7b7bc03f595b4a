"""The adaptation configuration (saved as ``adaptation_config.json``) and the registry of methods.

Every method is described once by a :class:`MethodSpec`: what kind of implementation it has (``native``: the
classifier itself with some parameters unfrozen; ``peft``: a ``peft.PeftModel``; ``module``: ecg_adapt's own
adapter/prompt modules), whether it can be merged into the backbone, and a ``check`` that says up front
whether (and why not) it applies to a given backbone. :func:`~ecg_adapt.adaptation.adapt` dispatches on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from ..utils import did_you_mean

if TYPE_CHECKING:
    from torch import nn

    from ..models.classifier import ECGClassifier

Method = Literal[
    "full",
    "linear_probe",
    "partial",
    "bitfit",
    "norm_tuning",
    "lora",
    "ia3",
    "loha",
    "lokr",
    "vera",
    "oft",
    "boft",
    "houlsby_adapter",
    "pfeiffer_adapter",
    "conv_adapter",
    "prompt_tuning",
]
METHODS: tuple[str, ...] = Method.__args__  # type: ignore[attr-defined]

# peft's LoRA spellings, accepted as aliases of the shared names (``adapt(clf, "lora", lora_r=16)``).
_PEFT_ALIASES = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_target_modules": "target_modules"}
# The fields saved under peft's name in adaptation_config.json (peft's LoraConfig has ``r`` and ``target_modules``
# under these very names already).
_SAVED_AS = {"alpha": "lora_alpha", "dropout": "lora_dropout"}


def field_names(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with peft's spellings (``lora_alpha``, ...) renamed to :class:`AdaptationConfig`'s fields.

    Raises:
        ValueError: one field given under both spellings (e.g. ``alpha`` and ``lora_alpha``), naming both.
    """
    renamed: dict[str, Any] = {}
    for k, v in d.items():
        field = _PEFT_ALIASES.get(k, k)
        if field in renamed:
            other = next(o for o in d if o != k and _PEFT_ALIASES.get(o, o) == field)
            raise ValueError(f"Adaptation field {field!r} is given twice, as {other!r} and {k!r}: keep one")
        renamed[field] = v
    return renamed


class UnsupportedAdaptationError(ValueError):
    """A (method, backbone) pair that cannot work, with the reason (raised before anything is modified)."""


@dataclass
class AdaptationConfig:
    """How to adapt a backbone. Field names follow peft where the concept exists there.

    Names: the fields are the short ones below (``r``, ``alpha``, ``dropout``), shared by every method; recipes
    (the ``adaptation:`` section, listed by ``ecg-adapt train --help``) use exactly these. The saved
    ``adaptation_config.json`` (:meth:`to_dict`) writes ``alpha`` and ``dropout`` under peft's LoRA names
    ``lora_alpha`` and ``lora_dropout`` (``r`` and ``target_modules`` are peft's names already);
    :meth:`from_dict` and ``adapt(..., **kwargs)`` accept both spellings (and ``lora_r``,
    ``lora_target_modules``), but not both for one field.

    Attributes:
        method: one of :data:`METHODS` (``ecg-adapt methods`` prints the table of methods and families).
        r: rank (LoRA, LoHa, LoKr, VeRA) or number of OFT blocks (``r`` in peft).
        alpha: scaling numerator (``lora_alpha`` in peft's LoRA, ``alpha`` in LoHa/LoKr).
        dropout: the adapter's dropout: ``lora_dropout`` (LoRA), ``module_dropout`` (LoHa, LoKr, OFT),
            ``boft_dropout``, ``vera_dropout``; inside bottleneck adapters and on prompts; IA³ has none.
        target_modules: module-name suffixes the peft methods wrap; ``None`` takes the family default.
        use_rslora: rank-stabilised LoRA scaling ``alpha/sqrt(r)``.
        use_dora: weight-decomposed LoRA (DoRA).
        init_lora_weights: peft's LoRA initialisation (``True``, ``"gaussian"``, ``"pissa"``, ``"pissa_niter_4"``,
            ``"olora"``, ...).
        oft_block_size: OFT block size (peft needs exactly one of ``r`` and ``oft_block_size`` non-zero; 0 = use r).
        boft_block_size, boft_n_butterfly_factor: BOFT's block size and butterfly factor.
        num_trainable_blocks: ``partial``: how many of the last backbone blocks are trained.
        layerwise_lr_decay: learning-rate multiplier per block from the top (1.0 = none); used by ``full`` and
            ``partial``: block ``i`` of ``L`` (``i = 1..L``, the top block gets ``lr``) gets ``lr * decay ** (L - i)``,
            the embeddings below block 1 ``lr * decay ** L``; the head keeps ``training.head_learning_rate``.
        adapter_reduction_factor: bottleneck width = hidden size // factor (Houlsby, Pfeiffer, conv adapters).
        adapter_non_linearity: activation inside bottleneck adapters (``gelu``, ``relu``, ``silu``, ``tanh``).
        conv_adapter_kernel_size: odd kernel of the depthwise temporal conv inside conv adapters (1 = none).
        num_prompt_tokens: prompt tuning: learnable tokens prepended to the token sequence.
        prompt_depth: ``"shallow"`` (tokens enter the first block only) or ``"deep"`` (new tokens at every block).

    Example:
        >>> AdaptationConfig(method="lora", r=8).method
        'lora'
    """

    method: Method = "lora"
    r: int = 8
    alpha: float = 16
    dropout: float = 0.1
    target_modules: list[str] | None = None
    use_rslora: bool = False
    use_dora: bool = False
    init_lora_weights: bool | str = True
    oft_block_size: int = 0
    boft_block_size: int = 4
    boft_n_butterfly_factor: int = 1
    num_trainable_blocks: int = 2
    layerwise_lr_decay: float = 1.0
    adapter_reduction_factor: int = 16
    adapter_non_linearity: str = "gelu"
    conv_adapter_kernel_size: int = 1
    num_prompt_tokens: int = 10
    prompt_depth: Literal["shallow", "deep"] = "shallow"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown adaptation method {self.method!r}{did_you_mean(self.method, METHODS)}; "
                             f"available: {list(METHODS)}")
        if self.r < 0 or (self.r == 0 and self.method not in ("oft",)):
            raise ValueError(f"r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay}")
        if self.num_trainable_blocks < 0:
            raise ValueError(f"num_trainable_blocks must be >= 0, got {self.num_trainable_blocks}")
        if self.adapter_reduction_factor < 1:
            raise ValueError(f"adapter_reduction_factor must be >= 1, got {self.adapter_reduction_factor}")
        if self.conv_adapter_kernel_size < 1 or self.conv_adapter_kernel_size % 2 == 0:
            raise ValueError(f"conv_adapter_kernel_size must be odd and >= 1, got {self.conv_adapter_kernel_size}")
        if self.num_prompt_tokens < 1:
            raise ValueError(f"num_prompt_tokens must be >= 1, got {self.num_prompt_tokens}")
        if self.prompt_depth not in ("shallow", "deep"):
            raise ValueError(f"prompt_depth must be 'shallow' or 'deep', got {self.prompt_depth!r}")

    @property
    def spec(self) -> "MethodSpec":
        return get_method(self.method)

    def to_dict(self) -> dict[str, Any]:
        """The saved form: every field, ``alpha``/``dropout`` under peft's ``lora_alpha``/``lora_dropout``."""
        return {_SAVED_AS.get(k, k): v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdaptationConfig":
        """Build from a dict (unknown keys are an error; peft's ``lora_r``/``lora_alpha``/``lora_dropout``/
        ``lora_target_modules`` are read as ``r``/``alpha``/``dropout``/``target_modules``; giving both spellings
        of one field is an error naming them)."""
        d = field_names(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known - {"ecg_adapt_version", "backbone_name_or_path", "trainable_parameters", "kind", "model_type"}
        if unknown:
            raise ValueError(f"Unknown adaptation fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class MethodSpec:
    """One adaptation method.

    Attributes:
        name: the ``method`` value.
        kind: ``"native"`` (parameters of the classifier unfrozen in place), ``"peft"`` (a ``peft.PeftModel``) or
            ``"module"`` (ecg_adapt's own adapter modules, :class:`~ecg_adapt.adaptation.modules.AdaptedModel`).
        trains: one line saying which parameters are trained (shown in ``ecg-adapt methods``).
        mergeable: whether ``merge_and_unload`` folds the method into the backbone weights.
        apply: ``(classifier, config) -> model to train``.
        check: ``(classifier, config) -> None``; raises :class:`UnsupportedAdaptationError` saying why the method
            cannot adapt this backbone. Called by ``adapt`` before anything is modified.
        claims: ``(trainable parameter name) -> bool``: the parameters the method says it trains (tests check
            that a training step changes exactly these).
        load: ``(classifier, config, folder, is_trainable) -> model``, for ``module`` methods (native and peft
            methods are loaded by :func:`~ecg_adapt.adaptation.load_adapted` itself).
    """

    name: str
    kind: Literal["native", "peft", "module"]
    trains: str
    mergeable: bool
    apply: Callable[["ECGClassifier", AdaptationConfig], "nn.Module"]
    check: Callable[["ECGClassifier", AdaptationConfig], None]
    claims: Callable[[str], bool]
    load: Callable[["ECGClassifier", AdaptationConfig, str, bool], "nn.Module"] | None = None


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> None:
    """Register (or replace) the implementation of one method of :data:`METHODS`."""
    if spec.name not in METHODS:
        raise ValueError(f"{spec.name!r} is not in METHODS; add it to the Method literal first")
    _REGISTRY[spec.name] = spec


def get_method(name: str) -> MethodSpec:
    if name not in _REGISTRY:
        # The method modules register themselves on import.
        from . import _load_methods

        _load_methods()
    if name not in _REGISTRY:
        raise UnsupportedAdaptationError(f"Adaptation method {name!r} has no implementation registered")
    return _REGISTRY[name]


def registered_methods() -> dict[str, MethodSpec]:
    from . import _load_methods

    _load_methods()
    return dict(_REGISTRY)
