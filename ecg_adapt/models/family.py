"""What a backbone family is: the torch-free record every family folder exposes as ``FAMILY``, and the contract
its model class must honour.

A family is one folder under ``ecg_adapt/models/`` (``configuration.py``, ``modeling.py``, ``convert.py``, its
processor steps) plus one ``family.py`` that holds every fact the rest of the toolkit needs, as data:

* its description and released variants (``ecg-adapt models`` prints them),
* the block layout of each architecture variant (:class:`BlockLayout`: where the blocks are, the sublayer
  outputs bottleneck adapters hook, how blocks receive their mask for prompt tuning, CNN block channels),
* the default adaptation targets per method and the reasons a method cannot adapt it (:class:`DefaultTargets`),
* tiny configurations for tests (``tiny_configs``),
* the configuration, model, converter and processor-step classes, as dotted paths resolved on first use (as
  ``transformers.models.auto.CONFIG_MAPPING_NAMES`` names its classes), so that reading the record imports
  neither torch nor transformers.

This module is below ``adaptation`` (which reads these facts) and imports nothing heavy; :mod:`.registry`
validates a record when it is registered and registers the heavy classes with transformers' Auto classes the
first time they are needed.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # only for annotations: importing torch here would make every family record cost 1.4 s
    import torch
    from transformers import PreTrainedConfig

MaskFormat = Literal["hf_4d", "key_padding", "key_keep", "pairwise"]
BlockKind = Literal["transformer", "cnn"]


@dataclass(frozen=True)
class PromptSpec:
    """How a transformer family hands the token sequence and its attention mask to each block.

    Attributes:
        mask_arg: name of the block's mask argument (the blocks are called with it as keyword or positionally).
        mask_position: its index among the block's positional arguments (the tokens are argument 0).
        mask_format: ``"hf_4d"``: transformers' ``(batch, 1, query, key)`` mask from ``create_bidirectional_mask``
            (boolean, True = may attend, for SDPA; additive float for eager attention; ``None`` without padding);
            ``"key_padding"``: ``(batch, tokens)`` bool, True = padding (never attended); ``"key_keep"``:
            ``(batch, tokens)`` bool, True = may be attended; ``"pairwise"``: a boolean ``(tokens, tokens)`` or
            ``(batch, 1, tokens, tokens)`` mask of allowed (query, key) pairs.
        entry: for families that add something to the tokens before *every* block (ECG-JEPA adds its positional
            table: ``block(x + pos, mask)``), the module that runs the block loop; prompts enter through its
            inputs, so that the per-block additions can be padded for them. ``None``: prompts enter at the first
            block's input.
        entry_positions: with ``entry``: the positional indices of (tokens, per-block addition, mask) in its call.
    """

    mask_arg: str
    mask_position: int
    mask_format: MaskFormat
    entry: str | None = None
    entry_positions: tuple[int, int, int] = (0, 1, 2)


@dataclass(frozen=True)
class BlockLayout:
    """Where the blocks of one architecture variant are (what partial fine-tuning, layer-wise decay, bottleneck
    adapters and prompt tuning need). A block is the unit of depth: a transformer layer or a residual CNN block.

    Attributes:
        kind: ``"transformer"`` or ``"cnn"``.
        block_pattern: regex that fully matches the qualified name of every block inside the backbone (forward
            order is the order of ``named_modules``), e.g. ``r"encoder\\.layers\\.\\d+"``.
        post_blocks: modules applied after the last block (final norms), qualified names in the backbone.
        post_blocks_when: name of a boolean config field; when given, ``post_blocks`` apply only if it is true
            (ECG-FM's ``encoder.layer_norm`` runs after the last layer when pre-LN, before the first when post-LN).
        attention_output: transformers: the module, relative to a block, whose output is the attention sublayer's
            output before the residual add.
        ffn_output: transformers: the same for the feed-forward sublayer.
        prompt: transformers: how blocks receive tokens and mask (:class:`PromptSpec`).
        channels: CNNs: attribute paths on a block that give its output channels; the first that exists wins
            (``("conv3.out_channels", "conv2.out_channels")`` for bottleneck/basic ResNet blocks).
        description: what the architecture is, as messages say it ("an S4 state-space model (...)"); empty means
            the kind's own wording (:attr:`what`). ``kind`` says how adaptation code treats the blocks ("cnn":
            channels-first residual blocks), which is not always what they are.
    """

    kind: BlockKind
    block_pattern: str
    post_blocks: tuple[str, ...] = ()
    post_blocks_when: str | None = None
    attention_output: str | None = None
    ffn_output: str | None = None
    prompt: PromptSpec | None = None
    channels: tuple[str, ...] = ()
    description: str = ""

    @property
    def what(self) -> str:
        """The architecture in words for messages: ``description``, else "a transformer" or "a CNN (residual
        conv blocks)" by ``kind``."""
        if self.description:
            return self.description
        return "a CNN (residual conv blocks)" if self.kind == "cnn" else "a transformer"

    def validate(self, where: str) -> None:
        """Raise ``ValueError`` (naming ``where``) if the layout is incomplete for its kind or its regex is invalid."""
        if self.kind not in ("transformer", "cnn"):
            raise ValueError(f"{where}: layout kind must be 'transformer' or 'cnn', not {self.kind!r}")
        try:
            re.compile(self.block_pattern)
        except re.error as e:
            raise ValueError(f"{where}: block_pattern {self.block_pattern!r} is not a valid regex ({e})") from None
        if self.kind == "transformer":
            missing = [n for n in ("attention_output", "ffn_output", "prompt") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"{where}: a transformer layout needs {', '.join(missing)}")
        elif not self.channels:
            raise ValueError(f"{where}: a CNN layout needs channels (attribute paths of a block's output channels)")

    def post_blocks_for(self, config: Any) -> tuple[str, ...]:
        """The post-block modules of a backbone with this config (see ``post_blocks_when``)."""
        if self.post_blocks_when is not None and not getattr(config, self.post_blocks_when, False):
            return ()
        return self.post_blocks

    def find_blocks(self, backbone: Any, where: str = "this backbone") -> tuple[list[str], list[Any]]:
        """Qualified names and modules of the blocks, in forward order.

        Raises:
            ValueError: no module matches ``block_pattern`` (the architecture changed or the pattern is wrong).
        """
        rx = re.compile(self.block_pattern)
        found = [(name, module) for name, module in backbone.named_modules() if rx.fullmatch(name)]
        if not found:
            raise ValueError(f"No block matching {self.block_pattern!r} in {where}; was the architecture changed?")
        return [n for n, _ in found], [m for _, m in found]

    def sublayer(self, block: Any, which: Literal["attention", "ffn"], block_name: str, where: str = "this backbone") -> Any:
        """A transformer block's attention or feed-forward output module (see ``attention_output``)."""
        suffix = self.attention_output if which == "attention" else self.ffn_output
        try:
            return block.get_submodule(suffix)
        except AttributeError:
            raise ValueError(f"Block {block_name} of {where} has no {suffix!r}; was the architecture changed?") from None

    def block_channels(self, block: Any, block_name: str, where: str = "this backbone") -> int:
        """A CNN block's output channels (the first of ``channels`` that exists on it)."""
        for path in self.channels:
            obj = block
            try:
                for part in path.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                continue
            return int(obj)
        raise ValueError(f"Block {block_name} of {where} has none of {list(self.channels)}; was the architecture changed?")


@dataclass(frozen=True)
class DefaultTargets:
    """The modules each peft method wraps by default on one architecture variant, and why.

    Attributes:
        lora: module-name suffixes for LoRA, LoHa and LoKr (peft ``target_modules``).
        rationale: why these (shown by ``ecg-adapt methods`` and the model card).
        linear: targets for the nn.Linear-only tuners (VeRA, OFT, BOFT); ``None``: the same as ``lora`` (all
            nn.Linear); ``()``: nothing to adapt (refused, with ``no_linear_reason``).
        ia3: IA³ targets (keys, values, second FFN layer); ``()``: refused.
        ia3_feedforward: those of ``ia3`` that are feed-forward modules (IA³ rescales their *input*); also what IA³
            treats as feed-forward when the user passes ``target_modules``.
        no_linear_reason: why the nn.Linear-only tuners and IA³ cannot adapt it (when ``linear``/``ia3`` are empty).
    """

    lora: tuple[str, ...]
    rationale: str
    linear: tuple[str, ...] | None = None
    ia3: tuple[str, ...] = ()
    ia3_feedforward: tuple[str, ...] = ()
    no_linear_reason: str | None = None

    def for_linear_tuners(self) -> tuple[str, ...]:
        """Targets of VeRA/OFT/BOFT."""
        return self.lora if self.linear is None else self.linear


@dataclass(frozen=True)
class ArchitectureVariant:
    """One architecture of a family that the toolkit treats apart (``merl/vit`` and ``merl/resnet``), keyed by
    its family key (the ``model_type``, or ``model_type/variant``)."""

    layout: BlockLayout
    targets: DefaultTargets


def _resolve(path: str, package: str | None) -> Any:
    """``"pkg.module:attr"`` (or ``".module:attr"`` relative to ``package``) -> the object."""
    module_name, sep, attr = path.partition(":")
    if not sep or not attr:
        raise ValueError(f"{path!r} is not a 'module:attribute' path")
    module = importlib.import_module(module_name, package if module_name.startswith(".") else None)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{path!r}: {module.__name__} has no attribute {attr!r}") from None


@dataclass(frozen=True)
class BackboneFamily:
    """Everything the toolkit needs to know about one backbone family, as cheap data.

    Attributes:
        model_type: the ``config.json`` ``model_type`` and the ``--family`` value.
        description: one line for ``ecg-adapt models``.
        package: the family's package (``__package__`` of its ``family.py``); relative class paths resolve there.
        config_path, model_path, convert_path, processor_steps_path: ``"module:attribute"`` paths (relative to
            ``package`` when they start with a dot) of the configuration class, the model class, the converter
            of the original checkpoints and the function returning the default processor steps.
        variants: architecture variants by family key (a family with one architecture has one, keyed by its
            ``model_type``).
        tiny_configs: named kwargs of tiny random models for tests; together they must cover every variant.
        released_variants: released weights: dicts with name, source, weights (where they live), licence,
            redistribution, parameters, contract (and optionally config: the kwargs that build that size), and
            ``release``: where the original file lives, as data (:func:`validate_release`), which
            :func:`~ecg_adapt.models.pretrained.resolve_pretrained` downloads and converts.
        variant_of: the family key of a config (default: ``model_type``); needed when ``variants`` has several.

    Example:
        >>> from ecg_adapt.models.registry import get_family
        >>> fam = get_family("merl")                     # no torch import yet
        >>> sorted(fam.variants), fam.key_of_kwargs(fam.tiny_configs["merl_vit"])
        (['merl/resnet', 'merl/vit'], 'merl/vit')
    """

    model_type: str
    description: str
    package: str | None
    config_path: str
    model_path: str
    convert_path: str
    processor_steps_path: str
    variants: Mapping[str, ArchitectureVariant]
    tiny_configs: Mapping[str, Mapping[str, Any]]
    released_variants: tuple[dict, ...] = ()
    variant_of: Callable[[Any], str] | None = None
    _resolved: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)  # per record

    # -- the heavy parts, imported on first use -------------------------------------------------------------
    def _get(self, name: str, path: str) -> Any:
        if name not in self._resolved:
            self._resolved[name] = _resolve(path, self.package)
            if name in ("config_class", "model_class"):
                from .registry import register_with_transformers  # heavy: transformers' Auto classes

                register_with_transformers(self)
        return self._resolved[name]

    @property
    def config_class(self) -> type[PreTrainedConfig]:
        """The configuration class (imports transformers and registers the family with the Auto classes)."""
        return self._get("config_class", self.config_path)

    @property
    def model_class(self) -> type:
        """The model class (a ``PreTrainedModel`` honouring :class:`ECGBackbone`)."""
        return self._get("model_class", self.model_path)

    @property
    def convert(self) -> Callable[..., Any]:
        """The converter of the original checkpoints: ``convert(src, dst, allow_pickle=...) -> report``."""
        return self._get("convert", self.convert_path)

    @property
    def default_processor_steps(self) -> Callable[..., list]:
        """The function returning the family's default processor steps."""
        return self._get("processor_steps", self.processor_steps_path)

    # -- per-variant facts ------------------------------------------------------------------------------------
    def key_of(self, config: Any) -> str:
        """The family key of a backbone config (``merl/vit``, ``hubert_ecg/stable``, or the ``model_type``)."""
        return self.variant_of(config) if self.variant_of is not None else self.model_type

    def key_of_kwargs(self, kwargs: Mapping[str, Any]) -> str:
        """The family key of a config built from ``kwargs`` (config defaults filled in where a key function reads
        a field the kwargs leave out, via a read-only view)."""
        if self.variant_of is None:
            return self.model_type
        return self.variant_of(_KwargsView(kwargs))

    def variant(self, key: str) -> ArchitectureVariant:
        """The architecture variant of a family key, with the known keys in the error."""
        try:
            return self.variants[key]
        except KeyError:
            raise ValueError(f"{self.model_type} has no architecture variant {key!r}; known: {sorted(self.variants)}") from None

    @property
    def lora_target_modules(self) -> tuple[str, ...]:
        """The LoRA targets of every variant, in order, without repeats (peft wraps the names that exist in the
        model at hand; the variants' names never match a module of another variant)."""
        return tuple(dict.fromkeys(t for v in self.variants.values() for t in v.targets.lora))

    @property
    def lora_rationale(self) -> str:
        """Why those targets (per variant when there are several)."""
        if len(self.variants) == 1:
            return next(iter(self.variants.values())).targets.rationale
        return " ".join(f"{key}: {v.targets.rationale}" for key, v in self.variants.items())

    def validate(self) -> None:
        """Check the record is complete, without importing anything heavy (see :func:`.registry.register_family`
        for the checks on a real tiny model).

        Raises:
            ValueError: naming the family and what is missing or wrong.
        """
        where = f"backbone family {self.model_type!r}"
        if not self.model_type or not re.fullmatch(r"[a-z0-9_]+", self.model_type):
            raise ValueError(f"{where}: model_type must be lower-case letters, digits and underscores")
        for name in ("config_path", "model_path", "convert_path", "processor_steps_path"):
            path = getattr(self, name)
            if not isinstance(path, str) or ":" not in path:
                raise ValueError(f"{where}: {name} must be a 'module:attribute' path, got {path!r}")
            if path.startswith(".") and not self.package:
                raise ValueError(f"{where}: {name} {path!r} is relative but the family has no package")
        if not self.variants:
            raise ValueError(f"{where}: no architecture variant (block layout and default targets) is declared")
        for key, v in self.variants.items():
            if key != self.model_type and not key.startswith(self.model_type + "/"):
                raise ValueError(f"{where}: variant key {key!r} must be {self.model_type!r} or start with '{self.model_type}/'")
            if not isinstance(v, ArchitectureVariant):
                raise ValueError(f"{where}: variant {key!r} must be an ArchitectureVariant")
            v.layout.validate(f"{where}, variant {key!r}")
            if not v.targets.lora or not v.targets.rationale:
                raise ValueError(f"{where}, variant {key!r}: default LoRA targets and their rationale are required")
            empty = [n for n in ("linear", "ia3") if getattr(v.targets, n) == ()]
            if empty and not v.targets.no_linear_reason:
                raise ValueError(f"{where}, variant {key!r}: {' and '.join(empty)} targets are empty (refused) but "
                                 "no_linear_reason says nothing about why")
            if not set(v.targets.ia3_feedforward) <= set(v.targets.ia3):
                raise ValueError(f"{where}, variant {key!r}: ia3_feedforward must be a subset of ia3")
        if len(self.variants) > 1 and self.variant_of is None:
            raise ValueError(f"{where}: several variants {sorted(self.variants)} need variant_of(config) -> key")
        if not self.tiny_configs:
            raise ValueError(f"{where}: no tiny_configs (kwargs of a tiny random model for the family tests)")
        covered = {self.key_of_kwargs(kw) for kw in self.tiny_configs.values()}
        unknown = covered - set(self.variants)
        if unknown:
            raise ValueError(f"{where}: tiny configs map to undeclared variants {sorted(unknown)}")
        uncovered = set(self.variants) - covered
        if uncovered:
            raise ValueError(f"{where}: no tiny config builds variant(s) {sorted(uncovered)}; add one to tiny_configs")
        for v in self.released_variants:
            if "name" not in v:
                raise ValueError(f"{where}: a released variant has no 'name'")
            if "release" in v:  # optional (older records lack it); when present it must be well-formed
                validate_release(v["release"], f"{where}, released variant {v['name']!r}")


#: Keys of a hub-hosted ``release``: required, then optional.
HUB_RELEASE_KEYS: tuple[tuple[str, ...], tuple[str, ...]] = (("repo_id", "filename", "revision"), ("also",))
#: Keys of a release hosted elsewhere (Google Drive, figshare, Zenodo, ...): required, then optional.
EXTERNAL_RELEASE_KEYS: tuple[tuple[str, ...], tuple[str, ...]] = (("url", "host", "filename"), ())


def validate_release(release: Any, where: str) -> None:
    """Check the structured ``release`` field of a released variant (where its original weights live).

    Three shapes are accepted:

    * hub-hosted: ``{"repo_id": "org/name", "filename": "file.pth", "revision": "<40-hex commit>" | None}``,
      optionally ``"also": ["config.json"]`` (sibling files the converter reads beside ``filename``);
    * hosted elsewhere: ``{"url": "https://...", "host": "Google Drive" | "figshare" | "Zenodo" | ...,
      "filename": "file.pth"}``;
    * ``None``: the architecture is defined but no weights were released.

    Raises:
        ValueError: naming ``where`` and what is malformed.
    """
    if release is None:
        return
    if not isinstance(release, Mapping):
        raise ValueError(f"{where}: 'release' must be a dict or None, not {type(release).__name__}")
    kind = "hub" if "repo_id" in release else "external" if "url" in release else None
    if kind is None:
        raise ValueError(f"{where}: 'release' needs 'repo_id' (hub-hosted) or 'url' (hosted elsewhere); got "
                         f"{sorted(release)}")
    required, optional = HUB_RELEASE_KEYS if kind == "hub" else EXTERNAL_RELEASE_KEYS
    missing = [k for k in required if k not in release]
    unknown = sorted(set(release) - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(f"{where}: a {kind} 'release' has keys {list(required)}"
                         f"{' (optionally ' + ', '.join(optional) + ')' if optional else ''}; "
                         f"missing {missing}, unknown {unknown}")
    if not isinstance(release["filename"], str) or not release["filename"] or release["filename"].startswith("/"):
        raise ValueError(f"{where}: release 'filename' must be a relative file name, got {release['filename']!r}")
    if kind == "hub":
        if not isinstance(release["repo_id"], str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", release["repo_id"]):
            raise ValueError(f"{where}: release 'repo_id' must be 'namespace/name', got {release['repo_id']!r}")
        revision = release["revision"]
        if revision is not None and not (isinstance(revision, str) and re.fullmatch(r"[0-9a-f]{40}", revision)):
            raise ValueError(f"{where}: release 'revision' must be a full 40-hex commit id or None (not pinned), "
                             f"got {revision!r}")
        also = release.get("also", [])
        if not isinstance(also, (list, tuple)) or not all(isinstance(a, str) and a for a in also):
            raise ValueError(f"{where}: release 'also' must be a list of file names, got {also!r}")
    else:
        if not isinstance(release["url"], str) or not release["url"].startswith(("https://", "http://")):
            raise ValueError(f"{where}: release 'url' must be an http(s) URL, got {release['url']!r}")
        if not isinstance(release["host"], str) or not release["host"]:
            raise ValueError(f"{where}: release 'host' must name where the file lives (e.g. 'Google Drive')")


class _KwargsView:
    """Attribute access over config kwargs, for ``variant_of`` on tiny configs before any config class exists.
    A field the kwargs leave out reads as ``None`` (so ``variant_of`` must treat ``None`` as the default)."""

    def __init__(self, kwargs: Mapping[str, Any]) -> None:
        self._kwargs = kwargs

    def __getattr__(self, name: str) -> Any:
        return self._kwargs.get(name)


@runtime_checkable
class ECGBackbone(Protocol):
    """The contract a family's model class honours; what the classifier, adaptation and training rely on.

    A backbone is a ``transformers.PreTrainedModel`` (``from_pretrained``/``save_pretrained``, ``post_init``,
    ``gradient_checkpointing_enable``) whose forward takes the processor's output and returns a ``ModelOutput``.

    Attributes:
        config: a ``PreTrainedConfig`` with ``model_type`` (the family), ``hidden_size`` (the feature width the
            head is sized with; the token width of transformers) and ``signal_contract`` (the
            :class:`~ecg_adapt.processing.SignalContract` as a dict: leads, rate, window, layout; the processor
            must produce exactly its ``input_shape``).
        main_input_name: ``"input_values"``.
        supports_gradient_checkpointing: ``True``; the blocks are checkpointed through transformers'
            ``_gradient_checkpointing_func`` when ``gradient_checkpointing_enable()`` (the trainer's
            ``activation_checkpointing_enable``) has been called, and the logits are unchanged by it.
    """

    config: Any
    main_input_name: str
    supports_gradient_checkpointing: bool

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Encode a batch of shape ``(batch, *signal_contract.input_shape)``.

        ``attention_mask`` has the input's shape (or ``(batch, samples)``), 1 on real samples and 0 on the padding
        the processor added to short records. Returns a ``ModelOutput`` with ``last_hidden_state`` ``(batch,
        frames, hidden)`` (frames: tokens or CNN time steps) and, where the original has one, ``pooler_output``
        ``(batch, hidden)``: the original feature vector, computed with the mask, which the classifier then uses
        as is instead of averaging frames.
        """
        ...

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """transformers' switch (checkpoints the blocks in training)."""
        ...


# Hooks a backbone may define (looked up with ``hasattr``; not Protocol members, since a runtime Protocol check
# would then demand them of every backbone):
# ``frame_mask(attention_mask, n_frames) -> (batch, n_frames) bool``: True where a frame of ``last_hidden_state``
#     sees real signal. Required of a backbone that returns no ``pooler_output`` (the classifier then averages
#     those frames); tests/test_families_common.py checks it.
# ``prepare_for_finetuning(layerdrop: float)``: switch pretraining-only behaviour off (SpecAugment masking,
#     layer drop) when :class:`~ecg_adapt.ECGClassifier` wraps the backbone.
