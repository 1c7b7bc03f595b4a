"""ECG-JEPA encoder (``ecg_jepa.MaskTransformer`` of sehunfromdaegu/ECG_JEPA), re-implemented.

Data flow of :meth:`ECGJEPAModel.forward`, with ``L`` input leads, ``P`` = 50 patches per lead, ``T`` = 50
samples per patch and ``D`` = ``hidden_size``:

1. ``(B, L, P*T)`` → ``(B, L*P, T)``: every lead is cut into ``P`` consecutive patches; token index
   ``= lead * P + patch`` (lead-major). There is no CLS token and no lead embedding.
2. ``W_P = Linear(T, D)`` embeds each patch on its own.
3. Every block receives ``x + pos_embed``: the fixed 2-D sin-cos table is added before *each* block, not once.
   Its first ``D/2`` dimensions encode the patch (time) index, the last ``D/2`` the lead index.
4. Blocks are timm-style pre-norm ViT blocks (fused ``qkv`` without bias, ``proj``, ``mlp.fc1``/``fc2``,
   exact GELU). Attention is restricted by the **lead-wise mask**: token ``(l, p)`` may attend to token
   ``(l', p')`` iff ``l == l'`` (its own lead, all times) or ``p == p'`` (the same time patch in the other
   leads): 57 of 400 keys for the 8-lead input. This is part of the pretrained architecture, not an option.
5. The final LayerNorm ``norm`` is applied to every token (``last_hidden_state``), and the tokens are
   averaged: ``pooler_output`` = ``MaskTransformer.representation(x)``, the vector the original linear probe
   and fine-tuning head consume.

Module and parameter names are the original ones (``W_P``, ``pos_embed``, ``encoder_blocks.blocks.{i}.attn.qkv``
...), so an original state dict loads without renaming and LoRA target names match the original code.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration import ECGJEPAConfig


# ----------------------------------------------------------------------------------------------- positions
def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 1 / 10000 ** (k / (dim/2))``, ``k < dim/2`` (float64)."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d_lead_patch(dim: int, num_leads: int, num_patches: int) -> torch.Tensor:
    """The original ``get_2d_sincos_pos_embed(dim, c, p)``: ``(c*p, dim)`` float32, row ``lead * p + patch``.

    The original builds ``meshgrid(arange(p), arange(c))`` ("w goes first") and encodes the first grid (the
    patch index) in the first half of the dimensions, the lead index in the second half. Computed in float64
    and rounded once, as the original (numpy float64 → ``.float()``).
    """
    patch = torch.arange(num_patches).repeat(num_leads)
    lead = torch.arange(num_leads).repeat_interleave(num_patches)
    table = torch.cat([sincos_1d(dim // 2, patch), sincos_1d(dim // 2, lead)], dim=1)
    return table.to(torch.float32)


def lead_wise_attention_mask(num_leads: int, num_patches: int, device: torch.device | None = None) -> torch.Tensor:
    """``(N, N)`` bool, ``N = num_leads * num_patches``: ``True`` where query token ``i`` may attend to key ``j``.

    Same lead (``i // P == j // P``) or same time patch (``i % P == j % P``), as the original
    ``_cross_attention_mask`` (then restricted to the input leads, which is the same rule on fewer leads).
    """
    idx = torch.arange(num_leads * num_patches, device=device)
    lead, patch = idx // num_patches, idx % num_patches
    return (lead[:, None] == lead[None, :]) | (patch[:, None] == patch[None, :])


# ----------------------------------------------------------------------------------------------- layers
class DropPath(nn.Module):
    """Stochastic depth per sample (timm's ``DropPath``); identity in eval mode or at rate 0."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class ECGJEPAMlp(nn.Module):
    """``fc1 → GELU (exact erf form) → dropout → fc2 → dropout`` (the original ``Mlp``)."""

    def __init__(self, config: ECGJEPAConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.drop = nn.Dropout(float(config.hidden_dropout_prob))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ECGJEPAAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` (rows ``[q; k; v]``, head-major inside each) and ``proj``.

    Computed with ``F.scaled_dot_product_attention`` and a boolean mask, which is the original's
    ``masked_fill(mask == 0, -inf)`` + softmax up to float rounding (about 1e-7 on the fixtures).
    """

    def __init__(self, config: ECGJEPAConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.scale = config.qk_scale or config.head_dim**-0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.attn_drop = float(config.attention_probs_dropout_prob)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.proj_drop = nn.Dropout(float(config.hidden_dropout_prob))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        # (B, N, 3D) -> (3, B, H, N, D/H): the original's reshape(B, N, 3, H, D/H).permute(2, 0, 3, 1, 4)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class ECGJEPABlock(GradientCheckpointingLayer):
    """Pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` (with optional drop path)."""

    def __init__(self, config: ECGJEPAConfig, layer_idx: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ECGJEPAMlp(config)
        self.attn = ECGJEPAAttention(config)
        # The original init (MaskTransformer.fix_init_weight) divides the residual-branch output weights of
        # block i (0-based) by sqrt(2 * (i + 1)); _init_weights reads this factor.
        depth_scale = 1.0 / math.sqrt(2.0 * (layer_idx + 1))
        self.attn.proj._ecg_jepa_init_scale = depth_scale
        self.mlp.fc2._ecg_jepa_init_scale = depth_scale

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attention_mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class ECGJEPAEncoderBlocks(nn.Module):
    """The stack of blocks (original ``Encoder_Block``); the positional table is added before every block."""

    def __init__(self, config: ECGJEPAConfig) -> None:
        super().__init__()
        n = config.num_hidden_layers
        rates = [float(r) for r in torch.linspace(0, float(config.drop_path_rate), n, device="cpu")] if n > 0 else []
        self.blocks = nn.ModuleList([ECGJEPABlock(config, i, rates[i]) for i in range(n)])

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        states: list[torch.Tensor] = [x] if output_hidden_states else []
        for block in self.blocks:
            x = block(x + pos, attention_mask)  # positional: gradient checkpointing needs it so
            if output_hidden_states:
                states.append(x)
        return x, (tuple(states) if output_hidden_states else None)


# ----------------------------------------------------------------------------------------------- model
class ECGJEPAPreTrainedModel(PreTrainedModel):
    """Weight init and loading glue shared by ECG-JEPA models."""

    config_class = ECGJEPAConfig
    config: ECGJEPAConfig
    base_model_prefix = "ecg_jepa"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["ECGJEPABlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """The original random init (``MaskTransformer._init_weights`` + ``fix_init_weight``).

        Linear weights: truncated normal (std ``init_std``, cut at +-2 absolute), scaled by
        ``1/sqrt(2 (i+1))`` for ``attn.proj`` and ``mlp.fc2`` of block ``i``; biases 0; LayerNorm 1/0; the
        positional table is the sin-cos table (or U(-0.02, 0.02) when ``pos_type="learnable"``). Loaded tensors
        are left alone (transformers' ``init`` functions skip them).
        """
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            s = getattr(module, "_ecg_jepa_init_scale", 1.0)
            # trunc_normal(std, a, b) / k has the law of trunc_normal(std/k, a/k, b/k)
            init.trunc_normal_(module.weight, std=std * s, a=-2.0 * s, b=2.0 * s)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ECGJEPAModel):
            if self.config.pos_type == "sincos":
                table = sincos_2d_lead_patch(self.config.hidden_size, self.config.num_leads, self.config.num_patches)
                init.copy_(module.pos_embed, table.to(module.pos_embed.device))
            else:
                init.uniform_(module.pos_embed, -0.02, 0.02)


class ECGJEPAModel(ECGJEPAPreTrainedModel):
    """ECG-JEPA encoder: ``(B, L, 2500)`` mV at 250 Hz → ``last_hidden_state`` ``(B, L*50, D)`` and
    ``pooler_output`` ``(B, D)`` (the original ``representation``).

    ``pos_embed`` holds the fixed sin-cos table as a *persistent buffer* (it is in the original state dict
    under the same key, as a ``requires_grad=False`` parameter): it is saved and loaded like a weight but is
    never trained, whatever an adaptation method does with ``requires_grad``. With ``pos_type="learnable"``
    it is a trainable parameter instead.

    Example:
        >>> import torch
        >>> from ecg_adapt.models.ecg_jepa import ECGJEPAConfig, ECGJEPAModel
        >>> model = ECGJEPAModel(ECGJEPAConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)).eval()
        >>> out = model(torch.randn(1, 8, 2500))
        >>> out.last_hidden_state.shape, out.pooler_output.shape
        (torch.Size([1, 400, 32]), torch.Size([1, 32]))
    """

    def __init__(self, config: ECGJEPAConfig) -> None:
        super().__init__(config)
        table = sincos_2d_lead_patch(config.hidden_size, config.num_leads, config.num_patches)
        if config.pos_type == "learnable":
            self.pos_embed = nn.Parameter(table)
        else:
            self.register_buffer("pos_embed", table, persistent=True)
        self.encoder_blocks = ECGJEPAEncoderBlocks(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.W_P = nn.Linear(config.patch_size, config.hidden_size)
        self.post_init()

    # ------------------------------------------------------------------ helpers
    def input_positions(self) -> torch.Tensor:
        """Rows of ``pos_embed`` for the input leads (``config.leads``), as ``restrict_leads`` does."""
        cfg = self.config
        if list(cfg.leads) == list(range(cfg.num_leads)):
            return self.pos_embed
        table = self.pos_embed.reshape(cfg.num_leads, cfg.num_patches, -1)
        return table[list(cfg.leads)].reshape(len(cfg.leads) * cfg.num_patches, -1)

    def token_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, L*P)`` bool from a sample-level ``(B, L, P*T)`` mask: a token is real iff all its samples are."""
        b, n_leads, _ = attention_mask.shape
        m = attention_mask.reshape(b, n_leads * self.config.num_patches, self.config.patch_size)
        return m.bool().all(dim=-1)

    def frame_mask(self, attention_mask: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Token-level mask with the interface :class:`~ecg_adapt.ECGClassifier` uses for backbones."""
        mask = self.token_mask(attention_mask)
        if mask.shape[1] != n_frames:
            raise ValueError(f"attention mask gives {mask.shape[1]} tokens but the model produced {n_frames}")
        return mask

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
        **kwargs: object,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        """Encode ``input_values`` ``(B, L, 2500)`` (``L = len(config.leads)``, millivolts, 250 Hz).

        ``attention_mask`` (same shape, 1 = real sample) is honoured as far as the architecture allows:

        * a token (one lead's 50-sample patch) is *valid* iff all its samples are real;
        * valid tokens attend only to valid keys (on top of the lead-wise mask), so padding or a masked lead
          cannot change them, whatever values it holds;
        * an invalid token attends only to itself (so no softmax row is empty; its output is ignored);
        * ``pooler_output`` averages the valid tokens only (zero for an input with none).

        An all-ones mask (or ``None``) takes exactly the original computation. ``last_hidden_state`` keeps every
        token; ``hidden_states`` (with ``output_hidden_states``) are the patch embeddings and each block's
        output (the last one is before the final ``norm``).
        """
        cfg = self.config
        if input_values.dim() != 3:
            raise ValueError(f"ECG-JEPA expects (batch, leads, samples) input, got shape {tuple(input_values.shape)}")
        b, n_leads, n_samples = input_values.shape
        if n_leads != len(cfg.leads) or n_samples != cfg.num_patches * cfg.patch_size:
            raise ValueError(
                f"ECG-JEPA expects (batch, {len(cfg.leads)}, {cfg.num_patches * cfg.patch_size}) input "
                f"({cfg.contract.describe()}), got {tuple(input_values.shape)}"
            )
        if output_hidden_states is None:
            output_hidden_states = cfg.output_hidden_states
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_values.shape):
            raise ValueError(f"attention_mask must have the shape of input_values {tuple(input_values.shape)}, got {tuple(attention_mask.shape)}")

        n_tokens = n_leads * cfg.num_patches
        # Lead-major patching: token = lead * P + patch (the original reshape(B, -1, 50)).
        x = self.W_P(input_values.to(self.W_P.weight.dtype).reshape(b, n_tokens, cfg.patch_size))
        pos = self.input_positions().to(x.dtype)

        allowed = lead_wise_attention_mask(n_leads, cfg.num_patches, device=x.device)  # (N, N)
        tokens = None if attention_mask is None or bool(attention_mask.all()) else self.token_mask(attention_mask)
        if tokens is None:
            attn_mask = allowed
        else:
            eye = torch.eye(n_tokens, dtype=torch.bool, device=x.device)
            # (B, 1, N, N): keys must be valid; an invalid query keeps itself so that no row is all -inf.
            attn_mask = (allowed & (tokens[:, None, :] | (eye & ~tokens[:, :, None])))[:, None]

        hidden, states = self.encoder_blocks(x, pos, attn_mask, output_hidden_states=bool(output_hidden_states))
        hidden = self.norm(hidden)
        if tokens is None:
            pooled = hidden.mean(dim=1)
        else:
            w = tokens.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)

        if not return_dict:
            return tuple(t for t in (hidden, pooled, states) if t is not None)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled, hidden_states=states)


__all__ = [
    "ECGJEPAAttention",
    "ECGJEPABlock",
    "ECGJEPAModel",
    "ECGJEPAPreTrainedModel",
    "lead_wise_attention_mask",
    "sincos_2d_lead_patch",
]
