"""Convert a MERL release into an ecg_adapt folder (config + safetensors + processor config).

Accepted sources (the containers of github.com/cheliu-computation/MERL-ICML2024 and what is derived from them):

* ``*_encoder.pth`` as released (``res18_best_encoder.pth``, ``vit_tiny_best_encoder.pth``): a bare
  ``torch.save(ecg_encoder.state_dict())``: no wrapper dict and no prefix. The ResNet file also holds the
  pretraining ``ResNet18()``'s unused, untrained ``linear.*`` (10 classes), which is dropped and reported;
* ``*_ckpt.pth``: the whole CLIP model. Only the ``ecg_encoder.*`` keys are used; the projection heads,
  the text encoder (``lm_model.*``) and the rest are dropped and reported;
* files saved from ``DataParallel``/DDP (``module.`` prefix), wrapped in a dict (``state_dict``, ``model``,
  ``model_state_dict``), fine-tuned models of ``finetune/main_single.py`` (their ``linear.*`` / ``head.*``
  classifier is dropped), and safetensors files with the same keys.

Every architecture hyperparameter is read from the tensors: encoder type, leads, ResNet block type, stage widths
and depths; ViT width, patch size, positions, depth, MLP size, qkv bias. The one thing tensors cannot tell is
how the ViT's ``heads * dim_head`` splits: every original factory uses ``dim_head = 64`` (see
``RELEASED_CONFIGS``), so heads = inner / 64 unless ``config_overrides`` says otherwise. MERL has no weight
norm, so there are no weight-norm keys to canonicalise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..conversion import (
    override_flags,
    ConversionReport,
    drop_keys,
    key_indices,
    load_strict,
    save_converted,
    strip_prefix,
    torch_load_checkpoint,
)
from .configuration import ORIGINAL_VIT_DIM_HEAD, MERLConfig, default_processor_steps
from .modeling import MERLModel

logger = logging.getLogger(__name__)

# Prefix of the ECG encoder inside the whole CLIP model (ECGCLIP.ecg_encoder), with or without DDP's "module.".
CLIP_ENCODER_PREFIXES = ("module.ecg_encoder.", "ecg_encoder.")
# Classifier heads that are not part of the encoder: the ResNet's pretraining/probe ``linear`` and the ViT's
# ``head`` after ``reset_head(K)``.
HEAD_KEYS = (r"^linear\.", r"^head\.")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a MERL checkpoint file (``.pth``/``.pt``/``.bin`` pickle, or ``.safetensors``).

    Pickles are read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
    A file that holds other Python objects (e.g. an argparse namespace) raises a ``ValueError`` unless
    ``allow_pickle=True``; then those objects are built as inert attribute bags and no code from the file runs
    (:func:`~ecg_adapt.models.conversion.torch_load_checkpoint`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file: give the MERL *_encoder.pth or *_ckpt.pth file")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    obj = torch_load_checkpoint(path, allow_pickle=allow_pickle)
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict in a loaded object: the object itself, or one level of wrapper dict."""
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
        if tensors and len(tensors) == len(obj):
            return dict(obj)
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
                return dict(inner)
    what = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"{path}: not a MERL checkpoint (expected a state dict of tensors, found {what})")


def canonicalise_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map original MERL keys onto :class:`MERLModel` keys (see the module docstring)."""
    report = ConversionReport()
    sd = dict(state_dict)
    clip_prefix = next((p for p in CLIP_ENCODER_PREFIXES if any(k.startswith(p) for k in sd)), None)
    if clip_prefix is not None:
        # Whole CLIP model: keep the ECG encoder, report everything else (projections, text encoder) as dropped.
        report.stripped_prefix = clip_prefix
        report.dropped.extend(k for k in sd if not k.startswith(clip_prefix))
        sd = {k[len(clip_prefix):]: v for k, v in sd.items() if k.startswith(clip_prefix)}
    else:
        sd = strip_prefix(sd, ("module.",), report)
    sd = drop_keys(sd, HEAD_KEYS, report)
    return sd, report


def infer_config_kwargs(state_dict: Mapping[str, torch.Tensor],
                        config_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read the architecture from tensor shapes (``state_dict`` already canonicalised); ``config_overrides``
    gives the ViT head split (``vit_heads``, ``vit_dim_head``) that the fused q/k/v weight cannot tell."""
    if "to_patch_embedding.weight" in state_dict:
        return _infer_vit(state_dict, config_overrides or {})
    if "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict:
        return _infer_resnet(state_dict)
    raise ValueError(
        "Not a MERL ECG encoder state dict: expected 'conv1.weight' + 'layer1.*' (ResNet) or "
        f"'to_patch_embedding.weight' (ViT); first keys: {sorted(state_dict)[:8]}"
    )


def _infer_resnet(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    stages = key_indices(sd, r"layer(\d+)\.")
    if stages != list(range(1, len(stages) + 1)):
        raise ValueError(f"ResNet stages are not numbered layer1..layerN: found {stages}")
    block = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    num_blocks = [len(key_indices(sd, rf"layer{s}\.(\d+)\.")) for s in stages]
    # conv1 of a stage's first block has the stage width as output channels (for both block types).
    widths = [int(sd[f"layer{s}.0.conv1.weight"].shape[0]) for s in stages]
    return {
        "encoder_type": "resnet",
        "num_leads": int(sd["conv1.weight"].shape[1]),
        "resnet_block": block,
        "resnet_num_blocks": num_blocks,
        "resnet_widths": widths,
    }


def _infer_vit(sd: Mapping[str, torch.Tensor], overrides: Mapping[str, Any]) -> dict[str, Any]:
    width, n_leads, patch = (int(s) for s in sd["to_patch_embedding.weight"].shape)
    if "pos_embedding" not in sd or "block0.attn.fn.to_qkv.weight" not in sd:
        raise ValueError("ViT state dict lacks 'pos_embedding' or 'block0.attn.fn.to_qkv.weight'")
    n_patches = int(sd["pos_embedding"].shape[1])
    inner = int(sd["block0.attn.fn.to_qkv.weight"].shape[0]) // 3
    # The fused q/k/v holds heads * dim_head rows: any split fits the tensors, so an override decides it.
    dim_head = int(overrides.get("vit_dim_head") or (inner // int(overrides["vit_heads"]) if overrides.get("vit_heads")
                                                     else ORIGINAL_VIT_DIM_HEAD))
    heads = int(overrides.get("vit_heads") or inner // dim_head)
    if heads * dim_head != inner:
        how = (f"vit_heads={heads} x vit_dim_head={dim_head} = {heads * dim_head}"
               if overrides else f"it is not a multiple of {ORIGINAL_VIT_DIM_HEAD}, the dim_head of every original MERL ViT")
        raise ValueError(
            f"the attention width heads * dim_head of this checkpoint is {inner} ({how}): give the split with "
            f"{override_flags(vit_heads='H', vit_dim_head=f'{inner}/H')}"
        )
    return {
        "encoder_type": "vit",
        "num_leads": n_leads,
        "vit_seq_len": n_patches * patch,
        "vit_patch_size": patch,
        "vit_width": width,
        "vit_depth": len(key_indices(sd, r"block(\d+)\.")),
        "vit_heads": heads,
        "vit_dim_head": dim_head,
        "vit_mlp_dim": int(sd["block0.ff.fn.net.0.weight"].shape[0]),
        "vit_qkv_bias": "block0.attn.fn.to_qkv.bias" in sd,
    }


def load_original(
    src: str | Path, allow_pickle: bool = False, config_overrides: dict[str, Any] | None = None
) -> tuple[MERLModel, ConversionReport]:
    """Load an original MERL encoder (or whole CLIP) checkpoint into :class:`MERLModel` (eval mode).

    ``config_overrides`` replaces inferred :class:`MERLConfig` fields (``ecg-adapt convert --config``; only
    needed for a ViT whose ``dim_head`` is not 64, which no original factory builds).

    Raises:
        ValueError: not a MERL checkpoint, or a pickle that needs ``allow_pickle=True``.
        CheckpointMismatchError: keys or shapes disagree (every offending key is listed).
    """
    raw = read_checkpoint(src, allow_pickle=allow_pickle)
    state_dict, report = canonicalise_state_dict(raw)
    kwargs = infer_config_kwargs(state_dict, config_overrides)
    kwargs.update(config_overrides or {})
    model = MERLModel(MERLConfig(**kwargs))
    load_strict(model, state_dict, what=f"MERL checkpoint {src}")
    logger.info("Loaded MERL %s encoder from %s: %s", model.config.encoder_type, src, report.summary())
    return model.eval(), report


def convert_merl(src: str | Path, dst: str | Path, allow_pickle: bool = False,
                 config_overrides: dict[str, Any] | None = None) -> ConversionReport:
    """Convert an original MERL checkpoint to ``dst`` (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json``).

    Example:
        >>> convert_merl("res18_best_encoder.pth", "converted/merl-resnet18")   # doctest: +SKIP
    """
    model, report = load_original(src, allow_pickle=allow_pickle, config_overrides=config_overrides)
    save_converted(model, dst, default_processor_steps())
    return report
