"""ecg_adapt's own adaptation methods: bottleneck adapters (Houlsby, Pfeiffer), convolutional adapters and
visual-prompt-style prompt tuning, behind peft's verbs and in peft's saved form.

Why these are written here rather than taken from a library (checked with peft 0.21.2, transformers 5.24):

* peft has no bottleneck adapter (its ``AdaptionPrompt`` is LLaMA-Adapter, not Houlsby/Pfeiffer), and its prompt
  methods (prompt tuning, prefix tuning, P-tuning) need a text model fed ``input_ids``/``inputs_embeds``: on an
  ECG encoder they fail in ``get_peft_model`` or in the forward pass;
* peft's ``register_peft_method`` only accepts members of its own ``PeftType`` enum, so a third-party method
  cannot be registered as a peft tuner;
* AdapterHub's ``adapters`` pins transformers 4.x and does not know these architectures.

(the project's research notes, ``peft_accelerate_hub.md``, hold the experiments). Files, as in peft's tuners:
``layer.py`` (the adapter modules), ``prompt.py`` (prompt insertion and mask extension), ``model.py``
(:class:`AdaptedModel`), and this module (the methods' checks and registration).

The methods therefore live here, but look like peft from outside: an :class:`AdaptedModel` wraps the :class:`~ecg_adapt.ECGClassifier` and holds named
adapters, each with its own copy of the head (as peft's ``modules_to_save``); it has ``add_adapter``,
``load_adapter``, ``set_adapter``, ``active_adapter``, ``delete_adapter``, ``disable_adapter()``,
``save_pretrained`` (``adapter_config.json`` + ``adapter_model.safetensors`` holding only the trained weights),
``from_pretrained``, ``get_base_model`` and ``merge_and_unload``; ``forward(..., adapter_names=[...])`` runs a
batch whose rows use different adapters.

Design:

* **Hooks, not wrappers.** The backbone is never modified: forward hooks on the modules named by
  :func:`~ecg_adapt.adaptation.layout.backbone_layout` route through the adapter that is active for the current
  call (or none). The base model's parameter names and state dict stay those of the plain classifier, several
  adapters share one backbone, disabling is a flag, and a mixed batch is a loop over row groups. All hooks are
  stateless (they only read which adapter is routed), so they give the same result when gradient checkpointing
  recomputes a block.
* **Bottleneck adapters** (Houlsby et al. 2019; Pfeiffer et al. 2021): ``z + up(dropout(act(down(z))))`` applied
  to a sublayer's output before the residual add: after attention *and* FFN (``houlsby_adapter``) or after the
  FFN only (``pfeiffer_adapter``); width ``hidden // adapter_reduction_factor``. ``up`` is zero-initialised, so
  an adapted model starts *exactly* equal to its base; ``down`` keeps PyTorch's default init. (Houlsby also trains
  the layer norms; here the backbone stays frozen.)
* **Convolutional adapters** (CNN families): the same bottleneck with 1×1 convolutions, added residually to the
  output of every residual block: ``h + up(dropout(act(dw(down(h)))))``, ``dw`` a depthwise convolution of
  ``conv_adapter_kernel_size`` taps when the configuration has that field and it is > 1 (identity otherwise).
* **Prompt tuning** (Visual Prompt Tuning, Jia et al. 2022): ``num_prompt_tokens`` learnable tokens are
  prepended to the token sequence at the first block's input (``shallow``), or a fresh set replaces the prompt
  slots before every block (``deep``); they are removed after the last block, so final norms, the backbone's own
  pooling and the classifier's masked mean never see them. Initialisation: uniform ``±sqrt(6 / (2 D))``, VPT's
  Xavier bound ``sqrt(6 / (3·16·16 + D))`` with the patch fan-in replaced by the token width ``D`` (the two
  coincide for ViT-B/16, ``D = 768``). Dropout (``dropout``) is applied per sample as in VPT. The attention mask
  is extended so that every token may attend to the prompts and the prompts attend to every *real* token (never
  to padding), whatever the family's mask format (see :class:`~ecg_adapt.adaptation.layout.PromptSpec`):
  transformers' 4-D mask (HuBERT-ECG), key-padding masks (ECG-FM: True = pad; ST-MEM, MERL-ViT: True = keep)
  and ECG-JEPA's pairwise lead-wise mask. In ECG-JEPA prompts are *global*: they attend to every real token of
  every lead and every token attends to them; the positional table, which ECG-JEPA adds before every block, is
  padded with zeros for the prompt slots. Prompts need every block to run, so LayerDrop must be 0.

Neither method folds into the backbone weights (a bottleneck is non-linear, prompts add tokens):
:meth:`AdaptedModel.merge_and_unload` raises :class:`~ecg_adapt.adaptation.UnsupportedAdaptationError`.

Parameter names: an adapter's tensors are ``adapters.<adapter name>.<path>`` in the model (its head is
``adapters.<name>.classifier.*``, which the trainer's head learning rate recognises) and ``adapters.<path>`` in
``adapter_model.safetensors`` (the adapter name dropped, as peft does), so one rule (the name starts with
``adapters.``) says what these methods train.
"""

from __future__ import annotations

from ...models.classifier import ECGClassifier
from ..config import AdaptationConfig, MethodSpec, UnsupportedAdaptationError, register_method
from .layer import (
    ADAPTER_PREFIX,
    BOTTLENECK_METHODS,
    MODULE_METHODS,
    BottleneckAdapter,
    ConvAdapter,
    ModuleAdapter,
    activation,
    bottleneck_width,
    prompt_init_bound,
)
from .model import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    BASE_ADAPTER,
    AdaptedModel,
    check_no_layerdrop,
    require_layout,
)


def check_bottleneck(clf: ECGClassifier, config: AdaptationConfig) -> None:
    """Houlsby/Pfeiffer adapters need transformer blocks (attention and FFN sublayers)."""
    layout = require_layout(clf, "transformer", f"{config.method} inserts bottleneck adapters after the attention/FFN "
                            "sublayers of transformer blocks", "use conv_adapter")
    bottleneck_width(layout.token_dim, config.adapter_reduction_factor)
    activation(config.adapter_non_linearity)


def check_conv(clf: ECGClassifier, config: AdaptationConfig) -> None:
    """Convolutional adapters need channels-first residual blocks (a CNN's, or ECG-CPC's S4 blocks)."""
    layout = require_layout(clf, "cnn", "conv_adapter adds 1x1-conv bottlenecks after channels-first residual blocks "
                            "(CNNs, S4 models)",
                            "use houlsby_adapter or pfeiffer_adapter (or prompt_tuning)")
    for c in layout.block_channels:
        bottleneck_width(c, config.adapter_reduction_factor)
    activation(config.adapter_non_linearity)
    kernel = int(getattr(config, "conv_adapter_kernel_size", 1))
    if kernel < 1 or kernel % 2 == 0:
        raise UnsupportedAdaptationError(f"conv_adapter_kernel_size must be odd and >= 1, got {kernel}")


def check_prompt(clf: ECGClassifier, config: AdaptationConfig) -> None:
    """Prompt tuning needs a token sequence (a transformer), every block run (no LayerDrop) and tensor masks."""
    require_layout(clf, "transformer", "prompt_tuning prepends tokens to the token sequence of a transformer's blocks",
                   "use conv_adapter")
    check_no_layerdrop(clf)
    impl = str(getattr(clf.backbone.config, "_attn_implementation", None) or "")
    if "flex" in impl:
        raise UnsupportedAdaptationError("prompt tuning extends tensor attention masks; flex attention uses block "
                                         "masks: load the backbone with attn_implementation='sdpa' or 'eager'")


def is_adapter_parameter(name: str) -> bool:
    """Whether a tensor name is an adapter's (in an :class:`AdaptedModel`, a DDP wrapper of one, or as saved in
    ``adapter_model.safetensors``): adapters and their heads live under ``adapters.``."""
    return name.removeprefix("module.").startswith(ADAPTER_PREFIX + ".")


def apply_module_method(clf: ECGClassifier, config: AdaptationConfig) -> AdaptedModel:
    """``adapt()`` for the module methods: an :class:`AdaptedModel` with one ``"default"`` adapter."""
    return AdaptedModel(clf, config)


def load_module_method(clf: ECGClassifier, config: AdaptationConfig, folder: str, is_trainable: bool) -> AdaptedModel:
    """``load_adapted()`` for the module methods: the ``"default"`` adapter saved in ``folder``."""
    model = AdaptedModel.from_pretrained(clf, folder, "default", is_trainable=is_trainable)
    saved = model.adapters["default"].adaptation_config
    if saved.method != config.method:
        raise ValueError(f"{folder}: adapter_config.json says {saved.method!r}, adaptation_config.json {config.method!r}")
    return model


for _name, _check, _trains in (
    ("houlsby_adapter", check_bottleneck, "bottleneck adapters after every attention and FFN sublayer + the head"),
    ("pfeiffer_adapter", check_bottleneck, "a bottleneck adapter after every FFN sublayer + the head"),
    ("conv_adapter", check_conv, "1x1-conv bottleneck adapters after every residual block + the head"),
    ("prompt_tuning", check_prompt, "prompt tokens (before the first block, or before every block when deep) + the head"),
):
    register_method(MethodSpec(
        name=_name, kind="module", trains=_trains, mergeable=False, apply=apply_module_method, check=_check,
        claims=is_adapter_parameter, load=load_module_method,
    ))


__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_PREFIX",
    "ADAPTER_WEIGHTS_NAME",
    "BASE_ADAPTER",
    "BOTTLENECK_METHODS",
    "MODULE_METHODS",
    "AdaptedModel",
    "BottleneckAdapter",
    "ConvAdapter",
    "ModuleAdapter",
    "bottleneck_width",
    "is_adapter_parameter",
    "prompt_init_bound",
]
