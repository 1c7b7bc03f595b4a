"""HuBERT-ECG backbone.

The original ``HuBERTECG`` subclasses ``transformers.HubertModel`` and adds two pretraining heads
(``final_proj``, ``label_embedding``). ecg_adapt reuses ``HubertModel`` unchanged for the forward pass (so the
numbers are the library's, not a re-implementation's) and leaves the pretraining heads out: a released folder
loads with them reported as ignored, and no ``trust_remote_code`` is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import HubertModel

from .configuration import HubertECGConfig


class HubertECGModel(HubertModel):
    """HuBERT-ECG encoder: ``(batch, 6000)`` lead-major input → ``last_hidden_state`` ``(batch, 93, hidden)``.

    Differences from ``HubertModel``:

    * the attention mask may have holes. HuBERT-ECG concatenates the leads, so a record shorter than 5 s is
      padded at the end of *every* lead segment, and a masked lead blanks a whole segment. ``HubertModel``
      assumes right-padding and keeps only the count of real samples; here a frame is valid iff every input
      sample in its receptive field is real (a min-pool through the conv stack), which equals ``HubertModel``'s
      rule for right-padded masks;
    * the pretraining heads of the original class are not part of the model.

    Example:
        >>> import torch
        >>> from ecg_adapt.models.hubert_ecg import HubertECGConfig, HubertECGModel
        >>> cfg = HubertECGConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        ...                       conv_dim=(16,) * 5, num_conv_pos_embedding_groups=4)
        >>> HubertECGModel(cfg).eval()(torch.randn(1, 6000)).last_hidden_state.shape
        torch.Size([1, 93, 32])
    """

    config_class = HubertECGConfig
    config: HubertECGConfig
    base_model_prefix = "hubert_ecg"
    # The original checkpoints carry HuBERT pretraining heads; they are not used for features.
    _keys_to_ignore_on_load_unexpected = [r"^final_proj\.", r"^label_embedding\."]

    def frame_mask(self, attention_mask: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Frame-level boolean mask for a sample-level ``attention_mask`` (holes allowed)."""
        m = attention_mask.to(torch.float32).unsqueeze(1)
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            # min-pool == -maxpool(-x): a frame is real only if its whole receptive field is
            m = -F.max_pool1d(-m, kernel_size=kernel, stride=stride)
        mask = m.squeeze(1) > 0.5
        if mask.shape[1] != n_frames:
            raise ValueError(f"attention mask gives {mask.shape[1]} frames but the features have {n_frames}")
        return mask

    def forward(self, input_values: torch.Tensor | None = None, *args, **kwargs):  # noqa: D102 (HubertModel's)
        # transformers' feature encoder marks its input as requiring grad whenever it is in training mode, so that
        # reentrant checkpointing sees a differentiable input. When adaptation froze every conv weight (LoRA and
        # the other adapters, linear probes) that builds a graph through the conv stack and backpropagates through
        # it for nothing; skip it unless a weight there trains or reentrant checkpointing needs it.
        fe = self.feature_extractor
        fe._requires_grad = any(p.requires_grad for p in fe.parameters()) or self._reentrant_checkpointing()
        return super().forward(input_values, *args, **kwargs)

    def _reentrant_checkpointing(self) -> bool:
        for module in self.modules():
            if getattr(module, "gradient_checkpointing", False):
                func = getattr(module, "_gradient_checkpointing_func", None)
                if func is not None and getattr(func, "keywords", {}).get("use_reentrant", True):
                    return True
        return False

    def _get_feature_vector_attention_mask(self, feature_vector_length: int, attention_mask: torch.LongTensor):
        return self.frame_mask(attention_mask, feature_vector_length)

    def prepare_for_finetuning(self, layerdrop: float = 0.0) -> None:
        """Switch off the pretraining SpecAugment masking kept in the released configs (``mask_time_prob=0.33``)
        and set LayerDrop, as the original ``HuBERTForECGClassification`` does. The unused
        ``masked_spec_embed`` is removed so that no parameter without a gradient is left trainable."""
        self.config.apply_spec_augment = False
        self.config.mask_time_prob = 0.0
        self.config.mask_feature_prob = 0.0
        self.config.layerdrop = layerdrop
        if hasattr(self, "masked_spec_embed"):
            del self.masked_spec_embed
