"""The family registry: discovery, validation, registration with the transformers Auto classes, loading helpers.

A family is one folder under ``ecg_adapt/models/`` whose package exposes ``FAMILY`` (a
:class:`~ecg_adapt.models.family.BackboneFamily`, defined in its torch-free ``family.py``). Families are
discovered, not listed: every subpackage of ``ecg_adapt.models`` with a ``FAMILY`` is registered when this
module is imported. Registration validates the record (cheap: no torch); the first time a family's
configuration or model class is needed, the family is registered with ``AutoConfig``/``AutoModel``/
``AutoFeatureExtractor`` and its layout is checked on a real tiny model (:func:`check_family`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pkgutil
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .family import BackboneFamily

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel

    from ..processing.processor import ECGProcessor

logger = logging.getLogger(__name__)

FAMILIES: dict[str, BackboneFamily] = {}
_AUTO_REGISTERED: set[str] = set()


def register_family(family: BackboneFamily) -> None:
    """Register a family with ecg_adapt (idempotent for the same record).

    Validates the record first, so a family without a block layout, default targets or tiny config (or with a
    malformed one) fails here with the reason, rather than being skipped by the tests. The registration with the
    transformers Auto classes happens the first time the family's classes are needed
    (:func:`register_with_transformers`).

    Raises:
        ValueError: the record is incomplete or invalid, or another record already uses its ``model_type``.
    """
    if not isinstance(family, BackboneFamily):
        raise ValueError(f"register_family expects a BackboneFamily, got {type(family).__name__}")
    known = FAMILIES.get(family.model_type)
    if known is family:
        return
    family.validate()
    if known is not None:
        raise ValueError(f"Backbone family {family.model_type!r} is already registered (from {known.package})")
    FAMILIES[family.model_type] = family


def check_family(family: BackboneFamily) -> None:
    """Check a family's facts against real tiny models (imports torch): for every tiny config, the model builds,
    its config names the family, the block pattern finds blocks, every transformer block has its sublayer
    outputs, CNN blocks give their channels, the post-block modules exist, and the default targets of each
    method match modules.

    The tiny models are built under a forked random state: registration happens on the first use of a family's
    classes, and must not move the caller's seeded RNG (``torch.manual_seed(0)`` then building a model would
    otherwise give other weights depending on whether the family had been used before).

    Raises:
        ValueError: naming the family, the tiny config and what does not hold.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        _check_tiny_models(family)


def _check_tiny_models(family: BackboneFamily) -> None:
    for name, kwargs in family.tiny_configs.items():
        where = f"the tiny {name!r} model of family {family.model_type!r}"
        try:
            model = family.model_class(family.config_class(**kwargs))
        except Exception as e:  # any construction error is a broken tiny config: say which one
            raise ValueError(f"{where} cannot be built from its tiny config: {e}") from e
        if model.config.model_type != family.model_type:
            raise ValueError(f"{where} has model_type {model.config.model_type!r}")
        key = family.key_of(model.config)
        if key != family.key_of_kwargs(kwargs):
            raise ValueError(f"{where}: variant_of gives {key!r} on the config but "
                             f"{family.key_of_kwargs(kwargs)!r} on the kwargs (treat a missing field as its default)")
        variant = family.variant(key)
        layout = variant.layout
        names, blocks = layout.find_blocks(model, where)
        modules = dict(model.named_modules())
        for post in layout.post_blocks:
            if post not in modules:
                raise ValueError(f"{where}: post-block module {post!r} does not exist")
        for block_name, block in zip(names, blocks):
            if layout.kind == "transformer":
                layout.sublayer(block, "attention", block_name, where)
                layout.sublayer(block, "ffn", block_name, where)
            else:
                layout.block_channels(block, block_name, where)
        t = variant.targets
        for method, targets in (("lora", t.lora), ("linear", t.for_linear_tuners()), ("ia3", t.ia3)):
            # peft's rule: a target list fails when none of its suffixes matches (conv3 exists in bottleneck
            # ResNets only, so one unmatched name is not an error by itself).
            if targets and not any(n == s or n.endswith("." + s) for s in targets for n in modules):
                raise ValueError(f"{where}: none of the default {method} targets {list(targets)} matches a module")


def register_with_transformers(family: BackboneFamily, check: bool = True) -> None:
    """Register a family with ``AutoConfig``/``AutoModel``/``AutoFeatureExtractor`` (idempotent), so that
    ``AutoModel.from_pretrained(folder)`` works in this process; then :func:`check_family` (``check=True``)."""
    if family.model_type in _AUTO_REGISTERED:
        return
    _AUTO_REGISTERED.add(family.model_type)
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    from ..processing.processor import ECGProcessor

    try:
        config_class, model_class = family.config_class, family.model_class
        AutoConfig.register(family.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoFeatureExtractor.register(config_class, ECGProcessor, exist_ok=True)
        if check:
            check_family(family)
    except BaseException:
        _AUTO_REGISTERED.discard(family.model_type)
        raise


def register_all_with_transformers() -> None:
    """Register every family with the transformers Auto classes (imports every family's model)."""
    for family in list(FAMILIES.values()):
        register_with_transformers(family)


def discover_families() -> list[str]:
    """Import every subpackage of ``ecg_adapt.models`` and register the ``FAMILY`` it exposes (packages without
    one are not families). Cheap: a family package exposes ``FAMILY`` without importing torch."""
    from .. import models

    found = []
    for info in pkgutil.iter_modules(models.__path__):
        if not info.ispkg:
            continue
        package = importlib.import_module(f"{models.__name__}.{info.name}")
        family = getattr(package, "FAMILY", None)
        if family is not None:
            register_family(family)
            found.append(family.model_type)
    return found


def released_variants() -> list[dict]:
    """Every released variant of every registered family (``ecg-adapt models`` prints this)."""
    return [dict(v, family=v.get("family", f.model_type)) for f in FAMILIES.values() for v in f.released_variants]


def release_location(variant: Mapping[str, Any]) -> str:
    """Where a released variant's original weights live, from its ``release`` field, in one line: the hub repo
    and file (``load_backbone`` fetches those), or the host and URL of a release the Hub does not host (downloaded
    by hand, then converted); "not released" for an architecture without weights."""
    release = variant.get("release")
    if not isinstance(release, Mapping):
        return "not released (no weights to load)"
    if release.get("repo_id"):
        files = [release.get("filename"), *(release.get("also") or [])]
        where = f"hf.co/{release['repo_id']}: {', '.join(f for f in files if f)}"
        if release.get("revision"):
            where += f" @ {release['revision']}"
        return f"Hugging Face Hub {where} (fetched by load_backbone({variant['name']!r}))"
    host, url, filename = release.get("host", "?"), release.get("url", "?"), release.get("filename", "?")
    # A variant that is the file converted a particular way (ECGFM-KED's benchmark contract) names its overrides.
    overrides = dict(variant.get("convert_kwargs") or {})
    py = f", config_overrides={overrides!r}" if overrides else ""
    cli = "".join(f" --config {k}={v}" for k, v in overrides.items())
    return (f"{host} {url} ({filename}; download it, then load_backbone(path{py}) or "
            f"ecg-adapt convert --family {variant.get('family', '...')}{cli})")


def get_family(model_type: str) -> BackboneFamily:
    """Look a family up by ``model_type`` (the ``--family`` value), with the known ones in the error."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ValueError(f"Unknown backbone family {model_type!r}; known families: {sorted(FAMILIES)}") from None


def family_of(backbone_or_config: Any) -> BackboneFamily | None:
    """The registered family of a backbone (or its config), ``None`` for an unregistered one."""
    config = getattr(backbone_or_config, "config", backbone_or_config)
    return FAMILIES.get(getattr(config, "model_type", None))


def _read_model_type(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    path = Path(name_or_path)
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.exists():
            raise FileNotFoundError(f"{path} has no config.json: not a model folder")
        return json.loads(cfg.read_text()).get("model_type", "")
    # A hub id: let transformers resolve it (works offline from the cache with HF_HUB_OFFLINE=1).
    from transformers import PreTrainedConfig

    config_dict, _ = PreTrainedConfig.get_config_dict(str(name_or_path), revision=revision)
    return config_dict.get("model_type", "")


def load_backbone(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    *,
    family: str | None = None,
    filename: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    allow_pickle: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """Load a backbone, HF-style, from whatever names it.

    ``name_or_path`` may be (see :mod:`ecg_adapt.models.pretrained`):

    * a registry name (``"ecgfounder-12lead"``, ``"ecg-fm-pretrained"``, ``"hubert-ecg-small"``; ``ecg-adapt
      models`` lists them): the original release is downloaded from the Hub, converted once and cached;
    * an original hub repository (``"PKUDigitalHealth/ECGFounder"``, ``"wanglab/ecg-fm"``): its default release,
      or the one ``filename=`` names;
    * a converted folder, or a hub id of a repository in ecg_adapt's format;
    * a local original release file (``"multiblock_epoch100.pth"``, ``"res18_best_encoder.pth"``, a ``.ckpt``),
      with ``family=`` when its name does not tell.

    Releases hosted off the Hub (Google Drive, figshare, Zenodo) raise an error naming the URL and the call to make
    once the file is downloaded. ``HF_HUB_OFFLINE=1`` loads from the Hugging Face and conversion caches.

    Args:
        revision: hub revision (overrides the registry's pinned one).
        family: the family of a local original file whose name does not tell.
        filename: the release file of a hub repository holding several.
        config_overrides: configuration fields the converter cannot read from the tensors (non-released widths), e.g.
            ``{"vit_heads": 4, "vit_dim_head": 32}``.
        allow_pickle: read checkpoints that pickle Python objects (built inert, no code runs); default: true for
            registry releases, false for other files.
        cache_dir: the conversion cache (default ``$ECG_ADAPT_CACHE/converted`` or ``~/.cache/ecg_adapt/converted``).
        **kwargs: passed to ``from_pretrained``.

    The model's ``name_or_path`` is the registry name for a registry release (so a classifier built on it records
    a name that resolves to the same file), and its config's ``converted_from`` records repository, file, commit,
    sha256 and converter version.

    Example:
        >>> backbone = load_backbone("ecgfounder-12lead")                                  # doctest: +SKIP
        >>> backbone = load_backbone("wanglab/ecg-fm")                                     # doctest: +SKIP
        >>> backbone = load_backbone("weights/res18_best_encoder.pth", family="merl")      # doctest: +SKIP
    """
    from .pretrained import resolve_pretrained

    resolved = resolve_pretrained(name_or_path, revision=revision, family=family, filename=filename,
                                  config_overrides=config_overrides,
                                  allow_pickle=allow_pickle, cache_dir=cache_dir)
    model_type = _read_model_type(resolved.path, resolved.revision)
    model = get_family(model_type).model_class.from_pretrained(resolved.path, revision=resolved.revision, **kwargs)
    model.name_or_path = resolved.name_or_path
    if resolved.source:  # what this call fetched (commit, file, hash), also on a conversion-cache hit
        model.config.converted_from = resolved.source
    return model


def load_processor(name_or_path: str | os.PathLike, config: PreTrainedConfig | None = None, revision: str | None = None,
                   **resolve_kwargs: Any) -> ECGProcessor:
    """The processor saved next to a backbone, or the family's default preprocessing when none was saved
    (original releases do not ship a ``preprocessor_config.json``). ``name_or_path`` is resolved as
    :func:`load_backbone` resolves it (``resolve_kwargs``: its ``family``, ``filename``, ``config_overrides``, ...)."""
    from ..processing.processor import ECGProcessor
    from .pretrained import resolve_pretrained

    register_all_with_transformers()  # AutoConfig must know every family below
    resolved = resolve_pretrained(name_or_path, revision=revision, **resolve_kwargs)
    name_or_path, revision = resolved.path, resolved.revision
    path = Path(name_or_path)
    has_saved = (path / "preprocessor_config.json").exists() if path.is_dir() else None
    if has_saved is not False:
        try:
            return ECGProcessor.from_pretrained(str(name_or_path), revision=revision)
        except OSError:
            if has_saved:
                raise
    if config is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(name_or_path), revision=revision)
    family = get_family(config.model_type)
    logger.info("No preprocessor_config.json in %s: using the %s default preprocessing", name_or_path, family.model_type)
    return ECGProcessor(config.signal_contract, default_steps_for(family, config))


def default_steps_for(family: BackboneFamily, config: PreTrainedConfig) -> list:
    """The family's default processor steps for one config.

    A family whose preprocessing depends on its config (ECGFM-KED's ``input_contract``: the same weights fed at
    100 Hz or at 500 Hz) names those config fields as keyword arguments of its steps function; they are passed
    from ``config``. Other keyword arguments (``window_mode``) keep their defaults.
    """
    import inspect

    steps = family.default_processor_steps
    fields = {name: getattr(config, name) for name in inspect.signature(steps).parameters
              if name != "window_mode" and hasattr(config, name)}
    return steps(**fields)


discover_families()
