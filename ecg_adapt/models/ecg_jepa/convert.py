"""Convert an ECG-JEPA release into an ecg_adapt folder (config + safetensors + processor config).

The release (``multiblock_epoch100.pth``, ``random_epoch100.pth``; written by ``pretrain_ECG_JEPA.py``) is a
``torch.save`` dict ``{'encoder': MaskTransformer.state_dict(), 'epoch': int}``: only the context encoder,
keys without prefix (``pos_embed``, ``encoder_blocks.blocks.{i}...``, ``norm.*``, ``W_P.*``), no weight norm.
Also accepted:

* a bare encoder state dict (``.pth``/``.pt``/``.bin`` or ``.safetensors``);
* a whole ``ecg_jepa`` model state dict (``encoder.*``, ``target_encoder.*``, ``predictor.*``): the context
  encoder is kept (it is what the release ships) and the target encoder and predictor are dropped, reported;
* a ``FinetuningClassifier`` state dict (``encoder.*`` + ``fc.*``): the head is dropped, reported;
* any of these under DDP's ``module.`` prefix, or inside ``model``/``state_dict``/``model_state_dict``.

Every shape is read from the tensors (width, depth, MLP width, patch length, qkv bias, lead slots, whether
the positional table is the fixed sin-cos one). The number of attention heads is not in any tensor: it comes
from the released size table (768 → 16 heads) or from ``num_attention_heads=``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
from .configuration import (
    PRETRAINING_LEADS,
    RELEASED_SIZES,
    ECGJEPAConfig,
    default_processor_steps,
)
from .modeling import ECGJEPAModel, sincos_2d_lead_patch

logger = logging.getLogger(__name__)

# Parts of the pretraining model / fine-tuning wrapper that are not the encoder the release ships.
NOT_ENCODER = (r"^target_encoder\.", r"^predictor\.", r"^fc\.", r"^loss_func\.")
# Container entries that may hold the encoder's state dict, in order of preference.
_STATE_DICT_ENTRIES = ("encoder", "model", "state_dict", "model_state_dict")


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> Any:
    """``torch.load`` a ``.pth`` safely: ``weights_only=True`` first (enough for the release: tensors + an int).

    A file that needs arbitrary unpickling (e.g. one that pickled an optimiser, an argparse ``Namespace`` or a
    model object) is refused unless ``allow_pickle=True``, because unpickling can run code from the file.
    """
    return torch_load_checkpoint(path, allow_pickle=allow_pickle)


def extract_state_dict(obj: Any, report: ConversionReport) -> dict[str, torch.Tensor]:
    """The encoder's state dict from a loaded container; other container entries are reported as dropped."""
    if isinstance(obj, Mapping) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for entry in _STATE_DICT_ENTRIES:
            value = obj.get(entry)
            if isinstance(value, Mapping) and value and all(torch.is_tensor(v) for v in value.values()):
                report.dropped.extend(f"<container>.{k}" for k in obj if k != entry)
                return dict(value)
        raise ValueError(
            f"Not an ECG-JEPA checkpoint: a dict with entries {sorted(map(str, obj))[:10]} but none of "
            f"{list(_STATE_DICT_ENTRIES)} holds a state dict"
        )
    raise ValueError(f"Not an ECG-JEPA checkpoint: expected a dict, got {type(obj).__name__}")


def canonicalise_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map original keys onto :class:`ECGJEPAModel` keys (identical names: only prefixes and extras go)."""
    report = ConversionReport()
    sd = strip_prefix(state_dict, ("module.",), report)
    sd = drop_keys(sd, NOT_ENCODER, report)
    inner = ConversionReport()
    sd = strip_prefix(sd, ("encoder.",), inner)
    if inner.stripped_prefix:
        report.stripped_prefix = (report.stripped_prefix or "") + inner.stripped_prefix
    # No weight norm anywhere in ECG-JEPA: canonical_weight_norm_keys has nothing to do.
    return sd, report


def infer_config_kwargs(state_dict: Mapping[str, torch.Tensor], num_attention_heads: int | None = None) -> dict[str, Any]:
    """Architecture from tensor shapes; the head count from ``num_attention_heads`` or the released table."""
    for key in ("W_P.weight", "pos_embed", "norm.weight"):
        if key not in state_dict:
            raise ValueError(f"Not an ECG-JEPA encoder state dict: no {key!r} (keys: {sorted(state_dict)[:8]} ...)")
    hidden, patch_size = (int(s) for s in state_dict["W_P.weight"].shape)
    n_layers = len({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder_blocks\.blocks\.(\d+)\.", k))})
    mlp_ratio = 4.0
    if n_layers:
        inter = int(state_dict["encoder_blocks.blocks.0.mlp.fc1.weight"].shape[0])
        mlp_ratio = inter / hidden
        if int(hidden * mlp_ratio) != inter:  # the model computes int(D * ratio); keep that exact
            raise ValueError(f"MLP width {inter} cannot be written as int({hidden} * mlp_ratio)")
    if num_attention_heads is None:
        by_width = {v["hidden_size"]: v["num_attention_heads"] for v in RELEASED_SIZES.values()}
        num_attention_heads = by_width.get(hidden)
        if num_attention_heads is None:
            raise ValueError(
                f"hidden size {hidden} is not a released ECG-JEPA size ({sorted(by_width)}): the number of attention "
                f"heads is not stored in the checkpoint; give it (encoder_num_heads of the original ecg_jepa(...) "
                f"call) with {override_flags(num_attention_heads='N')}"
            )
    # The positional table has c * p rows. The original always builds c = 8 lead slots; p follows.
    rows = int(state_dict["pos_embed"].shape[0])
    num_leads = len(PRETRAINING_LEADS)
    if rows % num_leads:
        raise ValueError(f"pos_embed has {rows} rows, not a multiple of the {num_leads} ECG-JEPA lead slots")
    num_patches = rows // num_leads
    # A fixed sin-cos table is stored as a frozen parameter; anything else was learned (pos_type='learnable').
    sincos = sincos_2d_lead_patch(hidden, num_leads, num_patches)
    pos = state_dict["pos_embed"].to(torch.float32)
    pos_type = "sincos" if pos.shape == sincos.shape and torch.allclose(pos, sincos, atol=1e-6, rtol=0) else "learnable"
    return {
        "hidden_size": hidden,
        "num_hidden_layers": n_layers,
        "num_attention_heads": int(num_attention_heads),
        "mlp_ratio": mlp_ratio,
        "qkv_bias": "encoder_blocks.blocks.0.attn.qkv.bias" in state_dict,
        "num_leads": num_leads,
        "num_patches": num_patches,
        "patch_size": patch_size,
        "pos_type": pos_type,
    }


def load_original(
    src: str | Path,
    allow_pickle: bool = False,
    *,
    num_attention_heads: int | None = None,
    leads: list[int] | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> tuple[ECGJEPAModel, ConversionReport]:
    """Load an original ECG-JEPA checkpoint (as distributed) into :class:`ECGJEPAModel`, in eval mode.

    Args:
        src: the ``.pth`` release file (or a ``.safetensors``/``.pt``/``.bin`` state dict, see module docstring).
        allow_pickle: read files that pickle Python objects besides tensors (trusted files only); those objects
            are built as inert attribute bags, no code from the file runs.
        num_attention_heads: the head count when the width is not a released size (768 → 16).
        leads: a subset of the 8 lead slots (indices into I, II, V1-V6) to build a reduced-lead encoder, as
            ``models.load_encoder(ckpt, leads=...)`` does; ``None`` keeps all 8.
        config_overrides: configuration fields to set over what the tensors give (``ecg-adapt convert --config``;
            ``num_attention_heads`` here is the same as the argument).

    Raises:
        ValueError: not an ECG-JEPA checkpoint, unknown head count, or a pickle without ``allow_pickle``.
        CheckpointMismatchError: keys or shapes disagree (every offending key is listed).
    """
    src = Path(src)
    if src.is_dir():
        raise ValueError(f"{src} is a folder: give the original checkpoint file (e.g. multiblock_epoch100.pth)")
    report = ConversionReport()
    if src.suffix == ".safetensors":
        raw = load_file(str(src))
    elif src.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        raw = extract_state_dict(read_checkpoint(src, allow_pickle=allow_pickle), report)
    else:
        raise ValueError(f"Unsupported ECG-JEPA source {src}: give the released .pth file or a .safetensors state dict")
    state_dict, key_report = canonicalise_state_dict(raw)
    report.dropped.extend(key_report.dropped)
    report.stripped_prefix = key_report.stripped_prefix
    overrides = dict(config_overrides or {})
    kwargs = infer_config_kwargs(state_dict, overrides.get("num_attention_heads", num_attention_heads))
    if leads is not None:
        kwargs["leads"] = list(leads)
    kwargs.update(overrides)
    model = ECGJEPAModel(ECGJEPAConfig(**kwargs))
    load_strict(model, state_dict, what=f"ECG-JEPA checkpoint {src}")
    logger.info("Loaded ECG-JEPA from %s: %s", src, report.summary())
    return model.eval(), report


def convert_ecg_jepa(
    src: str | Path,
    dst: str | Path,
    allow_pickle: bool = False,
    *,
    num_attention_heads: int | None = None,
    leads: list[int] | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> ConversionReport:
    """Convert an original ECG-JEPA checkpoint to ``dst`` (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json`` with the linear-evaluation preprocessing).

    Example:
        >>> convert_ecg_jepa("weights/multiblock_epoch100.pth", "converted/ecg-jepa-multiblock")   # doctest: +SKIP
    """
    model, report = load_original(src, allow_pickle=allow_pickle, num_attention_heads=num_attention_heads, leads=leads,
                                  config_overrides=config_overrides)
    save_converted(model, dst, default_processor_steps())
    return report
