"""Convert an ECG-CPC release (a PyTorch Lightning ``.ckpt``) into an ecg_adapt folder (config + safetensors +
processor config).

The release (figshare article 30192604, ``ECG-CPC Checkpoint/last_11597276.ckpt``) is what the original
``pretrain.py`` writes through Lightning's ``ModelCheckpoint``: ``{'epoch', 'global_step', 'state_dict',
'optimizer_states', 'loops', 'callbacks', 'lr_schedulers', 'hparams_name', 'hyper_parameters', 'hparams_type', ...}``.

Reading it safely. ``hyper_parameters`` is an omegaconf ``DictConfig`` (the whole Hydra config) whose pickle names
``clinical_ts`` config dataclasses and omegaconf node classes, and Lightning's state holds a ``defaultdict``:
``torch.load(weights_only=True)`` refuses the file (and its unpickler cannot fill a ``defaultdict`` even when the
classes are allowed), while ``weights_only=False`` would import ``clinical_ts``/omegaconf and run whatever the
file names. So the file is read by ``torch.load`` with a restricted pickle module (:class:`RestrictedUnpickler`,
the "restricting globals" recipe of Python's ``pickle`` documentation): torch rebuilds the tensors; the only real
callables a pickle may reach are torch's tensor rebuild functions, ``OrderedDict``/``defaultdict`` and the builtin
data types; every other global becomes an inert attribute bag (:class:`~ecg_adapt.models.conversion.InertObject`)
that keeps the pickled data and runs nothing. Names outside the classes a Lightning/Hydra checkpoint holds
(``omegaconf.*``, ``clinical_ts.*``, ``typing.*``, Lightning, numpy scalars, ...) make the read fail with their
names unless ``allow_pickle=True`` (``--allow-pickle``); even then they stay inert, so a crafted ``__reduce__``
(``os.system``, ``builtins.exec``) never runs.

Hyperparameters. Tensor shapes give the encoder widths and kernel sizes, ``model_dim``, ``state_dim`` (``C``), the
layer count, causal or bidirectional (the kernel channels) and ``l_max`` (``2 * (len(omega) - 1)``). Strides,
dilations, pre/post-norm and dropout are not in the tensors: they are read from the checkpoint's own
``hyper_parameters`` (``ts.enc`` and ``ts.pred``, plain data inside the inert omegaconf nodes), or from the YAML
config the benchmark loads the model through (``config_last_11597276_ckpt.yaml``: pass it as ``config_yaml``, or
as ``src``, whose ``trainer.pretrained`` names the checkpoint). When both exist they must agree. ``config_overrides``
(``ecg-adapt convert --config key=value``) set those fields over both; an override of a field the tensors give is
refused.

Keys: ``ts_encoder.encoder.layers.i.{0,1}`` -> ``encoder.layers.i.{conv,norm}``, ``ts_encoder.predictor.predictor.
{encoder, s4_layers.i, norms.i}`` -> ``input_projection``, ``blocks.i.s4``, ``blocks.i.norm``;
``output_linear.0`` -> ``output_linear`` (its ``(2H, 1)`` bias flattened); ``kernel.kernel.*`` -> ``kernel.*``.
The CPC head ``ts_encoder.head_ssl`` is dropped (reported), as the benchmark does. The S4 buffers ``B``, ``P`` and
``w`` are stride-0 expanded views in the file: they are copied into contiguous tensors.
"""

from __future__ import annotations

import _compat_pickle
import logging
import os
import pickle
import re
import types
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..conversion import (
    CheckpointMismatchError,
    ConversionReport,
    InertObject,
    key_indices,
    load_strict,
    save_converted,
)
from ..conversion import plain_data as plain  # the omegaconf hyperparameters as plain data (public here as ``plain``)
from .configuration import RELEASED_ARCHITECTURE, ECGCPCConfig, default_processor_steps
from .modeling import ECGCPCModel

logger = logging.getLogger(__name__)

BACKBONE_PREFIXES = ("ts_encoder.encoder.", "ts_encoder.predictor.")  # the benchmark's pretrained_keys_filter
_ENCODER = "ts_encoder.encoder.layers."
_PREDICTOR = "ts_encoder.predictor.predictor."

# Globals a Lightning/Hydra checkpoint of clinical_ts holds besides tensors; they are stood in for by inert objects
# without allow_pickle (nothing is imported or run either way).
CONTAINER_GLOBALS = ("omegaconf.", "clinical_ts.", "typing.", "lightning.", "lightning_fabric.", "pytorch_lightning.",
                     "numpy.", "pathlib.", "_operator.getitem", "argparse.Namespace")
# The only real objects a pickle may reach: torch's tensor rebuilders, mappings and the builtin data types.
_REAL_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "defaultdict"): defaultdict,
    **{("builtins", t.__name__): t for t in (dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bool)},
}


class InertContainer(InertObject):
    """An :class:`InertObject` that also takes the items and elements a pickle appends or sets on it."""

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_inert_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_inert_elements", []).append(value)

    def extend(self, values: Any) -> None:
        for v in values:
            self.append(v)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` returns only allow-listed real objects (see the module docstring);
    every other global is an :class:`InertContainer` subclass named after it, recorded in ``self.stood_in`` (and,
    when not a known checkpoint-container class, in ``self.unexpected``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stood_in: set[str] = set()
        self.unexpected: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        # torch.save writes protocol 2, which names builtins the Python 2 way (``__builtin__.unicode``); the
        # default find_class maps them back (fix_imports), an override has to do it itself.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        real = _REAL_GLOBALS.get((module, name))
        if real is not None:
            return real
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        full = f"{module}.{name}"
        self.stood_in.add(full)
        if not any(full.startswith(p) for p in CONTAINER_GLOBALS):
            self.unexpected.add(full)
        return type(name, (InertContainer,), {"__module__": f"inert:{module}", "__qualname__": name})


def _restricted_pickle_module() -> tuple[types.ModuleType, list[RestrictedUnpickler]]:
    """A pickle module for ``torch.load(pickle_module=...)`` whose unpicklers are :class:`RestrictedUnpickler`
    (torch subclasses it to resolve its storages), and the list of the unpicklers it made."""
    made: list[RestrictedUnpickler] = []

    class Unpickler(RestrictedUnpickler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    module = types.ModuleType("ecg_adapt_restricted_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: Unpickler(f, **kw).load()  # type: ignore[attr-defined]  # legacy torch.save files
    return module, made


def read_lightning_checkpoint(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, Any]:
    """The top-level dict of a Lightning checkpoint, read without importing or running anything it names.

    Raises:
        ValueError: the file names globals outside a Lightning/Hydra checkpoint's classes (listed) and
            ``allow_pickle`` is False, or it is not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file")
    module, made = _restricted_pickle_module()
    try:
        # weights_only=False is safe here only because pickle_module restricts every global (see above).
        obj = torch.load(str(path), map_location="cpu", pickle_module=module, weights_only=False)
    except RuntimeError as e:
        if "explicit pickle_module" in str(e):  # TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 forbids any pickle module
            raise ValueError(f"{path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which forbids the restricted reader this "
                             "Lightning checkpoint needs (torch's weights-only reader refuses it); unset it to convert") from e
        raise ValueError(f"{path}: not a readable PyTorch/Lightning checkpoint ({e})") from e
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable PyTorch/Lightning checkpoint ({type(e).__name__}: {e})") from e
    unexpected = sorted(set().union(*(u.unexpected for u in made)))
    if unexpected and not allow_pickle:
        raise ValueError(
            f"{path} pickles {unexpected}, which a Lightning checkpoint of ECG-CPC has no reason to hold (it may be a "
            "file crafted to run code). Nothing was run: every such name was read as an inert object. Converting it "
            "anyway needs allow_pickle=True (ecg-adapt convert --allow-pickle), only for a file you trust."
        )
    if unexpected:
        logger.warning("%s: %s read as inert objects (allow_pickle=True)", path, unexpected)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: not a checkpoint dict (found {type(obj).__name__})")
    return dict(obj)


# Hydra keys -> ECGCPCConfig fields that tensors cannot tell.
_ENC_KEYS = {"strides": "encoder_strides", "dilations": "encoder_dilations"}
_PRED_KEYS = {"prenorm": "prenorm", "dropout": "dropout", "tie_dropout": "tie_dropout", "causal": "causal"}


def hparams_kwargs(hparams: Any, where: str) -> dict[str, Any]:
    """ECGCPCConfig kwargs from a Hydra config (``ts.enc`` / ``ts.pred``), plain or inert.

    Raises:
        ValueError: no ``ts.enc``/``ts.pred`` section, or an encoder/predictor this model does not implement.
    """
    cfg = plain(hparams)
    try:
        enc, pred = cfg["ts"]["enc"], cfg["ts"]["pred"]
    except (KeyError, TypeError):
        raise ValueError(f"{where}: no ts.enc / ts.pred sections in the hyperparameters (not an ECG-CPC config)") from None
    enc_target, pred_target = str(enc.get("_target_", "")), str(pred.get("_target_", ""))
    if not enc_target.endswith("RNNEncoder") or not pred_target.endswith("S4Predictor"):
        raise ValueError(f"{where}: ts.enc is {enc_target!r} and ts.pred {pred_target!r}; ECG-CPC is RNNEncoder + S4Predictor")
    if pred.get("batchnorm"):
        raise ValueError(f"{where}: ts.pred.batchnorm is true; ECG-CPC uses LayerNorm (the BatchNorm variant is not supported)")
    if enc.get("layer_norm") or enc.get("normalization") is False or enc.get("multi_prediction") or int(enc.get("timesteps_per_token", 1)) != 1:
        raise ValueError(f"{where}: ts.enc uses layer_norm/no normalization/multi_prediction/timesteps_per_token, "
                         "which ECG-CPC's encoder (Conv1d + BatchNorm1d + ReLU) does not")
    if str(pred.get("backbone", "s42")) != "s42":
        raise ValueError(f"{where}: ts.pred.backbone is {pred.get('backbone')!r}; only 's42' is implemented")
    out: dict[str, Any] = {}
    for key, field in _ENC_KEYS.items():
        if key in enc:
            out[field] = [int(v) for v in enc[key]]
    for key, field in _PRED_KEYS.items():
        if key in pred:
            out[field] = pred[key]
    for key, field in (("features", "encoder_features"), ("kss", "encoder_kernel_sizes")):
        if key in enc:
            out[field] = [int(v) for v in enc[key]]
    for key, field in (("model_dim", "model_dim"), ("state_dim", "state_dim"), ("layers", "num_layers")):
        if key in pred:
            out[field] = int(pred[key])
    return out


def canonicalise_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map the checkpoint's keys onto :class:`ECGCPCModel`'s (see the module docstring); tensors are made
    contiguous (the expanded S4 buffers) and the CPC head is dropped."""
    report = ConversionReport()
    out: dict[str, torch.Tensor] = {}
    rules = (
        (rf"^{re.escape(_ENCODER)}(\d+)\.0\.", r"encoder.layers.\1.conv."),
        (rf"^{re.escape(_ENCODER)}(\d+)\.1\.", r"encoder.layers.\1.norm."),
        (rf"^{re.escape(_PREDICTOR)}encoder\.", "input_projection."),
        (rf"^{re.escape(_PREDICTOR)}s4_layers\.(\d+)\.kernel\.kernel\.", r"blocks.\1.s4.kernel."),
        (rf"^{re.escape(_PREDICTOR)}s4_layers\.(\d+)\.output_linear\.0\.", r"blocks.\1.s4.output_linear."),
        (rf"^{re.escape(_PREDICTOR)}s4_layers\.(\d+)\.", r"blocks.\1.s4."),
        (rf"^{re.escape(_PREDICTOR)}norms\.(\d+)\.", r"blocks.\1.norm."),
    )
    for key, value in state_dict.items():
        if not key.startswith(BACKBONE_PREFIXES):
            report.dropped.append(key)
            continue
        new = key
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        else:
            new = key  # left as is: load_strict lists it as unexpected
        tensor = value.detach().contiguous().clone()  # B, P, w are stride-0 expanded views in the file
        if new.endswith("output_linear.bias") and tensor.dim() == 2 and tensor.shape[1] == 1:
            tensor = tensor[:, 0].contiguous()  # TransposedLinear's (2H, 1) bias
        if new != key:
            report.renamed[key] = new
        out[new] = tensor
    return out, report


def infer_config_kwargs(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The architecture that tensor shapes tell (``sd`` canonicalised)."""
    layers = key_indices(sd, r"encoder\.layers\.(\d+)\.conv\.weight")
    blocks = key_indices(sd, r"blocks\.(\d+)\.s4\.kernel\.C")
    if not layers or not blocks or layers != list(range(len(layers))) or blocks != list(range(len(blocks))):
        raise CheckpointMismatchError(
            "Not an ECG-CPC state dict: expected ts_encoder.encoder.layers.i.0.weight and "
            f"ts_encoder.predictor.predictor.s4_layers.i.kernel.kernel.C (found {sorted(sd)[:6]} ...)"
        )
    convs = [sd[f"encoder.layers.{i}.conv.weight"] for i in layers]
    c = sd["blocks.0.s4.kernel.C"]  # (channels, H, N/2, 2)
    omega = sd.get("blocks.0.s4.kernel.omega")
    if omega is None:
        raise CheckpointMismatchError("blocks.0: no S4 kernel buffer 'omega' (ts_encoder.predictor...kernel.kernel.omega)")
    return {
        "in_channels": int(convs[0].shape[1]),
        "encoder_features": [int(w.shape[0]) for w in convs],
        "encoder_kernel_sizes": [int(w.shape[2]) for w in convs],
        "model_dim": int(c.shape[1]),
        "state_dim": 2 * int(c.shape[2]),
        "num_layers": len(blocks),
        "causal": int(c.shape[0]) == 1,
        "l_max": 2 * (int(omega.shape[0]) - 1),
    }


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: not a Hydra config (a mapping with ts.enc / ts.pred)")
    return dict(data)


def _locate(src: Path, config_yaml: str | os.PathLike | None) -> tuple[Path, Path | None]:
    """The checkpoint file and the YAML config (if any) for ``src`` (a .ckpt, a YAML naming one, or a folder)."""
    yaml_path = Path(config_yaml) if config_yaml is not None else None
    if src.is_dir():
        ckpts = sorted(src.rglob("*.ckpt"))
        if len(ckpts) != 1:
            raise ValueError(f"{src} holds {len(ckpts)} .ckpt files ({[p.name for p in ckpts]}); give the checkpoint file")
        if yaml_path is None:
            yamls = sorted(p for p in src.rglob("*.yaml") if p.stem.startswith("config"))
            yaml_path = yamls[0] if len(yamls) == 1 else None
        return ckpts[0], yaml_path
    if src.suffix in (".yaml", ".yml"):
        named = (_read_yaml(src).get("trainer") or {}).get("pretrained")
        if not named:
            raise ValueError(f"{src}: trainer.pretrained does not name the checkpoint; give the .ckpt as src")
        ckpt = Path(named) if Path(named).is_absolute() else src.parent / named
        if not ckpt.is_file():
            raise FileNotFoundError(f"{src}: trainer.pretrained names {named!r}, which is not at {ckpt}")
        return ckpt, yaml_path or src
    if not src.is_file():
        raise FileNotFoundError(f"No ECG-CPC checkpoint at {src}")
    return src, yaml_path


def load_original(
    src: str | os.PathLike, allow_pickle: bool = False, config_yaml: str | os.PathLike | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> tuple[ECGCPCModel, ConversionReport]:
    """Load an original ECG-CPC checkpoint into :class:`ECGCPCModel` (eval mode).

    Args:
        src: the ``.ckpt`` as released, a folder holding exactly one, or the benchmark's YAML config whose
            ``trainer.pretrained`` names it.
        allow_pickle: read globals outside a Lightning/Hydra checkpoint's classes (as inert objects).
        config_yaml: the Hydra YAML config of the checkpoint (optional; the checkpoint holds its own).
        config_overrides: :class:`ECGCPCConfig` fields set over every other source (``ecg-adapt convert --config
            key=value``): what the tensors cannot tell (strides, dilations, ``prenorm``, dropout) for a checkpoint
            without hyperparameters or trained at a non-released setting.

    Raises:
        ValueError: unreadable file, unexpected pickled globals without ``allow_pickle``, hyperparameter sources
            that disagree, an override that contradicts the tensors, or an architecture this model does not
            implement.
        CheckpointMismatchError: keys or shapes disagree with the architecture (every offending key is listed).
    """
    ckpt_path, yaml_path = _locate(Path(src), config_yaml)
    ckpt = read_lightning_checkpoint(ckpt_path, allow_pickle=allow_pickle)
    raw = ckpt.get("state_dict")
    if not isinstance(raw, Mapping) or not raw or not all(torch.is_tensor(v) for v in raw.values()):
        raise ValueError(f"{ckpt_path}: no Lightning 'state_dict' of tensors (found keys {sorted(map(str, ckpt))})")
    state_dict, report = canonicalise_state_dict(raw)
    report.dropped.extend(f"checkpoint[{k!r}]" for k in ckpt if k != "state_dict")
    kwargs = infer_config_kwargs(state_dict)
    tensor_read = dict(kwargs)

    sources: list[tuple[str, dict[str, Any]]] = []
    if ckpt.get("hyper_parameters") is not None:
        sources.append((f"{ckpt_path} hyper_parameters", hparams_kwargs(ckpt["hyper_parameters"], f"{ckpt_path} hyper_parameters")))
    if yaml_path is not None:
        sources.append((str(yaml_path), hparams_kwargs(_read_yaml(yaml_path), str(yaml_path))))
    if not sources:
        logger.warning("%s: no hyperparameters; strides, dilations, norm placement and dropout of the release assumed", ckpt_path)
        sources.append(("the released architecture", {k: RELEASED_ARCHITECTURE[k] for k in (
            "encoder_strides", "encoder_dilations", "prenorm", "dropout", "tie_dropout")}))
    for where, hp in sources:
        for key, value in hp.items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(f"{where}: {key}={value!r} but the checkpoint's tensors give {kwargs[key]!r}")
            kwargs[key] = value
    for key, value in (config_overrides or {}).items():
        # Widths, layer counts, causality and l_max are read from the tensors: an override that disagrees could
        # only end in a shape mismatch, so it is refused with the flag that caused it.
        if key in tensor_read and tensor_read[key] != value:
            raise ValueError(f"--config {key}={value!r}: the checkpoint's tensors give {key}={tensor_read[key]!r}; "
                             "--config sets only what the tensors cannot tell (strides, dilations, prenorm, dropout)")
        if key in kwargs and kwargs[key] != value:
            logger.info("%s: --config %s=%r replaces %r", ckpt_path, key, value, kwargs[key])
        kwargs[key] = value
    if kwargs.get("encoder_dilations") is None:
        kwargs["encoder_dilations"] = [1] * len(kwargs["encoder_features"])
    config = ECGCPCConfig(**kwargs)
    model = ECGCPCModel(config)
    load_strict(model, state_dict, what=f"ECG-CPC checkpoint {ckpt_path}")
    logger.info("Loaded ECG-CPC from %s: %s", ckpt_path, report.summary())
    return model.eval(), report


def convert_ecg_cpc(
    src: str | os.PathLike, dst: str | os.PathLike, allow_pickle: bool = False, config_yaml: str | os.PathLike | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> ConversionReport:
    """Convert an original ECG-CPC checkpoint to ``dst`` (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json`` with the benchmark's preprocessing). ``config_overrides``: see
    :func:`load_original`.

    Example:
        >>> convert_ecg_cpc("ECG-CPC Checkpoint/last_11597276.ckpt", "converted/ecg-cpc")   # doctest: +SKIP
        >>> convert_ecg_cpc("bare.ckpt", "converted/ecg-cpc-s4", config_overrides={"encoder_strides": [4, 1, 1, 1]})  # doctest: +SKIP
    """
    model, report = load_original(src, allow_pickle=allow_pickle, config_yaml=config_yaml,
                                  config_overrides=config_overrides)
    save_converted(model, dst, default_processor_steps())
    return report
