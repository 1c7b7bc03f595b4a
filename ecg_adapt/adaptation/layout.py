"""Where the blocks are in each backbone family: what partial fine-tuning, layer-wise learning-rate decay,
bottleneck adapters and prompt tuning need to know about an architecture.

Families name their blocks differently (``encoder.layers.3`` in HuBERT-ECG, ``block3`` in ST-MEM,
``stage_list.1.block_list.0`` in ECGFounder); the rules below are the one place that knows. A block is the
unit of depth: a transformer layer, or a residual block of a CNN. The order is the order of the forward pass.

For transformer blocks the layout also names, per block, the module whose output is the attention sublayer's
output and the one whose output is the feed-forward sublayer's output, both taken *before* the residual add
(where bottleneck adapters go), and describes how the block receives its attention mask (what prompt tuning
must extend when it prepends tokens). For CNN blocks it gives each block's output channels.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

# model_type -> (kind, regex of a block's qualified name inside the backbone); MERL depends on the encoder.
# Third: the modules applied after the last block.
_BLOCK_RULES: dict[str, tuple[Literal["transformer", "cnn"], str, tuple[str, ...]]] = {
    "hubert_ecg": ("transformer", r"encoder\.layers\.\d+", ()),
    "hubert_ecg/stable": ("transformer", r"encoder\.layers\.\d+", ("encoder.layer_norm",)),
    "ecg_fm": ("transformer", r"encoder\.layers\.\d+", ("encoder.layer_norm",)),
    "st_mem": ("transformer", r"block\d+", ("norm",)),
    "merl/vit": ("transformer", r"block\d+", ("norm",)),
    "merl/resnet": ("cnn", r"layer\d\.\d+", ()),
    "ecgfounder": ("cnn", r"stage_list\.\d+\.block_list\.\d+", ()),
    "ecg_jepa": ("transformer", r"encoder_blocks\.blocks\.\d+", ("norm",)),
}

# Transformer families: (attention-output module, FFN-output module), relative to a block. Each module's output is
# its sublayer's output before the residual add (HuBERT's ``attention`` returns a tuple, so its output projection
# is used; ``feed_forward`` returns the FFN output after its dropout).
_SUBLAYER_RULES: dict[str, tuple[str, str]] = {
    "hubert_ecg": ("attention.out_proj", "feed_forward"),
    "hubert_ecg/stable": ("attention.out_proj", "feed_forward"),
    "ecg_fm": ("self_attn", "fc2"),
    "st_mem": ("attn", "ff"),
    "merl/vit": ("attn", "ff"),
    "ecg_jepa": ("attn", "mlp"),
}

MaskFormat = Literal["hf_4d", "key_padding", "key_keep", "pairwise"]


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


_PROMPT_RULES: dict[str, PromptSpec] = {
    # HubertEncoder calls ``layer(hidden_states, attention_mask=attention_mask)`` with the 4-D mask it builds.
    "hubert_ecg": PromptSpec("attention_mask", 1, "hf_4d"),
    "hubert_ecg/stable": PromptSpec("attention_mask", 1, "hf_4d"),
    "ecg_fm": PromptSpec("key_padding_mask", 1, "key_padding"),  # layer(x, padding_mask)
    "st_mem": PromptSpec("key_mask", 1, "key_keep"),  # block(x, key_mask=...)
    "merl/vit": PromptSpec("key_mask", 1, "key_keep"),  # block(h, key_mask=...)
    # encoder_blocks(x, pos, attn_mask) runs ``block(x + pos, attn_mask)`` for every block.
    "ecg_jepa": PromptSpec("attention_mask", 1, "pairwise", entry="encoder_blocks"),
}


def _ecgfounder_channels(block: nn.Module) -> int:
    return int(block.out_channels)


def _merl_resnet_channels(block: nn.Module) -> int:
    last = block.conv3 if hasattr(block, "conv3") else block.conv2  # Bottleneck / BasicBlock
    return int(last.out_channels)


# CNN families: the number of channels a residual block outputs.
_CHANNEL_RULES: dict[str, Callable[[nn.Module], int]] = {
    "ecgfounder": _ecgfounder_channels,
    "merl/resnet": _merl_resnet_channels,
}


@dataclass
class BackboneLayout:
    """The blocks of one backbone, in forward order.

    Attributes:
        model_type: the family.
        kind: ``"transformer"`` or ``"cnn"``.
        block_names: qualified names of the blocks inside the backbone module.
        blocks: the block modules (same order).
        post_block_names: modules applied after the last block (final norms); everything else outside the
            blocks comes before them (feature extractors, patch and positional embeddings).
        attention_output_names, attention_outputs: transformers: per block, the module whose output is the
            attention sublayer's output before the residual add (empty for CNNs).
        ffn_output_names, ffn_outputs: transformers: per block, the same for the feed-forward sublayer.
        token_dim: transformers: width of the tokens the blocks exchange (``None`` for CNNs).
        prompt: transformers: how blocks receive tokens and mask (:class:`PromptSpec`; ``None`` for CNNs).
        block_channels: CNNs: the channels each residual block outputs (empty for transformers).

    Example:
        >>> layout = backbone_layout(backbone)                                # doctest: +SKIP
        >>> layout.block_names[:2], layout.attention_output_names[0]          # doctest: +SKIP
        (['encoder.layers.0', 'encoder.layers.1'], 'encoder.layers.0.attention.out_proj')
    """

    model_type: str
    kind: Literal["transformer", "cnn"]
    block_names: list[str]
    blocks: list[nn.Module]
    post_block_names: tuple[str, ...] = ()
    attention_output_names: list[str] = field(default_factory=list)
    attention_outputs: list[nn.Module] = field(default_factory=list)
    ffn_output_names: list[str] = field(default_factory=list)
    ffn_outputs: list[nn.Module] = field(default_factory=list)
    token_dim: int | None = None
    prompt: PromptSpec | None = None
    block_channels: list[int] = field(default_factory=list)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def block_index(self, param_name: str) -> int | None:
        """Index of the block that owns a backbone parameter (name relative to the backbone), or ``None`` for
        parameters outside every block (embeddings before block 0, final norms after the last block)."""
        for i, name in enumerate(self.block_names):
            if param_name.startswith(name + "."):
                return i
        return None

    def depth(self, param_name: str) -> int:
        """Depth for layer-wise decay: 0 for the embeddings before the first block, ``i + 1`` inside block ``i``,
        ``num_blocks + 1`` for the modules applied after the last block (final norms)."""
        i = self.block_index(param_name)
        if i is not None:
            return i + 1
        if any(param_name.startswith(p + ".") for p in self.post_block_names):
            return self.num_blocks + 1
        return 0


def family_key(backbone: nn.Module) -> str:
    """The layout rule of a backbone: its ``model_type``, plus the encoder for MERL."""
    model_type = backbone.config.model_type
    if model_type == "merl":
        return f"merl/{backbone.config.encoder_type}"
    if model_type == "hubert_ecg" and getattr(backbone.config, "do_stable_layer_norm", False):
        return "hubert_ecg/stable"  # pre-norm variant: encoder.layer_norm runs after the last layer
    return model_type


def backbone_layout(backbone: nn.Module) -> BackboneLayout:
    """The :class:`BackboneLayout` of a registered family's backbone.

    Raises:
        ValueError: for a backbone whose family has no layout rule, or whose blocks cannot be found.
    """
    key = family_key(backbone)
    if key not in _BLOCK_RULES:
        raise ValueError(f"No block layout is known for backbone family {key!r}; known: {sorted(_BLOCK_RULES)}")
    kind, pattern, post = _BLOCK_RULES[key]
    if key == "ecg_fm" and not getattr(backbone.config, "layer_norm_first", False):
        post = ()  # post-LN (the released model): encoder.layer_norm runs before the first layer
    rx = re.compile(pattern)
    names, blocks = [], []
    for name, module in backbone.named_modules():
        if rx.fullmatch(name):
            names.append(name)
            blocks.append(module)
    if not blocks:
        raise ValueError(f"No block matching {pattern!r} in this {key} backbone; was the architecture changed?")
    layout = BackboneLayout(backbone.config.model_type, kind, names, blocks, post)
    if kind == "transformer":
        attn_suffix, ffn_suffix = _SUBLAYER_RULES[key]
        for block_name, block in zip(names, blocks):
            for suffix, qualified, modules in ((attn_suffix, layout.attention_output_names, layout.attention_outputs),
                                               (ffn_suffix, layout.ffn_output_names, layout.ffn_outputs)):
                try:
                    modules.append(block.get_submodule(suffix))
                except AttributeError:
                    raise ValueError(f"Block {block_name} of this {key} backbone has no {suffix!r}; "
                                     "was the architecture changed?") from None
                qualified.append(f"{block_name}.{suffix}")
        layout.token_dim = int(backbone.config.hidden_size)
        layout.prompt = _PROMPT_RULES[key]
    else:
        layout.block_channels = [_CHANNEL_RULES[key](block) for block in blocks]
    return layout
