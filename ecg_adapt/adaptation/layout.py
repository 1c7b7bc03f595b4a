"""Where the blocks are in each backbone family: what partial fine-tuning, layer-wise learning-rate decay,
bottleneck adapters and prompt tuning need to know about an architecture.

Families name their blocks differently (``encoder.layers.3`` in HuBERT-ECG, ``block3`` in ST-MEM,
``stage_list.1.block_list.0`` in ECGFounder); the rules below are the one place that knows. A block is the
unit of depth: a transformer layer, or a residual block of a CNN. The order is the order of the forward pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
    """

    model_type: str
    kind: Literal["transformer", "cnn"]
    block_names: list[str]
    blocks: list[nn.Module]
    post_block_names: tuple[str, ...] = ()

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
    rx = re.compile(pattern)
    names, blocks = [], []
    for name, module in backbone.named_modules():
        if rx.fullmatch(name):
            names.append(name)
            blocks.append(module)
    if not blocks:
        raise ValueError(f"No block matching {pattern!r} in this {key} backbone; was the architecture changed?")
    return BackboneLayout(backbone.config.model_type, kind, names, blocks, post)
