"""ECGFM-KED ECG encoder: a re-implementation of KED's ``XResNet1d`` (control-spiderman/ECGFM-KED@e42f1de,
``models/xresnet1d_101.py``; identical in ecg-fm-benchmarking ``clinical_ts/models/ecg_foundation_models/ecgfm_ked.py``).

The original is an ``nn.Sequential`` (``0..2`` stem ConvLayers, ``3`` max-pool, ``4..`` stages of ResBlocks), whose
state-dict keys are bare indices, and every ResBlock registers its convolutions twice (``convs`` and
``convpath = Sequential(convs)``). Here the modules have names (the converter's table in ``convert.py`` maps the
original keys onto them) and each tensor exists once:

* ``stem.{0,1,2}``: ConvLayer = ``Conv1d(k=kernel_size_stem, padding (k-1)//2, no bias)`` -> BatchNorm -> ReLU,
  the first with stride 2 (original ``0``, ``1``, ``2``); then ``MaxPool1d(3, 2, padding=1)`` (original ``3``);
* ``stages.{s}.{b}``: residual blocks (original ``{4+s}.{b}``): ``convs.{0,1,2}`` (1x1 -> k-tap with the block's
  stride -> 1x1 without ReLU; two k-tap convs for ``expansion=1``) plus the identity path: ``AvgPool1d(2,
  ceil_mode=True)`` on strided blocks, then ``idconv`` (a 1x1 ConvLayer without ReLU) when the width changes
  (original ``idpath.1`` after a pool, ``idpath.0`` without). Output ``ReLU(conv path + identity path)``.

The identity pool keeps PyTorch's ``ceil_mode`` semantics: at an odd length its last window averages **one** sample
(dividing by 2 shifts the features by 0.10). The time length is divided by 2 at the stem conv, the max-pool and
every strided stage: /32 for four stages (1000 -> 32, 5000 -> 157). There is no head and no final norm: the
features are the time-mean of the last stage, as KED (``ecg_features.mean(-1)``) and the benchmark wrapper pool.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling

# Per-block gradient checkpointing that leaves BatchNorm running statistics alone in the recomputation (shared
# with ECGFounder).
from ..modeling_utils import RecomputeKeepingBatchNormStats, checked_frame_mask, keep_frozen_batch_norm_in_eval
from .configuration import ECGFMKEDConfig


class ECGFMKEDConvLayer(nn.Module):
    """fastai's ``ConvLayer`` as KED builds it: ``Conv1d`` (no bias, padding ``(k-1)//2``), BatchNorm, optional ReLU.

    ``zero_bn`` only marks the layer whose BatchNorm weight starts at 0 (fastai ``NormType.BatchZero``: the last
    ConvLayer of a conv path); see :meth:`ECGFMKEDPreTrainedModel._init_weights`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, act: bool = True,
                 zero_bn: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm1d(out_channels, eps=eps)
        self.act = nn.ReLU() if act else None
        self.zero_bn = zero_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class ECGFMKEDBlock(nn.Module):
    """One residual block (original ``ResBlock(expansion, ni, nf, stride, kernel_size)``): ``ni * expansion`` ->
    ``nf * expansion`` channels."""

    def __init__(self, expansion: int, ni: int, nf: int, stride: int, kernel_size: int, zero_bn: bool, eps: float) -> None:
        super().__init__()
        in_channels, out_channels = ni * expansion, nf * expansion
        if expansion == 1:
            convs = [
                ECGFMKEDConvLayer(in_channels, nf, kernel_size, stride=stride, eps=eps),
                ECGFMKEDConvLayer(nf, nf, kernel_size, act=False, zero_bn=zero_bn, eps=eps),
            ]
        else:
            convs = [
                ECGFMKEDConvLayer(in_channels, nf, 1, eps=eps),
                ECGFMKEDConvLayer(nf, nf, kernel_size, stride=stride, eps=eps),
                ECGFMKEDConvLayer(nf, out_channels, 1, act=False, zero_bn=zero_bn, eps=eps),
            ]
        self.convs = nn.ModuleList(convs)
        self.pool = nn.AvgPool1d(2, ceil_mode=True) if stride != 1 else None
        self.idconv = ECGFMKEDConvLayer(in_channels, out_channels, 1, act=False, eps=eps) if in_channels != out_channels else None
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.convs:
            out = conv(out)
        identity = x
        if self.pool is not None:
            identity = self.pool(identity)
        if self.idconv is not None:
            identity = self.idconv(identity)
        return torch.relu(out + identity)


class ECGFMKEDPreTrainedModel(PreTrainedModel):
    """Weight init and loading settings shared by ECGFM-KED models."""

    config_class = ECGFMKEDConfig
    config: ECGFMKEDConfig
    base_model_prefix = "ecgfm_ked"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # The original init (fastai init_cnn + BatchNorm): kaiming-normal conv weights; BatchNorm bias 1e-3 and weight
        # 1, or 0 on the last layer of a conv path (BatchZero) when config.zero_bn. The ``init`` helpers leave tensors
        # loaded from a checkpoint alone.
        if isinstance(module, ECGFMKEDConvLayer):
            init.kaiming_normal_(module.conv.weight)
            init.constant_(module.bn.weight, 0.0 if (module.zero_bn and self.config.zero_bn) else 1.0)
            init.constant_(module.bn.bias, 1e-3)
            init.zeros_(module.bn.running_mean)
            init.ones_(module.bn.running_var)
            init.zeros_(module.bn.num_batches_tracked)


class ECGFMKEDModel(ECGFMKEDPreTrainedModel):
    """ECGFM-KED ECG encoder: ``(B, 12, T)`` mV -> last stage ``(B, T/32, 768)`` and features ``(B, 768)``.

    ``T`` is 1000 under the original contract (100 Hz, MIMIC lead order) and 5000 under the benchmark contract
    (500 Hz, standard order); the network takes any length (``config.signal_contract`` says which input the
    processor makes).

    Outputs (:class:`~transformers.modeling_outputs.BaseModelOutputWithPooling`):

    * ``last_hidden_state``: the last stage, frames-last ``(B, L, C)`` (the original returns ``(B, C, L)``; the
      benchmark wrapper transposes it the same way);
    * ``pooler_output``: the original feature vector, the time-mean of the last stage;
    * ``hidden_states`` (``output_hidden_states=True``): the stem output (after the max-pool) and each stage output,
      frames-last.

    ``attention_mask`` (``(B, leads, T)`` or ``(B, T)``, 1 = real sample): a time step is real if any lead is real
    there; a frame of the last stage is real iff the input sample at the centre of its receptive field is
    (frame ``j`` is centred on sample ``32 * j``: every stride-2 layer, conv, max-pool and average pool alike, takes
    output ``j`` around input ``2 j``). Padded frames are left out of ``pooler_output``; the convolutions near the
    boundary still see the padding (as any CNN does). A mask that keeps every frame is the unmasked computation.

    Training: a BatchNorm whose parameters are all frozen stays in eval mode under ``train()`` (LoRA and probes
    leave the backbone's running statistics as pretrained, so an adapter-only save reproduces the trained model);
    full fine-tuning trains BatchNorm as the original. Gradient checkpointing recomputes each block without
    updating BatchNorm statistics a second time.

    Example:
        >>> import torch
        >>> from ecg_adapt.models.ecgfm_ked import ECGFMKEDConfig, ECGFMKEDModel
        >>> cfg = ECGFMKEDConfig(layers=[1, 1, 1, 1], stem_szs=[8, 8, 16], block_szs=[4, 4, 8, 8, 8])
        >>> out = ECGFMKEDModel(cfg).eval()(torch.randn(1, 12, 1000))
        >>> tuple(out.last_hidden_state.shape), tuple(out.pooler_output.shape)
        ((1, 32, 32), (1, 32))
    """

    _no_split_modules: ClassVar[list[str]] = ["ECGFMKEDBlock"]

    def __init__(self, config: ECGFMKEDConfig) -> None:
        super().__init__(config)
        sizes = [config.input_channels, *config.stem_szs]
        eps = config.batch_norm_eps
        self.stem = nn.ModuleList(
            ECGFMKEDConvLayer(sizes[i], sizes[i + 1], config.kernel_size_stem, stride=2 if i == 0 else 1, eps=eps)
            for i in range(3)
        )
        self.stem_pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)
        szs = config.block_szs
        self.stages = nn.ModuleList(
            nn.ModuleList(
                ECGFMKEDBlock(
                    config.expansion,
                    szs[i] if b == 0 else szs[i + 1],
                    szs[i + 1],
                    stride=(1 if i == 0 else 2) if b == 0 else 1,
                    kernel_size=config.kernel_size,
                    zero_bn=True,  # marks the BatchZero layer; whether it starts at 0 is config.zero_bn
                    eps=eps,
                )
                for b in range(n_blocks)
            )
            for i, n_blocks in enumerate(config.layers)
        )
        # Set by gradient_checkpointing_enable(): recompute each block in the backward pass.
        self.gradient_checkpointing = False
        self.post_init()

    # ---------------------------------------------------------------------------------------------- training
    def train(self, mode: bool = True) -> ECGFMKEDModel:
        """As ``nn.Module.train``, except that a BatchNorm whose parameters are all frozen stays in eval mode."""
        super().train(mode)
        if mode:
            keep_frozen_batch_norm_in_eval(self)
        return self

    # ------------------------------------------------------------------------------------------------- masks
    @property
    def num_downsamplings(self) -> int:
        """Stride-2 layers on the way to the last stage: stem conv, max-pool, first block of stages 2.."""
        return 2 + len(self.config.layers) - 1

    def frame_mask(self, attention_mask: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """Boolean ``(B, frames)`` mask of the last stage for a sample-level ``attention_mask`` (see the class doc)."""
        m = attention_mask.bool()
        if m.ndim == 3:
            m = m.any(dim=1)
        if m.ndim != 2:
            raise ValueError(f"attention_mask must be (batch, time) or (batch, leads, time), got {tuple(attention_mask.shape)}")
        for _ in range(self.num_downsamplings):
            m = m[:, ::2]  # ceil(L / 2) frames, output j centred on input 2j
        if n_frames is not None and m.shape[1] != n_frames:
            raise ValueError(f"attention mask gives {m.shape[1]} frames but the last stage has {n_frames}")
        return m

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
        """Encode ``input_values`` ``(B, input_channels, T)`` in mV (see the class docstring for the outputs)."""
        if input_values.ndim != 3 or input_values.shape[1] != self.config.input_channels:
            raise ValueError(
                f"ECGFM-KED expects input_values of shape (batch, {self.config.input_channels}, time), "
                f"got {tuple(input_values.shape)}"
            )
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        out = input_values
        for layer in self.stem:
            out = layer(out)
        out = self.stem_pool(out)
        states: list[torch.Tensor] = [out]
        for stage in self.stages:
            for block in stage:
                if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                    out = self._gradient_checkpointing_func(RecomputeKeepingBatchNormStats(block), out)
                else:
                    out = block(out)
            states.append(out)
        hidden = out.transpose(1, 2)  # (B, C, L) -> (B, L, C)
        frames = self._checked_frame_mask(attention_mask, hidden.shape[1])
        if frames is None:
            pooled = hidden.mean(dim=1)  # the original ecg_features.mean(-1)
        else:
            w = frames.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * w).sum(dim=1) / w.sum(dim=1)
        all_states = tuple(s.transpose(1, 2) for s in states) if output_hidden_states else None
        if return_dict is False:
            return tuple(v for v in (hidden, pooled, all_states) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled, hidden_states=all_states)
