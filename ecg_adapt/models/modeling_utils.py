"""Small pieces several families' ``modeling.py`` share, where the logic is the same and not the family's own.

* :func:`init_like_torch_defaults`: PyTorch's own initialisation of conv, linear and norm layers, for the
  ``_init_weights`` of families whose originals were built with it (ECGFounder, MERL, ECG-CPC). Written by hand
  because the layers' ``reset_parameters`` would overwrite weights loaded from a checkpoint, while transformers'
  ``initialization`` helpers (used here) leave loaded tensors alone.
* :func:`keep_frozen_batch_norm_in_eval`: what the ``train()`` of BatchNorm backbones (MERL, ECG-CPC, ECGFM-KED)
  adds to ``nn.Module.train``.
* :func:`checked_frame_mask`: the frame-mask rule of backbones that pool their own feature vector (MERL,
  ECGFM-KED).
* :class:`RecomputeKeepingBatchNormStats`: a block wrapper for gradient checkpointing of BatchNorm CNNs
  (ECGFounder, ECGFM-KED). torch's checkpointing has no option to keep the recomputation from updating BatchNorm
  running statistics a second time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn
from transformers import initialization as init


def init_like_torch_defaults(module: nn.Module) -> bool:
    """Initialise ``module`` as its PyTorch constructor does, if it is a ``Conv1d``, ``Linear``, ``BatchNorm1d`` or
    ``LayerNorm``; returns whether it was one of those.

    ``Conv1d``/``Linear``: kaiming-uniform weights (``a = sqrt(5)``), biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``;
    norms: weight 1, bias 0, BatchNorm running statistics reset.
    """
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            fan_in = module.weight.shape[1] * math.prod(module.weight.shape[2:])
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(module.bias, -bound, bound)
        return True
    if isinstance(module, (nn.BatchNorm1d, nn.LayerNorm)):
        if module.weight is not None:
            init.ones_(module.weight)
        if module.bias is not None:
            init.zeros_(module.bias)
        if isinstance(module, nn.BatchNorm1d) and module.track_running_stats:
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        return True
    return False


def checked_frame_mask(frame_mask: torch.Tensor) -> torch.Tensor | None:
    """A backbone's boolean ``(batch, frames)`` frame mask, or ``None`` when it keeps every frame (the unmasked
    path then runs: the same bits as without a mask).

    Raises:
        ValueError: a batch row has no real frame (its pooled features would be undefined), naming the rows.
    """
    if bool(frame_mask.all()):
        return None
    empty = ~frame_mask.any(dim=1)
    if bool(empty.any()):
        rows = torch.nonzero(empty).flatten().tolist()
        raise ValueError(f"attention_mask leaves no real frame in batch row(s) {rows} (records too short?)")
    return frame_mask


def keep_frozen_batch_norm_in_eval(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` whose parameters are all frozen back in eval mode (call after
    ``train(True)``): its running statistics then stay as pretrained, so small fine-tuning batches do not overwrite
    them and an adapter-only save reproduces the trained model."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


@contextlib.contextmanager
def batch_norm_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Run ``module`` with its training BatchNorm layers leaving their running statistics as they are.

    The layers still run the same kernel in training mode (batch statistics, running statistics passed in), so
    the recomputed autograd graph saves the same tensors as the forward pass did, which non-re-entrant
    checkpointing checks. Only the momentum is 0 meanwhile: ``running = (1 - 0) * running + 0 * batch`` leaves
    the running mean and variance bit for bit; the batch counter ``num_batches_tracked`` is put back after.
    (``track_running_stats=False`` would skip the update too, but calls a kernel that saves fewer tensors.)
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    saved = [(m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


class RecomputeKeepingBatchNormStats:
    """``block`` for ``torch.utils.checkpoint``: the first call is the forward pass; every later call is a
    recomputation in the backward pass, which must not update the BatchNorm running statistics a second time.

    (Recomputing a block whose BatchNorm trains would otherwise count every batch twice in the running averages.
    The recomputed output is the same: it normalises the same input with the same batch statistics. Works with
    re-entrant and non-re-entrant checkpointing alike.)
    """

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self.calls = 0

    def __call__(self, *args: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            return self.block(*args)
        with batch_norm_stats_frozen(self.block):
            return self.block(*args)
