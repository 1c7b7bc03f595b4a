"""The adapter layers of ecg_adapt's module methods (see :mod:`ecg_adapt.adaptation.modules`): bottleneck and
convolutional adapters, prompt tokens, and :class:`ModuleAdapter`, the set of them one named adapter holds."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import AdaptationConfig, UnsupportedAdaptationError
from ..layout import BackboneLayout

ADAPTER_PREFIX = "adapters"
"""Every adapter tensor's name starts with this (in the model, and in ``adapter_model.safetensors``)."""

BOTTLENECK_METHODS = ("houlsby_adapter", "pfeiffer_adapter")
MODULE_METHODS = (*BOTTLENECK_METHODS, "conv_adapter", "prompt_tuning")

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
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
        self.act = activation(non_linearity)
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
        self.act = activation(non_linearity)
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
    """One named adapter of an :class:`~ecg_adapt.adaptation.modules.AdaptedModel`: its modules for one backbone, and its own head.

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


__all__ = [
    "ADAPTER_PREFIX",
    "BOTTLENECK_METHODS",
    "MODULE_METHODS",
    "BottleneckAdapter",
    "ConvAdapter",
    "ModuleAdapter",
    "bottleneck_width",
    "prompt_init_bound",
]
