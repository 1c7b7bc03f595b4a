"""ST-MEM ViT encoder, re-implemented as a ``transformers.PreTrainedModel``.

The module tree mirrors the original ``ST_MEM_ViT`` (vuno/ST-MEM ``models/encoder/st_mem_vit.py`` and
``vit.py``) attribute for attribute, so that an original state dict loads without renaming and LoRA target
names are the original's::

    to_patch_embedding.{1,2,3}      LayerNorm(patch) -> Linear(patch, W) -> LayerNorm(W)   (.0 = reshape, no weights)
    pos_embedding (1, N+2, W)       row 0 left SEP, rows 1..N patches, row N+1 right SEP
    sep_embedding (W,)              one SEP vector for both ends of every lead
    lead_embeddings.{0..11} (W,)    added to all N+2 tokens of a lead, SEP tokens included
    block{i}.attn.norm / .attn.fn.to_qkv / .attn.fn.to_out.0      pre-norm attention, fused q/k/v
    block{i}.ff.norm / .ff.fn.net.0 / .ff.fn.net.3                pre-norm MLP (Linear, GELU, Linear)
    norm                            LayerNorm on the pooled vector (not on the tokens)

Blocks are attributes ``block0``, ``block1``, ... (not a ``ModuleList``), as in the original.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration import STMEMConfig


def sincos_position_table(width: int, num_patches: int, temperature: float = 10000.0) -> torch.Tensor:
    """The fixed positional table of ST-MEM's MAE pretraining: ``(num_patches + 2, width)``.

    Rows 1..N hold ``[sin(p * w_k), cos(p * w_k)]`` for patch position ``p = 0..N-1`` and frequencies
    ``w_k = temperature ** (-k / (width / 2))``; rows 0 and N+1 (the SEP positions) are zero. The released
    encoder's ``pos_embedding`` is this table (it was frozen during pretraining).
    """
    if width % 2:
        raise ValueError(f"the sin-cos table needs an even width, got {width}")
    pos = torch.arange(num_patches, dtype=torch.float32)
    omega = 1.0 / temperature ** (torch.arange(width // 2, dtype=torch.float32) / (width / 2.0))
    angles = pos[:, None] * omega[None, :]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    zero = torch.zeros(1, width)
    return torch.cat([zero, table, zero], dim=0)


class PatchRearrange(nn.Module):
    """``(batch, leads, n * patch) -> (batch, leads, n, patch)``: the weightless first stage of the patch
    embedding (``einops.Rearrange('b c (n p) -> b c n p')`` in the original, index 0 of ``to_patch_embedding``)."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        b, c, t = series.shape
        return series.reshape(b, c, t // self.patch_size, self.patch_size)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}"


class DropPath(nn.Module):
    """Stochastic depth per sample (timm's ``DropPath``, with ``scale_by_keep``); identity in eval mode."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob <= 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class PreNorm(nn.Module):
    """``fn(LayerNorm(x))``; the residual is added by the block (original ``vit.PreNorm``)."""

    def __init__(self, dim: int, fn: nn.Module, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor | None) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)


class STMEMAttention(nn.Module):
    """Multi-head self-attention with one fused ``to_qkv`` projection (original ``vit.Attention``).

    ``to_qkv`` produces ``[q; k; v]`` along the feature axis, each laid out head-major (``(h d)``); the scale is
    ``head_dim ** -0.5``. ``to_out`` is ``Sequential(Linear, Dropout)`` (key ``to_out.0``), or an identity when a
    single head is as wide as the tokens, exactly where the original drops the projection.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, qkv_bias: bool, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.attn_dropout = attn_dropout
        self.to_qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        project_out = not (heads == 1 and head_dim == dim)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project_out else nn.Identity()

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(batch, tokens, dim)``; ``key_mask`` ``(batch, tokens)`` bool, True = may be attended to."""
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        # (b, n, h*d) -> (b, h, n, d): head-major split, as einops 'b n (h d) -> b h n d'
        q, k, v = (t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            scale=self.scale,
        )
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.to_out(out)


class STMEMFeedForward(nn.Module):
    """``Linear -> GELU (exact erf) -> Dropout -> Linear -> Dropout``; keys ``net.0`` and ``net.3``."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class STMEMBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + ff(LN(x))`` (with optional stochastic depth)."""

    def __init__(self, config: STMEMConfig, drop_path: float) -> None:
        super().__init__()
        w, eps = config.hidden_size, config.layer_norm_eps
        attn = STMEMAttention(
            w,
            config.num_attention_heads,
            config.head_dim,
            config.qkv_bias,
            float(config.hidden_dropout_prob),
            float(config.attention_probs_dropout_prob),
        )
        self.attn = PreNorm(w, attn, eps)
        self.droppath1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ff = PreNorm(w, STMEMFeedForward(w, config.intermediate_size, float(config.hidden_dropout_prob)), eps)
        self.droppath2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.droppath1(self.attn(x, key_mask=key_mask)) + x
        x = self.droppath2(self.ff(x)) + x
        return x


class STMEMPreTrainedModel(PreTrainedModel):
    """Weight initialisation and HF plumbing shared by ST-MEM models."""

    config_class = STMEMConfig
    config: STMEMConfig
    base_model_prefix = "st_mem"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["STMEMBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """The original MAE pretraining init (``models/st_mem.py ST_MEM.initialize_weights``).

        Linear: Xavier-uniform weights, zero bias; LayerNorm: ones and zeros; ``pos_embedding``: the fixed
        sin-cos table with zero SEP rows; SEP and lead embeddings: N(0, ``initializer_range``). Loaded weights
        are never touched (``transformers.initialization`` skips tensors flagged as loaded).
        """
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, STMEMModel):
            n_rows, width = module.pos_embedding.shape[1:]
            init.copy_(module.pos_embedding, sincos_position_table(width, n_rows - 2).unsqueeze(0))
            init.normal_(module.sep_embedding, std=self.config.initializer_range)
            for lead in module.lead_embeddings:
                init.normal_(lead, std=self.config.initializer_range)


class STMEMModel(STMEMPreTrainedModel):
    """ST-MEM encoder: ``(batch, leads, time)`` → tokens ``(batch, leads * (time / patch + 2), hidden)``.

    ``last_hidden_state`` holds every token after the last block, lead by lead (``[SEP, p_0 .. p_{n-1}, SEP]``
    per lead), with no LayerNorm (the original has no per-token final norm on the fine-tuning path).
    ``pooler_output`` is the original feature vector (``ST_MEM_ViT.forward_encoding``): the mean of the patch
    tokens over leads and time, SEP tokens left out, then ``norm``.

    ``attention_mask`` (same shape as ``input_values``, 1 = real sample; a ``(batch, time)`` mask applies to
    every lead) is an ecg_adapt addition; the original has no mask. A patch is real iff all of its samples
    are; a lead's two SEP tokens are real iff the lead has a real patch. Tokens that are not real are never
    attended to and are left out of the pooled mean, so the pooled features of the real part do not depend on
    what the padding or a masked lead contains. An all-ones mask is the same as no mask (bit for bit).

    Example:
        >>> import torch
        >>> from ecg_adapt.models.st_mem import STMEMConfig, STMEMModel
        >>> cfg = STMEMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=16,
        ...                   intermediate_size=64)
        >>> out = STMEMModel(cfg).eval()(torch.randn(2, 12, 2250))
        >>> out.last_hidden_state.shape, out.pooler_output.shape
        (torch.Size([2, 384, 32]), torch.Size([2, 32]))
    """

    def __init__(self, config: STMEMConfig) -> None:
        super().__init__(config)
        w, n = config.hidden_size, config.num_patches
        self.gradient_checkpointing = False
        self.to_patch_embedding = nn.Sequential(
            PatchRearrange(config.patch_size),
            nn.LayerNorm(config.patch_size, eps=config.layer_norm_eps),
            nn.Linear(config.patch_size, w),
            nn.LayerNorm(w, eps=config.layer_norm_eps),
        )
        self.pos_embedding = nn.Parameter(torch.zeros(1, n + 2, w))
        self.sep_embedding = nn.Parameter(torch.zeros(w))
        self.lead_embeddings = nn.ParameterList(nn.Parameter(torch.zeros(w)) for _ in range(config.num_leads))
        # Stochastic depth grows linearly over the blocks (torch.linspace(0, rate, depth), as the original).
        # (on the CPU explicitly, so that the model can also be built under a meta-device context)
        rates = torch.linspace(0, float(config.drop_path_rate), config.num_hidden_layers, device="cpu").tolist()
        for i, rate in enumerate(rates):
            self.add_module(f"block{i}", STMEMBlock(config, rate))
        self.dropout = nn.Dropout(float(config.hidden_dropout_prob))
        self.norm = nn.LayerNorm(w, eps=config.layer_norm_eps)
        self.post_init()

    @property
    def blocks(self) -> list[STMEMBlock]:
        """The transformer blocks in order (``block0``, ``block1``, ...)."""
        return [getattr(self, f"block{i}") for i in range(self.config.num_hidden_layers)]

    def token_mask(self, attention_mask: torch.Tensor, num_patches: int) -> torch.Tensor:
        """Token-level mask ``(batch, leads, num_patches + 2)`` (bool) for a sample-level ``attention_mask``.

        A patch is real iff every sample in it is; the two SEP tokens of a lead are real iff the lead has at
        least one real patch.
        """
        m = attention_mask.to(torch.bool)
        b, c, t = m.shape
        patches = m.reshape(b, c, num_patches, t // num_patches).all(dim=-1)
        sep = patches.any(dim=-1, keepdim=True)
        return torch.cat([sep, patches, sep], dim=-1)

    def _check_input(self, input_values: torch.Tensor) -> tuple[int, int, int]:
        if input_values.ndim != 3:
            raise ValueError(f"ST-MEM expects (batch, leads, time) input, got shape {tuple(input_values.shape)}")
        b, c, t = input_values.shape
        cfg = self.config
        if c != cfg.num_leads:
            raise ValueError(
                f"ST-MEM was built for {cfg.num_leads} leads ({', '.join(cfg.contract.leads)}), got {c}; "
                "feed zeros for missing leads and hide them with attention_mask"
            )
        if t % cfg.patch_size or t > cfg.seq_len or t == 0:
            raise ValueError(
                f"input length {t} must be a positive multiple of patch_size={cfg.patch_size} and at most "
                f"seq_len={cfg.seq_len} (the positional table has {cfg.num_patches} patch rows)"
            )
        return b, c, t // cfg.patch_size

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        """Patch, position, SEP and lead embeddings: ``(batch, leads, n + 2, hidden)`` before flattening."""
        x = self.to_patch_embedding(input_values)  # (b, c, n, w)
        b, c, n, _ = x.shape
        pos = self.pos_embedding
        x = x + pos[:, 1 : n + 1, :].unsqueeze(1)
        # Left SEP takes positional row 0, right SEP the LAST row of the full table (also for short inputs).
        left = (self.sep_embedding + pos[0, 0]).expand(b, c, 1, -1)
        right = (self.sep_embedding + pos[0, -1]).expand(b, c, 1, -1)
        x = torch.cat([left, x, right], dim=2)
        leads = torch.stack(list(self.lead_embeddings))  # (c, w), added to every token of the lead, SEPs included
        return x + leads[None, :, None, :]

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
        **kwargs: object,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        """Encode ``input_values`` ``(batch, leads, time)``; see the class docstring for the outputs and the mask.

        ``output_hidden_states=True`` also returns the token sequence after the embeddings and after every block
        (``hidden_states[0]`` .. ``hidden_states[depth]``; the last one equals ``last_hidden_state``).
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = True if return_dict is None else return_dict
        b, c, n = self._check_input(input_values)

        tokens = None
        if attention_mask is not None:
            if attention_mask.ndim == 2:
                attention_mask = attention_mask[:, None, :].expand(b, c, -1)
            if tuple(attention_mask.shape) != tuple(input_values.shape):
                raise ValueError(
                    f"attention_mask must have the shape of input_values {tuple(input_values.shape)} "
                    f"(or (batch, time)), got {tuple(attention_mask.shape)}"
                )
            # All ones is no mask: skip it so that the result is exactly the unmasked one.
            if not bool(attention_mask.all()):
                tokens = self.token_mask(attention_mask, n)
                empty = ~tokens.flatten(1).any(dim=1)
                if bool(empty.any()):
                    raise ValueError(
                        f"attention_mask leaves no complete {self.config.patch_size}-sample patch in batch item(s) "
                        f"{torch.nonzero(empty).flatten().tolist()}"
                    )

        x = self.embed(input_values).reshape(b, c * (n + 2), -1)  # lead-major token sequence
        x = self.dropout(x)
        key_mask = None if tokens is None else tokens.reshape(b, c * (n + 2))

        all_hidden: list[torch.Tensor] = [x] if output_hidden_states else []
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = self._gradient_checkpointing_func(block.__call__, x, key_mask)
            else:
                x = block(x, key_mask=key_mask)
            if output_hidden_states:
                all_hidden.append(x)

        # Pool the patch tokens (SEP tokens dropped) over leads and time, then LayerNorm: pool-then-norm.
        patch_tokens = x.reshape(b, c, n + 2, -1)[:, :, 1:-1, :]
        if tokens is None:
            pooled = patch_tokens.mean(dim=(1, 2))
        else:
            m = tokens[:, :, 1:-1].unsqueeze(-1).to(patch_tokens.dtype)
            pooled = (patch_tokens * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2))
        pooled = self.norm(pooled)

        hidden_states = tuple(all_hidden) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (x, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states)


__all__ = ["STMEMModel", "STMEMPreTrainedModel", "sincos_position_table"]
