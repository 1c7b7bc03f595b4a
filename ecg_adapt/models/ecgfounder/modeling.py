"""ECGFounder backbone: a re-implementation of ``net1d.Net1D`` (PKUDigitalHealth/ECGFounder@04edac7, MIT).

Module names follow the original exactly (``first_conv.conv``, ``first_bn``, ``stage_list.S.block_list.B.
{bn1, conv1.conv, bn2, conv2.conv, bn3, conv3.conv, se_fc1, se_fc2}``, ``dense``), so an original
``state_dict`` loads with no renaming and LoRA target names are the original's.

Network, for input ``(B, C_in, T)``:

* ``first_conv``: SAME-padded conv, kernel ``kernel_size``, stride 2 (fixed), then Swish (``first_bn`` only
  when ``use_bn``);
* stages of pre-activation bottleneck blocks. Block: [bn1] Swish [dropout] 1x1 conv -> [bn2] Swish [dropout]
  grouped k-conv (stride on the first block of a stage) -> [bn3] Swish [dropout] 1x1 conv -> squeeze-excitation
  -> + shortcut. The very first block of the network skips its first Swish (its input is already activated).
  The shortcut of a stage's first block is a zero-padded max-pool; when the width grows it gets zero channels
  on *both* sides;
* features: the time-mean of the last stage, with no norm or activation after it; ``dense`` maps them to the
  150 pretraining labels.

Gradient checkpointing (``activation_checkpointing_enable()``, an ecg_adapt addition) recomputes each block in
the backward pass. The recomputation leaves BatchNorm running statistics alone (see
:class:`~ecg_adapt.models.modeling_utils.RecomputeKeepingBatchNormStats`), so gradients, outputs and running statistics are those of the plain
forward pass, with ``use_bn`` on or off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..modeling_utils import RecomputeKeepingBatchNormStats, init_like_torch_defaults
from .configuration import ECGFounderConfig


def same_padding(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow-style SAME padding of the original: output ``ceil(L / stride)``, extra zero on the right."""
    out_len = (length + stride - 1) // stride
    total = max(0, (out_len - 1) * stride + kernel_size - length)
    return total // 2, total - total // 2


class Swish(nn.Module):
    """``x * sigmoid(x)``, written as the original does (numerically identical to its outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class ECGFounderConv1dPadSame(nn.Module):
    """``Conv1d`` with SAME zero padding (original ``MyConv1dPadSame``); the weights live in ``.conv``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        return self.conv(F.pad(x, (left, right), "constant", 0.0))


class ECGFounderMaxPool1dPadSame(nn.Module):
    """Max-pool with ``stride = kernel_size`` over a **zero**-padded input (original ``MyMaxPool1dPadSame``).

    Padding with zeros, not ``-inf``, means a negative value at the edge is clipped to 0; that is the original.
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = max(0, self.kernel_size - 1)
        x = F.pad(x, (total // 2, total - total // 2), "constant", 0.0)
        return F.max_pool1d(x, kernel_size=self.kernel_size)


def _masked_time_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last axis of ``(B, C, L)``; with a ``(B, 1, L)`` 0/1 mask only over real frames."""
    if mask is None:
        return x.mean(-1)
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


class ECGFounderBlock(nn.Module):
    """One pre-activation bottleneck block with squeeze-excitation (original ``BasicBlock``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ratio: float,
        kernel_size: int,
        stride: int,
        groups: int,
        downsample: bool,
        is_first_block: bool,
        use_bn: bool,
        use_do: bool,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.downsample = downsample
        self.stride = stride if downsample else 1
        self.is_first_block = is_first_block
        self.use_bn = use_bn
        self.use_do = use_do
        middle = int(out_channels * ratio)

        # The BatchNorm and Dropout modules exist even when unused, so that the original keys load strictly.
        self.bn1 = nn.BatchNorm1d(in_channels)
        self.activation1 = Swish()
        self.do1 = nn.Dropout(p=0.5)
        self.conv1 = ECGFounderConv1dPadSame(in_channels, middle, kernel_size=1, stride=1)
        self.bn2 = nn.BatchNorm1d(middle)
        self.activation2 = Swish()
        self.do2 = nn.Dropout(p=0.5)
        self.conv2 = ECGFounderConv1dPadSame(middle, middle, kernel_size=kernel_size, stride=self.stride, groups=groups)
        self.bn3 = nn.BatchNorm1d(middle)
        self.activation3 = Swish()
        self.do3 = nn.Dropout(p=0.5)
        self.conv3 = ECGFounderConv1dPadSame(middle, out_channels, kernel_size=1, stride=1)
        # Squeeze-excitation with reduction 2 (hard-coded in the original).
        self.se_fc1 = nn.Linear(out_channels, out_channels // 2)
        self.se_fc2 = nn.Linear(out_channels // 2, out_channels)
        self.se_activation = Swish()
        if downsample:
            self.max_pool = ECGFounderMaxPool1dPadSame(kernel_size=self.stride)

    def _pre(self, x: torch.Tensor, bn: nn.BatchNorm1d, act: nn.Module, drop: nn.Dropout) -> torch.Tensor:
        if self.use_bn:
            x = bn(x)
        x = act(x)
        if self.use_do:
            x = drop(x)
        return x

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, in, L)``; ``frame_mask``: ``(B, 1, L_out)`` 0/1 at the *output* resolution, or ``None``."""
        out = x
        if not self.is_first_block:
            out = self._pre(out, self.bn1, self.activation1, self.do1)
        out = self.conv1(out)
        out = self.conv2(self._pre(out, self.bn2, self.activation2, self.do2))
        out = self.conv3(self._pre(out, self.bn3, self.activation3, self.do3))

        # Squeeze-excitation; the squeeze averages only real frames when a mask is given.
        se = self.se_fc1(_masked_time_mean(out, frame_mask))
        se = torch.sigmoid(self.se_fc2(self.se_activation(se)))
        out = out * se.unsqueeze(-1)

        identity = x
        if self.downsample:
            identity = self.max_pool(identity)
        if self.out_channels != self.in_channels:
            # New channels are zeros split around the old ones: (out-in)//2 in front, the rest behind.
            front = (self.out_channels - self.in_channels) // 2
            back = self.out_channels - self.in_channels - front
            identity = F.pad(identity, (0, 0, front, back), "constant", 0.0)
        return out + identity


class ECGFounderStage(nn.Module):
    """A stack of blocks at one width (original ``BasicStage``); only ``block_list`` holds weights.

    With gradient checkpointing on (``gradient_checkpointing``, set by ``activation_checkpointing_enable()``)
    each block is recomputed in the backward pass instead of keeping its activations.
    """

    def __init__(self, in_channels: int, out_channels: int, config: ECGFounderConfig, i_stage: int, m_blocks: int) -> None:
        super().__init__()
        self.stride = config.stride
        self.block_list = nn.ModuleList(
            ECGFounderBlock(
                in_channels=in_channels if i_block == 0 else out_channels,
                out_channels=out_channels,
                ratio=config.ratio,
                kernel_size=config.kernel_size,
                stride=config.stride,
                groups=out_channels // config.groups_width,
                downsample=i_block == 0,
                is_first_block=i_stage == 0 and i_block == 0,
                use_bn=config.use_bn,
                use_do=config.use_do,
            )
            for i_block in range(m_blocks)
        )
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the stage output and the frame mask at its (downsampled) resolution."""
        if frame_mask is not None:
            frame_mask = downsample_mask(frame_mask, self.stride)
        for block in self.block_list:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = self._gradient_checkpointing_func(RecomputeKeepingBatchNormStats(block), x, frame_mask)
            else:
                x = block(x, frame_mask)
        return x, frame_mask


def downsample_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """A frame is real when any input sample under it is: the max-pool of the shortcut path, applied to the mask.

    Gives ``ceil(L / stride)`` frames, the length of every strided layer of the network.
    """
    if stride == 1:
        return mask
    return ECGFounderMaxPool1dPadSame(stride)(mask)


@dataclass
class ECGFounderModelOutput(BaseModelOutputWithPooling):
    """:class:`BaseModelOutputWithPooling` plus the original 150-label head's output.

    last_hidden_state: ``(batch, frames, hidden_size)``, the last stage's output, frames first (the transpose of
        the original's channels-first tensor).
    pooler_output: ``(batch, hidden_size)``, the original ``deep_features`` (time-mean of the last stage).
    hidden_states: with ``output_hidden_states``: the stem output and every stage output, each frames first.
    logits: ``dense(pooler_output)`` when the model carries the original head (``config.n_classes > 0``).
    """

    logits: torch.FloatTensor | None = None


class ECGFounderPreTrainedModel(PreTrainedModel):
    """Weight init and loading settings shared by ECGFounder models."""

    config_class = ECGFounderConfig
    config: ECGFounderConfig
    base_model_prefix = "ecgfounder"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default init, as the original Net1D was built with (kaiming-uniform a=sqrt(5) weights,
        # uniform(+-1/sqrt(fan_in)) biases); the ``init`` helpers skip tensors already loaded from a checkpoint.
        init_like_torch_defaults(module)


class ECGFounderModel(ECGFounderPreTrainedModel):
    """ECGFounder (``Net1D``) backbone: ``(batch, in_channels, 5000)`` → 1024-d features.

    ``pooler_output`` is the original feature vector ``deep_features`` (what ``finetune_model.py``'s new head and
    the linear probe consume); ``last_hidden_state`` is the last stage, frames first. When the config keeps the
    original head (``n_classes > 0``, as converted releases do) ``logits`` holds its 150-label output; the head
    is never part of ``pooler_output``, and :meth:`prepare_for_finetuning` removes it (the original fine-tuning
    replaces it), which :class:`~ecg_adapt.ECGClassifier` calls.

    ``attention_mask`` (same shape as ``input_values``, 1 = real sample) is honoured as far as a CNN can:

    * masked samples are set to zero before the first conv, so padding content cannot reach the output (zeros
      are what the original's SAME padding feeds at the edges);
    * a frame is real when any input sample under it is real (any lead, any position in its stride window),
      propagated through each strided layer; the squeeze of every squeeze-excitation block and the final
      time-mean (``pooler_output``) average real frames only;
    * convolutions still see the zeros next to real samples (as at any edge of the original's input).

    An all-ones mask is treated as no mask, so it gives bit-identical outputs.

    Example:
        >>> import torch
        >>> from ecg_adapt.models.ecgfounder import ECGFounderConfig, ECGFounderModel
        >>> cfg = ECGFounderConfig(base_filters=16, filter_list=[16, 32], m_blocks_list=[1, 1], n_classes=0)
        >>> out = ECGFounderModel(cfg).eval()(torch.randn(2, 12, 5000))
        >>> tuple(out.last_hidden_state.shape), tuple(out.pooler_output.shape)
        ((2, 625, 32), (2, 32))
    """

    # A folder saved with the original head loads into a config without it (n_classes=0) without noise. The
    # reverse (a config that wants the head, a file without it) is left to fail loudly: a random head is no head.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^dense\."]

    def __init__(self, config: ECGFounderConfig) -> None:
        super().__init__(config)
        self.first_conv = ECGFounderConv1dPadSame(config.in_channels, config.base_filters, config.kernel_size, stride=2)
        self.first_bn = nn.BatchNorm1d(config.base_filters)
        self.first_activation = Swish()
        self.stage_list = nn.ModuleList()
        in_channels = config.base_filters
        for i_stage, (out_channels, m_blocks) in enumerate(zip(config.filter_list, config.m_blocks_list)):
            self.stage_list.append(ECGFounderStage(in_channels, out_channels, config, i_stage, m_blocks))
            in_channels = out_channels
        self.dense = nn.Linear(in_channels, config.n_classes) if config.n_classes > 0 else None
        self.post_init()

    # ------------------------------------------------------------------ masks
    def frame_mask(self, attention_mask: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """Boolean ``(batch, frames)`` mask of the last stage for a sample-level ``attention_mask``.

        ``attention_mask`` is ``(batch, leads, time)`` (a sample is real if any lead is) or ``(batch, time)``.
        """
        mask = self._time_mask(attention_mask)
        mask = downsample_mask(mask, 2)  # first_conv
        for _ in self.stage_list:
            mask = downsample_mask(mask, self.config.stride)
        if n_frames is not None and mask.shape[-1] != n_frames:
            raise ValueError(f"attention mask gives {mask.shape[-1]} frames but the features have {n_frames}")
        return mask[:, 0] > 0.5

    @staticmethod
    def _time_mask(attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.to(torch.float32)
        if m.dim() == 3:
            m = m.amax(dim=1)
        if m.dim() != 2:
            raise ValueError(f"attention_mask must be (batch, time) or (batch, leads, time), got {tuple(attention_mask.shape)}")
        return m.unsqueeze(1)

    # ------------------------------------------------------------------ fine-tuning
    def prepare_for_finetuning(self, layerdrop: float = 0.0) -> None:
        """Remove the 150-label pretraining head, as ``finetune_model.py`` does before adding a new one.

        The head would otherwise be a trainable parameter without gradients (an error under DDP). ``layerdrop``
        is accepted for the common interface; ECGFounder has no layer dropping (the value must be 0).
        """
        if layerdrop:
            raise ValueError("ECGFounder has no LayerDrop; use backbone_layerdrop=0.0")
        if self.dense is not None:
            self.dense = None
            self.config.n_classes = 0

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
        **kwargs: object,
    ) -> ECGFounderModelOutput | tuple[torch.Tensor, ...]:
        """``input_values``: ``(batch, in_channels, time)`` float, 500 Hz (5000 samples for the releases).

        See the class docstring for ``attention_mask``. Returns :class:`ECGFounderModelOutput`, or a tuple
        ``(last_hidden_state, pooler_output[, hidden_states][, logits])`` when ``return_dict=False``.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        if input_values.dim() != 3 or input_values.shape[1] != self.config.in_channels:
            raise ValueError(
                f"ECGFounder expects (batch, {self.config.in_channels}, time) input, got {tuple(input_values.shape)}"
            )
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            if attention_mask.shape[-1] != input_values.shape[-1]:
                raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match input {tuple(input_values.shape)}")
            sample_mask = attention_mask.to(input_values.dtype)
            if sample_mask.dim() == 2:
                sample_mask = sample_mask.unsqueeze(1)
            input_values = input_values * sample_mask
            mask = downsample_mask(self._time_mask(attention_mask).to(input_values.dtype), 2)

        out = self.first_conv(input_values)
        if self.config.use_bn:
            out = self.first_bn(out)
        out = self.first_activation(out)
        all_hidden: list[torch.Tensor] = [out.transpose(1, 2)] if output_hidden_states else []
        for stage in self.stage_list:
            out, mask = stage(out, mask)
            if output_hidden_states:
                all_hidden.append(out.transpose(1, 2))

        features = _masked_time_mean(out, mask)  # the original deep_features = out.mean(-1)
        logits = self.dense(features) if self.dense is not None else None
        last_hidden = out.transpose(1, 2)
        hidden_states = tuple(all_hidden) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (last_hidden, features, hidden_states, logits) if v is not None)
        return ECGFounderModelOutput(
            last_hidden_state=last_hidden, pooler_output=features, hidden_states=hidden_states, logits=logits
        )
