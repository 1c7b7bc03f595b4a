"""Prompt tuning's plumbing: the hooks that insert prompt tokens into a backbone's token sequence (and remove
them after the last block) and the attention-mask extension for every family's mask format.

:class:`PromptHooks` is a mixin of :class:`~ecg_adapt.adaptation.modules.AdaptedModel`: the hooks read which
adapter is routed for the current call (``_current_adapter``) and the backbone's block layout (``layout``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config import UnsupportedAdaptationError
from ..layout import BackboneLayout

if TYPE_CHECKING:
    from ...models.classifier import ECGClassifier
    from .layer import ModuleAdapter


def prepend_to_pair_mask(
    mask: torch.Tensor, p: int, valid_keys: torch.Tensor | None, allowed: bool | float, blocked: bool | float
) -> torch.Tensor:
    """Extend a ``(..., query, key)`` mask (query = 1 or = key) with ``p`` prompt tokens in front.

    Every query may attend to the prompts; the prompts may attend to each other and to the keys in
    ``valid_keys`` (``(..., key)`` bool, broadcastable to the leading dims; ``None`` = all keys).
    """
    *lead, q, k = mask.shape
    rows = torch.cat([mask.new_full((*lead, q, p), allowed), mask], dim=-1)
    if q == 1:  # one row shared by every query: a key mask, which already is the prompts' row
        return rows
    prompt_rows = mask.new_full((*lead, p, p + k), allowed)
    if valid_keys is not None:
        keep = valid_keys.unsqueeze(-2).expand(*lead, p, k)
        prompt_rows[..., p:] = mask.new_full((*lead, p, k), blocked).masked_fill(keep, allowed)
    return torch.cat([prompt_rows, rows], dim=-2)


class PromptHooks:
    """Forward hooks of prompt tuning (mixed into :class:`~ecg_adapt.adaptation.modules.AdaptedModel`).

    Each hook returns ``None`` (no change) unless the adapter routed for this call holds prompts.
    """

    layout: BackboneLayout
    base_model: ECGClassifier
    _sample_mask: torch.Tensor | None

    if TYPE_CHECKING:  # provided by AdaptedModel: the adapter routed for the current call

        def _current_adapter(self) -> ModuleAdapter | None: ...

    def _capture_sample_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        self._sample_mask = mask if isinstance(mask, torch.Tensor) else None

    def _release_sample_mask(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._sample_mask = None

    def _prompt_entry_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """ECG-JEPA: prompts join the tokens before the block loop; the per-block positional term gets zero rows."""
        adapter = self._current_adapter()
        if adapter is None or adapter.prompts is None:
            return None
        spec = self.layout.prompt
        ti, ai, mi = spec.entry_positions
        if len(args) <= max(ti, ai, mi):
            raise RuntimeError(f"prompt tuning expects {spec.entry} to be called with tokens, the per-block term and "
                               f"the mask as positional arguments; got {len(args)} positional arguments")
        args = list(args)
        x, added, mask = args[ti], args[ai], args[mi]
        p = adapter.num_prompt_tokens
        args[ti] = torch.cat([adapter.prompt_tokens(0, x), x], dim=1)
        zeros = added.new_zeros(added.shape[:-2] + (p, added.shape[-1]))
        args[ai] = torch.cat([zeros, added], dim=-2)
        if mask is not None:
            args[mi] = self._extend_mask(mask, p)
        return tuple(args), kwargs

    def _prompt_block_hook(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Insert the prompts before the first block (replace them before every block when deep); extend the mask."""
        adapter = self._current_adapter()
        if adapter is None or adapter.prompts is None:
            return None
        spec = self.layout.prompt
        p = adapter.num_prompt_tokens
        x = args[0]
        if index == 0 and spec.entry is None:
            x = torch.cat([adapter.prompt_tokens(0, x), x], dim=1)
        elif index > 0 and adapter.deep:
            x = torch.cat([adapter.prompt_tokens(index, x), x[:, p:]], dim=1)
        args = (x, *args[1:])
        in_kwargs = spec.mask_arg in kwargs
        mask = kwargs[spec.mask_arg] if in_kwargs else (args[spec.mask_position] if len(args) > spec.mask_position else None)
        if mask is not None:
            if not isinstance(mask, torch.Tensor):
                raise UnsupportedAdaptationError(
                    f"prompt tuning extends tensor attention masks; block {index} received a {type(mask).__name__} "
                    "(use the 'sdpa' or 'eager' attention implementation)"
                )
            if mask.shape[-1] == x.shape[1] - p:  # not yet extended (ECG-JEPA's is, at the entry)
                mask = self._extend_mask(mask, p)
                if in_kwargs:
                    kwargs = {**kwargs, spec.mask_arg: mask}
                else:
                    args = (*args[: spec.mask_position], mask, *args[spec.mask_position + 1 :])
        return args, kwargs

    def _prompt_exit_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        adapter = self._current_adapter()
        if adapter is None or adapter.prompts is None:
            return None
        return output[:, adapter.num_prompt_tokens :]

    def _extend_mask(self, mask: torch.Tensor, p: int) -> torch.Tensor:
        """The block mask for ``p`` prompts prepended: prompts always attendable, and attending real tokens only."""
        fmt = self.layout.prompt.mask_format
        if fmt == "key_padding":
            return torch.cat([mask.new_zeros(mask.shape[0], p), mask], dim=1)
        if fmt == "key_keep" or (fmt == "hf_4d" and mask.dim() == 2):  # flash attention gets the 2-D padding mask
            return torch.cat([mask.new_ones(mask.shape[0], p), mask], dim=1)
        if fmt == "hf_4d":
            if mask.dtype == torch.bool:
                return prepend_to_pair_mask(mask, p, mask.any(dim=-2), True, False)
            lowest = torch.finfo(mask.dtype).min  # eager attention: additive, 0 = attend, dtype minimum = masked
            return prepend_to_pair_mask(mask, p, (mask > lowest / 2).any(dim=-2), 0.0, lowest)
        # "pairwise" (ECG-JEPA): the mask cannot say which tokens are padding (a padded token attends to itself
        # only, as does a lone real one); the backbone's token mask can.
        valid = self._valid_tokens(mask.shape[-1])
        if valid is None:
            return prepend_to_pair_mask(mask, p, None, True, False)
        if mask.dim() == 2:
            mask = mask.expand(valid.shape[0], 1, *mask.shape)
        return prepend_to_pair_mask(mask, p, valid[:, None, :], True, False)

    def _valid_tokens(self, n_tokens: int) -> torch.Tensor | None:
        mask = self._sample_mask
        if mask is None or bool(mask.all()):
            return None
        return self.base_model.backbone.frame_mask(mask, n_tokens)


__all__ = ["PromptHooks", "prepend_to_pair_mask"]
