"""ECG-FM backbone: a re-implementation of fairseq-signals' ``ECGTransformerModel`` (eval path).

Module names are the original's (``feature_extractor.conv_layers.0.0``, ``post_extract_proj``,
``conv_pos.pos_conv.0``, ``encoder.layers.N.self_attn.q_proj``, ``fc1`` ...), so a released state dict loads
after two mechanical changes only (prefix ``encoder.`` of fine-tuned files stripped, old weight-norm keys
renamed), and LoRA targets carry the names users know from the original code.

Two deliberate differences from the original modules:

* attention calls ``q_proj``/``k_proj``/``v_proj``/``out_proj`` as modules. The original passes their
  ``.weight`` tensors to ``F.multi_head_attention_forward``, which would silently bypass any adapter (peft's
  LoRA layers wrap the module's call, not its weight);
* the pretraining-only parts (time masking with ``mask_emb``, quantizer, ``project_q``, ``final_proj``) are left
  out: they do not take part in feature extraction.

Forward pass (eval), as in the original ``Wav2Vec2Model.extract_features`` / ``ECGTransformerModel.forward``::

    (B, 12, T) -> conv blocks -> (B, C, T') -> transpose -> layer_norm -> post_extract_proj -> (+ conv_pos)
               -> encoder.layer_norm (post-LN models) -> N post-LN layers -> last_hidden_state (B, T', E)
    pooler_output = sum over frames / number of non-zero frames, per channel (the classifier's head input)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration import ECGFMConfig


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient scaled by ``scale`` backward (fairseq's ``GradMultiply``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


class Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (the original's ``Fp32GroupNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).type_as(x)


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (the original's ``Fp32LayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class TransposeLast(nn.Module):
    """Swap the last two axes (so that a LayerNorm can normalise the channels of ``(B, C, T)`` data)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


class SamePad(nn.Module):
    """Drop the last output step of an even-kernel conv padded with ``kernel // 2``, so that length is kept."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.remove] if self.remove else x


class ECGFMFeatureExtractor(nn.Module):
    """The conv stack: per block ``Sequential(Conv1d, Dropout, [norm], GELU)``; indices match the original keys.

    ``feat_extract_norm="group"`` (released): ``Fp32GroupNorm(C, C)`` (each channel normalised over time) in
    block 0 only, at index 2. ``"layer"``: ``Sequential(TransposeLast, Fp32LayerNorm(C), TransposeLast)`` at
    index 2 of every block.
    """

    def __init__(self, config: ECGFMConfig) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList()
        in_d = config.num_leads
        for i, (dim, kernel, stride) in enumerate(zip(config.conv_dim, config.conv_kernel, config.conv_stride)):
            conv = nn.Conv1d(in_d, dim, kernel, stride=stride, bias=config.conv_bias)
            # The original's dropout here is fixed at 0.0; kept as a module so that indices match the keys.
            block: list[nn.Module] = [conv, nn.Dropout(p=0.0)]
            if config.feat_extract_norm == "layer":
                block.append(nn.Sequential(TransposeLast(), Fp32LayerNorm(dim, eps=config.layer_norm_eps), TransposeLast()))
            elif i == 0:
                block.append(Fp32GroupNorm(dim, dim, eps=config.layer_norm_eps, affine=True))
            block.append(nn.GELU())
            self.conv_layers.append(nn.Sequential(*block))
            in_d = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.conv_layers:
            x = block(x)
        return x


class ECGFMConvPositionalEncoding(nn.Module):
    """Relative positions from a grouped, weight-normed conv over time (``conv_pos`` in the original).

    ``pos_conv = Sequential(weight_norm(Conv1d(E, E, K, padding=K // 2, groups=G), dim=2), SamePad(K), GELU)``.
    Weight norm over dim 2 keeps one gain per tap: ``w[:, :, k] = g[k] * v[:, :, k] / ||v[:, :, k]||``. The
    parameters are ``pos_conv.0.parametrizations.weight.original0`` (g, shape ``(1, 1, K)``) and ``original1``
    (v); old checkpoints name them ``weight_g``/``weight_v`` (the converter renames them).
    """

    def __init__(self, config: ECGFMConfig) -> None:
        super().__init__()
        e, k = config.hidden_size, config.num_conv_pos_embeddings
        conv = nn.Conv1d(e, e, kernel_size=k, padding=k // 2, groups=config.num_conv_pos_embedding_groups)
        conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.pos_conv = nn.Sequential(conv, SamePad(k), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, E)`` -> the positional term ``(B, T, E)`` (to be added to ``x``)."""
        return self.pos_conv(x.transpose(1, 2)).transpose(1, 2)


class ECGFMSelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (fairseq's ``MultiHeadAttention``).

    Same arithmetic as the original's ``F.multi_head_attention_forward(use_separate_proj_weight=True)``: project,
    split heads, ``softmax(q k^T / sqrt(d)) v`` with padded keys excluded, merge heads, ``out_proj``.
    """

    def __init__(self, config: ECGFMConfig) -> None:
        super().__init__()
        e = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = e // self.num_heads
        self.dropout = float(config.attention_dropout)
        self.k_proj = nn.Linear(e, e)
        self.v_proj = nn.Linear(e, e)
        self.q_proj = nn.Linear(e, e)
        self.out_proj = nn.Linear(e, e)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, T, E)``; ``key_padding_mask``: ``(B, T)`` bool, ``True`` = padded frame (not attended)."""
        b, t, e = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = (~key_padding_mask)[:, None, None, :]  # SDPA: True = may attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, e))


class ECGFMEncoderLayer(GradientCheckpointingLayer):
    """One transformer layer; post-LN (released) or pre-LN, exactly as the original ``TransformerEncoderLayer``."""

    def __init__(self, config: ECGFMConfig) -> None:
        super().__init__()
        e = config.hidden_size
        self.layer_norm_first = config.layer_norm_first
        self.self_attn = ECGFMSelfAttention(config)
        self.dropout1 = nn.Dropout(config.hidden_dropout)
        self.dropout2 = nn.Dropout(config.activation_dropout)
        self.dropout3 = nn.Dropout(config.hidden_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(e, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(e, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, e)
        self.final_layer_norm = nn.LayerNorm(e, eps=config.layer_norm_eps)

    @staticmethod
    def activation(x: torch.Tensor) -> torch.Tensor:
        # exact (erf) GELU in float32, as the original computes it
        return F.gelu(x.float()).type_as(x)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.dropout1(self.self_attn(self.self_attn_layer_norm(x), key_padding_mask))
            h = self.fc2(self.dropout2(self.activation(self.fc1(self.final_layer_norm(x)))))
            return x + self.dropout3(h)
        x = self.self_attn_layer_norm(x + self.dropout1(self.self_attn(x, key_padding_mask)))
        h = self.fc2(self.dropout2(self.activation(self.fc1(x))))
        return self.final_layer_norm(x + self.dropout3(h))


class ECGFMTransformerEncoder(nn.Module):
    """``layers`` plus ``layer_norm``: applied before the first layer in post-LN models (the released one),
    after the last layer in pre-LN models."""

    def __init__(self, config: ECGFMConfig) -> None:
        super().__init__()
        self.layer_norm_first = config.layer_norm_first
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layerdrop = float(config.layerdrop)
        self.layers = nn.ModuleList([ECGFMEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        if padding_mask is not None:
            # The original zeroes padded frames before the first LayerNorm; attention then ignores them as keys.
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        hidden_states: list[torch.Tensor] = [x]
        for layer in self.layers:
            # LayerDrop (training only): skip the whole layer with probability ``layerdrop``.
            if self.training and self.layerdrop > 0 and float(torch.rand(())) < self.layerdrop:
                continue
            x = layer(x, padding_mask)
            hidden_states.append(x)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x, (tuple(hidden_states) if output_hidden_states else None)


class ECGFMPreTrainedModel(PreTrainedModel):
    """Weight init and loading settings shared by ECG-FM models."""

    config_class = ECGFMConfig
    config: ECGFMConfig
    base_model_prefix = "ecg_fm"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ECGFMEncoderLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original's initialisation (only used for weights a checkpoint does not provide).

        Conv extractor: Kaiming normal; positional conv: ``N(0, sqrt(4 / (K * E)))`` for v, g = ``||v||`` per
        tap (so the initial weight equals v), bias 0; transformer and projection Linear layers: BERT init
        ``N(0, initializer_range)``, bias 0; norms: weight 1, bias 0.
        """
        # transformers calls this for every module that holds parameters itself; the weight-normed positional
        # conv arrives as torch's ParametrizedConv1d (its g and v live in module.parametrizations.weight).
        if isinstance(module, nn.Conv1d) and hasattr(module, "parametrizations"):
            g = module.parametrizations.weight.original0
            v = module.parametrizations.weight.original1
            std = math.sqrt(4.0 / (self.config.num_conv_pos_embeddings * self.config.hidden_size))
            init.normal_(v, mean=0.0, std=std)
            init.copy_(g, torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):
            init.kaiming_normal_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class ECGFMModel(ECGFMPreTrainedModel):
    """ECG-FM encoder: ``(batch, 12, 2500)`` -> ``last_hidden_state`` ``(batch, 156, 768)`` and ``pooler_output``
    ``(batch, 768)``, the feature vector ECG-FM's classifier feeds its head.

    ``attention_mask`` (optional) has the shape of ``input_values`` (or ``(batch, time)``), 1 = real sample. The
    architecture mixes all leads in its first conv, so only time can be masked: a time step is real if any
    lead is real there (an absent lead is all zeros and stays in the input, like in the original). A frame is
    real iff every sample of its receptive field is real, which for right padding is exactly the original's
    length rule (``floor((L - k) / s + 1)`` per conv). As in the original, the conv stack, its GroupNorm and the
    positional conv still see the padded samples; the encoder then zeroes padded frames before its first
    LayerNorm, attention ignores them as keys, and the pooled vector is taken over real frames only.
    ``last_hidden_state`` keeps the padded frames' values (the original does not zero them either). An all-ones
    mask gives exactly the same outputs as no mask. A window without any real sample gives a zero
    ``pooler_output`` (the original would divide 0 by 0).

    Example:
        >>> import torch
        >>> from ecg_adapt.models.ecg_fm import ECGFMConfig, ECGFMModel
        >>> cfg = ECGFMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        ...                   conv_dim=[16] * 4, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
        >>> out = ECGFMModel(cfg).eval()(torch.randn(1, 12, 2500))
        >>> tuple(out.last_hidden_state.shape), tuple(out.pooler_output.shape)
        ((1, 156, 32), (1, 32))
    """

    def __init__(self, config: ECGFMConfig) -> None:
        super().__init__(config)
        embed = config.conv_dim[-1]
        self.feature_extractor = ECGFMFeatureExtractor(config)
        # ``layer_norm`` normalises the conv features (conv_dim[-1] wide); not to be confused with
        # ``encoder.layer_norm`` (hidden_size wide).
        self.layer_norm = nn.LayerNorm(embed, eps=config.layer_norm_eps)
        # The original has no projection when the conv width already equals the transformer width.
        self.post_extract_proj = nn.Linear(embed, config.hidden_size) if embed != config.hidden_size else None
        self.dropout_input = nn.Dropout(config.feat_proj_dropout)
        self.conv_pos = ECGFMConvPositionalEncoding(config)
        self.encoder = ECGFMTransformerEncoder(config)
        self.post_init()

    # ------------------------------------------------------------------ masks
    def _get_feat_extract_output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Frames the conv stack makes of ``input_lengths`` samples (the original's formula)."""
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            input_lengths = torch.div(input_lengths - kernel, stride, rounding_mode="floor") + 1
        return input_lengths

    def frame_mask(self, attention_mask: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Frame-level boolean mask (``True`` = real frame) for a sample-level ``attention_mask``.

        ``attention_mask`` is ``(B, leads, T)`` or ``(B, T)``; a time step counts as real if any lead is real.
        """
        m = attention_mask
        if m.dim() == 3:
            m = m.bool().any(dim=1)
        if m.dim() != 2:
            raise ValueError(f"attention_mask must be (batch, leads, time) or (batch, time), got {tuple(attention_mask.shape)}")
        m = m.to(torch.float32).unsqueeze(1)
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            # min-pool == -maxpool(-x): a frame is real only if its whole receptive field is
            m = -F.max_pool1d(-m, kernel_size=kernel, stride=stride)
        mask = m.squeeze(1) > 0.5
        if mask.shape[1] != n_frames:
            raise ValueError(f"attention mask gives {mask.shape[1]} frames but the features have {n_frames}")
        return mask

    # ------------------------------------------------------------------ fine-tuning
    def prepare_for_finetuning(self, layerdrop: float = 0.0) -> None:
        """Called by :class:`~ecg_adapt.ECGClassifier`: set LayerDrop (0 keeps every layer, which DDP needs).

        Dropout rates are already the fine-tuning recipe's (config defaults); the conv extractor is trained
        unless ``config.feature_grad_mult`` is 0 (see :meth:`freeze_feature_encoder`).
        """
        self.config.layerdrop = float(layerdrop)
        self.encoder.layerdrop = float(layerdrop)

    def freeze_feature_encoder(self) -> None:
        """Freeze the conv feature extractor, as ECG-FM's fine-tuning does (``feature_grad_mult=0``)."""
        self.config.feature_grad_mult = 0.0
        self.feature_extractor.requires_grad_(False)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
        **kwargs: object,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        """Encode windows ``(batch, leads, time)`` (``(batch, time)`` for a 1-lead model).

        Returns ``last_hidden_state`` ``(batch, frames, hidden)`` (the original ``extract_features(...)['x']``),
        ``pooler_output`` ``(batch, hidden)`` (the original classifier's head input) and, when asked,
        ``hidden_states``: the input of the first layer, then the output of every layer.
        """
        output_hidden_states = bool(output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states)
        x = input_values
        if x.dim() == 2 and self.config.num_leads == 1:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1] != self.config.num_leads:
            raise ValueError(
                f"ECG-FM expects input_values of shape (batch, {self.config.num_leads}, time), got {tuple(input_values.shape)}"
            )

        mult = float(self.config.feature_grad_mult)
        if mult == 0.0:
            with torch.no_grad():
                features = self.feature_extractor(x)
        else:
            features = self.feature_extractor(x)
            if mult != 1.0 and torch.is_grad_enabled():
                features = _GradMultiply.apply(features, mult)
        features = self.layer_norm(features.transpose(1, 2))  # (B, T', C)

        padding_mask = None  # (B, T') True = padded frame, as in the original
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            padding_mask = ~self.frame_mask(attention_mask, features.shape[1])
            # A window with no real frame would leave every key masked (NaN attention); let it attend to all
            # frames instead. Its pooled vector is zeroed below.
            empty = padding_mask.all(dim=1)
            attend_mask = padding_mask.masked_fill(empty.unsqueeze(1), False) if bool(empty.any()) else padding_mask
        else:
            attend_mask = None

        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        x = self.dropout_input(features)
        x = x + self.conv_pos(x)
        hidden, hidden_states = self.encoder(x, attend_mask, output_hidden_states=output_hidden_states)

        # The original pooling (ECGTransformerClassificationModel.forward, ECG-FM embs.py): zero padded frames,
        # then sum over frames / number of non-zero values per channel (= a mean over real frames unless a value is
        # exactly 0). clamp_min(1) only matters for an all-padding window, whose sum is 0.
        pooled_in = hidden if padding_mask is None else hidden.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        pooled = pooled_in.sum(dim=1) / (pooled_in != 0).sum(dim=1).clamp_min(1).to(hidden.dtype)

        if not return_dict:
            return tuple(v for v in (hidden, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled, hidden_states=hidden_states)
