"""ECG-CPC backbone: a re-implementation of ``clinical_ts``'s conv encoder + S4 predictor
(AI4HealthUOL/ecg-fm-benchmarking@6367295: ``ts/encoder.py`` ``RNNEncoder``, ``ts/s4.py`` ``S4Predictor``,
``ts/s4_modules/s4_model.py`` ``S4Model``, ``ts/s4_modules/s42.py`` ``S4``/``HippoSSKernel``/``SSKernelNPLR``).

Network, for input ``(B, 12, T)`` in mV at 240 Hz:

* ``encoder.layers.i``: ``Conv1d(k_i, stride s_i, padding (k_i - 1) // 2, no bias)`` -> ``BatchNorm1d`` -> ReLU;
* ``input_projection``: ``Linear(features[-1] -> model_dim)`` only when the widths differ (``S4Model.encoder``);
* ``blocks.i`` (channels first, ``(B, H, L)``): post-norm ``x = LayerNorm(x + dropout(S4(x)))`` (pre-norm:
  ``x = x + dropout(S4(LayerNorm(x)))``). ``S4(u)``: kernel ``k`` (``(C, H, L)``), causal linear convolution
  ``irfft(rfft(u, 2L) * rfft(k, 2L))[:L]`` plus ``D * u``, exact GELU, dropout, ``output_linear`` (H*C -> 2H),
  GLU over channels;
* ``last_hidden_state``: the last block's output, frames first ``(B, L, H)``; ``pooler_output``: its time-mean
  (``CPCWrapper``'s ``pooled_features``).

The S4 kernel (``SSKernelNPLR.forward`` at rate 1): with ``dt = exp(log_dt)``, ``w' = w * dt``,
``v = [B; P] x [C; Q]`` and the Cauchy sums ``r[l] = dt * sum_n v_n / (z_l - w'_n) + conj(v_n) / (z_l - conj(w'_n))``
on the *stored* nodes ``z`` (the bilinear images of the FFT nodes ``omega`` of length ``l_max``), the rank-1
Woodbury correction ``k_f = r00 - r01 r10 / (1 + r11)``, ``k_f *= 2 / (1 + omega)``, ``k = irfft(k_f)`` (length
``l_max``) truncated to the input length. ``C`` is stored length-corrected for ``l_max``, so the kernel must be
evaluated on that grid, never on one rebuilt for the input length. The original evaluates the Cauchy sums with
PyKeOps (``cauchy_conj``; it has no plain-torch path); here they are plain torch ops on the same formula (2.4e-6 from
the KeOps fixture on ``hidden``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..modeling_utils import init_like_torch_defaults, keep_frozen_batch_norm_in_eval
from .configuration import ECGCPCConfig


def hippo_legs_nplr(state_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The HiPPO-LegS state matrix in normal-plus-low-rank form, as ``SSKernelNPLR`` is initialised.

    Returns ``(w, P, B)`` for ``N = state_dim``: ``w`` (N/2,) eigenvalues of ``A + P P^T`` with positive imaginary
    part (one per conjugate pair), ``P`` (1, N/2) and ``B`` (N/2,) in that eigenbasis (complex128). Only used to
    initialise new models: converted models load the stored buffers.
    """
    n = state_dim
    q = np.arange(n, dtype=np.float64)
    col, row = np.meshgrid(q, q)
    r = 2 * q + 1
    m = -(np.where(row >= col, r, 0) - np.diag(q))
    t = np.sqrt(np.diag(2 * q + 1))
    a = t @ m @ np.linalg.inv(t)
    b = np.diag(t)
    p = np.sqrt(0.5 + q)[None]  # (1, N) rank-1 correction: A + P^T P is normal
    w, v = np.linalg.eig(a + p.T @ p)
    # Keep one eigenvalue of each conjugate pair (the original keeps every second one of LAPACK's order, which
    # lists pairs together with the positive imaginary part first).
    keep = np.argsort(-w.imag)[: n // 2]
    keep = keep[np.argsort(keep)]
    w, v = w[keep], v[:, keep]
    v_inv = v.conj().T
    return w, (v_inv @ p.T).T, v_inv @ b


def cauchy_conj(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_n v_n / (z_l - w_n) + conj(v_n) / (z_l - conj(w_n))``: ``v`` (..., H, N), ``z`` (L,), ``w`` (H, N) ->
    (..., H, L). The formula of the original ``cauchy_conj`` (a PyKeOps reduction), over the N/2 stored
    conjugate pairs; the reciprocals are shared by every ``v`` (the four B/P x C/Q products), so the sums are two
    batched complex matrix products."""
    inv = 1.0 / (z[None, :, None] - w[:, None, :])  # (H, L, N)
    inv_conj = 1.0 / (z[None, :, None] - w.conj()[:, None, :])
    lead = v.shape[:-2]
    v = v.reshape(-1, *v.shape[-2:]).transpose(0, 1)  # (H, V, N)
    r = torch.matmul(v, inv.transpose(1, 2)) + torch.matmul(v.conj(), inv_conj.transpose(1, 2))  # (H, V, L)
    return r.transpose(0, 1).reshape(*lead, r.shape[0], r.shape[-1])


class ECGCPCS4Kernel(nn.Module):
    """The S4 convolution kernel of one layer (original ``SSKernelNPLR``, rank 1, rate 1).

    Parameter ``C`` (channels, H, N/2, 2) and buffers ``log_dt`` (H), ``B``/``P``/``Q`` (1, H, N/2, 2), ``w``
    (H, N/2, 2), ``omega``/``z`` (l_max/2 + 1, 2): complex tensors stored as real views (trailing 2), as in the
    original (where they are never trained: ``trainable=None``), under the original names.
    """

    def __init__(self, model_dim: int, state_dim: int, channels: int, l_max: int) -> None:
        super().__init__()
        h, n2 = model_dim, state_dim // 2
        self.l_max = l_max
        self.C = nn.Parameter(torch.empty(channels, h, n2, 2))
        self.register_buffer("log_dt", torch.empty(h))
        w, p, b = hippo_legs_nplr(state_dim)
        # The HiPPO matrices are deterministic: set here, so that a new model is complete after __init__ (the
        # random log_dt and C are drawn in _init_weights). Built from numpy, which also works under a meta device.
        as_real = lambda a: torch.view_as_real(torch.from_numpy(np.ascontiguousarray(a)).to(torch.complex64))  # noqa: E731
        self.register_buffer("B", as_real(np.broadcast_to(b, (1, h, n2))).clone())
        self.register_buffer("P", as_real(np.broadcast_to(p[:, None, :], (1, h, n2))).clone())
        self.register_buffer("w", as_real(np.broadcast_to(w, (h, n2))).clone())
        self.register_buffer("Q", as_real(np.broadcast_to(p.conj()[:, None, :], (1, h, n2))).clone())
        omega = np.exp(-2j * np.pi / l_max) ** np.arange(l_max // 2 + 1)
        self.register_buffer("omega", as_real(omega).clone())
        self.register_buffer("z", as_real(2 * (1 - omega) / (1 + omega)).clone())

    def _state(self) -> tuple:
        """What the kernel depends on: every tensor's identity and in-place version (an optimiser step or a
        ``load_state_dict`` changes it)."""
        return tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in (self.C, self.log_dt, self.B, self.P, self.Q,
                                                                           self.w, self.omega, self.z))

    def forward(self, length: int) -> torch.Tensor:
        """The kernel for ``length`` tokens: ``(channels, H, length)`` float32.

        Without autograd (inference) the full-length kernel is cached until a tensor it depends on changes; with
        autograd it is recomputed, so gradients reach ``C``."""
        l_max = 2 * (self.omega.shape[0] - 1)
        if length > l_max:
            raise ValueError(
                f"ECG-CPC's S4 kernels are set up for at most l_max={l_max} tokens (the pre-training window) and the "
                f"input has {length}; the original would double its kernel length, changing C, which ecg_adapt does "
                "not do: feed shorter windows (the contract's window_samples)"
            )
        if torch.is_grad_enabled():
            return self._kernel(length)
        try:
            state = self._state()
        except RuntimeError:  # inference tensors have no version counter: nothing to key a cache on
            return self._kernel(length)
        cached = self.__dict__.get("_cache")
        if cached is None or cached[0] != state:
            # A normal tensor even under inference_mode, so that the module can still be copied or trained later.
            with torch.inference_mode(False), torch.no_grad():
                cached = (state, self._kernel(l_max))
            self.__dict__["_cache"] = cached
        return cached[1][..., :length]

    def _kernel(self, length: int) -> torch.Tensor:
        dt = torch.exp(self.log_dt)
        c = torch.view_as_complex(self.C)
        b, p, q = (torch.view_as_complex(t) for t in (self.B, self.P, self.Q))
        w = torch.view_as_complex(self.w) * dt.unsqueeze(-1)
        omega, z = torch.view_as_complex(self.omega), torch.view_as_complex(self.z)
        bb = torch.cat([b, p], dim=0)  # (2, H, N)
        cc = torch.cat([c, q], dim=0)  # (channels + 1, H, N)
        v = bb.unsqueeze(1) * cc.unsqueeze(0)  # (2, channels + 1, H, N)
        r = cauchy_conj(v, z, w) * dt[None, None, :, None]  # (2, channels + 1, H, L/2 + 1)
        k_f = r[:-1, :-1] - r[:-1, -1:] * r[-1:, :-1] / (1 + r[-1:, -1:])  # rank-1 Woodbury
        k_f = k_f * 2 / (1 + omega)
        k = torch.fft.irfft(k_f)[..., :length]  # length l_max, truncated
        return k[-1].float()


class ECGCPCTiedDropout(nn.Module):
    """Dropout for ``(B, C, L)`` tensors; with ``tie`` one mask per (sample, channel) for the whole sequence
    (original ``DropoutNd``), otherwise ``nn.Dropout``."""

    def __init__(self, p: float, tie: bool = True) -> None:
        super().__init__()
        self.p = float(p)
        self.tie = tie

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.tie:
            return F.dropout(x, self.p, training=True)
        mask = torch.rand(x.shape[:2] + (1,) * (x.dim() - 2), device=x.device) < 1.0 - self.p
        return x * mask * (1.0 / (1 - self.p))


class ECGCPCS4(nn.Module):
    """One S4 layer (original ``s42.S4``, transposed, ``postact='glu'``): ``(B, H, L) -> (B, H, L)``.

    ``output_linear`` is an ``nn.Linear(H * channels, 2H)`` applied over the channel axis (the original's
    ``TransposedLinear``, whose ``(2H, 1)`` bias the converter flattens), so peft can wrap it.
    """

    def __init__(self, config: ECGCPCConfig) -> None:
        super().__init__()
        h = config.model_dim
        self.bidirectional = not config.causal
        self.D = nn.Parameter(torch.empty(1, h))
        self.kernel = ECGCPCS4Kernel(h, config.state_dim, 2 if self.bidirectional else 1, config.l_max)
        self.dropout = ECGCPCTiedDropout(config.dropout, config.tie_dropout)
        self.output_linear = nn.Linear(h, 2 * h)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        length = u.shape[-1]
        k = self.kernel(length)  # (channels, H, L)
        if self.bidirectional:  # forward kernel and flipped backward kernel on a 2L support
            k = F.pad(k[:1], (0, length)) + F.pad(k[1:].flip(-1), (length, 0))
        # The convolution runs in float32 (the kernel is float32, as HippoSSKernel returns it; FFTs of half
        # precision inputs are limited to power-of-two lengths) or higher, whatever autocast made of the input.
        k_f = torch.fft.rfft(k, n=2 * length)  # (1, H, L + 1)
        u_f = torch.fft.rfft(u.float() if u.dtype in (torch.float16, torch.bfloat16) else u, n=2 * length)  # (B, H, L + 1)
        y = torch.fft.irfft(u_f.unsqueeze(1) * k_f.unsqueeze(0), n=2 * length)[..., :length].to(u.dtype)  # (B, 1, H, L)
        y = y + u.unsqueeze(1) * self.D[None, :, :, None]
        y = y.flatten(1, 2)  # (B, H, L)
        y = self.dropout(F.gelu(y))
        y = self.output_linear(y.transpose(1, 2)).transpose(1, 2)  # (B, 2H, L)
        return F.glu(y, dim=1)


class ECGCPCBlock(nn.Module):
    """A residual S4 block (one step of ``S4Model``'s loop) on ``(B, H, L)``; ``out_channels`` is H."""

    def __init__(self, config: ECGCPCConfig) -> None:
        super().__init__()
        self.out_channels = config.model_dim
        self.prenorm = config.prenorm
        self.s4 = ECGCPCS4(config)
        self.dropout = ECGCPCTiedDropout(config.dropout, config.tie_dropout)
        self.norm = nn.LayerNorm(config.model_dim)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._norm(x) if self.prenorm else x
        x = self.dropout(self.s4(z)) + x
        return x if self.prenorm else self._norm(x)


class ECGCPCConvLayer(nn.Module):
    """``Conv1d`` (no bias, centred padding) -> ``BatchNorm1d`` -> ReLU (original ``_conv1d(..., bn=True)``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(kernel_size - 1) // 2, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ECGCPCEncoder(nn.Module):
    """The conv encoder (original ``RNNEncoder``, which is convolutional despite its name)."""

    def __init__(self, config: ECGCPCConfig) -> None:
        super().__init__()
        widths = [config.in_channels] + list(config.encoder_features)
        self.layers = nn.ModuleList(
            ECGCPCConvLayer(widths[i], widths[i + 1], k, s, d)
            for i, (k, s, d) in enumerate(zip(config.encoder_kernel_sizes, config.encoder_strides, config.encoder_dilations))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


@dataclass
class ECGCPCModelOutput(BaseModelOutputWithPooling):
    """last_hidden_state: ``(batch, tokens, model_dim)``, the S4 predictor output (the original ``seq``).
    pooler_output: ``(batch, model_dim)``, its mean over (real) tokens, the benchmark's ``pooled_features``.
    hidden_states: with ``output_hidden_states``: the encoder output (after ``input_projection``) and every block's
    output, each frames first."""


class ECGCPCPreTrainedModel(PreTrainedModel):
    """Weight init and loading settings shared by ECG-CPC models."""

    config_class = ECGCPCConfig
    config: ECGCPCConfig
    base_model_prefix = "ecg_cpc"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's defaults for conv/linear/norm layers (as the original was built); S4 as HippoSSKernel/S4 draw
        # them: log_dt ~ U(log dt_min, log dt_max), C ~ complex normal (the original then applies the length
        # correction C (I - dA^l_max), which only reshapes the random start and is skipped here), D ~ N(0, 1).
        # The ``init`` helpers leave tensors loaded from a checkpoint alone.
        if init_like_torch_defaults(module):
            return
        if isinstance(module, ECGCPCS4Kernel):
            init.uniform_(module.log_dt, math.log(self.config.dt_min), math.log(self.config.dt_max))
            init.normal_(module.C, std=math.sqrt(0.5))  # real and imaginary parts of a standard complex normal
        elif isinstance(module, ECGCPCS4):
            init.normal_(module.D)


class ECGCPCModel(ECGCPCPreTrainedModel):
    """ECG-CPC backbone: ``(batch, 12, 600)`` (2.5 s at 240 Hz, mV) -> 300 tokens of 512 features.

    ``pooler_output`` is the benchmark's feature vector (the linear probe and ``finetuning_linear`` head read
    it); ``last_hidden_state`` the whole token sequence (its attention-pooling heads read that).

    ``attention_mask`` (same shape as ``input_values``, 1 = real sample) is honoured as follows: masked samples are
    set to zero before the encoder; a token is real when any sample under its encoder receptive window is
    (max-pooling the mask through the conv layers); ``pooler_output`` averages real tokens only. The released
    model is causal, so padding at the end (where the processor puts it) cannot reach real tokens except through
    the k=3 conv at the boundary. An all-ones mask is treated as no mask, so it gives bit-identical outputs.

    BatchNorm layers whose parameters are all frozen stay in eval mode under ``train()`` (running statistics
    included), so a frozen backbone (LoRA, probes) really stays frozen; with trainable BatchNorm (full
    fine-tuning) they use batch statistics, as the original fine-tuning does.

    Example:
        >>> import torch
        >>> from ecg_adapt.models.ecg_cpc import ECGCPCConfig, ECGCPCModel
        >>> cfg = ECGCPCConfig(encoder_features=[32, 32], encoder_kernel_sizes=[3, 1], encoder_strides=[2, 1],
        ...                    model_dim=32, num_layers=2)
        >>> out = ECGCPCModel(cfg).eval()(torch.randn(2, 12, 600))
        >>> tuple(out.last_hidden_state.shape), tuple(out.pooler_output.shape)
        ((2, 300, 32), (2, 32))
    """

    def __init__(self, config: ECGCPCConfig) -> None:
        super().__init__(config)
        self.encoder = ECGCPCEncoder(config)
        width = config.encoder_features[-1]
        self.input_projection = nn.Linear(width, config.model_dim) if width != config.model_dim else None
        self.blocks = nn.ModuleList(ECGCPCBlock(config) for _ in range(config.num_layers))
        self.gradient_checkpointing = False
        self.post_init()

    def train(self, mode: bool = True) -> ECGCPCModel:
        """As ``nn.Module.train``, except that a BatchNorm whose parameters are all frozen stays in eval mode."""
        super().train(mode)
        if mode:
            keep_frozen_batch_norm_in_eval(self)
        return self

    # ------------------------------------------------------------------------------------------------- masks
    @staticmethod
    def _time_mask(attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` float: a time step is real if any lead is real there."""
        m = attention_mask.to(torch.float32)
        if m.dim() == 3:
            m = m.amax(dim=1)
        if m.dim() != 2:
            raise ValueError(f"attention_mask must be (batch, time) or (batch, leads, time), got {tuple(attention_mask.shape)}")
        return m

    def frame_mask(self, attention_mask: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """Boolean ``(batch, tokens)``: True where a token's receptive window holds a real sample."""
        m = self._time_mask(attention_mask).unsqueeze(1)
        for layer in self.encoder.layers:
            conv = layer.conv
            m = F.max_pool1d(m, conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0])
        if n_frames is not None and m.shape[-1] != n_frames:
            raise ValueError(f"attention mask gives {m.shape[-1]} tokens but the features have {n_frames}")
        return m[:, 0] > 0.5

    # ------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
        **kwargs: object,
    ) -> ECGCPCModelOutput | tuple[torch.Tensor, ...]:
        """``input_values``: ``(batch, in_channels, samples)`` float, mV at 240 Hz (600 samples per 2.5 s window).

        See the class docstring for ``attention_mask``. Returns :class:`ECGCPCModelOutput`, or a tuple
        ``(last_hidden_state, pooler_output[, hidden_states])`` when ``return_dict=False``.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        if input_values.dim() != 3 or input_values.shape[1] != self.config.in_channels:
            raise ValueError(f"ECG-CPC expects (batch, {self.config.in_channels}, samples) input, got {tuple(input_values.shape)}")
        # The original zeroes NaN samples (Main_Lite.forward, CPCWrapper.forward: torch.nan_to_num).
        x = torch.nan_to_num(input_values)
        frames = None
        if attention_mask is not None and not bool(attention_mask.all()):
            if attention_mask.shape[-1] != x.shape[-1]:
                raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match input {tuple(x.shape)}")
            sample_mask = attention_mask.to(x.dtype)
            x = x * (sample_mask.unsqueeze(1) if sample_mask.dim() == 2 else sample_mask)
            frames = self.frame_mask(attention_mask)

        h = self.encoder(x).transpose(1, 2)  # (B, L, C)
        if self.input_projection is not None:
            h = self.input_projection(h)
        all_hidden: list[torch.Tensor] = [h] if output_hidden_states else []
        h = h.transpose(1, 2)  # (B, H, L): the blocks work channels first
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = self._gradient_checkpointing_func(block.__call__, h)
            else:
                h = block(h)
            if output_hidden_states:
                all_hidden.append(h.transpose(1, 2))
        last_hidden = h.transpose(1, 2)
        if frames is None:
            pooled = last_hidden.mean(dim=1)
        else:
            f = frames.to(last_hidden.dtype).unsqueeze(-1)
            pooled = (last_hidden * f).sum(1) / f.sum(1).clamp_min(1.0)
        hidden_states = tuple(all_hidden) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (last_hidden, pooled, hidden_states) if v is not None)
        return ECGCPCModelOutput(last_hidden_state=last_hidden, pooler_output=pooled, hidden_states=hidden_states)
