"""Selective fine-tuning: train a chosen subset of the classifier's own parameters (``native`` methods).

==================  ================================================================================================
method              trains (always plus the head)
==================  ================================================================================================
``partial``         the last ``num_trainable_blocks`` blocks of the backbone (:func:`~ecg_adapt.adaptation.layout.
                    backbone_layout`) and the modules applied after them (final norms). ``0`` trains the head only
                    and is exactly ``linear_probe``; more blocks than the backbone has is an error.
``bitfit``          every bias of the backbone: linear, convolution and normalisation biases (BitFit, Zaken et
                    al. 2022, ACL, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
                    Language-models", which trains all bias terms and the task head).
``norm_tuning``     the affine parameters (weight and bias) of every LayerNorm, GroupNorm, BatchNorm and RMSNorm.
==================  ================================================================================================

Three rules hold for all three methods:

* **Only parameters the forward pass uses are trained.** Some backbones store tensors they never apply: the
  ECGFounder releases keep the BatchNorm tensors of the original ``Net1D`` but run with ``use_bn=False``, and the
  first block of the network skips its ``bn1`` even with ``use_bn=True``. A trainable parameter without a gradient
  changes nothing and makes DDP fail, so it is left frozen. Which parameters are used is found once per
  architecture by a forward and backward pass of a copy of the backbone on the meta device (no memory, no
  arithmetic): a parameter is used when it gets a gradient from the features the classifier pools.
* **BatchNorm statistics never change.** Every BatchNorm layer of the backbone stays in eval mode while the
  model trains: it normalises with its pretrained running statistics and does not update them (its affine
  parameters are still trained where the method claims them). The reason is the saved form: a native method
  saves the trained *parameters* only (``adapter_model.safetensors``), and running statistics are buffers, so
  statistics updated in training would be lost on reload and the reloaded model would compute something else.
  (Only ``full`` fine-tuning, which saves the whole state dict, updates them.) Of the released backbones only
  MERL-ResNet18 applies BatchNorm; ECGFounder does with ``use_bn=True`` (its releases have ``use_bn=False``).
* **partial: the frozen part below the trained blocks stays in eval mode** while training, as a linear probe's
  backbone does: it computes fixed features (no dropout, no LayerDrop, no stochastic depth). Dropout in the
  trained blocks and above them works as in full fine-tuning. ``bitfit`` and ``norm_tuning`` have trainable
  parameters throughout the backbone, so its dropout stays active, as in the BitFit paper's fine-tuning.

Frozen modules are recorded in ``ECGClassifier.eval_in_train``: ``classifier.train()`` puts them back in eval mode
after every submodule's own ``train`` (including a family's override, such as MERL's).

Example:
    >>> model = adapt(classifier, "partial", num_trainable_blocks=2)            # doctest: +SKIP
    >>> model = adapt(classifier, "bitfit")                                     # doctest: +SKIP
    >>> trainable_parameter_names(classifier, AdaptationConfig(method="norm_tuning"))[:2]   # doctest: +SKIP
    ['backbone.encoder.layer_norm.weight', 'backbone.encoder.layer_norm.bias']
"""

from __future__ import annotations

import copy
import json
import logging

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from ..models.classifier import ECGClassifier
from ..processing.contract import SignalContract
from .config import AdaptationConfig, MethodSpec, UnsupportedAdaptationError, register_method
from .layout import BackboneLayout, backbone_layout
from .native import HEAD_MODULE, is_head_parameter

logger = logging.getLogger(__name__)

# Normalisation layers whose affine parameters norm_tuning trains (subclasses included: ECG-FM's Fp32LayerNorm and
# Fp32GroupNorm, torch's BatchNorm1d/2d/SyncBatchNorm).
NORM_LAYERS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.RMSNorm)



# ----------------------------------------------------------------------------------------------- used parameters
def parameters_unused_by_forward(backbone: PreTrainedModel) -> frozenset[str]:
    """Names (relative to ``backbone``) of the parameters its features do not depend on.

    Found by one forward and backward pass of an empty copy of the backbone (built from its config, on the meta
    device: no memory, no arithmetic) on an input of its signal contract's shape, in eval mode and without a
    mask: a parameter is unused when it gets no gradient from the features the classifier pools
    (``pooler_output``, else ``last_hidden_state``). Cached per (class, config). A family whose forward cannot
    run on the meta device gives an empty set (with a warning), as does a parameter the copy does not have.

    Example:
        >>> "first_bn.weight" in parameters_unused_by_forward(ecgfounder_backbone)   # doctest: +SKIP
        True
    """
    described = backbone.config.to_dict()
    described.pop("_name_or_path", None)  # where it was loaded from changes nothing
    key = (type(backbone), json.dumps(described, sort_keys=True, default=str))
    if key not in _UNUSED_PARAMETERS:
        _UNUSED_PARAMETERS[key] = _trace_unused_parameters(type(backbone), copy.deepcopy(backbone.config))
    return _UNUSED_PARAMETERS[key]


_UNUSED_PARAMETERS: dict[tuple[type, str], frozenset[str]] = {}


def _trace_unused_parameters(model_class: type[PreTrainedModel], config: PreTrainedConfig) -> frozenset[str]:
    from accelerate import init_empty_weights

    try:
        # Parameters go to the meta device as they are created; buffers are built on the CPU (some families
        # compute tables with .item() while building) and moved after.
        with init_empty_weights(include_buffers=False):
            probe = model_class(config)
        probe = probe.to("meta").eval()
        shape = (1, *SignalContract.from_dict(config.signal_contract).input_shape)
        out = probe(torch.zeros(shape, device="meta"))
        features = getattr(out, "pooler_output", None)
        if features is None:
            features = out.last_hidden_state
        features.sum().backward()
    except Exception as e:  # noqa: BLE001 - a failure only means we cannot tell; say so and train what was asked
        logger.warning("Could not trace which %s parameters the forward pass uses (%s: %s); treating all as used",
                       config.model_type, type(e).__name__, e)
        return frozenset()
    return frozenset(n for n, p in probe.named_parameters() if p.grad is None)


# --------------------------------------------------------------------------------------------------- selection
def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "bias"


def _layout(clf: ECGClassifier) -> BackboneLayout:
    try:
        return backbone_layout(clf.backbone)
    except ValueError as e:
        raise UnsupportedAdaptationError(f"partial fine-tuning needs the backbone's blocks: {e}") from None


def _check_blocks(clf: ECGClassifier, config: AdaptationConfig) -> BackboneLayout:
    layout = _layout(clf)
    k, n = config.num_trainable_blocks, layout.num_blocks
    if k > n:
        raise UnsupportedAdaptationError(
            f"num_trainable_blocks={k}, but this {clf.backbone.config.model_type} backbone has {n} blocks "
            f"({layout.block_names[0]} .. {layout.block_names[-1]}); use a value from 0 (head only) to {n} "
            "(every block), or method='full' to train the embeddings too"
        )
    return layout


def _backbone_selection(clf: ECGClassifier, config: AdaptationConfig) -> list[str]:
    """Backbone parameter names (relative to the backbone) that ``config.method`` trains, before the used-filter."""
    backbone = clf.backbone
    if config.method == "partial":
        layout = _check_blocks(clf, config)
        lowest = layout.num_blocks - config.num_trainable_blocks + 1  # depth of the lowest trained block
        if config.num_trainable_blocks == 0:
            return []
        return [n for n, _ in backbone.named_parameters() if layout.depth(n) >= lowest]
    if config.method == "bitfit":
        return [n for n, _ in backbone.named_parameters() if _is_bias(n)]
    if config.method == "norm_tuning":
        return [f"{m_name}.{p_name}" if m_name else p_name
                for m_name, m in backbone.named_modules() if isinstance(m, NORM_LAYERS)
                for p_name, _ in m.named_parameters(recurse=False)]
    raise ValueError(f"{config.method!r} is not a selective method")


def trainable_parameter_names(clf: ECGClassifier, config: AdaptationConfig) -> list[str]:
    """The classifier parameters (qualified names, in model order) that a selective method trains: its selection
    among the backbone parameters the forward pass uses, then the head.

    Raises:
        UnsupportedAdaptationError: ``partial`` with more blocks than the backbone has, or a method that would
            train nothing of the backbone (no used bias or normalisation layer).
    """
    selected = set(_backbone_selection(clf, config))
    unused = sorted(selected & parameters_unused_by_forward(clf.backbone))
    names = [f"backbone.{n}" for n, _ in clf.backbone.named_parameters() if n in selected and n not in unused]
    if not names and not (config.method == "partial" and config.num_trainable_blocks == 0):
        what = {"bitfit": "bias", "norm_tuning": "normalisation-layer parameter", "partial": "parameter"}[config.method]
        stored = f" ({len(unused)} are stored but never used by the forward pass, e.g. {unused[:3]})" if unused else ""
        others = " or ".join(repr(m) for m in ("bitfit", "partial", "lora") if m != config.method)
        raise UnsupportedAdaptationError(
            f"{config.method}: this {clf.backbone.config.model_type} backbone has no {what} to train{stored}; "
            f"it would train the head only (that is method='linear_probe'); use {others} instead"
        )
    return names + [f"{HEAD_MODULE}.{n}" for n, _ in getattr(clf, HEAD_MODULE).named_parameters()]


def _modules_kept_in_eval(clf: ECGClassifier, config: AdaptationConfig) -> list[nn.Module]:
    """Backbone modules that stay in eval mode while the classifier trains (see the module docstring)."""
    keep: list[tuple[str, nn.Module]] = []
    if config.method == "partial":
        layout = _layout(clf)
        lowest = layout.num_blocks - config.num_trainable_blocks + 1
        for name, module in clf.backbone.named_modules():
            if not name or any(name.startswith(k + ".") for k, _ in keep):
                continue
            below = layout.depth(name + ".") < lowest  # depth() reads a module name followed by "." like a parameter's
            if below and not any(p.requires_grad for p in module.parameters()):
                keep.append((name, module))
    for name, module in clf.backbone.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(name.startswith(k + ".") for k, _ in keep):
            keep.append((name, module))
    return [m for _, m in keep]


def keep_in_eval_during_training(clf: ECGClassifier, modules: list[nn.Module]) -> None:
    """Make ``modules`` (submodules of ``clf``) stay in eval mode whenever ``clf`` is put in training mode
    (``ECGClassifier.eval_in_train``). Replaces what an earlier call recorded."""
    clf.eval_in_train = tuple(modules)
    if clf.training:
        clf.train()


# ------------------------------------------------------------------------------------------------------ methods
def apply_selective(clf: ECGClassifier, config: AdaptationConfig) -> nn.Module:
    """``apply`` of ``partial``, ``bitfit`` and ``norm_tuning``: unfreeze :func:`trainable_parameter_names`, freeze
    the rest, and record the modules that stay in eval mode during training. Deterministic given the config
    (``load_adapted`` re-applies it before loading the saved parameters)."""
    names = trainable_parameter_names(clf, config)
    clf.requires_grad_(False)
    for name in names:
        clf.get_parameter(name).requires_grad_(True)
    head_only = config.method == "partial" and config.num_trainable_blocks == 0
    clf.freeze_backbone_in_train = head_only  # exactly linear_probe
    keep_in_eval_during_training(clf, [] if head_only else _modules_kept_in_eval(clf, config))
    return clf


def _check_selective(clf: ECGClassifier, config: AdaptationConfig) -> None:
    trainable_parameter_names(clf, config)


register_method(MethodSpec(
    name="partial", kind="native",
    trains="the last num_trainable_blocks blocks, the final norm and the head (the part below frozen, in eval mode)",
    mergeable=False, apply=apply_selective, check=_check_selective,
    # Which blocks depends on the model, not on the name: any backbone parameter may be among them.
    claims=lambda name: True,
))
register_method(MethodSpec(
    name="bitfit", kind="native", trains="every bias of the backbone, and the head (Zaken et al. 2022)",
    mergeable=False, apply=apply_selective, check=_check_selective,
    claims=lambda name: _is_bias(name) or is_head_parameter(name),
))
register_method(MethodSpec(
    name="norm_tuning", kind="native",
    trains="weight and bias of every LayerNorm/GroupNorm/BatchNorm (statistics frozen), and the head",
    mergeable=False, apply=apply_selective, check=_check_selective,
    # A name does not say whether its module is a norm layer (ST-MEM's patch-embedding LayerNorms are
    # "to_patch_embedding.1"): only affine weight/bias tensors are claimed; trainable_parameter_names is exact.
    claims=lambda name: name.rsplit(".", 1)[-1] in ("weight", "bias") or is_head_parameter(name),
))

__all__ = [
    "NORM_LAYERS",
    "apply_selective",
    "keep_in_eval_during_training",
    "parameters_unused_by_forward",
    "trainable_parameter_names",
]
