"""Convert an ECGFM-KED release into an ecg_adapt folder (config + safetensors + processor config).

Accepted sources:

* the release as KED's ``main_mimiciv.py`` writes it (``best_valid_all_increase_with_augment_epoch_3.pt``, Zenodo
  record 14881564): a ``torch.save`` dict ``{'model': TQN decoder, 'ecg_model': XResNet1d, 'text_encoder':
  Bio_ClinicalBERT, 'optimizer', 'lr_scheduler', 'config', 'epoch'}``. The encoder is ``checkpoint['ecg_model']``
  (KED's test scripts load exactly that, strictly); the other entries are dropped and reported;
* a flat state dict whose encoder keys carry an ``ecg_model.`` prefix (the only layout the benchmark's
  ``EcgFmKEDWrapper`` handles; on the nested release it silently loads nothing), with or without ``module.``;
* a bare ``XResNet1d`` state dict (``0.0.weight``, ``4.0.convs.0.0.weight``, ...), or a safetensors file of one.

The original state dict stores every conv-path tensor twice, as ``S.B.convs.i.*`` and ``S.B.convpath.0.i.*``
(``convpath = Sequential(convs)``). The converter checks that every ``convpath`` tensor equals its ``convs`` twin
(refusing the file, with the keys, if one differs), keeps one, and maps the original indices onto
:class:`ECGFMKEDModel` names (table below). A head (``use_ecgNet_Diagnosis`` builds one after the stages) is
dropped and reported. Everything else must match exactly: a key that maps nowhere, a missing key or a shape that
disagrees is a :class:`~ecg_adapt.models.conversion.CheckpointMismatchError` listing every offending key.

=====================================  ==========================================
original                               ecg_adapt
=====================================  ==========================================
``{0,1,2}.0.weight``                   ``stem.{i}.conv.weight``
``{0,1,2}.1.*``                        ``stem.{i}.bn.*``
``{4+s}.{b}.convs.{j}.0.weight``       ``stages.{s}.{b}.convs.{j}.conv.weight``
``{4+s}.{b}.convs.{j}.1.*``            ``stages.{s}.{b}.convs.{j}.bn.*``
``{4+s}.{b}.convpath.0.{j}.*``         (the same tensors again: checked, dropped)
``{4+s}.{b}.idpath.{0|1}.{0|1}.*``     ``stages.{s}.{b}.idconv.{conv|bn}.*`` (``1`` after a pool)
=====================================  ==========================================

Every architecture hyperparameter is read from the tensors (leads, stem widths and kernel, expansion, blocks per
stage, stage widths, block kernel); ``input_contract`` (which the tensors cannot tell) picks the signal contract
and processor of the converted folder.
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
    CheckpointMismatchError,
    ConversionReport,
    key_indices,
    load_strict,
    save_converted,
    strip_prefix,
    torch_load_checkpoint,
)
from .configuration import ECGFMKEDConfig, default_processor_steps
from .family import INPUT_CONTRACTS
from .modeling import ECGFMKEDModel

logger = logging.getLogger(__name__)

ENCODER_ENTRY = "ecg_model"
_FLAT_PREFIXES = ("module.ecg_model.", "ecg_model.")
_STEM_LAYERS = 3
_FIRST_STAGE = 4  # index of the first stage in the original nn.Sequential (after 3 stem layers and the max-pool)

_STEM = re.compile(r"^([0-2])\.([01])\.(.+)$")
_CONVS = re.compile(r"^(\d+)\.(\d+)\.convs\.(\d+)\.([01])\.(.+)$")
_CONVPATH = re.compile(r"^(\d+)\.(\d+)\.convpath\.0\.(\d+)\.([01])\.(.+)$")
_IDPATH = re.compile(r"^(\d+)\.(\d+)\.idpath\.([01])\.([01])\.(.+)$")
_PART = {"0": "conv", "1": "bn"}


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The encoder state dict (original key names) of an ECGFM-KED file, and what else the file held.

    Pickles are read with ``torch.load(weights_only=True)`` (tensors and plain containers only; the release is
    plain dicts, ints and strings). A file that pickles other objects needs ``allow_pickle=True`` and even then
    runs no code from the file (see :func:`~ecg_adapt.models.conversion.torch_load_checkpoint`).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: no ECG encoder in the file (the message lists what it holds), or a pickle needing
            ``allow_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file: give the ECGFM-KED checkpoint (e.g. "
                                "best_valid_all_increase_with_augment_epoch_3.pt)")
    if path.suffix == ".safetensors":
        return _unwrap(load_file(str(path)), path)
    return _unwrap(torch_load_checkpoint(path, allow_pickle=allow_pickle), path)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    if isinstance(obj, Mapping) and ENCODER_ENTRY in obj:
        inner = obj[ENCODER_ENTRY]
        if not _is_state_dict(inner):
            raise ValueError(f"{path}: checkpoint['{ENCODER_ENTRY}'] is not a state dict of tensors "
                             f"({type(inner).__name__})")
        return dict(inner), [f"checkpoint[{k!r}]" for k in obj if k != ENCODER_ENTRY]
    if _is_state_dict(obj):
        for prefix in _FLAT_PREFIXES:
            if any(k.startswith(prefix) for k in obj):
                # A flat dict of the whole model: keep the encoder, report the rest (TQN, text encoder).
                keep = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
                return keep, [k for k in obj if not k.startswith(prefix)]
        return dict(obj), []
    found = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"{path}: not an ECGFM-KED checkpoint: no '{ENCODER_ENTRY}' entry, no 'ecg_model.' keys and not a "
                     f"bare state dict (found {found})")


def canonicalise_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map original ``XResNet1d`` keys onto :class:`ECGFMKEDModel` keys (table in the module docstring).

    Raises:
        CheckpointMismatchError: a ``convpath`` tensor differs from (or lacks) its ``convs`` twin, or an identity
            projection sits at the wrong ``idpath`` index for its block.
    """
    report = ConversionReport()
    sd = strip_prefix(state_dict, ("module.",), report)  # DistributedDataParallel wrappers
    stages = key_indices(sd, _CONVS.pattern)
    out: dict[str, torch.Tensor] = {}
    disagree: list[str] = []
    orphans: list[str] = []
    wrong_index: list[str] = []
    for key, value in sd.items():
        if m := _STEM.match(key):
            new = f"stem.{m.group(1)}.{_PART[m.group(2)]}.{m.group(3)}"
        elif m := _CONVS.match(key):
            new = f"stages.{int(m.group(1)) - _FIRST_STAGE}.{m.group(2)}.convs.{m.group(3)}.{_PART[m.group(4)]}.{m.group(5)}"
        elif m := _CONVPATH.match(key):
            twin = f"{m.group(1)}.{m.group(2)}.convs.{m.group(3)}.{m.group(4)}.{m.group(5)}"
            if twin not in sd:
                orphans.append(key)
            elif sd[twin].shape != value.shape or not torch.equal(sd[twin], value):
                disagree.append(f"{key} != {twin}")
            else:  # the same tensor as its twin: it maps onto the twin's new name
                report.renamed[key] = f"stages.{int(m.group(1)) - _FIRST_STAGE}.{m.group(2)}.convs.{m.group(3)}.{_PART[m.group(4)]}.{m.group(5)}"
            continue
        elif m := _IDPATH.match(key):
            stage, block = int(m.group(1)), int(m.group(2))
            # The 1x1 projection follows the AvgPool in strided blocks (first block of every stage but the first).
            expected = "1" if stage > _FIRST_STAGE and block == 0 else "0"
            if m.group(3) != expected:
                wrong_index.append(f"{key} (expected idpath.{expected} in block {stage}.{block})")
            new = f"stages.{stage - _FIRST_STAGE}.{block}.idconv.{_PART[m.group(4)]}.{m.group(5)}"
        elif stages and (m := re.match(r"^(\d+)\.", key)) and int(m.group(1)) > max(stages):
            report.dropped.append(key)  # the diagnosis head after the last stage
            continue
        else:
            out[key] = value  # maps nowhere: load_strict lists it as unexpected
            continue
        if new != key:
            report.renamed[key] = new
        out[new] = value
    problems = []
    if disagree:
        problems.append(f"convpath tensors that differ from their convs twin ({len(disagree)}): {disagree}")
    if orphans:
        problems.append(f"convpath tensors without a convs twin ({len(orphans)}): {orphans}")
    if wrong_index:
        problems.append(f"identity projections at the wrong idpath index ({len(wrong_index)}): {wrong_index}")
    if problems:
        raise CheckpointMismatchError(
            "Not a consistent ECGFM-KED XResNet1d state dict (every conv-path tensor is stored as convs.* and again "
            "as convpath.0.*, with the same values):\n  " + "\n  ".join(problems)
        )
    return out, report


def _blocks(sd: Mapping[str, torch.Tensor], stage: int) -> list[int]:
    return key_indices(sd, rf"stages\.{stage}\.(\d+)\.")


def infer_config_kwargs(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Read the ``XResNet1d`` architecture from the tensor shapes of a canonicalised state dict."""
    try:
        stem = [state_dict[f"stem.{i}.conv.weight"] for i in range(_STEM_LAYERS)]
    except KeyError as e:
        raise CheckpointMismatchError(
            f"Not an ECGFM-KED XResNet1d state dict: no stem conv {e.args[0]!r} (original '0.0.weight', '1.0.weight', "
            f"'2.0.weight'; first keys: {sorted(state_dict)[:6]})"
        ) from None
    stages = key_indices(state_dict, r"stages\.(\d+)\.")
    if not stages or stages != list(range(len(stages))):
        raise CheckpointMismatchError(f"the residual stages are not numbered 4..: found stage indices {stages}")
    layers = []
    for s in stages:
        blocks = _blocks(state_dict, s)
        if blocks != list(range(len(blocks))):
            raise CheckpointMismatchError(f"stage {s + _FIRST_STAGE} has blocks {blocks}, not 0..n-1")
        layers.append(len(blocks))
    first = "stages.0.0.convs.{}.conv.weight"
    n_convs = len(key_indices(state_dict, r"stages\.0\.0\.convs\.(\d+)\.conv\.weight$"))
    if n_convs not in (2, 3):
        raise CheckpointMismatchError(f"the first block has {n_convs} convs; an XResNet1d block has 2 (basic) or 3 (bottleneck)")
    nf = [int(state_dict[f"stages.{s}.0.convs.0.conv.weight"].shape[0]) for s in stages]
    last = state_dict[first.format(n_convs - 1)]
    expansion = int(last.shape[0]) // nf[0]
    kernel = state_dict[first.format(1 if n_convs == 3 else 0)]
    in_channels = int(state_dict[first.format(0)].shape[1])
    return {
        "input_channels": int(stem[0].shape[1]),
        "expansion": expansion,
        "layers": layers,
        "stem_szs": [int(w.shape[0]) for w in stem],
        "kernel_size": int(kernel.shape[-1]),
        "kernel_size_stem": int(stem[0].shape[-1]),
        "block_szs": [in_channels // expansion, *nf],
    }


def load_original(
    src: str | Path, allow_pickle: bool = False, input_contract: str = "original",
    config_overrides: dict[str, Any] | None = None,
) -> tuple[ECGFMKEDModel, ConversionReport]:
    """Load an original ECGFM-KED checkpoint's ECG encoder into :class:`ECGFMKEDModel` (eval mode).

    ``input_contract`` (``"original"``: 100 Hz, MIMIC lead order; ``"benchmark"``: 500 Hz, standard order) is
    recorded in the config; the weights are the same. ``config_overrides`` replaces inferred config fields (an
    ``input_contract`` there wins over the argument).

    Raises:
        ValueError: not an ECGFM-KED checkpoint, an unknown ``input_contract``, or a pickle needing ``allow_pickle``.
        CheckpointMismatchError: duplicated tensors disagree, or keys/shapes do not match (every offending key is
            listed).
    """
    if input_contract not in INPUT_CONTRACTS:
        raise ValueError(f"input_contract must be one of {list(INPUT_CONTRACTS)}, got {input_contract!r}")
    raw, other_entries = read_checkpoint(src, allow_pickle=allow_pickle)
    state_dict, report = canonicalise_state_dict(raw)
    report.dropped.extend(other_entries)
    kwargs = {**infer_config_kwargs(state_dict), "input_contract": input_contract, **(config_overrides or {})}
    model = ECGFMKEDModel(ECGFMKEDConfig(**kwargs))
    load_strict(model, state_dict, what=f"ECGFM-KED ECG encoder of {src}")
    logger.info("Loaded ECGFM-KED encoder from %s: %s", src, report.summary())
    return model.eval(), report


def convert_ecgfm_ked(
    src: str | Path, dst: str | Path, allow_pickle: bool = False, input_contract: str = "original",
    config_overrides: dict[str, Any] | None = None,
) -> ConversionReport:
    """Convert an original ECGFM-KED checkpoint to ``dst`` (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json`` with the preprocessing of ``input_contract``).

    Example:
        >>> convert_ecgfm_ked("best_valid_all_increase_with_augment_epoch_3.pt", "converted/ecgfm-ked")   # doctest: +SKIP
        >>> convert_ecgfm_ked("best_valid_all_increase_with_augment_epoch_3.pt", "converted/ecgfm-ked-benchmark",
        ...                   input_contract="benchmark")                                                  # doctest: +SKIP
    """
    model, report = load_original(src, allow_pickle=allow_pickle, input_contract=input_contract,
                                  config_overrides=config_overrides)
    # The config's contract (config_overrides may name it too) decides the saved processor.
    save_converted(model, dst, default_processor_steps(input_contract=model.config.input_contract))
    return report
