""":class:`AdaptedModel`: an :class:`~ecg_adapt.ECGClassifier` with named ecg_adapt adapters, behind peft's verbs
(see :mod:`ecg_adapt.adaptation.modules` for the design)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..._version import __version__
from ...models.classifier import ECGClassifier, ECGClassifierOutput
from ...models.heads import AttentionPoolingHead
from ...utils import atomic_write, atomic_write_text
from ..config import AdaptationConfig, UnsupportedAdaptationError, get_method
from ..layout import BackboneLayout, backbone_layout, family_key
from .layer import ADAPTER_PREFIX, MODULE_METHODS, ModuleAdapter
from .prompt import PromptHooks

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
BASE_ADAPTER = "__base__"
"""``adapter_names`` entry for a row that runs the base model (no adapter, the classifier's own head)."""


class AdaptedModel(PromptHooks, nn.Module):
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
        self.layout = require_layout(model)
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
        adapter = self._build(config, self._fresh_head(copy_values=True))
        self._insert(adapter_name, adapter, trainable=True)

    def _fresh_head(self, copy_values: bool) -> nn.Module:
        """A head of the base head's kind and shape (linear or attention pooling), with its values or freshly built.

        Built rather than ``copy.deepcopy``-ed: a deep copy would also copy the routing hook on the base head.
        """
        base_head = self.base_model.classifier
        if isinstance(base_head, nn.Linear):
            head: nn.Module = nn.Linear(base_head.in_features, base_head.out_features, bias=base_head.bias is not None)
        elif isinstance(base_head, AttentionPoolingHead):
            head = AttentionPoolingHead(base_head.q_proj.in_features, base_head.out_proj.out_features,
                                        base_head.num_heads, bias=base_head.q_proj.bias is not None)
        else:
            raise TypeError(f"module adapters support linear and attention-pooling heads, not {type(base_head).__name__}")
        if copy_values:
            head.load_state_dict(base_head.state_dict())
        return head.to(next(base_head.parameters()).device)

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
        head_prefix = f"{ADAPTER_PREFIX}.classifier."
        head_keys = [k for k in state if k.startswith(head_prefix)]
        if not head_keys:
            raise ValueError(f"{weights_file} has no {head_prefix}* tensors: every adapter saves its head")
        base_head = self.base_model.classifier
        if isinstance(base_head, nn.Linear):
            in_features = state[head_prefix + "weight"].shape[1]
            if in_features != base_head.in_features:
                raise ValueError(f"{weights_file}: the head reads {in_features} features; this backbone gives "
                                 f"{base_head.in_features}")
        foreign = sorted(k for k in state if not k.startswith(ADAPTER_PREFIX + "."))
        if foreign:
            raise ValueError(f"{weights_file}: unexpected tensors {foreign[:10]} (adapter tensors start with {ADAPTER_PREFIX!r})")
        head = self._fresh_head(copy_values=False)
        if isinstance(head, nn.Linear):  # the saved head may predict another label set than the base head
            out_features = state[head_prefix + "weight"].shape[0]
            head = nn.Linear(head.in_features, out_features, bias=head_prefix + "bias" in state)
        adapter = self._build(config, head)
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
            atomic_write(out / ADAPTER_WEIGHTS_NAME, lambda tmp, s=state: save_file(s, str(tmp), metadata={"format": "pt"}))
            atomic_write_text(out / ADAPTER_CONFIG_NAME, json.dumps(meta, indent=2) + "\n")

    def print_trainable_parameters(self) -> None:
        """Print trainable and total parameter counts (peft's format)."""
        from ..core import count_parameters

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
            check_no_layerdrop(self.base_model)

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

    # Hooks (the prompt hooks are PromptHooks'). Each returns None unless the routed adapter has something at its site.
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
        return None if adapter is None else adapter.classifier(*args)


def require_layout(clf: ECGClassifier, kind: Literal["transformer", "cnn"] | None = None, needs: str = "",
                   instead: str = "") -> BackboneLayout:
    """The backbone's block layout, or :class:`UnsupportedAdaptationError` saying that a method needs one (of
    ``kind``: ``needs`` says why, ``instead`` what to use on this backbone)."""
    try:
        layout = backbone_layout(clf.backbone)
    except ValueError as e:
        raise UnsupportedAdaptationError(f"ecg_adapt's adapter methods need the backbone's block layout: {e}") from None
    if kind is not None and layout.kind != kind:
        # The family record says what the backbone is (an S4 model has kind "cnn" without being a CNN).
        this = layout.description or ("a CNN (residual conv blocks)" if layout.kind == "cnn" else "a transformer")
        raise UnsupportedAdaptationError(f"{needs}; {family_key(clf.backbone)} is {this}: {instead}")
    return layout


def check_no_layerdrop(clf: ECGClassifier) -> None:
    """Raise if the backbone may skip blocks (LayerDrop): prompt tokens need every block to run."""
    layerdrop = float(getattr(clf.backbone.config, "layerdrop", 0.0) or 0.0)
    if layerdrop > 0:
        raise UnsupportedAdaptationError(
            f"prompt tuning inserts its tokens before the first block and removes them after the last, so every "
            f"block must run; this {family_key(clf.backbone)} backbone has LayerDrop {layerdrop}: build the classifier with "
            "backbone_layerdrop=0 (recipe: model.layerdrop=0)"
        )


__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "BASE_ADAPTER", "AdaptedModel"]
