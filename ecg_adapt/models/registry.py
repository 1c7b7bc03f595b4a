"""Backbone families: registration with the transformers Auto classes, and loading helpers.

A family is one folder under ``ecg_adapt/models/`` (configuration, modeling, convert, processor defaults).
Registering it makes ``AutoConfig``/``AutoModel.from_pretrained(path)`` work for its ``model_type``, and
records what the rest of the toolkit needs to know: its default preprocessing and LoRA target modules.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, PreTrainedConfig, PreTrainedModel

from ..processing.processor import ECGProcessor
from ..processing.steps import Step

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneFamily:
    """Everything the toolkit needs to know about one backbone family."""

    model_type: str
    config_class: type[PreTrainedConfig]
    model_class: type[PreTrainedModel]
    default_processor_steps: Callable[..., list[Step]]
    # Module-name suffixes that LoRA wraps by default (peft ``target_modules``), and why.
    lora_target_modules: tuple[str, ...]
    lora_rationale: str
    convert: Callable[..., object]
    description: str
    # Released weights: dicts with name, source, weights (where they live), licence, redistribution,
    # parameters, contract (and optionally config: the kwargs that build that size).
    released_variants: tuple[dict, ...] = ()


FAMILIES: dict[str, BackboneFamily] = {}


def register_family(family: BackboneFamily) -> None:
    """Register a family with ecg_adapt and with ``AutoConfig``/``AutoModel``/``AutoFeatureExtractor``."""
    if family.model_type in FAMILIES:
        return
    FAMILIES[family.model_type] = family
    AutoConfig.register(family.model_type, family.config_class, exist_ok=True)
    AutoModel.register(family.config_class, family.model_class, exist_ok=True)
    AutoFeatureExtractor.register(family.config_class, ECGProcessor, exist_ok=True)


def released_variants() -> list[dict]:
    """Every released variant of every registered family (``ecg-adapt models`` prints this)."""
    return [dict(v, family=v.get("family", f.model_type)) for f in FAMILIES.values() for v in f.released_variants]


def get_family(model_type: str) -> BackboneFamily:
    """Look a family up by ``model_type`` (the ``--family`` value), with the known ones in the error."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ValueError(f"Unknown backbone family {model_type!r}; known families: {sorted(FAMILIES)}") from None


def _read_model_type(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    path = Path(name_or_path)
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.exists():
            raise FileNotFoundError(f"{path} has no config.json: not a model folder")
        return json.loads(cfg.read_text()).get("model_type", "")
    # A hub id: let transformers resolve it (works offline from the cache with HF_HUB_OFFLINE=1).
    config_dict, _ = PreTrainedConfig.get_config_dict(str(name_or_path), revision=revision)
    return config_dict.get("model_type", "")


def load_backbone(name_or_path: str | os.PathLike, revision: str | None = None, **kwargs) -> PreTrainedModel:
    """Load a backbone from a local folder or a hub id, HF-style.

    Works on ecg_adapt's converted folders and on the original HuBERT-ECG Hugging Face release (its
    ``auto_map`` to remote code is ignored: the architecture is ecg_adapt's own, so no
    ``trust_remote_code`` is needed).

    Example:
        >>> backbone = load_backbone("Edoardo-BS/hubert-ecg-small")   # doctest: +SKIP
    """
    model_type = _read_model_type(name_or_path, revision)
    family = get_family(model_type)
    model = family.model_class.from_pretrained(str(name_or_path), revision=revision, **kwargs)
    model.name_or_path = str(name_or_path)
    return model


def load_processor(name_or_path: str | os.PathLike, config: PreTrainedConfig | None = None, revision: str | None = None) -> ECGProcessor:
    """The processor saved next to a backbone, or the family's default preprocessing when none was saved
    (original releases do not ship a ``preprocessor_config.json``)."""
    path = Path(name_or_path)
    has_saved = (path / "preprocessor_config.json").exists() if path.is_dir() else None
    if has_saved is not False:
        try:
            return ECGProcessor.from_pretrained(str(name_or_path), revision=revision)
        except (OSError, EnvironmentError):
            if has_saved:
                raise
    if config is None:
        config = AutoConfig.from_pretrained(str(name_or_path), revision=revision)
    family = get_family(config.model_type)
    logger.info("No preprocessor_config.json in %s: using the %s default preprocessing", name_or_path, family.model_type)
    return ECGProcessor(config.signal_contract, family.default_processor_steps())
