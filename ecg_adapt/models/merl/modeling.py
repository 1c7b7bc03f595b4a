"""MERL ECG encoders (ResNet-1D and ViT-1D) as one ``transformers`` model.

:class:`MERLModel` builds the encoder that ``config.encoder_type`` names *directly as its own attributes*, so
that its ``state_dict`` keys are exactly those of the original ``*_encoder.pth`` files (``conv1.weight``,
``layer2.0.shortcut.0.weight``, ... or ``to_patch_embedding.weight``, ``block0.attn.fn.to_qkv.weight``, ...).
The only original keys it does not have are the pretraining ``linear.*`` of the ResNet (never used by the
encoder) and a fine-tuned ``head.*``; the converter drops them.

Forward pass (eval mode), as the original:

* ResNet: ``relu(bn1(conv1(x)))`` (7 taps, stride 2, no max-pool) → ``layer1..layer4`` → feature map
  ``(B, C, L)``; features = mean over ``L`` (the input of the original ``linear``);
* ViT: ``Conv1d`` patches over all leads → ``+ pos_embedding`` → pre-norm blocks → tokens ``(B, N, W)``;
  features = ``norm(mean over tokens)`` (pool first, then LayerNorm: the input of the original ``head``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import logging

logger = logging.get_logger(__name__)

from ..modeling_utils import checked_frame_mask, init_like_torch_defaults, keep_frozen_batch_norm_in_eval
from .configuration import RESNET_EXPANSION, MERLConfig

# --------------------------------------------------------------------------------------------------- ResNet-1D


class BasicBlock(nn.Module):
    """Two 3-tap convolutions with BatchNorm and a residual connection (ResNet18/34).

    The residual path is called ``shortcut`` (not torchvision's ``downsample``): a 1-tap strided conv +
    BatchNorm when the shape changes, otherwise an empty ``nn.Sequential`` (identity, no keys).
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels, eps=eps)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels, eps=eps)
        self.shortcut = _shortcut(in_channels, out_channels * self.expansion, stride, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1-tap → 3-tap (strided) → 1-tap convolutions with 4x channel expansion (ResNet50/101 of the original)."""

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels, eps=eps)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels, eps=eps)
        self.conv3 = nn.Conv1d(out_channels, out_channels * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm1d(out_channels * self.expansion, eps=eps)
        self.shortcut = _shortcut(in_channels, out_channels * self.expansion, stride, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int, eps: float) -> nn.Sequential:
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm1d(out_channels, eps=eps),
    )


_BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _updates_batch_norm_stats(module: nn.Module) -> bool:
    """Whether a forward pass of ``module`` would update BatchNorm running statistics."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in module.modules())

# ------------------------------------------------------------------------------------------------------ ViT-1D


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode and at rate 0)."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob <= 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class PreNorm(nn.Module):
    """``fn(LayerNorm(x))``; the wrapper exists so that keys read ``attn.norm`` / ``attn.fn.*`` as in the original."""

    def __init__(self, dim: int, fn: nn.Module, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor | None) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)


class FeedForward(nn.Module):
    """Linear → GELU (exact erf form) → Dropout → Linear → Dropout (keys ``net.0``, ``net.3``)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``to_qkv`` whose output rows are ``[q; k; v]``.

    Each of q, k, v is split into heads as ``(heads, dim_head)``; the scale is ``dim_head ** -0.5``. The output
    projection ``to_out = Sequential(Linear, Dropout)`` is an identity when one head spans the whole width.
    The product is written out (not ``scaled_dot_product_attention``) to follow the original's arithmetic.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(attention_dropout)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=qkv_bias)
        project_out = not (heads == 1 and dim_head == dim)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout)) if project_out else nn.Identity()

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, N, dim)``; ``key_mask``: ``(B, N)`` bool, ``True`` = a token that may be attended to."""
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        dots = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if key_mask is not None:
            dots = dots.masked_fill(~key_mask[:, None, None, :], torch.finfo(dots.dtype).min)
        attn = self.dropout(self.attend(dots))
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.to_out(out)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn.fn(attn.norm(x))`` then ``x + ff.fn(ff.norm(x))`` (with optional DropPath)."""

    def __init__(self, config: MERLConfig, drop_path: float) -> None:
        super().__init__()
        w = config.vit_width
        attn = Attention(
            w,
            heads=config.vit_heads,
            dim_head=config.vit_dim_head,
            qkv_bias=config.vit_qkv_bias,
            dropout=float(config.vit_dropout),
            attention_dropout=float(config.vit_attention_dropout),
        )
        self.attn = PreNorm(w, attn, eps=config.layer_norm_eps)
        self.droppath1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ff = PreNorm(w, FeedForward(w, config.vit_mlp_dim, float(config.vit_dropout)), eps=config.layer_norm_eps)
        self.droppath2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.droppath1(self.attn(x, key_mask=key_mask)) + x
        return self.droppath2(self.ff(x)) + x


# ------------------------------------------------------------------------------------------------------- model


class MERLModel(PreTrainedModel):
    """MERL ECG encoder: ``(B, 12, 5000)`` in MIMIC lead order, min-max to [0, 1] → features ``(B, hidden_size)``.

    Outputs (:class:`~transformers.modeling_outputs.BaseModelOutputWithPooling`):

    * ``last_hidden_state``: ``(B, frames, hidden_size)``. ResNet: the last stage's feature map, transposed to
      frames-last (the original returns it channels-first, ``(B, C, L)``, L = 313 for 5000 samples). ViT: the
      tokens after the last block, *before* the final LayerNorm (which the original applies after pooling);
    * ``pooler_output``: the original feature vector (what the original ``linear`` / ``head`` receives);
    * ``hidden_states`` (``output_hidden_states=True``): stem and each stage output (ResNet, frames-last), or the
      embedded tokens and each block output (ViT).

    ``attention_mask`` (same shape as ``input_values`` or ``(B, T)``; 1 = real sample): a time step counts as
    real if any lead is real there. Both encoders mix all leads from the first layer, so a masked *lead* cannot be
    removed: it is fed as it is (the processor zero-fills it). Padding in *time* is handled as far as the
    architecture allows:

    * ViT: a token is real iff all samples of its patch are real. Padded tokens are excluded as attention keys
      and from the mean pool, so real tokens and ``pooler_output`` do not depend on the padding's values at all;
    * ResNet: a frame is real iff the input sample at the centre of its receptive field is real (frame ``j`` of
      the last stage is centred on sample ``16 * j``). Padded frames are left out of the mean pool; convolutions
      near the boundary still see padded samples (there is no way round that in a CNN).

    A mask that keeps every frame gives exactly the unmasked computation (same bits).

    Training note: BatchNorm layers whose parameters are all frozen stay in eval mode under ``train()`` (their
    running statistics are neither used from the batch nor updated). LoRA and linear probing freeze them, so the
    frozen backbone really stays frozen and an adapter-only save reproduces the trained model; full fine-tuning
    leaves them trainable and they behave as in the original (batch statistics, running averages updated).
    Gradient checkpointing recomputes each ViT block, and each ResNet stage whose BatchNorm is frozen (a stage
    with training BatchNorm runs normally, since recomputing it would update the running statistics twice).

    Example:
        >>> import torch
        >>> from ecg_adapt.models.merl import MERLConfig, MERLModel
        >>> cfg = MERLConfig(encoder_type="vit", vit_width=32, vit_depth=1, vit_heads=2, vit_dim_head=16, vit_mlp_dim=64)
        >>> MERLModel(cfg).eval()(torch.rand(1, 12, 5000)).pooler_output.shape
        torch.Size([1, 32])
    """

    config_class = MERLConfig
    config: MERLConfig
    base_model_prefix = "merl"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    # Original files may carry the unused pretraining ``linear`` (ResNet) or a fine-tuned ``head`` (ViT).
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^linear\.", r"^head\."]

    def __init__(self, config: MERLConfig) -> None:
        super().__init__(config)
        # Set by gradient_checkpointing_enable(): recompute ViT blocks / ResNet stages in the backward pass.
        self.gradient_checkpointing = False
        if config.encoder_type == "resnet":
            self._build_resnet(config)
        else:
            self._build_vit(config)
        self.post_init()

    # ----------------------------------------------------------------------------------------------- building
    def _build_resnet(self, config: MERLConfig) -> None:
        block = _BLOCKS[config.resnet_block]
        eps = config.batch_norm_eps
        widths = config.resnet_widths
        # Stem: as the original, its width is the first stage's width, and there is no max-pool after it.
        self.conv1 = nn.Conv1d(config.num_leads, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm1d(widths[0], eps=eps)
        in_channels = widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, config.resnet_num_blocks)):
            stride = 1 if i == 0 else 2
            blocks = []
            for s in [stride] + [1] * (n_blocks - 1):
                blocks.append(block(in_channels, width, s, eps))
                in_channels = width * RESNET_EXPANSION[config.resnet_block]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(widths)

    def _build_vit(self, config: MERLConfig) -> None:
        w = config.vit_width
        # One Conv1d over all leads at once: a token is 50 samples of the 12 leads, not one lead's patch.
        self.to_patch_embedding = nn.Conv1d(
            config.num_leads, w, kernel_size=config.vit_patch_size, stride=config.vit_patch_size, bias=False
        )
        self.pos_embedding = nn.Parameter(torch.randn(1, config.num_patches, w))
        self.dropout = nn.Dropout(float(config.vit_dropout))
        # Stochastic depth grows linearly from 0 to vit_drop_path_rate over the blocks (as torch.linspace in the
        # original; computed in Python so that the model can be built on the meta device).
        top, depth = float(config.vit_drop_path_rate), config.vit_depth
        rates = [top * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        for i in range(config.vit_depth):
            # Attributes block0..block{depth-1} (not a ModuleList) so keys read "block0." as in the original.
            self.add_module(f"block{i}", TransformerBlock(config, rates[i]))
        self.norm = nn.LayerNorm(w, eps=config.layer_norm_eps)

    def _init_weights(self, module: nn.Module) -> None:
        """The original's initialisation (PyTorch defaults), for ``from_config`` and for weights a file lacks."""
        if init_like_torch_defaults(module):
            return
        if isinstance(module, MERLModel) and module.config.encoder_type == "vit":
            init.normal_(module.pos_embedding, mean=0.0, std=1.0)  # torch.randn in the original

    # ---------------------------------------------------------------------------------------------- training
    def train(self, mode: bool = True) -> MERLModel:
        """As ``nn.Module.train``, except that a BatchNorm whose parameters are all frozen stays in eval mode."""
        super().train(mode)
        if mode:
            keep_frozen_batch_norm_in_eval(self)
        return self

    # ------------------------------------------------------------------------------------------------- masks
    @staticmethod
    def _time_mask(attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` bool: a time step is real if any lead is real there."""
        m = attention_mask.bool()
        return m.any(dim=1) if m.ndim == 3 else m

    def frame_mask(self, attention_mask: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Frame-level boolean mask ``(B, n_frames)`` for a sample-level ``attention_mask``; see the class doc."""
        t = self._time_mask(attention_mask)
        if self.config.encoder_type == "vit":
            p = self.config.vit_patch_size
            if t.shape[1] != n_frames * p:
                raise ValueError(f"attention mask has {t.shape[1]} samples; the ViT expects {n_frames * p}")
            return t.reshape(t.shape[0], n_frames, p).all(dim=-1)
        # ResNet: every stride-2 stage (stem, stages 2..) keeps the sample at the centre of each output's kernel
        # (kernel 7/pad 3, kernel 3/pad 1 and kernel 1/pad 0 with stride 2 are all centred on input 2j).
        t = t[:, ::2]
        for _ in range(self.num_stages - 1):
            t = t[:, ::2]
        if t.shape[1] != n_frames:
            raise ValueError(f"attention mask gives {t.shape[1]} frames but the feature map has {n_frames}")
        return t

    @staticmethod
    def _masked_mean(hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        if frame_mask is None:
            return hidden.mean(dim=1)
        m = frame_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(dim=1) / m.sum(dim=1)

    def _checked_frame_mask(self, attention_mask: torch.Tensor | None, n_frames: int) -> torch.Tensor | None:
        """The frame mask, or ``None`` when it keeps every frame (then the unmasked path runs: same bits)."""
        if attention_mask is None:
            return None
        return checked_frame_mask(self.frame_mask(attention_mask, n_frames))

    # ----------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
        **kwargs: object,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        """Encode ``input_values`` ``(B, num_leads, T)`` (T = 5000 for the released models)."""
        if input_values.ndim != 3 or input_values.shape[1] != self.config.num_leads:
            raise ValueError(
                f"MERL expects input_values of shape (batch, {self.config.num_leads}, time), got {tuple(input_values.shape)}"
            )
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if self.config.encoder_type == "resnet":
            hidden, pooled, states = self._forward_resnet(input_values, attention_mask, output_hidden_states)
        else:
            hidden, pooled, states = self._forward_vit(input_values, attention_mask, output_hidden_states)
        if return_dict is False:
            return tuple(v for v in (hidden, pooled, states) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled, hidden_states=states)

    def _forward_resnet(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, output_hidden_states: bool
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        states: list[torch.Tensor] = []
        out = torch.relu(self.bn1(self.conv1(x)))
        states.append(out)
        for i in range(self.num_stages):
            stage = getattr(self, f"layer{i + 1}")
            if self.gradient_checkpointing and self.training and not _updates_batch_norm_stats(stage):
                out = self._gradient_checkpointing_func(stage.__call__, out)
            else:
                if self.gradient_checkpointing and self.training:
                    # Recomputing a stage whose BatchNorm is training would update its running statistics twice.
                    logger.warning_once(
                        "MERL ResNet: gradient checkpointing is skipped for stages with trainable BatchNorm "
                        "(recomputation would update the running statistics twice); it applies when BatchNorm is frozen"
                    )
                out = stage(out)
            states.append(out)
        hidden = out.transpose(1, 2)  # (B, C, L) -> (B, L, C)
        pooled = self._masked_mean(hidden, self._checked_frame_mask(attention_mask, hidden.shape[1]))
        all_states = tuple(s.transpose(1, 2) for s in states) if output_hidden_states else None
        return hidden, pooled, all_states

    def _forward_vit(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, output_hidden_states: bool
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        h = self.to_patch_embedding(x).transpose(1, 2)  # (B, W, N) -> (B, N, W)
        if h.shape[1] != self.pos_embedding.shape[1]:
            raise ValueError(
                f"input of {x.shape[-1]} samples gives {h.shape[1]} tokens; this ViT has {self.pos_embedding.shape[1]} "
                f"positions (vit_seq_len={self.config.vit_seq_len})"
            )
        h = self.dropout(h + self.pos_embedding)
        token_mask = self._checked_frame_mask(attention_mask, h.shape[1])
        states = [h]
        for i in range(self.config.vit_depth):
            block = getattr(self, f"block{i}")
            if self.gradient_checkpointing and self.training:
                h = self._gradient_checkpointing_func(block.__call__, h, token_mask)
            else:
                h = block(h, key_mask=token_mask)
            states.append(h)
        pooled = self.norm(self._masked_mean(h, token_mask))  # pool first, then LayerNorm (as the original)
        return h, pooled, (tuple(states) if output_hidden_states else None)
