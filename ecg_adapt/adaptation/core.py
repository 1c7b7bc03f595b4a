"""One entry point for adaptation: ``adapt(model, AdaptationConfig(method=...))``.

The method is data: an :class:`AdaptationConfig` saved as ``adaptation_config.json`` next to the weights, and
:func:`save_adapted` writes only what the method trained:

================  ======================================================================================
method            what is trained / what is saved
================  ======================================================================================
``full``          every parameter / the whole classifier (``model.safetensors``)
``linear_probe``  the head only, backbone frozen and kept in eval mode / ``classifier.safetensors``
``lora``          peft LoRA matrices + the head (``modules_to_save``) / peft's ``adapter_model.safetensors``
================  ======================================================================================

Every save also writes the classifier's ``config.json`` (labels, head, backbone id) and the processor's
``preprocessor_config.json``, so :func:`load_adapted` can rebuild the model from the folder alone (plus the
backbone, fetched from its recorded hub id or path for adapter-only saves).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from ..models.classifier import ECGClassifier, ECGClassifierConfig
from ..models.registry import get_family, load_backbone
from ..processing.processor import ECGProcessor

logger = logging.getLogger(__name__)

Method = Literal["full", "linear_probe", "lora"]
METHODS: tuple[str, ...] = ("full", "linear_probe", "lora")
ADAPTATION_CONFIG_NAME = "adaptation_config.json"
HEAD_WEIGHTS_NAME = "classifier.safetensors"
HEAD_MODULE = "classifier"


@dataclass
class AdaptationConfig:
    """How to adapt a backbone. Field names follow peft's ``LoraConfig`` where the concept exists there.

    Attributes:
        method: ``"full"``, ``"linear_probe"`` or ``"lora"``.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout (``r``, ``lora_alpha``,
            ``lora_dropout`` in peft).
        lora_target_modules: module-name suffixes to wrap; ``None`` takes the backbone family's default.
        use_rslora: rank-stabilised scaling ``alpha/sqrt(r)`` instead of ``alpha/r``.

    Example:
        >>> AdaptationConfig(method="lora", lora_r=8).method
        'lora'
    """

    method: Method = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | None = None
    use_rslora: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown adaptation method {self.method!r}; available: {list(METHODS)}")
        if self.method == "lora" and self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdaptationConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known - {"ecg_adapt_version", "backbone_name_or_path", "trainable_parameters"}
        if unknown:
            raise ValueError(f"Unknown adaptation fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ParameterCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} || all params: {self.total:,} || trainable%: {self.percent:.4f}"


def count_parameters(model: nn.Module) -> ParameterCount:
    """Trainable and total parameters (peft's frozen base copies of ``modules_to_save`` counted once)."""
    total = trainable = 0
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if ".original_module." in name:
            continue  # peft keeps a frozen copy of each modules_to_save module
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParameterCount(trainable, total)


def _classifier_of(model: nn.Module) -> ECGClassifier:
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if not isinstance(base, ECGClassifier):
        raise TypeError(f"adapt() expects an ECGClassifier (or a peft model of one), got {type(base).__name__}")
    return base


def adapt(model: ECGClassifier, config: AdaptationConfig | str | None = None, **kwargs: Any) -> nn.Module:
    """Apply an adaptation method to a classifier and log its trainable parameters.

    ``config`` may be an :class:`AdaptationConfig`, a method name (with ``AdaptationConfig`` fields as
    keyword arguments), or ``None`` for LoRA with the family defaults. Returns the model to train: the same
    object for ``full`` and ``linear_probe``, a ``peft.PeftModel`` for ``lora``.

    Example:
        >>> model = adapt(classifier, "lora", lora_r=8)   # doctest: +SKIP
        trainable params: 12,345 || all params: 30,221,497 || trainable%: 0.0408
    """
    if config is None or isinstance(config, str):
        method = config or kwargs.pop("method", "lora")
        config = AdaptationConfig(method=method, **kwargs)
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)
    clf = _classifier_of(model)
    if isinstance(model, PeftModel):
        raise ValueError("This model already carries a peft adapter; adapt the plain ECGClassifier")
    family = get_family(clf.backbone.config.model_type)

    if config.method == "full":
        clf.requires_grad_(True)
        clf.freeze_backbone_in_train = False
        out: nn.Module = clf
    elif config.method == "linear_probe":
        clf.requires_grad_(False)
        clf.classifier.requires_grad_(True)
        # A probe reads fixed features: the frozen backbone also stays in eval mode (no dropout).
        clf.freeze_backbone_in_train = True
        out = clf
    else:  # lora
        targets = list(config.lora_target_modules or family.lora_target_modules)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=targets,
            modules_to_save=[HEAD_MODULE],
            use_rslora=config.use_rslora,
            bias="none",
        )
        # peft records base_model_name_or_path from the model's name_or_path.
        clf.name_or_path = clf.config.backbone_name_or_path or ""
        clf.freeze_backbone_in_train = False
        out = get_peft_model(clf, lora)
    out.adaptation_config = config  # type: ignore[attr-defined]
    logger.info("adaptation %s: %s", config.method, count_parameters(out))
    return out


def save_adapted(model: nn.Module, save_directory: str | os.PathLike, processor: ECGProcessor | None = None) -> Path:
    """Save what the adaptation trained, plus the configs needed to reload it (see the module docstring).

    Files are written to a temporary sibling folder and moved into place, so an interrupted save never
    leaves a half-written model behind.
    """
    config: AdaptationConfig = getattr(model, "adaptation_config", None) or AdaptationConfig(method="full")
    clf = _classifier_of(model)
    dst = Path(save_directory)
    if config.method in ("linear_probe", "lora") and not clf.config.backbone_name_or_path:
        raise ValueError(
            f"{config.method} saves only the trained weights, so the backbone must be reloadable: "
            "load it with load_backbone(path_or_hub_id) (or save it and set config.backbone_name_or_path)"
        )
    tmp = dst.with_name(dst.name + ".tmp-save")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if config.method == "full":
            clf.save_pretrained(tmp)
        elif config.method == "linear_probe":
            clf.config.save_pretrained(tmp)
            save_file({k: v.detach().contiguous().cpu() for k, v in clf.classifier.state_dict().items()}, str(tmp / HEAD_WEIGHTS_NAME))
        else:
            if not isinstance(model, PeftModel):
                raise TypeError("method 'lora' expects the PeftModel returned by adapt()")
            model.save_pretrained(tmp)
            clf.config.save_pretrained(tmp)
        meta = config.to_dict()
        meta["backbone_name_or_path"] = clf.config.backbone_name_or_path
        meta["trainable_parameters"] = dataclasses.asdict(count_parameters(model))
        (tmp / ADAPTATION_CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        if processor is not None:
            processor.check_compatible(clf.signal_contract)
            processor.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        old = dst.with_name(dst.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dst)
    return dst


def load_adapted(path: str | os.PathLike, backbone_name_or_path: str | None = None, is_trainable: bool = False) -> nn.Module:
    """Rebuild an adapted model saved by :func:`save_adapted` (eval mode unless ``is_trainable``).

    ``backbone_name_or_path`` overrides the backbone location recorded at save time (e.g. a local copy of
    a hub backbone).
    """
    path = Path(path)
    meta_path = path / ADAPTATION_CONFIG_NAME
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} has no {ADAPTATION_CONFIG_NAME}: not a folder written by save_adapted()")
    config = AdaptationConfig.from_dict(json.loads(meta_path.read_text()))
    if config.method == "full":
        model: nn.Module = ECGClassifier.from_pretrained(str(path))
    else:
        clf_config = ECGClassifierConfig.from_pretrained(str(path))
        source = backbone_name_or_path or clf_config.backbone_name_or_path
        if not source:
            raise ValueError(f"{path} does not record its backbone; pass backbone_name_or_path=")
        backbone = load_backbone(source)
        clf = ECGClassifier(clf_config, backbone=backbone)
        if config.method == "linear_probe":
            head = load_file(str(path / HEAD_WEIGHTS_NAME))
            clf.classifier.load_state_dict(head, strict=True)
            model = clf
        else:
            clf.name_or_path = source
            model = PeftModel.from_pretrained(clf, str(path), is_trainable=is_trainable)
    model.adaptation_config = config  # type: ignore[attr-defined]
    if not is_trainable:
        model.eval()
    return model
