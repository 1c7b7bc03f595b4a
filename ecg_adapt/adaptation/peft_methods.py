"""Methods implemented by peft: LoRA (with rsLoRA, DoRA and PiSSA options), ...

The classifier head is trained next to the adapter through peft's ``modules_to_save``, so a saved adapter
folder is a normal peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``) that also holds the head.
"""

from __future__ import annotations

from peft import LoraConfig, get_peft_model
from torch import nn

from ..models.classifier import ECGClassifier
from ..models.registry import get_family
from .config import AdaptationConfig, MethodSpec, register_method
from .native import HEAD_MODULE, is_head_parameter


def target_modules(clf: ECGClassifier, config: AdaptationConfig) -> list[str]:
    """The configured target modules, or the backbone family's default."""
    return list(config.target_modules or get_family(clf.backbone.config.model_type).lora_target_modules)


def _wrap(clf: ECGClassifier, peft_config) -> nn.Module:
    # peft records base_model_name_or_path from the model's name_or_path.
    clf.name_or_path = clf.config.backbone_name_or_path or ""
    clf.freeze_backbone_in_train = False
    return get_peft_model(clf, peft_config)


def apply_lora(clf: ECGClassifier, config: AdaptationConfig) -> nn.Module:
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=target_modules(clf, config),
        modules_to_save=[HEAD_MODULE],
        use_rslora=config.use_rslora,
        use_dora=config.use_dora,
        init_lora_weights=config.init_lora_weights,
        bias="none",
    )
    return _wrap(clf, lora)


def _check_lora(clf: ECGClassifier, config: AdaptationConfig) -> None:
    """LoRA wraps Linear and (ungrouped) Conv1d layers; the family defaults only name such layers."""


register_method(MethodSpec(
    name="lora", kind="peft", trains="low-rank updates of the target layers + the head", mergeable=True,
    apply=apply_lora, check=_check_lora, claims=lambda n: "lora_" in n or is_head_parameter(n),
))
