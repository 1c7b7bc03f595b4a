"""Convert a HuBERT-ECG release into an ecg_adapt folder (config + safetensors + processor config).

Accepted sources:

* the Hugging Face folder as released (``Edoardo-BS/hubert-ecg-{small,base,large}``: ``config.json`` with
  ``model_type: hubert_ecg`` and ``auto_map`` to remote code, ``model.safetensors``). The remote code is not
  needed and not run;
* a bare state dict in safetensors (shapes are then read from the tensors, and the number of attention heads
  from the released size table);
* the legacy ``hubert_ecg_{size}.pt`` files of ``Edoardo-BS/HuBERT-ECG`` and fine-tuned ``.pt`` files
  (``torch.save`` dicts with ``model_config``, a pickled ``HuBERTECGConfig`` object, and
  ``model_state_dict``). Reading them needs ``allow_pickle=True``: see :func:`read_legacy_checkpoint`.

Keys are canonicalised (prefix ``hubert_ecg.`` of fine-tuned files stripped, ``weight_g/weight_v`` renamed to
``parametrizations.weight.original0/1``), the pretraining heads (``final_proj``, ``label_embedding``) and the
fine-tuning head (``classifier``) are dropped and reported, and the rest must match exactly.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from ..conversion import (
    ConversionReport,
    canonical_weight_norm_keys,
    override_flags,
    drop_keys,
    load_strict,
    save_converted,
    strip_prefix,
    torch_load_checkpoint,
)
from .configuration import RELEASED_SIZES, HubertECGConfig, default_processor_steps
from .modeling import HubertECGModel

logger = logging.getLogger(__name__)

PRETRAINING_ONLY = (r"^final_proj\.", r"^label_embedding\.", r"^classifier\.", r"^classifier_dropout\.")
# Fields of the saved config.json that describe the file, not the model.
_NON_MODEL_FIELDS = ("auto_map", "architectures", "transformers_version", "torch_dtype", "dtype", "model_type", "_name_or_path")


def canonicalise_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map original HuBERT-ECG keys onto :class:`HubertECGModel` keys; see the module docstring."""
    report = ConversionReport()
    sd = strip_prefix(state_dict, ("hubert_ecg.", "module.hubert_ecg.", "module."), report)
    if report.stripped_prefix is None and any(k.startswith("hubert_ecg.") for k in sd):
        # fine-tuned files: backbone under hubert_ecg.*, head under classifier.*
        report.stripped_prefix = "hubert_ecg."
        sd = {(k[len("hubert_ecg."):] if k.startswith("hubert_ecg.") else k): v for k, v in sd.items()}
    sd = canonical_weight_norm_keys(sd, report)
    sd = drop_keys(sd, PRETRAINING_ONLY, report)
    return sd, report


def infer_config_kwargs(state_dict: dict[str, torch.Tensor], num_attention_heads: int | None = None) -> dict[str, Any]:
    """Read the architecture from tensor shapes; heads come from ``num_attention_heads`` or the released size
    table (by hidden size)."""
    try:
        hidden, conv_out = state_dict["feature_projection.projection.weight"].shape
    except KeyError as e:
        raise ValueError("Not a HuBERT-ECG state dict: no 'feature_projection.projection.weight'") from e
    conv_idx = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", k))})
    conv_w = [state_dict[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in conv_idx]
    n_layers = len({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    inter = state_dict["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0]
    g = state_dict.get("encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    heads = num_attention_heads or {v["hidden_size"]: v["num_attention_heads"] for v in RELEASED_SIZES.values()}.get(int(hidden))
    if heads is None:
        raise ValueError(
            f"hidden size {hidden} is not a released HuBERT-ECG size ({sorted(v['hidden_size'] for v in RELEASED_SIZES.values())}) "
            f"and the number of attention heads is not stored in the tensors: convert the folder with the original "
            f"config.json, or give it with {override_flags(num_attention_heads='N')}"
        )
    kwargs: dict[str, Any] = {
        "hidden_size": int(hidden),
        "num_hidden_layers": n_layers,
        "num_attention_heads": heads,
        "intermediate_size": int(inter),
        "conv_dim": [int(w.shape[0]) for w in conv_w],
        "conv_kernel": [int(w.shape[-1]) for w in conv_w],
    }
    if g is not None:
        kwargs["num_conv_pos_embeddings"] = int(g.shape[-1])
        kwargs["num_conv_pos_embedding_groups"] = int(hidden // g.shape[1])
    kwargs["mask_time_prob"] = 0.33 if "masked_spec_embed" in state_dict else 0.0
    return kwargs


# The classes a legacy HuBERT-ECG ``.pt`` pickles besides tensors and plain containers: ``model_config`` is the
# original code's ``HuBERTECGConfig`` (module ``hubert_ecg`` of the original repository) or, for checkpoints of
# the pretraining script, transformers' ``HubertConfig``. They are built as inert attribute bags; a file naming
# any other global (``builtins.exec``, ``os.system``, ...) is refused.
LEGACY_CONFIG_CLASSES = ("hubert_ecg.HuBERTECGConfig", "transformers.models.hubert.configuration_hubert.HubertConfig")


def read_legacy_checkpoint(path: str | Path, allow_pickle: bool = False) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """Config kwargs and state dict of a legacy HuBERT-ECG ``.pt`` file.

    The file pickles a ``HuBERTECGConfig`` object, which ``torch.load(weights_only=True)`` refuses. With
    ``allow_pickle=True`` it is read by the same weights-only unpickler, with the classes of
    :data:`LEGACY_CONFIG_CLASSES` as inert attribute bags; any other global is refused (no code from the
    file runs).
    """
    obj = torch_load_checkpoint(path, allow_pickle=allow_pickle, allowed_classes=LEGACY_CONFIG_CLASSES)
    if isinstance(obj, dict) and "model_state_dict" in obj:
        cfg = obj.get("model_config")
        cfg_dict = None
        if cfg is not None:
            cfg_dict = {k: v for k, v in vars(cfg).items() if not k.startswith("_")} if not isinstance(cfg, dict) else dict(cfg)
        return cfg_dict, obj["model_state_dict"]
    if isinstance(obj, dict) and all(torch.is_tensor(v) for v in obj.values()):
        return None, obj
    raise ValueError(f"{path}: not a HuBERT-ECG checkpoint (expected 'model_state_dict' or a bare state dict)")


def load_original(src: str | Path, allow_pickle: bool = False,
                  config_overrides: Mapping[str, Any] | None = None) -> tuple[HubertECGModel, ConversionReport]:
    """Load an original HuBERT-ECG release (folder or safetensors file) into :class:`HubertECGModel`.

    ``config_overrides`` replaces configuration fields read from the release (``ecg-adapt convert --config``).

    Raises:
        FileNotFoundError: no weights in the folder.
        CheckpointMismatchError: keys or shapes disagree (every offending key is listed).
    """
    src = Path(src)
    if src.is_dir():
        weights = src / "model.safetensors"
        if not weights.exists():
            others = sorted(p.name for p in src.iterdir())
            raise FileNotFoundError(f"{src} has no model.safetensors (found: {others})")
        config_path = src / "config.json"
        config_dict = json.loads(config_path.read_text()) if config_path.exists() else None
    elif src.suffix == ".safetensors":
        weights, config_dict = src, None
    elif src.suffix in (".pt", ".pth", ".bin"):
        weights = None
        config_dict, raw_legacy = read_legacy_checkpoint(src, allow_pickle=allow_pickle)
    else:
        raise ValueError(
            f"Unsupported HuBERT-ECG source {src}: give the released Hugging Face folder, a .safetensors file "
            "or a legacy .pt checkpoint"
        )
    raw = load_file(str(weights)) if weights is not None else raw_legacy
    state_dict, report = canonicalise_state_dict(raw)
    if config_dict is not None:
        model_type = config_dict.get("model_type")
        if model_type not in ("hubert_ecg", "hubert", None):
            raise ValueError(f"{src}/config.json has model_type {model_type!r}, not a HuBERT-ECG checkpoint")
        known = set(HubertECGConfig.__dataclass_fields__)
        kwargs = {k: v for k, v in config_dict.items() if k not in _NON_MODEL_FIELDS and k in known}
    else:
        kwargs = infer_config_kwargs(state_dict, (config_overrides or {}).get("num_attention_heads"))
    kwargs.update(config_overrides or {})
    config = HubertECGConfig(**kwargs)
    # masked_spec_embed exists in the model only when the config asks for masking; keep them consistent
    if "masked_spec_embed" in state_dict and not (config.mask_time_prob > 0 or config.mask_feature_prob > 0):
        state_dict = drop_keys(state_dict, [r"^masked_spec_embed$"], report)
    model = HubertECGModel(config)
    load_strict(model, state_dict, what=f"HuBERT-ECG checkpoint {src}")
    logger.info("Loaded HuBERT-ECG from %s: %s", src, report.summary())
    return model.eval(), report


def convert_hubert_ecg(src: str | Path, dst: str | Path, allow_pickle: bool = False,
                       config_overrides: Mapping[str, Any] | None = None) -> ConversionReport:
    """Convert an original HuBERT-ECG release to ``dst`` (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json``).

    Example:
        >>> convert_hubert_ecg("hubert-ecg-small", "converted/hubert-ecg-small")   # doctest: +SKIP
    """
    model, report = load_original(src, allow_pickle=allow_pickle, config_overrides=config_overrides)
    save_converted(model, dst, default_processor_steps())
    return report
