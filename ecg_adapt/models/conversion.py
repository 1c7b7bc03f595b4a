"""Shared pieces of the per-family checkpoint converters.

Each family's ``convert.py`` reads the original release as distributed, maps its keys onto ecg_adapt's module
names with a small, explicit filter (timm's ``checkpoint_filter_fn`` habit), and loads them strictly: any key
left over or missing is listed in the error, never skipped silently.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

logger = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model; the message lists every offending key."""


@dataclass
class ConversionReport:
    """What a converter did with the original keys."""

    renamed: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    stripped_prefix: str | None = None

    def summary(self) -> str:
        parts = []
        if self.stripped_prefix:
            parts.append(f"stripped prefix {self.stripped_prefix!r}")
        if self.renamed:
            parts.append(f"renamed {len(self.renamed)} keys")
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} pretraining-only keys ({', '.join(sorted(self.dropped)[:6])}"
                         f"{', ...' if len(self.dropped) > 6 else ''})")
        return "; ".join(parts) or "keys used as they are"


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Remove the first prefix that every key carries (e.g. ``hubert_ecg.`` of fine-tuned HuBERT-ECG files)."""
    keys = list(state_dict)
    for prefix in prefixes:
        if keys and all(k.startswith(prefix) for k in keys):
            report.stripped_prefix = prefix
            return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def canonical_weight_norm_keys(state_dict: Mapping[str, torch.Tensor], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Rename old-style weight-norm keys (``weight_g``/``weight_v``) to ``parametrizations.weight.original0/1``.

    torch maps old keys to new modules only inside ``load_state_dict``; doing it here once makes every
    converted file use the current style, whichever torch saved the original.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", key)
        new = re.sub(r"\.weight_v$", ".parametrizations.weight.original1", new)
        if new != key:
            report.renamed[key] = new
        out[new] = value
    return out


def drop_keys(state_dict: Mapping[str, torch.Tensor], patterns: Iterable[str], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Drop keys matching any regex in ``patterns`` (pretraining-only heads, optimiser leftovers)."""
    regexes = [re.compile(p) for p in patterns]
    out = {}
    for key, value in state_dict.items():
        if any(r.search(key) for r in regexes):
            report.dropped.append(key)
        else:
            out[key] = value
    return out


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Load ``state_dict`` into ``model``; raise :class:`CheckpointMismatchError` listing every mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or shapes:
        lines = [f"The {what} does not match {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {missing}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {unexpected}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {shapes}")
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(dict(state_dict), strict=True)


def save_converted(model: nn.Module, dst: str | os.PathLike, processor_steps: list) -> Path:
    """Write a converted backbone and its processor to ``dst`` (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json``), atomically: into a temporary sibling folder, then renamed into place, so
    an interrupted conversion never leaves a half-written model (an existing ``dst`` is replaced)."""
    from ..processing.processor import ECGProcessor

    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp-convert")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp)
        ECGProcessor(model.config.signal_contract, processor_steps).save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dst)
    return dst


def torch_load_checkpoint(path: str | os.PathLike, allow_pickle: bool = False, safe_globals: list | None = None) -> Any:
    """``torch.load`` an original checkpoint without running code from it unless the caller acknowledged it.

    ``torch.load(weights_only=True)`` is tried first (tensors, plain containers, numbers, plus any
    ``safe_globals`` such as numpy scalar constructors). A file that needs arbitrary unpickling raises a
    ``ValueError`` naming ``allow_pickle`` unless ``allow_pickle=True``; then it is read with
    ``weights_only=False``, which can execute code stored in the file: only for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file")
    try:
        with torch.serialization.safe_globals(list(safe_globals or [])):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not allow_pickle:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else "see the chained error"
            raise ValueError(
                f"{path} holds Python objects besides tensors, so torch.load(weights_only=True) refuses it "
                f"({first}). Unpickling such a file can run code stored in it: pass allow_pickle=True "
                "(ecg-adapt convert --allow-pickle) only for a file you trust."
            ) from e
        logger.warning("Reading %s with torch.load(weights_only=False) (allow_pickle=True): trusted files only", path)
        return torch.load(str(path), map_location="cpu", weights_only=False)
