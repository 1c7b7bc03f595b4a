"""Methods that train the classifier in place: ``full`` fine-tuning and ``linear_probe``.

(``partial``, ``bitfit`` and ``norm_tuning`` are the same kind of method and live in ``selective.py``.)
"""

from __future__ import annotations

from torch import nn

from ..models.classifier import ECGClassifier
from .config import AdaptationConfig, MethodSpec, register_method

HEAD_MODULE = "classifier"


def _no_check(clf: ECGClassifier, config: AdaptationConfig) -> None:
    """Full fine-tuning and linear probing apply to every backbone."""


def apply_full(clf: ECGClassifier, config: AdaptationConfig) -> nn.Module:
    clf.requires_grad_(True)
    clf.freeze_backbone_in_train = False
    return clf


def apply_linear_probe(clf: ECGClassifier, config: AdaptationConfig) -> nn.Module:
    clf.requires_grad_(False)
    clf.classifier.requires_grad_(True)
    # A probe reads fixed features: the frozen backbone also stays in eval mode (no dropout, BatchNorm frozen).
    clf.freeze_backbone_in_train = True
    return clf


def is_head_parameter(name: str) -> bool:
    """Whether a parameter name (of a classifier, or of a peft/adapter wrapper of one) belongs to the head."""
    return f".{HEAD_MODULE}." in f".{name}" and "lora_" not in name


register_method(MethodSpec(
    name="full", kind="native", trains="every parameter", mergeable=False,
    apply=apply_full, check=_no_check, claims=lambda name: True,
))
register_method(MethodSpec(
    name="linear_probe", kind="native", trains="the head only (backbone frozen, kept in eval mode)", mergeable=False,
    apply=apply_linear_probe, check=_no_check, claims=is_head_parameter,
))
