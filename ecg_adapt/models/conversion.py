"""Shared pieces of the per-family checkpoint converters.

Each family's ``convert.py`` reads the original release as distributed, maps its keys onto ecg_adapt's module
names with a small, explicit filter (timm's ``checkpoint_filter_fn`` habit), and loads them strictly: any key
left over or missing is listed in the error, never skipped silently.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..utils import atomic_folder

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


def key_indices(keys: Iterable[str], pattern: str) -> list[int]:
    """The sorted distinct integers that ``pattern``'s first group matches at the start of ``keys`` (layer, block
    or stage numbers of a state dict: ``key_indices(sd, r"encoder\.layers\.(\d+)\.")``)."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


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

    with atomic_folder(dst, suffix=".tmp-convert") as tmp:
        model.save_pretrained(tmp)
        ECGProcessor(model.config.signal_contract, processor_steps).save_pretrained(tmp)
    return dst


class InertObject:
    """Stands in for a class or function a checkpoint pickles: keeps the arguments and attributes, runs nothing.

    torch's weights-only unpickler builds these (they are passed as ``safe_globals`` under the pickled name),
    so a pickled ``HuBERTECGConfig`` or omegaconf node becomes an attribute bag, and a pickled call of
    ``builtins.exec`` or ``os.system`` becomes an inert object instead of running.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        # The arguments are kept in __new__, which both pickle opcodes that build an object call: REDUCE
        # (``cls(*args)``, e.g. an enum member pickled as ``Enum(value)``) and NEWOBJ (``cls.__new__(cls, *args)``).
        obj = super().__new__(cls)
        obj.__dict__["_inert_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            state = {**(state[0] or {}), **(state[1] or {})}  # the (dict, slots) form
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_inert_state"] = state


def plain_data(obj: Any) -> Any:
    """The plain Python data of what a checkpoint pickled as config: inert omegaconf trees (``DictConfig``/
    ``ListConfig`` contents, value nodes), enum members (pickled as ``Enum(value)``: their value), other inert
    objects (their public attributes) and ``argparse.Namespace`` become dicts, lists and values, recursively."""
    if isinstance(obj, Mapping):
        return {k: plain_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_data(v) for v in obj]
    if isinstance(obj, argparse.Namespace):
        return {k: plain_data(v) for k, v in vars(obj).items()}
    if isinstance(obj, InertObject):
        d = obj.__dict__
        if "_content" in d:  # omegaconf DictConfig / ListConfig
            return plain_data(d["_content"])
        if "_val" in d:  # omegaconf value node
            return plain_data(d["_val"])
        args = d.get("_inert_args") or ()
        if len(args) == 1 and len(d) == 1:  # an enum member pickled as Enum(value)
            return plain_data(args[0])
        return {k: plain_data(v) for k, v in d.items() if not k.startswith("_")}
    return obj


def inert_stand_ins(path: str | os.PathLike, allowed: Iterable[str] | None = None) -> list[tuple[type, str]]:
    """One :class:`InertObject` subclass per global that ``torch.load(weights_only=True)`` refuses in ``path``.

    Args:
        allowed: full names (``module.Name``) that may be stood in for; any other unsafe global raises a
            ``ValueError`` naming it. ``None`` stands in for every one (still nothing runs).
    """
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (pickle.UnpicklingError, RuntimeError) as e:
        raise _unreadable(path, e) from e
    if allowed is not None:
        allowed = set(allowed)
        refused = sorted(n for n in names if n not in allowed)
        if refused:
            raise ValueError(
                f"{path} pickles {refused}, which is not one of the classes this checkpoint format holds "
                f"({sorted(allowed)}); ecg_adapt refuses it even with allow_pickle=True, since a checkpoint "
                "has no reason to name it (it may be a file crafted to run code)."
            )
    out = []
    for full_name in names:
        module, _, name = full_name.rpartition(".")
        out.append((type(name, (InertObject,), {"__module__": module, "__qualname__": name}), full_name))
    return out


def torch_load_checkpoint(path: str | os.PathLike, allow_pickle: bool = False, safe_globals: list | None = None,
                          allowed_classes: Iterable[str] | None = None) -> Any:
    """``torch.load`` an original checkpoint; no code named by the file ever runs.

    ``torch.load(weights_only=True)`` is tried first (tensors, plain containers, numbers, plus any
    ``safe_globals`` such as numpy scalar constructors). A file that pickles other Python objects raises a
    ``ValueError`` naming ``allow_pickle`` unless ``allow_pickle=True``; then it is still read by torch's
    weights-only unpickler, with every other global (or only those in ``allowed_classes``) built as an
    :class:`InertObject` attribute bag. ``weights_only=False`` is never used: it would run code from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file")
    allowed_classes = None if allowed_classes is None else tuple(allowed_classes)  # read twice below
    try:
        with torch.serialization.safe_globals(list(safe_globals or [])):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not allow_pickle:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else "see the chained error"
            built = ("those objects" if allowed_classes is None
                     else f"only {sorted(allowed_classes)} (refusing any other global)")
            raise ValueError(
                f"{path} holds Python objects besides tensors, so torch.load(weights_only=True) refuses it "
                f"({first}). Reading it needs allow_pickle=True (ecg-adapt convert --allow-pickle), only for a "
                f"file you trust; ecg_adapt then builds {built} as inert attribute bags (no code runs)."
            ) from e
    stand_ins = inert_stand_ins(path, allowed_classes)
    logger.warning("Reading %s with allow_pickle=True: %s built as inert attribute bags", path,
                   [name for _, name in stand_ins])
    try:
        with torch.serialization.safe_globals([*(safe_globals or []), *stand_ins]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _unreadable(path, e) from e


def _unreadable(path: str | os.PathLike, error: BaseException) -> ValueError:
    """The error for a pickle that torch's weights-only unpickler cannot parse even with inert stand-ins."""
    first = str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__
    return ValueError(
        f"{path}: torch's weights-only unpickler cannot read this file ({first}), and ecg_adapt refuses to read it "
        "with an unrestricted unpickler, which could run code stored in it, even with allow_pickle=True. "
        "Re-save the weights as safetensors (or with torch.save's default protocol) in a trusted environment."
    )


# -- size overrides of a conversion (``ecg-adapt convert --config key=value``) -----------------------------------
def config_fields(config_class: type) -> list[str]:
    """The fields of a family's configuration class that a conversion may override: its own fields, without
    those of transformers' ``PreTrainedConfig`` (output flags, dtype, ...), which say nothing about the weights."""
    import dataclasses

    from transformers import PreTrainedConfig

    if dataclasses.is_dataclass(config_class):
        base = {f.name for f in dataclasses.fields(PreTrainedConfig)} if dataclasses.is_dataclass(PreTrainedConfig) else set()
        names = [f.name for f in dataclasses.fields(config_class) if f.name not in base]
    else:  # a config written with an explicit __init__
        import inspect

        names = [n for n, p in inspect.signature(config_class.__init__).parameters.items()
                 if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return [n for n in names if not n.startswith("_")]


def override_flags(**fields: Any) -> str:
    """How to give configuration fields to a conversion, for error messages: the CLI flags
    (``--config vit_heads=N``); ``load_backbone`` takes the same keys in ``config_overrides``."""
    cli = " ".join(f"--config {k}={v}" for k, v in fields.items())
    return f"`{cli}` (ecg-adapt convert; the same keys in load_backbone's config_overrides)"


def check_config_overrides(family: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` as a dict, after checking every key is a field of the family's configuration.

    Raises:
        ValueError: an unknown key, naming the ``--config`` flag and the valid keys.
    """
    overrides = dict(overrides or {})
    if not overrides:
        return overrides
    known = config_fields(family.config_class)
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ValueError(f"--config {unknown[0]}=...: {family.model_type} configurations have no field "
                         f"{unknown[0]!r}{' (nor ' + ', '.join(map(repr, unknown[1:])) + ')' if unknown[1:] else ''}; "
                         f"the fields are {known}")
    return overrides


def run_converter(family: Any, src: str | os.PathLike, dst: str | os.PathLike, *, allow_pickle: bool = False,
                  config_overrides: Mapping[str, Any] | None = None) -> Any:
    """Convert an original release with a family's converter, with size overrides (``--config``) checked first.

    The converters read every size they can from the tensors; ``config_overrides`` gives what the tensors cannot
    tell at a non-released width (head counts, head widths) and is applied over what they read.

    Raises:
        ValueError: an unknown override key, or a converter that takes no overrides.
    """
    import inspect

    overrides = check_config_overrides(family, config_overrides or {})
    kwargs: dict[str, Any] = {"allow_pickle": allow_pickle}
    if overrides:
        if "config_overrides" not in inspect.signature(family.convert).parameters:
            raise ValueError(f"--config: the {family.model_type} converter reads every size from the checkpoint and "
                             "takes no overrides")
        kwargs["config_overrides"] = overrides
    return family.convert(src, dst, **kwargs)
