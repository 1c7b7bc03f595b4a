"""Optimizer parameter groups: the head's own learning rate, layer-wise learning-rate decay, and weight decay only
where it belongs.

How ``training.learning_rate`` (``lr``), ``training.head_learning_rate`` and ``adaptation.layerwise_lr_decay``
(``decay``) combine, for a backbone of ``L`` blocks (:func:`~ecg_adapt.adaptation.layout.backbone_layout`):

====================================================  ===============================================
trainable parameter                                   learning rate
====================================================  ===============================================
the head (``classifier.*``, also peft's and the        ``head_learning_rate`` (``None``: ``lr``), never decayed
adapters' copies of it; a sequence model's
``context_encoder``)
modules after the last block (final norms)            ``lr``
block ``i`` (``i = 1 .. L`` from the bottom)           ``lr * decay ** (L - i)``: the top block gets ``lr``
everything before the first block (feature            ``lr * decay ** L``
extractor, patch and positional embeddings)
====================================================  ===============================================

(This is :attr:`~ecg_adapt.adaptation.AdaptationConfig.layerwise_lr_decay`'s definition, with ``depth`` =
:meth:`~ecg_adapt.adaptation.layout.BackboneLayout.depth`: the rate is ``lr * decay ** max(L - depth, 0)``. BEiT's and
MAE's ``param_groups_lrd`` use one more factor throughout, ``decay ** (L + 1 - depth)``, because they count the head
as the top layer; here the head has its own rate, so ``lr`` is the rate of the top block.) ``decay = 1`` gives
every backbone parameter ``lr``.

Adapters follow the layer they adapt: a peft parameter (``...q_proj.lora_A.default.weight``) lives inside the
backbone and gets the depth of its block; an ecg_adapt module adapter's ``adapters.<name>.blocks.<i>.*`` gets
block ``i``'s depth; anything else outside the backbone (prompt tokens) gets ``lr``.

Weight decay (``weight_decay``) applies to the weight matrices and kernels only, as in BEiT/MAE/timm: not to
biases, not to normalisation layers' parameters (LayerNorm, GroupNorm, BatchNorm, RMSNorm), not to any tensor of
fewer than two dimensions, not to tables registered on the backbone model itself (positional, SEP and lead
embeddings, which MAE/timm leave out through ``no_weight_decay()``) and not to the magnitude ``g`` of a
weight-normed convolution (ECG-FM's positional conv: a gain, like a norm's weight).

Example (what the trainer calls; a 12-block backbone):
    >>> groups = parameter_groups(model, learning_rate=1e-4, head_learning_rate=1e-3, weight_decay=0.01,
    ...                           layerwise_lr_decay=0.75)                       # doctest: +SKIP
    >>> optimizer = torch.optim.AdamW(groups, lr=1e-4)                          # doctest: +SKIP
    >>> [(g["name"], g["lr"]) for g in optimizer.param_groups][:2]              # doctest: +SKIP
    [('depth00', 3.1676352e-06), ('depth00.no_decay', 3.1676352e-06)]
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn
from transformers import PreTrainedModel

from ..models.classifier import ECGClassifier
from ..models.sequence import ECGSequenceClassifier
from .layout import BackboneLayout, backbone_layout
from .native import HEAD_MODULE, is_head_parameter
from .selective import NORM_LAYERS

# ecg_adapt's module adapters keep block i's modules under "adapters.<adapter name>.blocks.<i>."
_MODULE_ADAPTER_BLOCK = re.compile(r"(?:^|\.)adapters\.[^.]+\.blocks\.(\d+)\.")


def _classifier_of(model: nn.Module) -> ECGClassifier:
    if isinstance(model, ECGSequenceClassifier):
        return model.base_window_classifier
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, ECGClassifier):
        raise TypeError(f"parameter_groups expects an ECGClassifier or an adapted model of one, got {type(model).__name__}")
    return base


def _owners(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """``id(parameter) -> (module that registers it, its local name)``."""
    owners: dict[int, tuple[nn.Module, str]] = {}
    for module in model.modules():
        for local, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), (module, local))
    return owners


def _is_weight_norm_gain(owner: nn.Module, local: str) -> bool:
    # torch.nn.utils.parametrizations.weight_norm stores g as ``original0`` and v as ``original1`` in the
    # ParametrizationList of the weight; its parametrization class is the private ``_WeightNorm``.
    return (
        isinstance(owner, nn.utils.parametrize.ParametrizationList)
        and local == "original0"
        and any(type(p).__name__ == "_WeightNorm" for p in owner)
    )


def takes_weight_decay(param: nn.Parameter, owner: nn.Module, local_name: str) -> bool:
    """Whether weight decay applies to ``param`` (registered as ``local_name`` on ``owner``); see the module doc."""
    return not (
        param.ndim < 2
        or local_name == "bias"
        or isinstance(owner, (*NORM_LAYERS, PreTrainedModel))
        or _is_weight_norm_gain(owner, local_name)
    )


def parameter_groups(
    model: nn.Module,
    learning_rate: float,
    head_learning_rate: float | None = None,
    weight_decay: float = 0.0,
    layerwise_lr_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """AdamW parameter groups for the trainable parameters of ``model`` (see the module docstring for the rules).

    ``model``: an :class:`~ecg_adapt.ECGClassifier` adapted natively (``full``, ``partial``, ...), a
    ``peft.PeftModel`` of one, or an ecg_adapt ``AdaptedModel`` (anything whose ``get_base_model()`` is the
    classifier). Each group has ``params``, ``lr``, ``weight_decay``, ``name`` (for logging: ``depth03`` and
    ``depth03.no_decay`` with layer-wise decay, ``backbone`` without, ``adapter``, ``head``, ``head.no_decay``) and ``param_names`` (the model's parameter
    names, which torch's optimizer keeps in its state dict). Groups are ordered from the bottom of the network to
    the head; with ``weight_decay=0`` decayed and non-decayed parameters share a group.

    Raises:
        ValueError: a non-positive learning rate, ``layerwise_lr_decay`` outside (0, 1], or no trainable parameter.
        TypeError: a model that is not (a wrapper of) an :class:`~ecg_adapt.ECGClassifier`.

    Example:
        >>> optimizer = torch.optim.AdamW(parameter_groups(model, 1e-4, 1e-3, 0.01, 0.75))   # doctest: +SKIP
    """
    if learning_rate <= 0 or (head_learning_rate is not None and head_learning_rate <= 0):
        raise ValueError(f"learning rates must be > 0, got learning_rate={learning_rate}, head_learning_rate={head_learning_rate}")
    if not 0.0 < layerwise_lr_decay <= 1.0:
        raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {layerwise_lr_decay}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    clf = _classifier_of(model)
    head_lr = learning_rate if head_learning_rate is None else head_learning_rate
    head_ids = {id(p) for p in getattr(clf, HEAD_MODULE).parameters()}
    if isinstance(model, ECGSequenceClassifier) and model.context_encoder is not None:
        # The sequence model over the context windows is new, like the head: it trains at the head's rate.
        head_ids |= {id(p) for p in model.context_encoder.parameters()}
    backbone_names = {id(p): n for n, p in clf.backbone.named_parameters()}
    # The layout is only needed (and only required to exist) when rates decay with depth.
    layout: BackboneLayout | None = backbone_layout(clf.backbone) if layerwise_lr_decay < 1.0 else None
    owners = _owners(model)

    groups: dict[tuple[int, str, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner, local = owners[id(p)]
        decays = weight_decay > 0 and takes_weight_decay(p, owner, local)
        depth: int | None = None
        if id(p) in head_ids or (id(p) not in backbone_names and is_head_parameter(name)):
            order, part, lr = 2, "head", head_lr
        elif layout is None:
            order, part, lr = 0, "backbone" if id(p) in backbone_names else "adapter", learning_rate
        else:
            if id(p) in backbone_names:
                depth = layout.depth(backbone_names[id(p)])
            elif (m := _MODULE_ADAPTER_BLOCK.search(name)) is not None:
                depth = int(m.group(1)) + 1
            if depth is None:
                order, part, lr = 1, "adapter", learning_rate
            else:
                order, part = 0, f"depth{depth:02d}"
                lr = learning_rate * layerwise_lr_decay ** max(layout.num_blocks - depth, 0)
        key = (order, part, decays)
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "lr": lr, "weight_decay": weight_decay if decays else 0.0,
                           "name": part if decays or weight_decay == 0 else f"{part}.no_decay"}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError("The model has no trainable parameter (was an adaptation method applied?)")
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1], not k[2]))]


__all__ = ["parameter_groups", "takes_weight_decay"]
