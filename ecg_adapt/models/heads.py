"""Heads that pool a backbone's frames into class scores.

The ECG foundation-model benchmark (AI4HealthUOL/ecg-fm-benchmarking, ICLR 2026) evaluates every backbone
three ways: a linear probe on mean-pooled features, fine-tuning, and a frozen backbone under a
*learnable-query attention-pooling* head (V-JEPA's attentive probe). :class:`AttentionPoolingHead` is that
head: one learned query attends over the frames with multi-head attention (separate q/k/v projections, no
bias by default, 16 heads in the benchmark) and the output projection maps straight to the classes. Unlike the
benchmark's fixed-length windows, padded frames are masked out here (``frame_mask``), so a short record pools
only its real frames.

It is written here because neither torch nor transformers has a single-query pooling head with a key mask
that also exposes the pooled features (``nn.MultiheadAttention`` would need a dummy query batch and hides them).
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_ATTENTION_HEADS = 16


def default_num_heads(hidden_size: int, preferred: int = DEFAULT_ATTENTION_HEADS) -> int:
    """The largest head count <= ``preferred`` that divides ``hidden_size`` (16 for the usual 768/512/256)."""
    for h in range(min(preferred, hidden_size), 0, -1):
        if hidden_size % h == 0:
            return h
    return 1


class AttentionPoolingHead(nn.Module):
    """Learnable-query attention pooling over frames, then a projection to the classes.

    Args:
        hidden_size: width of the backbone's frames.
        num_labels: number of output classes.
        num_heads: attention heads (must divide ``hidden_size``); default: :func:`default_num_heads`.
        bias: biases on the projections (the benchmark's default is none).

    ``forward(hidden, frame_mask)`` returns ``(logits, pooled)``: ``pooled`` is the attention output before the
    class projection (the head's features, ``(batch, hidden_size)``).

    Example:
        >>> head = AttentionPoolingHead(64, 5)
        >>> logits, pooled = head(torch.randn(2, 30, 64))
        >>> logits.shape, pooled.shape
        (torch.Size([2, 5]), torch.Size([2, 64]))
    """

    def __init__(self, hidden_size: int, num_labels: int, num_heads: int | None = None, bias: bool = False) -> None:
        super().__init__()
        num_heads = default_num_heads(hidden_size) if num_heads is None else int(num_heads)
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"attention pooling: {num_heads} heads do not divide the backbone width {hidden_size}")
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.randn(1, 1, hidden_size) / math.sqrt(hidden_size))
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.out_proj = nn.Linear(hidden_size, num_labels, bias=bias)

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, e = hidden.shape
        h, d = self.num_heads, e // self.num_heads
        q = self.q_proj(self.query).view(1, 1, h, d).transpose(1, 2).expand(b, h, 1, d)
        k = self.k_proj(hidden).view(b, t, h, d).transpose(1, 2)
        v = self.v_proj(hidden).view(b, t, h, d).transpose(1, 2)
        mask = None
        if frame_mask is not None:
            keep = frame_mask.to(torch.bool)
            # A record with no kept frame would give NaN (softmax over nothing): let it attend everywhere instead.
            keep = keep | ~keep.any(dim=1, keepdim=True)
            mask = keep[:, None, None, :]  # (batch, heads, query, frames), True = may attend
        pooled = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (b, h, 1, d)
        pooled = pooled.transpose(1, 2).reshape(b, e)
        return self.out_proj(pooled), pooled
