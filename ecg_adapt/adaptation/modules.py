"""ecg_adapt's own adaptation modules: bottleneck adapters (Houlsby, Pfeiffer), convolutional adapters and
visual-prompt-style prompt tuning, behind peft's verbs and in peft's saved form.

Why these are written here rather than taken from a library (checked with peft 0.21.2, transformers 5.24):

* peft has no bottleneck adapter (its ``AdaptionPrompt`` is LLaMA-Adapter, not Houlsby/Pfeiffer), and its prompt
  methods (prompt tuning, prefix tuning, P-tuning) need a text model fed ``input_ids``/``inputs_embeds``: on an
  ECG encoder they fail in ``get_peft_model`` or in the forward pass;
* peft's ``register_peft_method`` only accepts members of its own ``PeftType`` enum, so a third-party method
  cannot be registered as a peft tuner;
* AdapterHub's ``adapters`` pins transformers 4.x and does not know these architectures.

(the project's research notes, ``peft_accelerate_hub.md``, hold the experiments). The methods therefore live here, but
look like peft from outside: an :class:`AdaptedModel` wraps the :class:`~ecg_adapt.ECGClassifier` and holds named
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

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..models.classifier import ECGClassifier, ECGClassifierOutput
from .config import AdaptationConfig, MethodSpec, UnsupportedAdaptationError, get_method, register_method
from .layout import BackboneLayout, backbone_layout, family_key

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_PREFIX = "adapters"
BASE_ADAPTER = "__base__"
"""``adapter_names`` entry for a row that runs the base model (no adapter, the classifier's own head)."""

BOTTLENECK_METHODS = ("houlsby_adapter", "pfeiffer_adapter")
MODULE_METHODS = (*BOTTLENECK_METHODS, "conv_adapter", "prompt_tuning")

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


# --------------------------------------------------------------------------------------------------- modules
def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"adapter_non_linearity must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


def bottleneck_width(dim: int, reduction_factor: int) -> int:
    """Units in the bottleneck of an adapter on ``dim`` features (``dim // reduction_factor``, at least 1 required)."""
    width = dim // reduction_factor
    if width < 1:
        raise UnsupportedAdaptationError(
            f"adapter_reduction_factor={reduction_factor} leaves no bottleneck unit for {dim} features; use at most {dim}"
        )
    return width


class BottleneckAdapter(nn.Module):
    """``z + up(dropout(act(down(z))))`` on the last axis; ``up`` starts at zero, so the adapter starts as the identity.

    Example:
        >>> adapter = BottleneckAdapter(768, reduction_factor=16)
        >>> adapter.down.out_features, bool((adapter(torch.ones(1, 768)) == 1).all())
        (48, True)
    """

    def __init__(self, dim: int, reduction_factor: int = 16, non_linearity: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        width = bottleneck_width(dim, reduction_factor)
        self.down = nn.Linear(dim, width)
        self.act = _activation(non_linearity)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.up(self.dropout(self.act(self.down(z))))


class ConvAdapter(nn.Module):
    """``h + up(dropout(act(dw(down(h)))))`` on ``(batch, channels, time)``: 1×1-conv bottleneck, optional
    depthwise ``kernel_size``-tap conv in the bottleneck, ``up`` zero-initialised (starts as the identity).

    Example:
        >>> adapter = ConvAdapter(64, reduction_factor=16, kernel_size=3)
        >>> h = torch.randn(2, 64, 100)
        >>> adapter.down.out_channels, torch.equal(adapter(h), h)
        (4, True)
    """

    def __init__(
        self, channels: int, reduction_factor: int = 16, non_linearity: str = "gelu", dropout: float = 0.0, kernel_size: int = 1
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"conv adapter kernel_size must be odd and >= 1 (to keep the length), got {kernel_size}")
        width = bottleneck_width(channels, reduction_factor)
        self.down = nn.Conv1d(channels, width, kernel_size=1)
        self.depthwise = (
            nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2, groups=width) if kernel_size > 1 else nn.Identity()
        )
        self.act = _activation(non_linearity)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Conv1d(width, channels, kernel_size=1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.dropout(self.act(self.depthwise(self.down(h)))))


def prompt_init_bound(token_dim: int) -> float:
    """Half-width of the uniform prompt initialisation: ``sqrt(6 / (2 D))`` (VPT's Xavier bound, see module doc)."""
    return math.sqrt(6.0 / (2 * token_dim))


class ModuleAdapter(nn.Module):
    """One named adapter of an :class:`AdaptedModel`: its modules for one backbone, and its own head.

    ``blocks[i]`` holds block ``i``'s bottleneck adapters (a ``ModuleDict`` with ``"attention"`` and/or ``"ffn"``)
    or its :class:`ConvAdapter`; ``prompts`` is ``(depth, tokens, width)`` (depth 1 for shallow prompts, the
    number of blocks for deep ones); ``classifier`` is the head copy.
    """

    def __init__(self, config: AdaptationConfig, layout: BackboneLayout, classifier: nn.Linear) -> None:
        super().__init__()
        self.adaptation_config = config
        self.method = config.method
        self.prompts: nn.Parameter | None = None
        if config.method in BOTTLENECK_METHODS:
            sites = ("attention", "ffn") if config.method == "houlsby_adapter" else ("ffn",)
            self.blocks = nn.ModuleList(
                nn.ModuleDict({
                    site: BottleneckAdapter(layout.token_dim, config.adapter_reduction_factor, config.adapter_non_linearity,
                                            config.dropout)
                    for site in sites
                })
                for _ in layout.blocks
            )
        elif config.method == "conv_adapter":
            kernel = int(getattr(config, "conv_adapter_kernel_size", 1))
            self.blocks = nn.ModuleList(
                ConvAdapter(c, config.adapter_reduction_factor, config.adapter_non_linearity, config.dropout, kernel)
                for c in layout.block_channels
            )
        elif config.method == "prompt_tuning":
            depth = layout.num_blocks if config.prompt_depth == "deep" else 1
            self.prompts = nn.Parameter(torch.empty(depth, config.num_prompt_tokens, layout.token_dim))
            bound = prompt_init_bound(layout.token_dim)
            nn.init.uniform_(self.prompts, -bound, bound)
            self.prompt_dropout = nn.Dropout(config.dropout)
        else:
            raise UnsupportedAdaptationError(f"{config.method!r} is not one of ecg_adapt's module methods {MODULE_METHODS}")
        self.classifier = classifier

    @property
    def num_prompt_tokens(self) -> int:
        return 0 if self.prompts is None else self.prompts.shape[1]

    @property
    def deep(self) -> bool:
        return self.prompts is not None and self.adaptation_config.prompt_depth == "deep"

    def sublayer(self, index: int, site: str) -> nn.Module | None:
        """The bottleneck adapter of block ``index`` at ``site`` (``"attention"``/``"ffn"``), if this adapter has one."""
        if self.method not in BOTTLENECK_METHODS:
            return None
        sites = self.blocks[index]
        return sites[site] if site in sites else None  # noqa: SIM401 (ModuleDict has no .get)

    def prompt_tokens(self, index: int, like: torch.Tensor) -> torch.Tensor:
        """The prompts entering block ``index`` (set 0 for shallow prompts), ``(batch, tokens, width)`` like ``like``."""
        assert self.prompts is not None
        p = self.prompts[index if self.deep else 0].to(like.dtype)
        return self.prompt_dropout(p.unsqueeze(0).expand(like.shape[0], -1, -1))


# --------------------------------------------------------------------------------------------------- masks
def _prepend_to_pair_mask(
    mask: torch.Tensor, p: int, valid_keys: torch.Tensor | None, allowed: bool | float, blocked: bool | float
) -> torch.Tensor:
    """Extend a ``(..., query, key)`` mask (query = 1 or = key) with ``p`` prompt tokens in front.

    Every query may attend to the prompts; the prompts may attend to each other and to the keys in
    ``valid_keys`` (``(..., key)`` bool, broadcastable to the leading dims; ``None`` = all keys).
    """
    *lead, q, k = mask.shape
    rows = torch.cat([mask.new_full((*lead, q, p), allowed), mask], dim=-1)
    if q == 1:  # one row shared by every query: a key mask, which already is the prompts' row
        return rows
    prompt_rows = mask.new_full((*lead, p, p + k), allowed)
    if valid_keys is not None:
        keep = valid_keys.unsqueeze(-2).expand(*lead, p, k)
        prompt_rows[..., p:] = mask.new_full((*lead, p, k), blocked).masked_fill(keep, allowed)
    return torch.cat([prompt_rows, rows], dim=-2)


# --------------------------------------------------------------------------------------------------- the model
class AdaptedModel(nn.Module):
    """An :class:`~ecg_adapt.ECGClassifier` with named ecg_adapt adapters (bottleneck, conv, prompts), peft-style.

    The classifier is frozen and left untouched; each adapter brings its modules and its own copy of the head.
    Exactly the active adapter's parameters are trainable (unless it was loaded with ``is_trainable=False``).
    Calling the classifier directly (``get_base_model()(...)``) also goes through the active adapter, as with
    peft; inside :meth:`disable_adapter` it is the plain base model.

    Example:
        >>> model = AdaptedModel(classifier, AdaptationConfig(method="houlsby_adapter"))      # doctest: +SKIP
        >>> model.add_adapter("af", AdaptationConfig(method="prompt_tuning", prompt_depth="deep"))  # doctest: +SKIP
        >>> model(x, adapter_names=["default", "af", "__base__"]).logits   # one adapter per row  # doctest: +SKIP
    """

    def __init__(self, model: ECGClassifier, config: AdaptationConfig | None = None, adapter_name: str = "default") -> None:
        super().__init__()
        if not isinstance(model, ECGClassifier):
            raise TypeError(f"AdaptedModel wraps an ECGClassifier, got {type(model).__name__}")
        self.base_model = model
        self.adapters = nn.ModuleDict()
        self.layout = _layout_or_raise(model)
        self._active: str | None = None
        self._disabled = False
        self._route: list[str | None] = []  # adapter forced for the current call (mixed batches), innermost last
        self._trainable: dict[str, bool] = {}
        self._sample_mask: torch.Tensor | None = None  # the backbone call's sample-level mask (ECG-JEPA prompts)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        model.requires_grad_(False)
        model.freeze_backbone_in_train = False
        self._register_hooks()
        if config is not None:
            self.add_adapter(adapter_name, config)

    # ------------------------------------------------------------------ peft-like verbs
    @property
    def active_adapter(self) -> str | None:
        """Name of the adapter the model runs (``None`` when it holds none)."""
        return self._active

    @property
    def adapter_configs(self) -> dict[str, AdaptationConfig]:
        """The :class:`AdaptationConfig` of every adapter, by name (peft's ``peft_config``)."""
        return {name: adapter.adaptation_config for name, adapter in self.adapters.items()}

    @property
    def adaptation_config(self) -> AdaptationConfig | None:
        """The configuration :func:`~ecg_adapt.adaptation.save_adapted` records: the ``"default"`` adapter's
        (the one saved at the folder's root), else the active adapter's."""
        name = "default" if "default" in self.adapters else self._active
        return None if name is None else self.adapters[name].adaptation_config

    @adaptation_config.setter
    def adaptation_config(self, value: AdaptationConfig | None) -> None:
        # adapt() and load_adapted() assign the configuration they used; it must be the one the adapters carry.
        current = self.adaptation_config
        if value is not None and (current is None or value.to_dict() != current.to_dict()):
            raise ValueError(
                f"adaptation_config is derived from the adapters ({current.method if current else 'none'}); "
                f"it cannot be set to a different {value.method!r} configuration"
            )

    def add_adapter(self, adapter_name: str, config: AdaptationConfig) -> None:
        """Add a new adapter (with a fresh copy of the classifier's head); it becomes active if none is."""
        self._check_new_name(adapter_name)
        base_head = self.base_model.classifier
        # A new Linear with the head's values (copy.deepcopy would also copy the routing hook on the base head).
        head = nn.Linear(base_head.in_features, base_head.out_features, bias=base_head.bias is not None)
        head.load_state_dict(base_head.state_dict())
        adapter = self._build(config, head)
        self._insert(adapter_name, adapter, trainable=True)

    def load_adapter(self, model_id: str | os.PathLike, adapter_name: str = "default", is_trainable: bool = False) -> None:
        """Load an adapter folder written by :meth:`save_pretrained` (or ``save_adapted``) under ``adapter_name``.

        Raises:
            FileNotFoundError: the folder lacks ``adapter_config.json`` or ``adapter_model.safetensors``.
            ValueError: the adapter was trained on another backbone family, or its tensors do not fit this backbone.
        """
        self._check_new_name(adapter_name)
        folder = Path(model_id)
        config_file, weights_file = folder / ADAPTER_CONFIG_NAME, folder / ADAPTER_WEIGHTS_NAME
        for f in (config_file, weights_file):
            if not f.exists():
                raise FileNotFoundError(f"{folder} has no {f.name}: not an adapter folder written by AdaptedModel.save_pretrained")
        meta = json.loads(config_file.read_text())
        trained_on = meta.pop("base_model_type", None)
        meta.pop("base_model_name_or_path", None)
        config = AdaptationConfig.from_dict(meta)
        here = family_key(self.base_model.backbone)
        if trained_on is not None and trained_on != here:
            raise ValueError(f"{config_file}: the adapter was trained on a {trained_on} backbone; this one is {here}")
        state = load_file(str(weights_file))
        head_key = f"{ADAPTER_PREFIX}.classifier.weight"
        if head_key not in state:
            raise ValueError(f"{weights_file} has no {head_key!r}: every adapter saves its head")
        out_features, in_features = state[head_key].shape
        if in_features != self.base_model.classifier.in_features:
            raise ValueError(f"{weights_file}: the head reads {in_features} features; this backbone gives "
                             f"{self.base_model.classifier.in_features}")
        foreign = sorted(k for k in state if not k.startswith(ADAPTER_PREFIX + "."))
        if foreign:
            raise ValueError(f"{weights_file}: unexpected tensors {foreign[:10]} (adapter tensors start with {ADAPTER_PREFIX!r})")
        adapter = self._build(config, nn.Linear(in_features, out_features))
        state = {k[len(ADAPTER_PREFIX) + 1 :]: v for k, v in state.items()}
        expected = adapter.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        shapes = sorted(f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                        for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or shapes:
            raise ValueError(f"{weights_file} does not fit {config.method} on this backbone: missing {missing[:10]}, "
                             f"unexpected {unexpected[:10]}, mis-shaped {shapes[:10]}")
        adapter.load_state_dict(state)
        self._insert(adapter_name, adapter, trainable=is_trainable)

    @classmethod
    def from_pretrained(
        cls, model: ECGClassifier, model_id: str | os.PathLike, adapter_name: str = "default", is_trainable: bool = False
    ) -> AdaptedModel:
        """Wrap ``model`` and load the adapter saved in ``model_id`` (eval mode unless ``is_trainable``).

        Example:
            >>> model = AdaptedModel.from_pretrained(classifier, "runs/x/model")   # doctest: +SKIP
        """
        adapted = cls(model)
        adapted.load_adapter(model_id, adapter_name, is_trainable=is_trainable)
        if not is_trainable:
            adapted.eval()
        return adapted

    def set_adapter(self, adapter_name: str) -> None:
        """Run (and train) ``adapter_name``; the other adapters are frozen."""
        if adapter_name not in self.adapters:
            raise ValueError(f"No adapter named {adapter_name!r}; this model has {list(self.adapters)}")
        self._active = adapter_name
        for name, adapter in self.adapters.items():
            adapter.requires_grad_(name == adapter_name and self._trainable[name])

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter; if it was active, the first remaining one becomes active (none: the base model runs)."""
        if adapter_name not in self.adapters:
            raise ValueError(f"No adapter named {adapter_name!r}; this model has {list(self.adapters)}")
        del self.adapters[adapter_name]
        del self._trainable[adapter_name]
        if self._active == adapter_name:
            self._active = None
            if len(self.adapters):
                self.set_adapter(next(iter(self.adapters)))

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Context manager: inside it the model is the plain base model (no adapter, the classifier's own head)."""
        previous, self._disabled = self._disabled, True
        try:
            yield
        finally:
            self._disabled = previous

    def get_base_model(self) -> ECGClassifier:
        """The wrapped :class:`~ecg_adapt.ECGClassifier` (its forward still goes through the active adapter)."""
        return self.base_model

    def merge_and_unload(self, *args: Any, **kwargs: Any) -> ECGClassifier:
        """Always raises: these methods cannot be folded into the backbone weights."""
        methods = sorted({a.method for a in self.adapters.values()}) or ["(no adapter)"]
        raise UnsupportedAdaptationError(
            f"{', '.join(methods)} cannot be merged into the backbone weights: a bottleneck or conv adapter is a "
            "non-linear function added to a sublayer's output (no weight matrix can absorb it), and prompt tokens "
            "add entries to the sequence; deploy the AdaptedModel itself (save_adapted / load_adapted)"
        )

    def unload(self) -> ECGClassifier:
        """Remove every hook and return the plain classifier (the adapters are dropped, nothing is merged)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return self.base_model

    def save_pretrained(self, save_directory: str | os.PathLike, selected_adapters: Sequence[str] | None = None,
                        **kwargs: Any) -> None:
        """Write each adapter as ``adapter_config.json`` + ``adapter_model.safetensors`` (its modules and head only).

        As peft: the ``"default"`` adapter goes to ``save_directory`` itself, any other to
        ``save_directory/<name>``. Each file is written to a temporary name and renamed into place.
        """
        from .. import __version__

        names = list(self.adapters) if selected_adapters is None else list(selected_adapters)
        unknown = [n for n in names if n not in self.adapters]
        if unknown:
            raise ValueError(f"No adapter named {unknown}; this model has {list(self.adapters)}")
        root = Path(save_directory)
        for name in names:
            adapter = self.adapters[name]
            out = root if name == "default" else root / name
            out.mkdir(parents=True, exist_ok=True)
            meta = adapter.adaptation_config.to_dict()
            meta["base_model_name_or_path"] = self.base_model.config.backbone_name_or_path
            meta["base_model_type"] = family_key(self.base_model.backbone)
            meta["ecg_adapt_version"] = __version__
            state = {f"{ADAPTER_PREFIX}.{k}": v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}
            _atomic_write(out / ADAPTER_WEIGHTS_NAME, lambda tmp, s=state: save_file(s, str(tmp), metadata={"format": "pt"}))
            text = json.dumps(meta, indent=2) + "\n"
            _atomic_write(out / ADAPTER_CONFIG_NAME, lambda tmp, t=text: tmp.write_text(t))

    def print_trainable_parameters(self) -> None:
        """Print trainable and total parameter counts (peft's format)."""
        from .core import count_parameters

        print(count_parameters(self))

    def train(self, mode: bool = True) -> AdaptedModel:
        """As ``nn.Module.train``; frozen BatchNorm layers of the backbone stay in eval mode (their running statistics
        are part of the frozen base, which an adapter-only save does not store)."""
        super().train(mode)
        if mode:
            for m in self.base_model.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters(False)):
                    m.eval()
        return self

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        adapter_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> ECGClassifierOutput:
        """Classify a batch through the active adapter, or, with ``adapter_names`` (one name per row, ``"__base__"``
        for the base model), each row through its own adapter and head. Rows are grouped by adapter and the
        outputs returned in the original order; the loss is the batch mean, as for a single adapter."""
        if adapter_names is None:
            self._check_runnable(self._current_adapter())
            return self.base_model(input_values, attention_mask=attention_mask, labels=labels, **kwargs)
        names = list(adapter_names)
        batch = input_values.shape[0]
        if len(names) != batch:
            raise ValueError(f"adapter_names has {len(names)} entries for a batch of {batch} rows")
        unknown = sorted({n for n in names if n != BASE_ADAPTER and n not in self.adapters})
        if unknown:
            raise ValueError(f"adapter_names: no adapter named {unknown}; this model has {list(self.adapters)} "
                             f"(and {BASE_ADAPTER!r} for the base model)")
        groups = list(dict.fromkeys(names))
        widths = {n: self._head(n).out_features for n in groups}
        if len(set(widths.values())) > 1:
            raise ValueError(f"adapter_names mixes heads with different numbers of labels {widths}; "
                             "a mixed batch needs one label space")
        outputs, order, loss = [], [], None
        for name in groups:
            rows = torch.tensor([i for i, n in enumerate(names) if n == name], device=input_values.device)
            route = None if name == BASE_ADAPTER else name
            self._check_runnable(None if route is None else self.adapters[route])
            with self._routed(route):
                out = self.base_model(
                    input_values[rows],
                    attention_mask=None if attention_mask is None else attention_mask[rows],
                    labels=None if labels is None else labels[rows],
                    **kwargs,
                )
            outputs.append(out)
            order.append(rows)
            if out.loss is not None:
                part = out.loss * (len(rows) / batch)  # group means weighted by their share: the batch mean
                loss = part if loss is None else loss + part
        inverse = torch.argsort(torch.cat(order))

        def gather(field: str) -> torch.Tensor | None:
            parts = [getattr(o, field) for o in outputs]
            return None if any(p is None for p in parts) else torch.cat(parts)[inverse]

        return ECGClassifierOutput(loss=loss, logits=gather("logits"), pooled=gather("pooled"),
                                   last_hidden_state=gather("last_hidden_state"))

    def __getattr__(self, name: str) -> Any:
        # As peft's PeftModel: attributes the wrapper lacks (config, labels, signal_contract, ...) are the classifier's.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    # ------------------------------------------------------------------ internals
    def _check_new_name(self, name: str) -> None:
        if not isinstance(name, str) or not name or "." in name or name == BASE_ADAPTER:
            raise ValueError(f"Invalid adapter name {name!r}: a non-empty string without '.', not {BASE_ADAPTER!r}")
        if name in self.adapters:
            raise ValueError(f"An adapter named {name!r} already exists; delete_adapter it first or pick another name")
        if hasattr(self.adapters, name):
            raise ValueError(f"Invalid adapter name {name!r}: it is an attribute of torch's ModuleDict")

    def _build(self, config: AdaptationConfig, head: nn.Linear) -> ModuleAdapter:
        spec = get_method(config.method)
        if spec.kind != "module":
            raise UnsupportedAdaptationError(
                f"{config.method!r} is a {spec.kind} method; AdaptedModel holds ecg_adapt's own methods "
                f"{list(MODULE_METHODS)} (use adapt() for {config.method})"
            )
        spec.check(self.base_model, config)
        reference = next(self.base_model.backbone.parameters())
        return ModuleAdapter(config, self.layout, head).to(device=reference.device, dtype=reference.dtype)

    def _insert(self, name: str, adapter: ModuleAdapter, trainable: bool) -> None:
        self.adapters[name] = adapter
        self._trainable[name] = trainable
        adapter.requires_grad_(False)
        self.set_adapter(self._active if self._active is not None else name)

    def _head(self, name: str) -> nn.Linear:
        return self.base_model.classifier if name == BASE_ADAPTER else self.adapters[name].classifier

    @contextmanager
    def _routed(self, name: str | None) -> Iterator[None]:
        self._route.append(name)
        try:
            yield
        finally:
            self._route.pop()

    def _current_adapter(self) -> ModuleAdapter | None:
        if self._route:
            name = self._route[-1]
        else:
            name = None if self._disabled else self._active
        return None if name is None else self.adapters[name]

    def _check_runnable(self, adapter: ModuleAdapter | None) -> None:
        if adapter is not None and adapter.prompts is not None and self.training:
            _check_no_layerdrop(self.base_model)

    def _register_hooks(self) -> None:
        layout, backbone = self.layout, self.base_model.backbone
        add = self._handles.append
        if layout.kind == "transformer":
            for i, module in enumerate(layout.attention_outputs):
                add(module.register_forward_hook(partial(self._sublayer_hook, i, "attention")))
            for i, module in enumerate(layout.ffn_outputs):
                add(module.register_forward_hook(partial(self._sublayer_hook, i, "ffn")))
            for i, block in enumerate(layout.blocks):
                add(block.register_forward_pre_hook(partial(self._prompt_block_hook, i), with_kwargs=True))
            add(layout.blocks[-1].register_forward_hook(self._prompt_exit_hook))
            spec = layout.prompt
            if spec is not None and spec.entry is not None:
                add(backbone.get_submodule(spec.entry).register_forward_pre_hook(self._prompt_entry_hook, with_kwargs=True))
            if spec is not None and spec.mask_format == "pairwise":
                add(backbone.register_forward_pre_hook(self._capture_sample_mask, with_kwargs=True))
                add(backbone.register_forward_hook(self._release_sample_mask))
        else:
            for i, block in enumerate(layout.blocks):
                add(block.register_forward_hook(partial(self._conv_block_hook, i)))
        add(self.base_model.classifier.register_forward_hook(self._head_hook))

    # Hooks. Each returns None (no change) unless the adapter routed for this call has something at its site.
    def _sublayer_hook(self, index: int, site: str, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        adapter = self._current_adapter()
        sub = None if adapter is None else adapter.sublayer(index, site)
        return None if sub is None else sub(output)

    def _conv_block_hook(self, index: int, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        adapter = self._current_adapter()
        if adapter is None or adapter.method != "conv_adapter":
            return None
        return adapter.blocks[index](output)

    def _head_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        adapter = self._current_adapter()
        return None if adapter is None else adapter.classifier(args[0])

    def _capture_sample_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        self._sample_mask = mask if isinstance(mask, torch.Tensor) else None

    def _release_sample_mask(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._sample_mask = None

    def _prompt_entry_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """ECG-JEPA: prompts join the tokens before the block loop; the per-block positional term gets zero rows."""
        adapter = self._current_adapter()
        if adapter is None or adapter.prompts is None:
            return None
        spec = self.layout.prompt
        ti, ai, mi = spec.entry_positions
        if len(args) <= max(ti, ai, mi):
            raise RuntimeError(f"prompt tuning expects {spec.entry} to be called with tokens, the per-block term and "
                               f"the mask as positional arguments; got {len(args)} positional arguments")
        args = list(args)
        x, added, mask = args[ti], args[ai], args[mi]
        p = adapter.num_prompt_tokens
        args[ti] = torch.cat([adapter.prompt_tokens(0, x), x], dim=1)
        zeros = added.new_zeros(added.shape[:-2] + (p, added.shape[-1]))
        args[ai] = torch.cat([zeros, added], dim=-2)
        if mask is not None:
            args[mi] = self._extend_mask(mask, p)
        return tuple(args), kwargs

    def _prompt_block_hook(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Insert the prompts before the first block (replace them before every block when deep); extend the mask."""
        adapter = self._current_adapter()
        if adapter is None or adapter.prompts is None:
            return None
        spec = self.layout.prompt
        p = adapter.num_prompt_tokens
        x = args[0]
        if index == 0 and spec.entry is None:
            x = torch.cat([adapter.prompt_tokens(0, x), x], dim=1)
        elif index > 0 and adapter.deep:
            x = torch.cat([adapter.prompt_tokens(index, x), x[:, p:]], dim=1)
        args = (x, *args[1:])
        in_kwargs = spec.mask_arg in kwargs
        mask = kwargs[spec.mask_arg] if in_kwargs else (args[spec.mask_position] if len(args) > spec.mask_position else None)
        if mask is not None:
            if not isinstance(mask, torch.Tensor):
                raise UnsupportedAdaptationError(
                    f"prompt tuning extends tensor attention masks; block {index} received a {type(mask).__name__} "
                    "(use the 'sdpa' or 'eager' attention implementation)"
                )
            if mask.shape[-1] == x.shape[1] - p:  # not yet extended (ECG-JEPA's is, at the entry)
                mask = self._extend_mask(mask, p)
                if in_kwargs:
                    kwargs = {**kwargs, spec.mask_arg: mask}
                else:
                    args = (*args[: spec.mask_position], mask, *args[spec.mask_position + 1 :])
        return args, kwargs

    def _prompt_exit_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        adapter = self._current_adapter()
        if adapter is None or adapter.prompts is None:
            return None
        return output[:, adapter.num_prompt_tokens :]

    def _extend_mask(self, mask: torch.Tensor, p: int) -> torch.Tensor:
        """The block mask for ``p`` prompts prepended: prompts always attendable, and attending real tokens only."""
        fmt = self.layout.prompt.mask_format
        if fmt == "key_padding":
            return torch.cat([mask.new_zeros(mask.shape[0], p), mask], dim=1)
        if fmt == "key_keep" or (fmt == "hf_4d" and mask.dim() == 2):  # flash attention gets the 2-D padding mask
            return torch.cat([mask.new_ones(mask.shape[0], p), mask], dim=1)
        if fmt == "hf_4d":
            if mask.dtype == torch.bool:
                return _prepend_to_pair_mask(mask, p, mask.any(dim=-2), True, False)
            lowest = torch.finfo(mask.dtype).min  # eager attention: additive, 0 = attend, dtype minimum = masked
            return _prepend_to_pair_mask(mask, p, (mask > lowest / 2).any(dim=-2), 0.0, lowest)
        # "pairwise" (ECG-JEPA): the mask cannot say which tokens are padding (a padded token attends to itself
        # only, as does a lone real one); the backbone's token mask can.
        valid = self._valid_tokens(mask.shape[-1])
        if valid is None:
            return _prepend_to_pair_mask(mask, p, None, True, False)
        if mask.dim() == 2:
            mask = mask.expand(valid.shape[0], 1, *mask.shape)
        return _prepend_to_pair_mask(mask, p, valid[:, None, :], True, False)

    def _valid_tokens(self, n_tokens: int) -> torch.Tensor | None:
        mask = self._sample_mask
        if mask is None or bool(mask.all()):
            return None
        return self.base_model.backbone.frame_mask(mask, n_tokens)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through ``write(temporary path)`` and rename it into place (never a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------------- methods
def _layout_or_raise(clf: ECGClassifier) -> BackboneLayout:
    try:
        return backbone_layout(clf.backbone)
    except ValueError as e:
        raise UnsupportedAdaptationError(f"ecg_adapt's adapter methods need the backbone's block layout: {e}") from None


def _family(clf: ECGClassifier) -> str:
    return family_key(clf.backbone)


def _check_no_layerdrop(clf: ECGClassifier) -> None:
    layerdrop = float(getattr(clf.backbone.config, "layerdrop", 0.0) or 0.0)
    if layerdrop > 0:
        raise UnsupportedAdaptationError(
            f"prompt tuning inserts its tokens before the first block and removes them after the last, so every "
            f"block must run; this {_family(clf)} backbone has LayerDrop {layerdrop}: build the classifier with "
            "backbone_layerdrop=0 (recipe: model.layerdrop=0)"
        )


def check_bottleneck(clf: ECGClassifier, config: AdaptationConfig) -> None:
    """Houlsby/Pfeiffer adapters need transformer blocks (attention and FFN sublayers)."""
    layout = _layout_or_raise(clf)
    if layout.kind != "transformer":
        raise UnsupportedAdaptationError(
            f"{config.method} inserts bottleneck adapters after the attention/FFN sublayers of transformer blocks; "
            f"{_family(clf)} is a CNN (residual conv blocks): use conv_adapter"
        )
    bottleneck_width(layout.token_dim, config.adapter_reduction_factor)
    _activation(config.adapter_non_linearity)


def check_conv(clf: ECGClassifier, config: AdaptationConfig) -> None:
    """Convolutional adapters need a CNN with residual blocks."""
    layout = _layout_or_raise(clf)
    if layout.kind != "cnn":
        raise UnsupportedAdaptationError(
            f"conv_adapter adds 1x1-conv bottlenecks after the residual blocks of CNN backbones; {_family(clf)} is a "
            "transformer: use houlsby_adapter or pfeiffer_adapter (or prompt_tuning)"
        )
    for c in layout.block_channels:
        bottleneck_width(c, config.adapter_reduction_factor)
    _activation(config.adapter_non_linearity)
    kernel = int(getattr(config, "conv_adapter_kernel_size", 1))
    if kernel < 1 or kernel % 2 == 0:
        raise UnsupportedAdaptationError(f"conv_adapter_kernel_size must be odd and >= 1, got {kernel}")


def check_prompt(clf: ECGClassifier, config: AdaptationConfig) -> None:
    """Prompt tuning needs a token sequence (a transformer), every block run (no LayerDrop) and tensor masks."""
    layout = _layout_or_raise(clf)
    if layout.kind != "transformer":
        raise UnsupportedAdaptationError(
            f"prompt_tuning prepends tokens to a transformer's token sequence; {_family(clf)} is a CNN (no tokens): "
            "use conv_adapter"
        )
    _check_no_layerdrop(clf)
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
    "ADAPTER_WEIGHTS_NAME",
    "BASE_ADAPTER",
    "AdaptedModel",
    "BottleneckAdapter",
    "ConvAdapter",
    "ModuleAdapter",
    "bottleneck_width",
    "is_adapter_parameter",
    "prompt_init_bound",
]
