"""Convert an ECGFounder release into an ecg_adapt folder (config + safetensors + processor config).

The releases (``huggingface.co/PKUDigitalHealth/ECGFounder``: ``12_lead_ECGFounder.pth``, ``1_lead_ECGFounder.pth``)
are ``torch.save`` dicts written by the repository's ``util.save_checkpoint``::

    {'epoch': int, 'step': int, 'state_dict': OrderedDict, 'optimizer': Adam state, 'scheduler': ReduceLROnPlateau
     state, 'val_auroc': numpy.float64}

Only ``state_dict`` is read (as the original loaders do); the other entries are reported as dropped. Also
accepted: a bare state dict (``.pth``/``.pt``/``.bin``), a ``{'model': state_dict}`` / ``{'model_state_dict': ...}``
dict, a ``.safetensors`` file, and state dicts saved from ``nn.DataParallel`` (``module.`` prefix).

Keys need no renaming: :class:`ECGFounderModel` uses the original module names. Net1D has no weight norm, so
there is nothing to canonicalise there. The 150-label head ``dense`` is kept (``n_classes`` read from its
shape); pass ``keep_pretrained_head=False`` to drop it (reported), as ``finetune_model.py`` does.

The architecture is read from the tensors: ``in_channels``, ``base_filters`` and ``kernel_size`` from
``first_conv``, each stage's width and block count from ``stage_list``, ``ratio`` from the bottleneck width,
``groups_width`` from the grouped conv's groups. What tensors cannot tell comes from the released table: the
stride of the downsampling blocks (2) and ``use_bn``/``use_do`` (False: the BatchNorm tensors are in every
checkpoint but the released models never apply them).

Pickle safety: ``torch.load(weights_only=True)`` refuses the releases because ``val_auroc`` is a numpy scalar.
The reader allows exactly the numpy scalar and dtype constructors (safe: they build numbers, not code) and
needs ``allow_pickle=True`` only when a file holds anything else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..conversion import (
    CheckpointMismatchError,
    ConversionReport,
    drop_keys,
    key_indices,
    load_strict,
    save_converted,
    strip_prefix,
    torch_load_checkpoint,
)
from .configuration import (
    RELEASED_ARCHITECTURE,
    ECGFounderConfig,
    default_processor_steps,
)
from .modeling import ECGFounderModel

logger = logging.getLogger(__name__)

PRETRAINED_HEAD = (r"^dense\.",)
_PREFIXES = ("module.", "model.", "net.")
# Containers in which the weights sit under one of these keys.
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def _numpy_safe_globals() -> list[Any]:
    """The numpy constructors a numpy scalar in a checkpoint needs (under numpy 2 and numpy 1 module names)."""
    scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]
    allowed: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [getattr(np.dtypes, name) for name in getattr(np.dtypes, "__all__", []) if hasattr(np.dtypes, name)]
    return allowed


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict of an ECGFounder checkpoint file and the names of the other container entries.

    Raises:
        ValueError: the file needs arbitrary unpickling and ``allow_pickle`` is False, or holds no state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path)), []
    obj = torch_load_checkpoint(path, allow_pickle=allow_pickle, safe_globals=_numpy_safe_globals())
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping) and obj[key] and all(torch.is_tensor(v) for v in obj[key].values()):
                return dict(obj[key]), [k for k in obj if k != key]
        if obj and all(torch.is_tensor(v) for v in obj.values()):
            return dict(obj), []
    found = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"{path}: not an ECGFounder checkpoint (no state dict under {list(_STATE_DICT_KEYS)}; found {found})")


def canonicalise_state_dict(
    state_dict: Mapping[str, torch.Tensor], keep_pretrained_head: bool = True
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Strip a wrapper prefix (``module.`` of DataParallel) and optionally drop the 150-label head."""
    report = ConversionReport()
    sd = strip_prefix(state_dict, _PREFIXES, report)
    if not keep_pretrained_head:
        sd = drop_keys(sd, PRETRAINED_HEAD, report)
    return sd, report


def _dim(state_dict: Mapping[str, torch.Tensor], prefixes: list[str], candidates: tuple[tuple[str, int], ...]) -> int:
    """Size of axis ``axis`` of the first ``prefix + name`` tensor present, over blocks and candidate tensors."""
    for prefix in prefixes:
        for name, axis in candidates:
            tensor = state_dict.get(prefix + name)
            if tensor is not None and tensor.dim() > axis:
                return int(tensor.shape[axis])
    wanted = [n for n, _ in candidates]
    raise CheckpointMismatchError(f"no block of {prefixes[0].rsplit('.block_list', 1)[0]} has any of {wanted}: not a Net1D stage")


def infer_config_kwargs(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Read the ``Net1D`` architecture from tensor shapes (see the module docstring for what is not in them)."""
    try:
        first = state_dict["first_conv.conv.weight"]
    except KeyError as e:
        raise CheckpointMismatchError(
            "Not an ECGFounder (Net1D) state dict: no 'first_conv.conv.weight' "
            f"(first keys: {list(state_dict)[:5]})"
        ) from e
    base_filters, in_channels, kernel_size = (int(s) for s in first.shape)
    stages = key_indices(state_dict, r"stage_list\.(\d+)\.")
    if stages != list(range(len(stages))) or not stages:
        raise CheckpointMismatchError(f"stage_list indices are not 0..n-1: {stages}")
    filter_list, m_blocks_list, groups, ratios = [], [], [], []
    for s in stages:
        blocks = key_indices(state_dict, rf"stage_list\.{s}\.block_list\.(\d+)\.")
        if blocks != list(range(len(blocks))):
            raise CheckpointMismatchError(f"stage_list.{s}.block_list indices are not 0..n-1: {blocks}")
        # Every width is readable from several tensors of the stage; taking the first one present lets a
        # checkpoint with a renamed or missing key reach load_strict, which lists every offending key.
        prefixes = [f"stage_list.{s}.block_list.{b}." for b in blocks]
        middle = _dim(state_dict, prefixes, (("conv1.conv.weight", 0), ("conv2.conv.weight", 0), ("conv3.conv.weight", 1)))
        out = _dim(state_dict, prefixes, (("conv3.conv.weight", 0), ("se_fc2.weight", 0), ("se_fc1.weight", 1)))
        per_group = _dim(state_dict, prefixes, (("conv2.conv.weight", 1),))
        filter_list.append(out)
        m_blocks_list.append(len(blocks))
        groups.append(middle // per_group)
        ratios.append(middle / out)
    if len(set(ratios)) != 1:
        raise CheckpointMismatchError(f"bottleneck ratios differ between stages: {ratios}")
    ratio: float | int = ratios[0]
    if float(ratio).is_integer():
        ratio = int(ratio)
    # groups = out // groups_width: several widths can give the same groups; prefer the released 16.
    widths = [w for w in range(1, max(filter_list) + 1) if all(o // w == g for o, g in zip(filter_list, groups))]
    if not widths:
        raise CheckpointMismatchError(f"no groups_width gives the grouped-conv groups {groups} for widths {filter_list}")
    released = RELEASED_ARCHITECTURE["groups_width"]
    groups_width = released if released in widths else widths[0]
    dense = state_dict.get("dense.weight")
    return {
        "in_channels": in_channels,
        "base_filters": base_filters,
        "ratio": ratio,
        "filter_list": filter_list,
        "m_blocks_list": m_blocks_list,
        "kernel_size": kernel_size,
        "groups_width": groups_width,
        "n_classes": int(dense.shape[0]) if dense is not None else 0,
        # Not in the tensors: the released values.
        "stride": RELEASED_ARCHITECTURE["stride"],
        "use_bn": RELEASED_ARCHITECTURE["use_bn"],
        "use_do": RELEASED_ARCHITECTURE["use_do"],
    }


def _find_checkpoint(src: Path) -> Path:
    if src.is_file():
        return src
    if src.is_dir():
        found = sorted(p for p in src.iterdir() if p.suffix in (".pth", ".pt", ".bin", ".safetensors"))
        if len(found) == 1:
            return found[0]
        raise ValueError(
            f"{src} holds {len(found)} checkpoint files ({[p.name for p in found]}); give the file to convert "
            "(e.g. 12_lead_ECGFounder.pth or 1_lead_ECGFounder.pth)"
        )
    raise FileNotFoundError(f"No ECGFounder checkpoint at {src}")


def load_original(
    src: str | Path, allow_pickle: bool = False, keep_pretrained_head: bool = True,
    config_overrides: Mapping[str, Any] | None = None,
) -> tuple[ECGFounderModel, ConversionReport]:
    """Load an original ECGFounder checkpoint into :class:`ECGFounderModel` (eval mode).

    ``src`` is the ``.pth`` file as released (or a folder holding exactly one checkpoint). The container entries
    other than the weights (optimiser and scheduler state, epoch, step, val_auroc) are listed in
    ``report.dropped`` as ``checkpoint['<name>']``.

    Raises:
        ValueError: see :func:`read_checkpoint`.
        CheckpointMismatchError: keys or shapes disagree with the architecture read from the checkpoint
            (every offending key is listed).
    """
    path = _find_checkpoint(Path(src))
    raw, other_entries = read_checkpoint(path, allow_pickle=allow_pickle)
    state_dict, report = canonicalise_state_dict(raw, keep_pretrained_head=keep_pretrained_head)
    report.dropped.extend(f"checkpoint[{name!r}]" for name in other_entries)
    # ``config_overrides`` (``ecg-adapt convert --config``): what the tensors cannot tell (stride, dropout use).
    config = ECGFounderConfig(**{**infer_config_kwargs(state_dict), **(config_overrides or {})})
    model = ECGFounderModel(config)
    load_strict(model, state_dict, what=f"ECGFounder checkpoint {path}")
    logger.info("Loaded ECGFounder from %s: %s", path, report.summary())
    return model.eval(), report


def convert_ecgfounder(
    src: str | Path, dst: str | Path, allow_pickle: bool = False, keep_pretrained_head: bool = True,
    config_overrides: Mapping[str, Any] | None = None,
) -> ConversionReport:
    """Convert an original ECGFounder checkpoint to ``dst`` (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json`` with the ``dataset.py`` preprocessing).

    Example:
        >>> convert_ecgfounder("12_lead_ECGFounder.pth", "converted/ecgfounder-12lead")   # doctest: +SKIP
    """
    model, report = load_original(src, allow_pickle=allow_pickle, keep_pretrained_head=keep_pretrained_head,
                                  config_overrides=config_overrides)
    save_converted(model, dst, default_processor_steps())
    return report
