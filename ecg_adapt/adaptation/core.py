"""One entry point for adaptation: ``adapt(model, AdaptationConfig(method=...))``.

The method is data: an :class:`~ecg_adapt.adaptation.config.AdaptationConfig` saved as ``adaptation_config.json``
next to the weights. :func:`save_adapted` writes only what the method trained, in peft's saved form (a config
JSON plus ``adapter_model.safetensors`` holding only the trained weights, the base model recorded):

=============  ======================================================================================
kind           what is saved
=============  ======================================================================================
``full``       the whole classifier (``model.safetensors``)
native         the trained parameters only (``adapter_model.safetensors``): ``linear_probe``, ``partial``,
               ``bitfit``, ``norm_tuning``
peft           peft's adapter files (``adapter_config.json``, ``adapter_model.safetensors``) in the
               plain-backbone form (``PeftModel.from_pretrained(AutoModel.from_pretrained(backbone), folder)``
               loads them), the head beside them in ``head.safetensors`` (see ``peft_methods``)
module         ecg_adapt's adapter files in the same form (bottleneck adapters, prompts)
=============  ======================================================================================

Every save also writes the classifier's ``config.json`` (labels, head, backbone id) and the processor's
``preprocessor_config.json``, so :func:`load_adapted` can rebuild the model from the folder alone (plus the
backbone, fetched from its recorded hub id or path for adapter-only saves).

**Sequence models.** An :class:`~ecg_adapt.models.sequence.ECGSequenceClassifier` is adapted through the window
classifier inside it: the method applies to that classifier exactly as above (the adapter targets its backbone,
the head is trained as usual), and the sequence model over the neighbouring windows (``context_encoder``) is
always trained beside it. Its folder is the window classifier's folder with two differences: ``config.json`` is
the sequence model's config (``model_type: ecg_sequence_classifier``: the window fields, the sequence fields and
the recording-channel mapping), and ``sequence_model.safetensors`` holds the sequence model's weights (``full``
saves everything in ``model.safetensors`` instead). The backbone adapter keeps its plain-peft layout, so
``PeftModel.from_pretrained(AutoModel.from_pretrained(backbone), folder)`` still loads it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn

from ..models.classifier import ECGClassifier, ECGClassifierConfig
from ..models.sequence import ECGSequenceClassifier, ECGSequenceClassifierConfig
from ..models.registry import load_backbone
from ..processing.processor import ECGProcessor
from ..utils import atomic_folder
from .config import METHODS, AdaptationConfig, UnsupportedAdaptationError, field_names, get_method

logger = logging.getLogger(__name__)

ADAPTATION_CONFIG_NAME = "adaptation_config.json"
TRAINED_WEIGHTS_NAME = "adapter_model.safetensors"
SEQUENCE_WEIGHTS_NAME = "sequence_model.safetensors"
"""The sequence model's own weights (``context_encoder.*``) in the folder of an adapted sequence classifier."""
MODEL_COMPLETE_MARKER = "model_complete.json"
"""Written last into a model folder (after every other file, before the folder is renamed into place);
loaders refuse a folder without it."""


class IncompleteModelError(ValueError):
    """A model folder whose save did not finish (no completion marker, or a file it lists is missing)."""


def check_model_complete(path: str | os.PathLike) -> None:
    """Raise :class:`IncompleteModelError` unless ``path`` holds a completely saved model folder.

    The marker lists the files the save wrote; each must still be there (a folder copied in part, or one
    whose ``task.json`` with the tuned thresholds was lost, would otherwise load silently with defaults).
    """
    path = Path(path)
    marker = path / MODEL_COMPLETE_MARKER
    if not marker.is_file():
        raise IncompleteModelError(
            f"{path} is an incomplete model folder: it has no {MODEL_COMPLETE_MARKER}, which is written last when "
            "the folder is saved, so its save was interrupted (or it was copied in part). "
            "Save it again (rerun training, or save_adapted())."
        )
    listed = json.loads(marker.read_text()).get("files", [])
    missing = [name for name in listed if not (path / name).exists()]
    if missing:
        raise IncompleteModelError(f"{path} is an incomplete model folder: {missing} listed in {MODEL_COMPLETE_MARKER} "
                                   "are missing")


@dataclass
class ParameterCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} || all params: {self.total:,} || trainable%: {self.percent:.4f}"


def count_parameters(model: nn.Module) -> ParameterCount:
    """Trainable and total parameters (peft's frozen base copies of ``modules_to_save`` counted once)."""
    total = trainable = 0
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if ".original_module." in name:
            continue  # peft keeps a frozen copy of each modules_to_save module
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParameterCount(trainable, total)


def _classifier_of(model: nn.Module) -> ECGClassifier:
    """The plain window classifier of a classifier, an adapted classifier, or a (possibly adapted) sequence model."""
    if isinstance(model, ECGSequenceClassifier):
        return model.base_window_classifier
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, ECGClassifier):
        raise TypeError(f"adapt() expects an ECGClassifier or an ECGSequenceClassifier (or an adapted model of one), "
                        f"got {type(base).__name__}")
    return base


def _window_model(model: nn.Module) -> nn.Module:
    """What the adaptation method returned for the window classifier (the classifier itself for native methods)."""
    return model.window_classifier if isinstance(model, ECGSequenceClassifier) else model


def check_adaptation(model: ECGClassifier, config: AdaptationConfig | str, **kwargs: Any) -> None:
    """Raise :class:`UnsupportedAdaptationError` (saying why) if ``config`` cannot adapt this backbone."""
    config = _as_config(config, kwargs)
    get_method(config.method).check(_classifier_of(model), config)


def _as_config(config: AdaptationConfig | str | None, kwargs: dict[str, Any]) -> AdaptationConfig:
    if config is None or isinstance(config, str):
        method = config or kwargs.pop("method", "lora")
        return AdaptationConfig.from_dict({"method": method, **kwargs})
    if kwargs:
        # kwargs under either spelling (alpha or lora_alpha) override the config's fields.
        return AdaptationConfig.from_dict({**dataclasses.asdict(config), **field_names(kwargs)})
    return config


def adapt(model: ECGClassifier | ECGSequenceClassifier, config: AdaptationConfig | str | None = None,
          **kwargs: Any) -> nn.Module:
    """Apply an adaptation method to a classifier and log its trainable parameters.

    ``config`` may be an :class:`AdaptationConfig`, a method name (with ``AdaptationConfig`` fields as
    keyword arguments), or ``None`` for LoRA with the family defaults. The (method, backbone) pair is checked
    first: an unsupported pair raises :class:`UnsupportedAdaptationError` saying why, before anything is
    changed. Returns the model to train: the classifier itself for native methods (``full``,
    ``linear_probe``, ``partial``, ``bitfit``, ``norm_tuning``), a ``peft.PeftModel`` for peft methods, an
    :class:`~ecg_adapt.adaptation.modules.AdaptedModel` for bottleneck adapters and prompts.

    An :class:`~ecg_adapt.models.sequence.ECGSequenceClassifier` is adapted through its window classifier (the
    method targets the backbone inside, the head trains as usual) and returned itself, its ``window_classifier``
    replaced by what the method returned; its sequence model (``context_encoder``) is trained with every method.

    Example:
        >>> model = adapt(classifier, "lora", r=8)   # doctest: +SKIP
        trainable params: 12,345 || all params: 30,221,497 || trainable%: 0.0408
    """
    config = _as_config(config, kwargs)
    clf = _classifier_of(model)
    sequence = model if isinstance(model, ECGSequenceClassifier) else None
    if _window_model(model) is not clf or (sequence is not None and getattr(sequence, "adaptation_config", None)):
        raise ValueError("This model already carries an adapter; adapt the plain ECGClassifier or ECGSequenceClassifier "
                         "(to add a second adapter, use the wrapper's add_adapter/load_adapter)")
    spec = get_method(config.method)
    spec.check(clf, config)
    out = spec.apply(clf, config)
    if sequence is not None:
        # The adapter lives on the window classifier (in place: peft's injected layers, ecg_adapt's hooks); its
        # wrapper takes the window classifier's place so that it, and every parameter it adds, is a submodule.
        # The sequence model over the windows is new for every method: always trained.
        sequence.window_classifier = out
        if sequence.context_encoder is not None:
            sequence.context_encoder.requires_grad_(True)
        out = sequence
    out.adaptation_config = config  # type: ignore[attr-defined]
    logger.info("adaptation %s: %s", config.method, count_parameters(out))
    return out


def trained_state_dict(model: nn.Module) -> dict[str, Any]:
    """The trainable parameters of a natively adapted classifier, by name (what ``save_adapted`` stores); for a
    sequence model, those of its window classifier (the sequence model's own weights are saved beside them)."""
    clf = _classifier_of(model)
    return {n: p.detach().contiguous().cpu() for n, p in clf.named_parameters() if p.requires_grad}


def save_adapted(model: nn.Module, save_directory: str | os.PathLike, processor: ECGProcessor | None = None,
                 extra_files: dict[str, str] | None = None) -> Path:
    """Save what the adaptation trained, plus the configs needed to reload it (see the module docstring).

    Files (and ``extra_files``, name -> text, e.g. the trainer's ``task.json``) are written to a temporary
    sibling folder, then :data:`MODEL_COMPLETE_MARKER` last, and the folder is moved into place, so an
    interrupted save never leaves a half-written model behind.
    """
    config: AdaptationConfig = getattr(model, "adaptation_config", None) or AdaptationConfig(method="full")
    spec = get_method(config.method)
    clf = _classifier_of(model)
    dst = Path(save_directory)
    if config.method != "full" and not clf.config.backbone_name_or_path:
        raise ValueError(
            f"{config.method} saves only the trained weights, so the backbone must be reloadable: "
            "load it with load_backbone(path_or_hub_id) (or save it and set config.backbone_name_or_path)"
        )
    sequence = model if isinstance(model, ECGSequenceClassifier) else None
    window = _window_model(model)
    # The model's config.json: the classifier's, or the sequence model's (which holds the window fields too).
    model_config = sequence.config if sequence is not None else clf.config
    with atomic_folder(dst, suffix=".tmp-save") as tmp:
        if config.method == "full":
            (sequence if sequence is not None else clf).save_pretrained(tmp)
        elif spec.kind == "native":
            model_config.save_pretrained(tmp)
            save_file(trained_state_dict(model), str(tmp / TRAINED_WEIGHTS_NAME))
        else:
            if not hasattr(window, "save_pretrained") or window is clf:
                raise TypeError(f"method {config.method!r} expects the model returned by adapt()")
            window.save_pretrained(tmp)
            if spec.kind == "peft":
                from .peft_methods import save_backbone_adapter

                save_backbone_adapter(tmp)  # loadable by plain peft on the plain backbone
            model_config.save_pretrained(tmp)
        if sequence is not None and config.method != "full" and sequence.context_encoder is not None:
            state = {f"context_encoder.{k}": v.detach().contiguous().cpu()
                     for k, v in sequence.context_encoder.state_dict().items()}
            save_file(state, str(tmp / SEQUENCE_WEIGHTS_NAME), metadata={"format": "pt"})
        meta = config.to_dict()
        meta["kind"] = spec.kind
        meta["backbone_name_or_path"] = clf.config.backbone_name_or_path
        meta["model_type"] = model_config.model_type
        meta["trainable_parameters"] = dataclasses.asdict(count_parameters(model))
        (tmp / ADAPTATION_CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        if processor is not None:
            processor.check_compatible(clf.signal_contract)
            processor.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        written = sorted(p.name for p in tmp.iterdir())
        (tmp / MODEL_COMPLETE_MARKER).write_text(json.dumps({"files": written}, indent=2) + "\n")
    return dst


def merge_for_deployment(model: nn.Module) -> ECGClassifier | ECGSequenceClassifier:
    """A plain :class:`ECGClassifier` computing the same function as an adapted model, for deployment (the one
    merge verb of ecg_adapt; the models' own ``merge_and_unload`` is peft's, without these checks). An adapted
    :class:`~ecg_adapt.models.sequence.ECGSequenceClassifier` is returned itself, its window classifier merged.

    Native methods already are one (the trained weights live in the classifier). Mergeable peft methods are
    folded into the backbone weights (``merge_and_unload``) and returned frozen, in eval mode, with the trained
    head in place; ``save_adapted`` on the result writes a full model. Methods that cannot be folded
    (bottleneck adapters and prompts add computation) raise :class:`UnsupportedAdaptationError` saying why.

    Raises:
        UnsupportedAdaptationError: the method does not merge, or the adapter has layers peft cannot merge
            correctly (:func:`~ecg_adapt.adaptation.peft_methods.merge_blockers`: LoRA on grouped convolutions,
            any adapter on a weight-normed layer).

    Example:
        >>> plain = merge_for_deployment(adapt(classifier, "lora"))   # doctest: +SKIP
    """
    config: AdaptationConfig | None = getattr(model, "adaptation_config", None)
    if isinstance(model, ECGSequenceClassifier):
        # The window classifier inside is merged like any other; the sequence model keeps its own weights.
        window = model.window_classifier
        if window is not model.base_window_classifier:
            window.adaptation_config = config  # type: ignore[attr-defined]  # the checks below read it
            model.window_classifier = merge_for_deployment(window)
        model.requires_grad_(False)
        return model.eval()  # type: ignore[return-value]
    clf = _classifier_of(model)
    if model is clf:
        return clf
    spec = get_method(config.method) if config is not None else None
    if spec is not None and not spec.mergeable:
        raise UnsupportedAdaptationError(
            f"{config.method} cannot be merged into the backbone weights ({spec.trains}); deploy the adapted "
            "model as it is (load_adapted) instead"
        )
    if isinstance(model, PeftModel):
        from .peft_methods import check_mergeable

        check_mergeable(model)  # refuses layers peft would merge wrongly or not at all
    merged = model.merge_and_unload()
    if not isinstance(merged, ECGClassifier):
        raise TypeError(f"merge_and_unload returned {type(merged).__name__}, expected ECGClassifier")
    merged.requires_grad_(False)
    return merged.eval()


def read_adaptation_config(path: str | os.PathLike) -> AdaptationConfig:
    """The :class:`AdaptationConfig` saved in a folder written by :func:`save_adapted`."""
    meta_path = Path(path) / ADAPTATION_CONFIG_NAME
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} has no {ADAPTATION_CONFIG_NAME}: not a folder written by save_adapted()")
    return AdaptationConfig.from_dict(json.loads(meta_path.read_text()))


def load_adapted(path: str | os.PathLike, backbone_name_or_path: str | None = None, is_trainable: bool = False) -> nn.Module:
    """Rebuild an adapted model saved by :func:`save_adapted` (eval mode unless ``is_trainable``).

    ``backbone_name_or_path`` overrides the backbone location recorded at save time (e.g. a local copy of
    a hub backbone).

    Raises:
        ValueError: the saved weights do not all match the rebuilt model (for peft methods
            :class:`~ecg_adapt.adaptation.peft_methods.AdapterMismatchError`, naming the missing and unexpected
            tensors and the folder).
    """
    path = Path(path)
    check_model_complete(path)
    config = read_adaptation_config(path)
    spec = get_method(config.method)
    is_sequence = _saved_model_type(path) == ECGSequenceClassifierConfig.model_type
    sequence: ECGSequenceClassifier | None = None
    if config.method == "full":
        model: nn.Module = (ECGSequenceClassifier if is_sequence else ECGClassifier).from_pretrained(str(path))
    else:
        if is_sequence:
            seq_config = ECGSequenceClassifierConfig.from_pretrained(str(path))
            clf_config = seq_config.window_classifier_config()
        else:
            clf_config = ECGClassifierConfig.from_pretrained(str(path))
        source = backbone_name_or_path or clf_config.backbone_name_or_path
        if not source:
            raise ValueError(f"{path} does not record its backbone; pass backbone_name_or_path=")
        backbone = load_backbone(source)
        clf = ECGClassifier(clf_config, backbone=backbone)
        clf.name_or_path = source
        if is_sequence:
            # Built around the plain classifier first (the sequence model's fresh initialisation touches only its
            # own modules), its weights loaded, then the window adapter is loaded onto the classifier below.
            sequence = ECGSequenceClassifier(seq_config, window_classifier=clf)
            _load_sequence_weights(sequence, path)
        if spec.kind == "native":
            model = spec.apply(clf, config)
            weights_file = path / TRAINED_WEIGHTS_NAME
            state = load_file(str(weights_file))
            expected = set(trained_state_dict(model))
            if set(state) != expected:
                raise ValueError(
                    f"{weights_file} does not match method {config.method!r} on this backbone: "
                    f"missing {sorted(expected - set(state))[:10]}, unexpected {sorted(set(state) - expected)[:10]}"
                )
            missing = clf.load_state_dict(state, strict=False)
            if missing.unexpected_keys:
                raise ValueError(f"{weights_file}: unexpected keys {missing.unexpected_keys[:10]}")
        elif spec.kind == "peft":
            from .peft_methods import load_peft_adapted

            # Not PeftModel.from_pretrained: it only warns about keys that do not match (and loads nothing).
            model = load_peft_adapted(clf, path, is_trainable=is_trainable)
        else:
            if spec.load is None:
                raise UnsupportedAdaptationError(f"method {config.method!r} has no loader")
            model = spec.load(clf, config, str(path), is_trainable)
        if sequence is not None:
            sequence.window_classifier = model
            model = sequence
    model.adaptation_config = config  # type: ignore[attr-defined]
    if not is_trainable:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return model


def _saved_model_type(path: Path) -> str | None:
    """``model_type`` of a saved folder's ``config.json`` (``None`` when it has none)."""
    config_file = path / "config.json"
    if not config_file.exists():
        return None
    return json.loads(config_file.read_text()).get("model_type")


def _load_sequence_weights(sequence: ECGSequenceClassifier, path: Path) -> None:
    """Load ``sequence_model.safetensors`` into the sequence model's context encoder, refusing any mismatch."""
    weights_file = path / SEQUENCE_WEIGHTS_NAME
    if sequence.context_encoder is None:
        if weights_file.exists():
            raise ValueError(f"{weights_file} exists but {path / 'config.json'} says sequence_model='none'")
        return
    if not weights_file.exists():
        raise IncompleteModelError(f"{path} is a sequence model folder without {SEQUENCE_WEIGHTS_NAME} (the weights of "
                                   f"its {sequence.config.sequence_model} over the context windows)")
    state = {k.removeprefix("context_encoder."): v for k, v in load_file(str(weights_file)).items()}
    expected = set(sequence.context_encoder.state_dict())
    if set(state) != expected:
        raise ValueError(f"{weights_file} does not match the sequence model of {path / 'config.json'}: missing "
                         f"{sorted(expected - set(state))[:10]}, unexpected {sorted(set(state) - expected)[:10]}")
    sequence.context_encoder.load_state_dict(state)


__all__ = [
    "ADAPTATION_CONFIG_NAME",
    "SEQUENCE_WEIGHTS_NAME",
    "METHODS",
    "AdaptationConfig",
    "ParameterCount",
    "UnsupportedAdaptationError",
    "adapt",
    "check_adaptation",
    "count_parameters",
    "load_adapted",
    "merge_for_deployment",
    "read_adaptation_config",
    "save_adapted",
    "trained_state_dict",
]
