"""Methods implemented by peft: LoRA (rsLoRA, DoRA, PiSSA/OLoRA options), IA³, LoHa, LoKr, VeRA, OFT and BOFT.

Every method is one peft tuner wrapped around the whole :class:`~ecg_adapt.ECGClassifier`; the classifier head is
trained next to the adapter through peft's ``modules_to_save=["classifier"]``.

Saved layout (:func:`save_backbone_adapter`, called by :func:`~ecg_adapt.adaptation.save_adapted`): the folder is a
plain peft adapter *of the backbone*, so any peft user loads it without ecg_adapt's classifier::

    register_all_with_transformers()                            # ecg_adapt.models.registry: the families
    backbone = AutoModel.from_pretrained(backbone_id)
    model = PeftModel.from_pretrained(backbone, folder)          # the adapted backbone, exactly

* ``adapter_model.safetensors``: the adapter tensors keyed as on the bare backbone (``base_model.model.<module
  of the backbone>.lora_A.weight``; the classifier's ``backbone.`` prefix removed), VeRA's projections as peft
  names them (``base_model.vera_A``).
* ``adapter_config.json``: peft's config with ``target_modules`` relative to the backbone, ``modules_to_save`` empty
  (the bare backbone has no head to save), ``base_model_name_or_path`` = the backbone's id or folder.
* ``head.safetensors`` (:data:`HEAD_WEIGHTS_NAME`): the trained head, keyed as in the classifier
  (``classifier.weight``, ...); with the classifier's ``config.json`` it rebuilds the head on top of the adapted
  backbone. (peft's own ``modules_to_save`` layout cannot hold it: the bare backbone has no module to load it into,
  and peft would only warn.)

:func:`load_peft_adapted` rebuilds the training-time structure (the tuner around the whole classifier, head in
``modules_to_save``) from these files and refuses, naming the keys and the file, an adapter or head whose tensors do
not all match the model (peft itself only warns and leaves the layers at their initial values). Folders saved before
this layout (keys with the ``backbone.`` prefix, head inside the adapter file) still load.

How :class:`~ecg_adapt.adaptation.AdaptationConfig` fields become peft config fields (``-``: not used; a LoRA-only
option or ``oft_block_size`` set on another method is an error rather than silently dropped):

=================  ==================  =========  ================  ================  ==================  ==========================
AdaptationConfig   lora (LoraConfig)   ia3        loha, lokr        vera              oft                 boft
=================  ==================  =========  ================  ================  ==================  ==========================
r                  r                   -          r                 r                 r (blocks/layer)    -
alpha              lora_alpha          -          alpha             -                 -                   -
dropout            lora_dropout        -          module_dropout    vera_dropout      module_dropout      boft_dropout
target_modules     target_modules      same       same              same              same                same
use_rslora         use_rslora          -          -                 -                 -                   -
use_dora           use_dora            -          -                 -                 -                   -
init_lora_weights  init_lora_weights   -          -                 -                 -                   -
oft_block_size     -                   -          -                 -                 oft_block_size      -
                                                                                      (then r=0)
boft_block_size    -                   -          -                 -                 -                   boft_block_size
boft_n_butterfly_  -                   -          -                 -                 -                   boft_n_butterfly_factor
factor                                                                                                    (boft_block_num=0)
fixed              bias="none"         feedfor-   -                 save_projection   bias="none"         bias="none"
                                       ward_mod-                    =True,
                                       ules                         bias="none"
=================  ==================  =========  ================  ================  ==================  ==========================

``target_modules=None`` takes the (method, family) default:

* LoRA, LoHa, LoKr: the family's ``lora_target_modules`` (every projection of every transformer block; the
  pointwise convs of ECGFounder; the residual-path convs of MERL's ResNet).
* VeRA, OFT, BOFT (nn.Linear only in peft 0.21.2): the family default where it is all ``nn.Linear`` (the transformer
  families). ECGFounder: its only Linear layers, the squeeze-excitation gates ``se_fc1``/``se_fc2`` of every block
  (adapting them re-weights each block's channels; they hold about half as many weights as the pointwise convs).
  MERL ResNet: refused (every weight layer is a convolution).
* IA³ (Liu et al. 2022) rescales keys, values and the FFN's inner activation: targets are the key and value
  projections and the second FFN layer, which is also listed in ``feedforward_modules`` (so its *input*, the inner
  activation, is rescaled). Where q/k/v come from one fused Linear (ST-MEM, MERL ViT, ECG-JEPA) the vector rescales
  q as well, as peft's own IA³ default does for GPT-2's fused ``c_attn``. ECGFounder: ``se_fc2`` as a feed-forward
  module (rescales the squeeze-excitation's hidden activation). MERL ResNet: refused. With user ``target_modules``
  the feed-forward modules are those of the family's FFN layers (its ``ia3_feedforward``) among them.

peft 0.21.2 facts the checks encode (read in ``peft/tuners/<tuner>/model.py`` and ``layer.py``, and run):

* Layer types each tuner's ``_create_new_module`` accepts: LoRA ``nn.Linear, nn.Embedding, nn.Conv1d/2d/3d,
  nn.MultiheadAttention, transformers Conv1D``; IA³ ``nn.Linear, nn.Conv2d, nn.Conv3d, Conv1D``; LoHa, LoKr
  ``nn.Linear, nn.Conv1d, nn.Conv2d`` (grouped convs included); VeRA ``nn.Linear, Conv1D``; OFT ``nn.Linear,
  nn.Conv2d, nn.Embedding``; BOFT ``nn.Linear, nn.Conv2d``. OFT on Conv2d is refused here: its merge is not
  equivalent to its forward (measured in ``/work/shared/reference/peft_accelerate_hub.md``).
* LoRA on a grouped conv needs ``r % groups == 0`` (``_ConvNd.__init__``) and cannot be merged (``merge`` raises
  ``NotImplementedError``): its ``lora_A`` is an ungrouped conv, so B·A mixes all input channels and has no weight
  of the grouped conv's shape. For the same reason DoRA's weight norm (``_DoraConvNdLayer``, which reshapes B·A to
  the weight's shape) is meaningless there, so DoRA on grouped convs is refused. DoRA itself exists for
  ``nn.Linear`` and ``nn.Conv1d/2d/3d`` (``DoraConv1dVariant``).
* PiSSA and OLoRA initialise ``nn.Linear`` only (``LoraLayer.update_layer``; the conv ``update_layer`` raises
  ``Unknown initialization``).
* OFT silently *changes* an ``r``/``oft_block_size`` that does not divide ``in_features`` (with a warning); BOFT
  raises; BOFT silently trains with ``boft_n_butterfly_factor=1`` when its CUDA extension cannot be built. All three
  are refused up front, so ``adapter_config.json`` always describes the saved weights.
* VeRA sizes its shared random projections to the largest (out, in) over the targets and slices them per layer, so
  targets of different shapes are fine; the projections are frozen buffers saved in the adapter file
  (``save_projection=True``, so a reload never depends on regenerating them).
* Merging writes ``base_layer.weight.data``; on a parametrised layer (weight norm, as HuBERT-ECG's and ECG-FM's
  positional convs) the parametrisation recomputes the weight and the merged model silently loses the adapter
  (measured for LoRA, DoRA, LoHa and LoKr), so :func:`~ecg_adapt.adaptation.merge_for_deployment` refuses it.

PiSSA and OLoRA change the base weights at initialisation (``W_res = W - s·B0·A0``), so an adapter saved as trained
only works on ``W_res``. Their models save the adapter converted to a plain LoRA of rank ``2r`` on the *original*
backbone (``ΔW = s·(B·A − B0·A0) = s·[B, −B0]·[A; A0]``, the conversion of peft's
``path_initial_model_for_weight_conversion``, which however drops ``modules_to_save``), so ``load_adapted`` rebuilds
them on the unmodified backbone; ``adaptation_config.json`` still records how the adapter was trained. (Saved as
trained, a reload re-runs the initialisation on the fresh backbone: exact for ``"pissa"``, but ``"pissa_niter_<n>"``
draws a random subspace and gave logits off by 0.17 on a tiny ST-MEM.)
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import BOFTConfig, IA3Config, LoHaConfig, LoKrConfig, LoraConfig, OFTConfig, PeftConfig, PeftModel, VeraConfig
from peft.tuners.boft.model import BOFTModel
from peft.tuners.ia3.model import IA3Model
from peft.tuners.loha.model import LoHaModel
from peft.tuners.lokr.model import LoKrModel
from peft.tuners.lora import LoraLayer
from peft.tuners.lora.model import LoraModel
from peft.tuners.oft.model import OFTModel
from peft.tuners.tuners_utils import BaseTunerLayer, check_target_module_exists
from peft.tuners.vera.model import VeraModel
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize
from transformers.pytorch_utils import Conv1D

from ..models.classifier import ECGClassifier
from ..models.family import DefaultTargets
from ..models.registry import FAMILIES, family_of
from .config import AdaptationConfig, MethodSpec, UnsupportedAdaptationError, register_method
from .layout import family_key
from .native import HEAD_MODULE, is_head_parameter

PEFT_METHODS: tuple[str, ...] = ("lora", "ia3", "loha", "lokr", "vera", "oft", "boft")

# ----------------------------------------------------------------------------------------------------------------
# What peft 0.21.2 wraps (see the module docstring for where each fact was read).


@dataclass(frozen=True)
class _Tuner:
    """One peft tuner as ecg_adapt uses it."""

    prefix: str  # peft's parameter-name prefix of the trained tensors (``<Tuner>Model.prefix``)
    layer_types: tuple[type[nn.Module], ...]  # what ecg_adapt lets it wrap
    layer_names: str  # the same, for messages
    linear_only: bool  # default targets must be nn.Linear (no Conv1d support)


_TUNERS: dict[str, _Tuner] = {
    "lora": _Tuner(LoraModel.prefix, (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, Conv1D),
                   "nn.Linear/nn.Conv1d/nn.Conv2d/nn.Conv3d/nn.Embedding", False),
    "ia3": _Tuner(IA3Model.prefix, (nn.Linear, nn.Conv2d, nn.Conv3d, Conv1D), "nn.Linear/nn.Conv2d/nn.Conv3d", True),
    "loha": _Tuner(LoHaModel.prefix, (nn.Linear, nn.Conv1d, nn.Conv2d), "nn.Linear/nn.Conv1d/nn.Conv2d", False),
    "lokr": _Tuner(LoKrModel.prefix, (nn.Linear, nn.Conv1d, nn.Conv2d), "nn.Linear/nn.Conv1d/nn.Conv2d", False),
    "vera": _Tuner(VeraModel.prefix, (nn.Linear, Conv1D), "nn.Linear", True),
    # peft's OFT also takes nn.Conv2d/nn.Embedding; Conv2d is left out (merge is not equivalent, see docstring).
    "oft": _Tuner(OFTModel.prefix, (nn.Linear,), "nn.Linear", True),
    "boft": _Tuner(BOFTModel.prefix, (nn.Linear, nn.Conv2d), "nn.Linear/nn.Conv2d", True),
}

# Where PyTorch's fused inference kernels read the base weights directly, bypassing peft's wrappers in eval().
_FAST_PATH_MODULES = (nn.TransformerEncoderLayer, nn.MultiheadAttention)

_LORA_INITS_ANY_LAYER = (True, False, "gaussian")
_LORA_INITS_LINEAR_ONLY = ("pissa", "olora")  # + "pissa_niter_<n>"; these change the base weights
_PISSA_NITER = re.compile(r"pissa_niter_(\d+)")

# ----------------------------------------------------------------------------------------------------------------
# Default targets per (method, family) are facts of each family (``FAMILY.variants[key].targets``, a
# :class:`~ecg_adapt.models.family.DefaultTargets`, declared in the family's folder); these helpers only read them.


def _family_label(clf: ECGClassifier) -> str:
    try:
        return family_key(clf.backbone)
    except AttributeError:
        return type(clf.backbone).__name__


def _family_targets(clf: ECGClassifier) -> DefaultTargets | None:
    """The default targets of the backbone's family variant, ``None`` for an unregistered backbone."""
    family = family_of(clf.backbone)
    if family is None:
        return None
    return family.variant(family.key_of(clf.backbone.config)).targets


def _no_linear_reason(clf: ECGClassifier) -> str:
    targets = _family_targets(clf)
    return (targets.no_linear_reason if targets else None) or "the backbone has no layer of those types"


def default_target_modules(clf: ECGClassifier, method: str) -> tuple[str, ...]:
    """The module-name suffixes ``method`` wraps on this backbone when ``target_modules`` is not given.

    Raises:
        UnsupportedAdaptationError: the backbone's family is not registered (pass ``target_modules``).

    Example:
        >>> default_target_modules(classifier, "ia3")     # doctest: +SKIP
        ('k_proj', 'v_proj', 'output_dense')
    """
    targets = _family_targets(clf)
    if targets is None:
        model_type = getattr(getattr(clf.backbone, "config", None), "model_type", None)
        raise UnsupportedAdaptationError(
            f"{method} has no default targets for backbone {model_type or type(clf.backbone).__name__!r} (not a "
            "registered family): pass target_modules=[...] (module-name suffixes of its nn.Linear layers)"
        )
    if method == "ia3":
        return targets.ia3
    if _TUNERS[method].linear_only:
        return targets.for_linear_tuners()
    return targets.lora


def target_modules(clf: ECGClassifier, config: AdaptationConfig) -> list[str]:
    """The configured target modules, or the (method, family) default (:func:`default_target_modules`)."""
    if config.target_modules:
        # A single name (e.g. from a YAML scalar) is one suffix, not a list of characters.
        return [config.target_modules] if isinstance(config.target_modules, str) else list(config.target_modules)
    return list(default_target_modules(clf, config.method))


def _feedforward_modules(clf: ECGClassifier, targets: list[str]) -> list[str]:
    family_targets = _family_targets(clf)
    ffn = set(family_targets.ia3_feedforward) if family_targets else set()
    return [t for t in targets if t in ffn]


# ----------------------------------------------------------------------------------------------------------------
# peft configs


def _oft_sizes(config: AdaptationConfig) -> tuple[int, int]:
    """(r, oft_block_size) as peft wants them: exactly one non-zero; ``oft_block_size`` wins when set."""
    return (0, config.oft_block_size) if config.oft_block_size else (config.r, 0)


def peft_config_for(clf: ECGClassifier, config: AdaptationConfig) -> PeftConfig:
    """The peft config that :func:`adapt` hands to peft for this classifier (see the mapping table above).

    Example:
        >>> peft_config_for(classifier, AdaptationConfig(method="vera", r=16)).r   # doctest: +SKIP
        16
    """
    method = config.method
    targets = target_modules(clf, config)
    common: dict[str, Any] = {"target_modules": targets, "modules_to_save": [HEAD_MODULE]}
    if method == "lora":
        return LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, use_rslora=config.use_rslora,
                          use_dora=config.use_dora, init_lora_weights=config.init_lora_weights, bias="none", **common)
    if method == "ia3":
        return IA3Config(feedforward_modules=_feedforward_modules(clf, targets), **common)
    if method == "loha":
        return LoHaConfig(r=config.r, alpha=config.alpha, module_dropout=config.dropout, **common)
    if method == "lokr":
        return LoKrConfig(r=config.r, alpha=config.alpha, module_dropout=config.dropout, **common)
    if method == "vera":
        return VeraConfig(r=config.r, vera_dropout=config.dropout, save_projection=True, bias="none", **common)
    if method == "oft":
        r, block = _oft_sizes(config)
        return OFTConfig(r=r, oft_block_size=block, module_dropout=config.dropout, bias="none", **common)
    if method == "boft":
        return BOFTConfig(boft_block_size=config.boft_block_size, boft_block_num=0,
                          boft_n_butterfly_factor=config.boft_n_butterfly_factor, boft_dropout=config.dropout,
                          bias="none", **common)
    raise ValueError(f"{method!r} is not a peft method; peft methods: {list(PEFT_METHODS)}")


# ----------------------------------------------------------------------------------------------------------------
# Checks


def _matched_suffix(name: str, targets: Iterable[str]) -> str:
    for t in targets:
        if name == t or name.endswith("." + t):
            return t
    return name


def resolve_targets(clf: ECGClassifier, config: AdaptationConfig) -> dict[str, nn.Module]:
    """The modules (qualified name -> module) peft will wrap, matched with peft's own rule (name suffixes; the
    head, trained whole through ``modules_to_save``, is never a target)."""
    peft_config = _matching_config(clf, config)
    return {
        name: module
        for name, module in clf.named_modules()
        if name and not (name == HEAD_MODULE or name.startswith(HEAD_MODULE + "."))  # peft skips modules_to_save
        and check_target_module_exists(peft_config, name) is True
    }


def _matching_config(clf: ECGClassifier, config: AdaptationConfig) -> LoraConfig:
    # Target matching is the same for every tuner (BaseTuner._check_target_module_exists); a LoraConfig carries it
    # without tripping method-specific validation of unchecked values.
    return LoraConfig(target_modules=target_modules(clf, config), modules_to_save=[HEAD_MODULE])


def _type_name(module: nn.Module) -> str:
    """``nn.Conv1d`` for torch.nn layers, the class name otherwise."""
    cls = type(module)
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn") else cls.__name__


def _describe(modules: Mapping[str, nn.Module], targets: list[str], detail: Callable[[nn.Module], str] = _type_name) -> str:
    """``conv1.conv (5x nn.Conv1d), conv3.conv (5x nn.Conv1d)``: offending modules grouped by the target they matched."""
    groups: dict[tuple[str, str], int] = {}
    for name, module in modules.items():
        what = detail(module)
        key = (_matched_suffix(name, targets), what)
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(f"{suffix} ({n}x {what})" for (suffix, what), n in groups.items())


def _fail(method: str, clf: ECGClassifier, reason: str, suggestion: str = "") -> None:
    msg = f"{method} cannot adapt {_family_label(clf)}: {reason}"
    if suggestion:
        msg += f". {suggestion}"
    raise UnsupportedAdaptationError(msg)


def _check_options(clf: ECGClassifier, config: AdaptationConfig) -> None:
    method = config.method
    if method != "lora":
        lora_only = [name for name, value, default in (("use_dora", config.use_dora, False),
                                                        ("use_rslora", config.use_rslora, False),
                                                        ("init_lora_weights", config.init_lora_weights, True))
                     if value != default]
        if lora_only:
            _fail(method, clf, f"{', '.join(lora_only)} {'is a LoRA option' if len(lora_only) == 1 else 'are LoRA options'}",
                  f"Use method='lora', or leave {', '.join(lora_only)} at the default")
    if method != "oft" and config.oft_block_size:
        _fail(method, clf, "oft_block_size is an OFT option", "Use method='oft', or leave oft_block_size=0")
    if method == "lora":
        init = config.init_lora_weights
        if not (init in _LORA_INITS_ANY_LAYER or init in _LORA_INITS_LINEAR_ONLY
                or (isinstance(init, str) and _PISSA_NITER.fullmatch(init))):
            _fail("lora", clf, f"init_lora_weights={init!r} is not supported by ecg_adapt (it needs data, quantisation "
                  "or a pre-processing step that adapt() does not run)",
                  "Supported: True, False, 'gaussian', 'pissa', 'pissa_niter_<n>', 'olora'")
    if method == "oft" and (config.oft_block_size < 0 or (config.r == 0 and config.oft_block_size == 0)):
        _fail("oft", clf, f"OFT needs r (blocks per layer) or oft_block_size > 0, got r={config.r}, "
              f"oft_block_size={config.oft_block_size}")
    if method == "boft":
        if config.boft_block_size < 1 or config.boft_n_butterfly_factor < 1:
            _fail("boft", clf, f"boft_block_size ({config.boft_block_size}) and boft_n_butterfly_factor "
                  f"({config.boft_n_butterfly_factor}) must be >= 1")
        if config.boft_n_butterfly_factor > 1:
            from peft.tuners.boft.layer import get_fbd_cuda

            if not get_fbd_cuda():
                _fail("boft", clf, f"boft_n_butterfly_factor={config.boft_n_butterfly_factor} needs peft's fbd_cuda "
                      "extension (CUDA + ninja), which cannot be built here; without it peft 0.21 silently trains "
                      "with factor 1 while adapter_config.json records the requested factor",
                      "Use boft_n_butterfly_factor=1 (OFT-style block-diagonal rotations)")


def _divisors(dims: list[int], min_block: int) -> list[int]:
    """Values ``v`` dividing every dim with ``dim // v >= min_block``."""
    g = 0
    for d in dims:
        g = math.gcd(g, d)
    return [v for v in range(1, g + 1) if g % v == 0 and min(dims) // v >= min_block]


def _check_block_sizes(clf: ECGClassifier, config: AdaptationConfig, modules: dict[str, nn.Module], targets: list[str]) -> None:
    """OFT/BOFT rotate each target's input features in blocks: the blocks must tile ``in_features`` exactly."""
    dims = sorted({m.in_features for m in modules.values()})

    def in_features(m: nn.Module) -> str:
        return f"in_features={m.in_features}"

    if config.method == "oft":
        r, block = _oft_sizes(config)
        # A block of 1 feature is a fixed 1x1 rotation: it trains nothing.
        if block:
            bad = {n: m for n, m in modules.items() if m.in_features % block or block < 2}
            setting = f"oft_block_size={block}"
        else:
            bad = {n: m for n, m in modules.items() if m.in_features % r or m.in_features // r < 2}
            setting = f"r={r} (blocks per layer)"
        if bad:
            fit_r, fit_block = _divisors(dims, 2), [v for v in _divisors(dims, 1) if v >= 2]
            _fail("oft", clf, f"{setting} must split the in_features of every target into equal blocks of >= 2 features "
                  f"(peft 0.21 would silently change it); in_features of the targets: {dims}; does not fit: "
                  f"{_describe(bad, targets, in_features)}",
                  f"Values that fit every target: r in {fit_r} or oft_block_size in {fit_block}" if fit_r
                  else "No single r or oft_block_size fits every target: choose target_modules of one width")
    else:
        block, factor = config.boft_block_size, config.boft_n_butterfly_factor
        step = block * 2 ** (factor - 1)

        def fits(d: int, b: int) -> bool:
            if d % (b * 2 ** (factor - 1)):
                return False
            return factor == 1 or (b % 2 == 0 and (d // b) % 2 == 0)

        if block < 2:
            _fail("boft", clf, "boft_block_size=1 rotates nothing (a 1x1 orthogonal block is fixed)",
                  "Use boft_block_size >= 2 (default 4)")
        bad = {n: m for n, m in modules.items() if not fits(m.in_features, block)}
        if bad:
            fit = [v for v in _divisors(dims, 1) if v >= 2 and all(fits(d, v) for d in dims)]
            _fail("boft", clf, f"boft_block_size={block} x 2^(boft_n_butterfly_factor-1) = {step} must divide the "
                  "in_features of every target (with even block sizes and counts when the factor is > 1); in_features "
                  f"of the targets: {dims}; does not fit: {_describe(bad, targets, in_features)}",
                  f"boft_block_size values that fit every target: {fit}" if fit else
                  "No boft_block_size fits every target: choose target_modules of one width")


def check_peft_method(clf: ECGClassifier, config: AdaptationConfig) -> None:
    """Raise :class:`UnsupportedAdaptationError` if peft cannot (or would silently not) apply ``config`` here.

    Looks at the actual target modules of this backbone: that there are some, that their layer types are ones
    the tuner wraps, that none sits inside a module whose fused eval path ignores adapters, and the method's own
    constraints (grouped convs for LoRA, Linear-only initialisations, OFT/BOFT block sizes). Nothing is modified.

    Example:
        >>> check_peft_method(classifier, AdaptationConfig(method="ia3"))   # doctest: +SKIP
        UnsupportedAdaptationError: ia3 cannot adapt merl/resnet: ...
    """
    method = config.method
    tuner = _TUNERS[method]
    _check_options(clf, config)
    user_targets = bool(config.target_modules)
    if not user_targets:
        targets = list(default_target_modules(clf, method))
        if not targets:
            others = "lora, loha or lokr (which wrap nn.Conv1d)"
            _fail(method, clf, f"peft 0.21's {method} wraps {tuner.layer_names} only and "
                  f"{_no_linear_reason(clf)}",
                  f"Use {others}, or conv_adapter")
    else:
        targets = target_modules(clf, config)
    modules = resolve_targets(clf, config)
    if user_targets:
        names = [n for n, _ in clf.named_modules()]
        unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names if not _in_head(n))]
        if unmatched:
            _fail(method, clf, f"target_modules {unmatched} match no module of the backbone (the head "
                  f"'{HEAD_MODULE}' is trained whole and is never a target)",
                  f"Adaptable layers end with e.g. {_example_suffixes(clf, tuner)}")
    if not modules:
        _fail(method, clf, f"no module matches target_modules {targets}")

    # First: peft does wrap nn.MultiheadAttention, but its eval() fast path would ignore the wrapper.
    fast_path = _fast_path_modules(clf)
    trapped = {n: a for n in modules if (a := _inside(n, fast_path))}
    if trapped:
        first = next(iter(trapped))
        _fail(method, clf, f"targets {sorted(trapped)[:4]} sit inside {type(trapped[first]).__name__} "
              f"({trapped[first].__class__.__module__}), whose fused eval() fast path reads the base weights directly and "
              "silently ignores peft's wrappers (adapted and plain model give the same eval outputs)",
              "Re-implement the attention with plain nn.Linear projections (as ecg_adapt's ECG-FM does), or target "
              "other layers")

    wrong = {n: m for n, m in modules.items() if not isinstance(m, tuner.layer_types)}
    if wrong:
        linear = [n for n, m in clf.backbone.named_modules() if isinstance(m, nn.Linear)]
        suggestion = ("Use lora, loha or lokr (which wrap nn.Conv1d)" if tuner.linear_only and
                      any(isinstance(m, nn.Conv1d) for m in wrong.values()) else "")
        if tuner.linear_only and linear and user_targets:
            suggestion += f"{'; or' if suggestion else 'Or'} target nn.Linear layers, e.g. {_example_suffixes(clf, tuner)}"
        kind = "targets" if user_targets else "default targets"
        _fail(method, clf, f"its {kind} {_describe(wrong, targets)} are not layers peft 0.21's {method} wraps "
              f"({tuner.layer_names} only)", suggestion)

    if method == "lora":
        _check_lora_layers(clf, config, modules, targets)
    elif method in ("oft", "boft"):
        _check_block_sizes(clf, config, modules, targets)


def _in_head(name: str) -> bool:
    return name == HEAD_MODULE or name.startswith(HEAD_MODULE + ".")


def _example_suffixes(clf: ECGClassifier, tuner: _Tuner) -> list[str]:
    seen: list[str] = []
    for name, m in clf.named_modules():
        if name and not _in_head(name) and isinstance(m, tuner.layer_types):
            suffix = ".".join(p for p in name.split(".")[-2:] if not p.isdigit())
            if suffix not in seen:
                seen.append(suffix)
    return seen[:6]


def _fast_path_modules(clf: ECGClassifier) -> dict[str, nn.Module]:
    return {n: m for n, m in clf.named_modules() if isinstance(m, _FAST_PATH_MODULES)}


def _inside(name: str, containers: Mapping[str, nn.Module]) -> nn.Module | None:
    """The first container that is ``name`` itself or one of its ancestors."""
    for prefix, module in containers.items():
        if name == prefix or name.startswith(prefix + ".") or not prefix:
            return module
    return None


def _check_lora_layers(clf: ECGClassifier, config: AdaptationConfig, modules: dict[str, nn.Module], targets: list[str]) -> None:
    init = config.init_lora_weights
    if isinstance(init, str) and (init in _LORA_INITS_LINEAR_ONLY or _PISSA_NITER.fullmatch(init)):
        not_linear = {n: m for n, m in modules.items() if not isinstance(m, nn.Linear)}
        if not_linear:
            _fail("lora", clf, f"init_lora_weights={init!r} is implemented for nn.Linear only in peft 0.21 (the conv "
                  f"layers' update_layer knows True/'gaussian' only) and the targets {_describe(not_linear, targets)} are not "
                  "nn.Linear", "Use init_lora_weights=True (or 'gaussian'), or target the nn.Linear layers only")
    grouped = {n: m for n, m in modules.items() if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1}
    bad = {n: m for n, m in grouped.items() if config.r % m.groups}
    if bad:
        lcm = math.lcm(*(m.groups for m in grouped.values()))
        _fail("lora", clf, f"peft 0.21 needs r divisible by the groups of a grouped convolution, and r={config.r} "
              f"does not divide for {_describe(bad, targets, lambda m: f'{type(m).__name__} groups={m.groups}')}",
              f"Use r as a multiple of {lcm}, or drop those targets (a LoRA on a grouped conv cannot be merged either)")
    if config.use_dora and grouped:
        _fail("lora", clf, "the LoRA update of a grouped convolution mixes all input channels (peft's lora_A is an "
              "ungrouped conv), so it has no weight of the conv's shape and DoRA's per-channel norm of W + s·B·A "
              f"(peft reshapes B·A to W's shape) is not the adapted weight's norm: "
              f"{_describe(grouped, targets, lambda m: f'{type(m).__name__} groups={m.groups}')}",
              "Use plain LoRA on those layers, or drop them from target_modules")


# ----------------------------------------------------------------------------------------------------------------
# Building the model


def _mutates_base(config: AdaptationConfig) -> bool:
    init = config.init_lora_weights
    return config.method == "lora" and isinstance(init, str) and (init in _LORA_INITS_LINEAR_ONLY or bool(_PISSA_NITER.fullmatch(init)))


class ResidualInitLoraModel(PeftModel):
    """A LoRA ``PeftModel`` whose initialisation (PiSSA, OLoRA) moved part of the base weights into the adapter.

    Saving converts the adapter to a plain LoRA of rank ``2r`` on the original weights (see the module docstring),
    keeping the head, which peft's own conversion (``path_initial_model_for_weight_conversion``) drops.
    """

    _initial_adapter: dict[str, torch.Tensor]

    def remember_initial_adapter(self) -> None:
        """Record ``A0``, ``B0`` right after initialisation (before any training step)."""
        state = get_peft_model_state_dict(self)
        self._initial_adapter = {k: v.detach().clone() for k, v in state.items() if ".lora_A." in k or ".lora_B." in k}

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save as a plain LoRA adapter of rank ``2r`` relative to the unmodified backbone.

        Raises:
            ValueError: an option whose save this conversion does not handle (checked before anything is
                written): ``selected_adapters`` other than ``["default"]`` or a second adapter,
                ``safe_serialization=False``, peft's own ``path_initial_model_for_weight_conversion`` (its
                conversion and this one would both apply), a ``rank_pattern``/``alpha_pattern``.
        """
        if list(self.peft_config) != ["default"]:
            raise ValueError(f"A PiSSA/OLoRA model is saved with its single 'default' adapter only; this one has "
                             f"the adapters {list(self.peft_config)}")
        if kwargs.get("selected_adapters") not in (None, ["default"]):
            raise ValueError(f"selected_adapters={kwargs['selected_adapters']!r}: a PiSSA/OLoRA model is saved with its "
                             "single 'default' adapter only")
        if not kwargs.get("safe_serialization", True):
            raise ValueError("safe_serialization=False: a PiSSA/OLoRA model is saved as safetensors only (the "
                             "conversion rewrites adapter_model.safetensors)")
        if kwargs.get("path_initial_model_for_weight_conversion") is not None:
            raise ValueError("path_initial_model_for_weight_conversion: this model already saves its adapter converted "
                             "to a plain LoRA on the original weights (head kept); peft's conversion on top would "
                             "convert it twice. Leave it out.")
        for key in ("rank_pattern", "alpha_pattern"):
            if getattr(self.peft_config["default"], key, None):
                raise ValueError(f"{key}={getattr(self.peft_config['default'], key)!r}: per-module ranks/alphas are "
                                 "not converted by PiSSA/OLoRA saving; use one r and alpha for every target")
        super().save_pretrained(str(save_directory), **kwargs)
        if not kwargs.get("is_main_process", True):
            return  # peft wrote nothing on this rank
        folder = Path(save_directory)
        weights_path = folder / "adapter_model.safetensors"
        weights = load_file(str(weights_path))
        initial = self._initial_adapter
        missing = [k for k in weights if (".lora_A." in k or ".lora_B." in k) and k not in initial]
        if missing:
            raise RuntimeError(f"no initial value recorded for {missing[:3]}: was remember_initial_adapter() called?")
        # W + s·[B, -B0]·[A; A0] = W - s·B0·A0 + s·B·A: the trained model, on the original weights.
        for k, v in list(weights.items()):
            if ".lora_A." in k:
                weights[k] = torch.cat([v, initial[k].to(v.dtype)], dim=0).contiguous()
            elif ".lora_B." in k:
                weights[k] = torch.cat([v, -initial[k].to(v.dtype)], dim=1).contiguous()
        save_file(weights, str(weights_path), metadata={"format": "pt"})
        config_path = folder / "adapter_config.json"
        cfg = json.loads(config_path.read_text())
        cfg["r"] *= 2
        cfg["lora_alpha"] *= math.sqrt(2) if cfg.get("use_rslora") else 2  # keeps alpha/r (alpha/sqrt(r) for rsLoRA)
        cfg["init_lora_weights"] = True
        config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def apply_peft(clf: ECGClassifier, config: AdaptationConfig) -> nn.Module:
    """Wrap the classifier in the peft tuner of ``config.method`` (the head trained through ``modules_to_save``)."""
    peft_config = peft_config_for(clf, config)
    # peft records base_model_name_or_path from the model's name_or_path.
    clf.name_or_path = clf.config.backbone_name_or_path or ""
    clf.freeze_backbone_in_train = False
    peft_config.base_model_name_or_path = clf.name_or_path or None
    if _mutates_base(config):
        model = ResidualInitLoraModel(clf, peft_config)
        model.remember_initial_adapter()
        return model
    with _boft_fallback_warnings_silenced(peft_config):
        return PeftModel(clf, peft_config)


@contextmanager
def _boft_fallback_warnings_silenced(peft_config: PeftConfig) -> Iterator[None]:
    """peft tries to build its CUDA butterfly kernel for every BOFT model and warns that it falls back to factor 1
    when it cannot: irrelevant when factor 1 was asked for (check() refuses the other case when the kernel cannot
    be built), so the two warnings are silenced then and only then (a saved factor > 1 loaded without the kernel
    keeps them: they say why it does not load as trained)."""
    with warnings.catch_warnings():
        if getattr(peft_config, "boft_n_butterfly_factor", None) == 1:
            warnings.filterwarnings("ignore", message="Failed to load the CUDA extension")
            warnings.filterwarnings("ignore", message="Setting boft_n_butterfly_factor to 1")
        yield


# ----------------------------------------------------------------------------------------------------------------
# Saving and loading in the plain-backbone layout (see the module docstring)

HEAD_WEIGHTS_NAME = "head.safetensors"
"""The trained head of a peft-method save, keyed as in the classifier (``classifier.weight``)."""
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_CONFIG_NAME = "adapter_config.json"
_MODEL_PREFIX = "base_model.model."  # peft's prefix of every wrapped module's tensors
_BACKBONE_PREFIX = _MODEL_PREFIX + "backbone."
_HEAD_PREFIX = _MODEL_PREFIX + HEAD_MODULE + "."


class AdapterMismatchError(ValueError):
    """A saved adapter (or head) whose tensor names do not all match the model it is loaded into."""


def _strip_backbone(target: str) -> str:
    return target.removeprefix("backbone.")


def save_backbone_adapter(folder: str | os.PathLike) -> None:
    """Rewrite, in place, the files ``PeftModel.save_pretrained`` wrote for an adapted classifier into the
    plain-backbone layout: adapter keys and ``target_modules`` relative to the backbone, the head moved to
    :data:`HEAD_WEIGHTS_NAME` (see the module docstring)."""
    folder = Path(folder)
    weights = load_file(str(folder / PEFT_WEIGHTS_NAME))
    adapter: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        if key.startswith(_HEAD_PREFIX):
            head[key.removeprefix(_MODEL_PREFIX)] = tensor
        elif key.startswith(_BACKBONE_PREFIX):
            adapter[_MODEL_PREFIX + key.removeprefix(_BACKBONE_PREFIX)] = tensor
        elif key.startswith(_MODEL_PREFIX):
            raise ValueError(f"{folder / PEFT_WEIGHTS_NAME}: tensor {key!r} is neither in the backbone nor the head")
        else:
            adapter[key] = tensor  # tuner-level tensors (VeRA's shared projections base_model.vera_A/B)
    if not head:
        raise ValueError(f"{folder / PEFT_WEIGHTS_NAME} holds no head tensors ({_HEAD_PREFIX}*): was the head in modules_to_save?")
    save_file(adapter, str(folder / PEFT_WEIGHTS_NAME), metadata={"format": "pt"})
    save_file(head, str(folder / HEAD_WEIGHTS_NAME), metadata={"format": "pt"})
    config_path = folder / PEFT_CONFIG_NAME
    cfg = json.loads(config_path.read_text())
    for key in ("target_modules", "feedforward_modules"):
        value = cfg.get(key)
        if isinstance(value, str):
            # apply_peft always passes lists; a regex would need rewriting against the backbone's module names.
            raise ValueError(f"{config_path}: {key} is a regex ({value!r}); pass target_modules as a list of "
                             "module-name suffixes to save an adapter that loads on the plain backbone")
        if value is not None:
            cfg[key] = sorted(_strip_backbone(t) for t in value)
    cfg["modules_to_save"] = None
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load_peft_adapted(clf: ECGClassifier, folder: str | os.PathLike, is_trainable: bool = False) -> PeftModel:
    """Rebuild the adapted classifier saved in ``folder`` (either layout; see the module docstring).

    Raises:
        AdapterMismatchError: the adapter file (or ``head.safetensors``) lacks tensors the model has, or holds
            tensors the model does not have; the message names them and the file.
    """
    folder = Path(folder)
    config = PeftConfig.from_pretrained(str(folder))
    weights_path = folder / PEFT_WEIGHTS_NAME
    head_path = folder / HEAD_WEIGHTS_NAME
    saved = load_file(str(weights_path))
    if head_path.exists():  # plain-backbone layout
        state = {(_BACKBONE_PREFIX + k.removeprefix(_MODEL_PREFIX) if k.startswith(_MODEL_PREFIX) else k): v
                 for k, v in saved.items()}
        head = load_file(str(head_path))
        state.update({_MODEL_PREFIX + k: v for k, v in head.items()})
        # Suffix names match the same modules inside the classifier (peft matches by suffix); the head is trained
        # whole, as at training time.
        config.modules_to_save = [HEAD_MODULE]
    else:  # the earlier layout: keys relative to the classifier, head in the adapter file
        state = dict(saved)
    config.inference_mode = not is_trainable
    with _boft_fallback_warnings_silenced(config):
        model = PeftModel(clf, config)
    # save_embedding_layers=False: these backbones have no vocabulary, and peft's "auto" would look the base model's
    # config up on the Hub (a network request while loading, even with a local backbone given).
    expected = set(get_peft_model_state_dict(model, save_embedding_layers=False))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        def shown(keys: list[str]) -> list[str]:  # names as they are in the files
            return [(k.removeprefix(_MODEL_PREFIX) if k.startswith(_HEAD_PREFIX) else
                     _MODEL_PREFIX + k.removeprefix(_BACKBONE_PREFIX)) if head_path.exists() else k for k in keys][:10]

        raise AdapterMismatchError(
            f"The adapter in {folder} does not match the model ({type(config).__name__} on "
            f"{config.base_model_name_or_path}): missing {shown(missing)}, unexpected {shown(unexpected)} "
            f"(files {weights_path.name}{', ' + head_path.name if head_path.exists() else ''}); "
            "was it saved for another backbone, method or target_modules, or edited?"
        )
    result = set_peft_model_state_dict(model, state)
    if result.unexpected_keys:  # cannot happen after the check above unless peft renames keys differently
        raise AdapterMismatchError(f"{weights_path}: peft could not place {result.unexpected_keys[:10]}")
    return model


# ----------------------------------------------------------------------------------------------------------------
# Merging


def merge_blockers(model: nn.Module) -> dict[str, str]:
    """Adapted layers of a peft model that peft 0.21 cannot merge correctly, with the reason (empty: it merges)."""
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        base = module.get_base_layer()
        if isinstance(module, LoraLayer) and isinstance(base, nn.modules.conv._ConvNd) and base.groups > 1:
            out[name] = f"LoRA on a grouped {type(base).__name__.removeprefix('Parametrized')} (groups={base.groups}) has no merged form (peft raises)"
        elif parametrize.is_parametrized(base, "weight"):
            out[name] = (f"its base {type(base).__name__} has a parametrised weight (e.g. weight norm): peft's merge "
                         "writes weight.data, which the parametrisation recomputes, so the adapter would be lost silently")
    return out


def check_mergeable(model: nn.Module) -> None:
    """Raise :class:`UnsupportedAdaptationError` if ``merge_and_unload`` would fail on this adapted model."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"expects the peft model returned by adapt() for a peft method, got {type(model).__name__}")
    blockers = merge_blockers(model)
    if blockers:
        method = getattr(getattr(model, "adaptation_config", None), "method", "lora")
        first = next(iter(blockers.values()))
        raise UnsupportedAdaptationError(
            f"{method} adapter of {_family_label(model.get_base_model())} cannot be merged: {first} "
            f"({len(blockers)} layer(s), e.g. {list(blockers)[:3]}). Deploy it unmerged (load_adapted), or train "
            "with those layers left out of target_modules"
        )


# ----------------------------------------------------------------------------------------------------------------
# Support matrix

MATRIX_COLUMNS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora"},
    "lora+dora": {"method": "lora", "use_dora": True},
    "lora+pissa": {"method": "lora", "init_lora_weights": "pissa"},
    "ia3": {"method": "ia3"},
    "loha": {"method": "loha"},
    "lokr": {"method": "lokr"},
    "vera": {"method": "vera"},
    "oft": {"method": "oft"},
    "boft": {"method": "boft"},
}


def released_classifiers() -> dict[str, list[tuple[str, ECGClassifier]]]:
    """Every released variant's architecture as a weightless classifier (parameters on the ``meta`` device),
    grouped by family key (``merl/resnet`` and ``merl/vit`` apart)."""
    from accelerate import init_empty_weights

    out: dict[str, list[tuple[str, ECGClassifier]]] = {}
    for family in FAMILIES.values():
        for variant in family.released_variants:
            with init_empty_weights(include_buffers=False):
                backbone = family.model_class(family.config_class(**variant.get("config", {})))
                clf = ECGClassifier.from_backbone(backbone, ["a", "b"])
            out.setdefault(family_key(backbone), []).append((variant["name"], clf))
    return out


def support_matrix(
    classifiers: Mapping[str, ECGClassifier | list[tuple[str, ECGClassifier]]] | None = None,
    columns: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, str]]:
    """``matrix[family][column]`` is ``"ok"`` or the reason the method cannot adapt that family, found by running
    each method's ``check`` (default configs) on the family's released architectures.

    Args:
        classifiers: family -> classifier (or ``[(variant, classifier), ...]``); default: every released variant
            (:func:`released_classifiers`). A reason names the variant when only some variants fail.
        columns: column name -> :class:`AdaptationConfig` kwargs; default :data:`MATRIX_COLUMNS`.

    Example:
        >>> support_matrix()["merl/resnet"]["ia3"]   # doctest: +SKIP
        'ia3 cannot adapt merl/resnet: peft 0.21's ia3 wraps ...'
    """
    from .config import get_method

    classifiers = released_classifiers() if classifiers is None else classifiers
    columns = MATRIX_COLUMNS if columns is None else columns
    matrix: dict[str, dict[str, str]] = {}
    for family, entry in classifiers.items():
        variants = entry if isinstance(entry, list) else [(family, entry)]
        row: dict[str, str] = {}
        for column, kwargs in columns.items():
            config = AdaptationConfig(**dict(kwargs))
            reasons = []
            for variant, clf in variants:
                try:
                    get_method(config.method).check(clf, config)
                except UnsupportedAdaptationError as e:
                    reasons.append((variant, str(e)))
            if not reasons:
                row[column] = "ok"
            elif len(reasons) == len(variants):
                row[column] = reasons[0][1]
            else:
                row[column] = f"{', '.join(v for v, _ in reasons)}: {reasons[0][1]}"
        matrix[family] = row
    return matrix


def support_matrix_markdown(matrix: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The support matrix as a Markdown table (``ok`` or ``no [n]``) followed by the numbered reasons."""
    matrix = support_matrix() if matrix is None else matrix
    columns = list(next(iter(matrix.values())).keys()) if matrix else []
    notes: list[str] = []
    lines = ["| family | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for family, row in matrix.items():
        cells = []
        for column in columns:
            value = row[column]
            if value == "ok":
                cells.append("ok")
            else:
                if value not in notes:
                    notes.append(value)
                cells.append(f"no [{notes.index(value) + 1}]")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    if notes:
        lines.append("")
        lines.extend(f"{i}. {note}" for i, note in enumerate(notes, 1))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Registration

_TRAINS = {
    "lora": "low-rank updates B·A of the target layers (+ DoRA magnitudes) + the head",
    "ia3": "one scaling vector per target layer (keys, values, FFN inner activation) + the head",
    "loha": "Hadamard products of two low-rank pairs per target layer + the head",
    "lokr": "Kronecker-factored updates of the target layers + the head",
    "vera": "two scaling vectors per target layer around shared frozen random projections + the head",
    "oft": "block-diagonal orthogonal rotations of the target layers' inputs + the head",
    "boft": "butterfly-factored orthogonal rotations and output scales of the target layers + the head",
}


# VeRA's adapter file also holds the shared random projections (frozen buffers, not parameters, so they never
# count as trained): base_model.vera_A / base_model.vera_B.
_VERA_PROJECTION = re.compile(r"(^|\.)vera_[AB](\.|$)")


def _claims(method: str) -> Callable[[str], bool]:
    """The names (of parameters, or of tensors in the saved adapter) that belong to ``method``'s adapter or the head."""
    prefix = _TUNERS[method].prefix

    def claims(name: str) -> bool:
        if ".original_module." in f".{name}":
            return False  # peft's frozen copy of the head
        if method == "vera" and _VERA_PROJECTION.search(name):
            return True
        return prefix in name or is_head_parameter(name)

    return claims


for _name in PEFT_METHODS:
    register_method(MethodSpec(
        name=_name, kind="peft", trains=_TRAINS[_name], mergeable=True,
        apply=apply_peft, check=check_peft_method, claims=_claims(_name),
    ))

__all__ = [
    "HEAD_WEIGHTS_NAME",
    "MATRIX_COLUMNS",
    "AdapterMismatchError",
    "PEFT_METHODS",
    "ResidualInitLoraModel",
    "apply_peft",
    "check_mergeable",
    "check_peft_method",
    "default_target_modules",
    "load_peft_adapted",
    "merge_blockers",
    "peft_config_for",
    "released_classifiers",
    "resolve_targets",
    "save_backbone_adapter",
    "support_matrix",
    "support_matrix_markdown",
    "target_modules",
]
