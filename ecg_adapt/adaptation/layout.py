"""Where the blocks are in each backbone family: what partial fine-tuning, layer-wise learning-rate decay,
bottleneck adapters and prompt tuning need to know about an architecture.

Families name their blocks differently (``encoder.layers.3`` in HuBERT-ECG, ``block3`` in ST-MEM,
``stage_list.1.block_list.0`` in ECGFounder); each family declares its own in its folder (the
:class:`~ecg_adapt.models.family.BlockLayout` of every architecture variant in ``FAMILY.variants``), and this
module only resolves them on a backbone. A block is the unit of depth: a transformer layer, or a residual block
of a CNN. The order is the order of the forward pass.

For transformer blocks the layout also names, per block, the module whose output is the attention sublayer's
output and the one whose output is the feed-forward sublayer's output, both taken *before* the residual add
(where bottleneck adapters go), and describes how the block receives its attention mask (what prompt tuning
must extend when it prepends tokens). For CNN blocks it gives each block's output channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from ..models.family import MaskFormat, PromptSpec
from ..models.registry import get_family

__all__ = ["BackboneLayout", "MaskFormat", "PromptSpec", "backbone_layout", "family_key"]


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
        description: the architecture in words, from the family record (:attr:`BlockLayout.what`), for messages.

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
    description: str = ""

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
    """The family key of a backbone: its ``model_type``, or ``model_type/variant`` where the family declares
    several architecture variants (``merl/vit``, ``merl/resnet``, ``hubert_ecg/stable``)."""
    config = backbone.config
    try:
        family = get_family(config.model_type)
    except ValueError:
        return config.model_type
    return family.key_of(config)


def backbone_layout(backbone: nn.Module) -> BackboneLayout:
    """The :class:`BackboneLayout` of a registered family's backbone.

    Raises:
        ValueError: for a backbone whose family is not registered, or whose blocks cannot be found.
    """
    model_type = backbone.config.model_type
    try:
        family = get_family(model_type)
    except ValueError as e:
        raise ValueError(f"No block layout is known for backbone family {model_type!r}: {e}") from None
    key = family.key_of(backbone.config)
    spec = family.variant(key).layout
    where = f"this {key} backbone"
    names, blocks = spec.find_blocks(backbone, where)
    layout = BackboneLayout(model_type, spec.kind, names, blocks, spec.post_blocks_for(backbone.config),
                            description=spec.what)
    if spec.kind == "transformer":
        for block_name, block in zip(names, blocks):
            layout.attention_outputs.append(spec.sublayer(block, "attention", block_name, where))
            layout.attention_output_names.append(f"{block_name}.{spec.attention_output}")
            layout.ffn_outputs.append(spec.sublayer(block, "ffn", block_name, where))
            layout.ffn_output_names.append(f"{block_name}.{spec.ffn_output}")
        layout.token_dim = int(backbone.config.hidden_size)
        layout.prompt = spec.prompt
    else:
        layout.block_channels = [spec.block_channels(block, name, where) for name, block in zip(names, blocks)]
    return layout
