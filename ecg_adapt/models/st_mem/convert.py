"""Convert an ST-MEM release into an ecg_adapt folder (config + safetensors + processor config).

Accepted sources (``torch.save`` pickles as the original writes them with ``util.misc.save_model``):

* the **encoder** file (README "Encoder" link; the file fine-tuning reads): ``{'epoch', 'model': ST_MEM_ViT
  state dict, 'optimizer': None, 'scaler': None, 'config'}``; keys have no prefix and no ``head.*``;
* the **full MAE** file (README "Full (encoder + decoder)"): ``'model'`` is the ``ST_MEM`` state dict, i.e. the
  encoder under ``encoder.*``, a duplicate unprefixed ``to_patch_embedding.*`` (the same module registered twice),
  and the pretraining-only decoder (``mask_embedding``, ``decoder_pos_embed``, ``to_decoder_embedding``,
  ``decoder_blocks``, ``decoder_norm``, ``decoder_head``), next to an AdamW and a grad-scaler state;
* a fine-tuned ``ST_MEM_ViT`` (``main_downstream.py`` checkpoints): as the encoder file plus ``head.*``;
* any of these state dicts saved bare, with or without a DDP ``module.`` prefix (``.pth``/``.pt`` or
  ``.safetensors``).

Only the encoder is kept: the ``encoder.`` prefix is stripped, every other key is dropped and reported, as are
the container's optimiser and scaler states. ST-MEM has no weight norm, so no weight-norm keys need
canonicalising. All shapes are read from the tensors; the number of attention heads, which the tensors cannot
tell (only ``heads * head_dim``), comes from the checkpoint's own ``config['model']`` when it has it, else
from the released-size table, else from the original's fixed ``head_dim = 64``. The keys must then match
:class:`STMEMModel` exactly (``load_strict``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from ..conversion import (
    override_flags,
    ConversionReport,
    drop_keys,
    load_strict,
    save_converted,
    strip_prefix,
    torch_load_checkpoint,
)
from .configuration import RELEASED_SIZES, STMEMConfig, default_processor_steps
from .modeling import STMEMModel

logger = logging.getLogger(__name__)

# Keys of the MAE wrapper (models/st_mem.py ST_MEM) and of a fine-tuning head that the backbone does not have.
PRETRAINING_ONLY = (
    r"^mask_embedding$",
    r"^decoder_pos_embed$",
    r"^to_decoder_embedding\.",
    r"^decoder_blocks\.",
    r"^decoder_norm\.",
    r"^decoder_head\.",
    r"^head\.",
)
# The original code fixes dim_head at 64: ST_MEM (the MAE wrapper) never passes it and 64 is the default.
ORIGINAL_HEAD_DIM = 64
# Container entries of util.misc.save_model that are training state, not weights.
_TRAINING_STATE = ("optimizer", "scaler")


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Read an ST-MEM ``.pth`` container (or a bare state dict) without running code from the file.

    ``torch.load(weights_only=True)`` is tried first: it reads tensors and plain Python values only, which is
    all the original ``save_model`` writes. A file that needs arbitrary unpickling (e.g. one re-saved with
    Python objects in it) is refused unless ``allow_pickle=True``, because unpickling can execute code.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return {"model": load_file(str(path))}
    obj = torch_load_checkpoint(path, allow_pickle=allow_pickle)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a dict (ST-MEM checkpoint or state dict), got {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], Mapping):
        return dict(obj)
    if obj and all(torch.is_tensor(v) for v in obj.values()):
        return {"model": dict(obj)}
    raise ValueError(f"{path}: not an ST-MEM checkpoint: no 'model' state dict (top-level keys: {sorted(obj)[:10]})")


def canonicalise_state_dict(
    state_dict: Mapping[str, torch.Tensor], report: ConversionReport | None = None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map an original ST-MEM state dict (encoder, full MAE or fine-tuned) onto :class:`STMEMModel` keys."""
    report = report or ConversionReport()
    sd = strip_prefix(state_dict, ("module.",), report)
    if any(k.startswith("encoder.") for k in sd):
        # Full MAE: the encoder lives under encoder.*; everything else (decoder, mask token and the duplicate
        # to_patch_embedding.* that ST_MEM registers a second time) is pretraining-only.
        duplicate = {k: v for k, v in sd.items() if k.startswith("to_patch_embedding.")}
        for k, v in duplicate.items():
            enc = sd.get("encoder." + k)
            if enc is not None and not torch.equal(enc, v):
                logger.warning("%s differs from encoder.%s in the MAE checkpoint; the encoder's copy is used", k, k)
        prefix = report.stripped_prefix or ""
        report.stripped_prefix = prefix + "encoder."
        kept = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
        report.dropped.extend(sorted(k for k in sd if not k.startswith("encoder.")))
        sd = kept
    sd = drop_keys(sd, PRETRAINING_ONLY, report)
    return sd, report


def _count_indexed(state_dict: Mapping[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
    if found and found != set(range(len(found))):
        raise ValueError(f"indices of {pattern!r} are not 0..{len(found) - 1}: {sorted(found)}")
    return len(found)


def _heads_from(inner: int, width: int, model_kwargs: Mapping[str, Any] | None) -> tuple[int, int, str]:
    """``(num_attention_heads, head_dim, where it came from)`` for a fused q/k/v of ``3 * inner`` rows."""
    model_kwargs = model_kwargs or {}
    heads = model_kwargs.get("heads", model_kwargs.get("num_heads"))
    if heads:
        head_dim = int(model_kwargs.get("dim_head") or ORIGINAL_HEAD_DIM)
        if int(heads) * head_dim != inner:
            raise ValueError(
                f"the checkpoint's config says heads={heads}, dim_head={head_dim}, but to_qkv holds 3 x {inner} rows"
            )
        return int(heads), head_dim, "the checkpoint's config['model']"
    for name, size in RELEASED_SIZES.items():
        if size["hidden_size"] == width and size["num_attention_heads"] * size["head_dim"] == inner:
            return size["num_attention_heads"], size["head_dim"], f"the released '{name}' size"
    if inner % ORIGINAL_HEAD_DIM:
        raise ValueError(
            f"cannot tell the number of attention heads: to_qkv has 3 x {inner} rows, width {width} is not a released "
            f"size and {inner} is not a multiple of the original head width {ORIGINAL_HEAD_DIM}: give them with "
            f"{override_flags(num_attention_heads='H', head_dim=f'{inner}/H')}"
        )
    return inner // ORIGINAL_HEAD_DIM, ORIGINAL_HEAD_DIM, f"the original fixed head_dim={ORIGINAL_HEAD_DIM}"


def infer_config_kwargs(state_dict: Mapping[str, torch.Tensor], model_kwargs: Mapping[str, Any] | None = None,
                        config_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read the architecture from tensor shapes (heads: see :func:`_heads_from`; ``config_overrides``
    ``num_attention_heads``/``head_dim`` come before the checkpoint's own config)."""
    overrides = config_overrides or {}
    if overrides.get("num_attention_heads"):
        model_kwargs = {"heads": overrides["num_attention_heads"], "dim_head": overrides.get("head_dim")}
    try:
        pos = state_dict["pos_embedding"]
        patch_ln = state_dict["to_patch_embedding.1.weight"]
        qkv = state_dict["block0.attn.fn.to_qkv.weight"]
        mlp = state_dict["block0.ff.fn.net.0.weight"]
    except KeyError as e:
        raise ValueError(f"Not an ST-MEM encoder state dict: no {e.args[0]!r} (keys: {sorted(state_dict)[:8]} ...)") from e
    width, patch_size, num_patches = int(pos.shape[-1]), int(patch_ln.shape[0]), int(pos.shape[1]) - 2
    inner = int(qkv.shape[0]) // 3
    heads, head_dim, source = _heads_from(inner, width, model_kwargs)
    logger.info("ST-MEM: %d heads of %d (from %s)", heads, head_dim, source)
    return {**{
        "seq_len": num_patches * patch_size,
        "patch_size": patch_size,
        "num_leads": _count_indexed(state_dict, r"lead_embeddings\.(\d+)$"),
        "hidden_size": width,
        "num_hidden_layers": _count_indexed(state_dict, r"block(\d+)\.attn\.norm\.weight$"),
        "num_attention_heads": heads,
        "head_dim": head_dim,
        "intermediate_size": int(mlp.shape[0]),
        "qkv_bias": "block0.attn.fn.to_qkv.bias" in state_dict,
    }, **overrides}


def load_original(src: str | Path, allow_pickle: bool = False,
                  config_overrides: Mapping[str, Any] | None = None) -> tuple[STMEMModel, ConversionReport]:
    """Load an original ST-MEM checkpoint file into :class:`STMEMModel` (eval mode).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: not an ST-MEM checkpoint, or one that needs ``allow_pickle=True``.
        CheckpointMismatchError: keys or shapes disagree (every offending key is listed).

    Example:
        >>> model, report = load_original("st_mem_vit_base_encoder.pth")   # doctest: +SKIP
        >>> report.summary()                                               # doctest: +SKIP
        'keys used as they are'
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src} is not a file: give the original .pth checkpoint (encoder or full MAE)")
    container = read_checkpoint(src, allow_pickle=allow_pickle)
    report = ConversionReport()
    for key in _TRAINING_STATE:
        if container.get(key) is not None:
            report.dropped.append(f"checkpoint['{key}']")
    state_dict, report = canonicalise_state_dict(container["model"], report)
    config_dict = container.get("config")
    model_kwargs = config_dict.get("model") if isinstance(config_dict, Mapping) else None
    config = STMEMConfig(**infer_config_kwargs(state_dict, model_kwargs, config_overrides))
    model = STMEMModel(config)
    load_strict(model, state_dict, what=f"ST-MEM checkpoint {src}")
    logger.info("Loaded ST-MEM from %s: %s", src, report.summary())
    return model.eval(), report


def convert_st_mem(src: str | Path, dst: str | Path, allow_pickle: bool = False,
                   config_overrides: Mapping[str, Any] | None = None) -> ConversionReport:
    """Convert an original ST-MEM checkpoint to ``dst`` (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json``). The result is for the user's own use: the licence does not allow
    redistributing the weights.

    Example:
        >>> convert_st_mem("st_mem_vit_base_encoder.pth", "converted/st-mem-vit-b75")   # doctest: +SKIP
    """
    model, report = load_original(src, allow_pickle=allow_pickle, config_overrides=config_overrides)
    save_converted(model, dst, default_processor_steps())
    return report
